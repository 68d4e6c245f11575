"""kspace_sim: UK Biobank cine MRI → multi-view complex k-space Zarr stores with undersampling masks.

Torch-free. See docs/store-format.md for the store contract.
"""

__version__ = "0.3.0"
