"""k-MTR trainer: reads kspace-mri-store Zarr stores (docs/store-format.md) and trains the
image / k-space masked autoencoders (stage I) on them. Never imports ``kspace_sim``."""

__version__ = "0.1.0"
