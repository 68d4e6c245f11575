"""k-MTR trainer: reads kspace-mri-store Zarr stores (docs/store-format.md) only through
:mod:`kmtr.store`, trains k-MTR's three stages and the baselines on them and evaluates the runs.
Never imports ``kspace_sim``.

Layers, each importing only those below it (tests/test_import_cycles.py): the leaf modules
(``config``, ``errors``, ``store``, ``data``, ``fft``, …) < ``models`` < ``analysis`` < ``tasks`` <
``train`` < ``nnunet`` < ``methods`` < ``stage3`` < ``pipeline`` < ``eval``."""

__version__ = "0.1.0"
