"""Exports of a store to the formats reconstruction tools read: ISMRMRD/MRD (``ismrmrd`` package) and
the CMRxRecon cine layout (MATLAB v7.3 files). Needs the ``export`` extra (h5py, ismrmrd)."""

from kspace_sim.export.runner import ExportConfig, ExportError, ExportReport, export_store

__all__ = ["ExportConfig", "ExportError", "ExportReport", "export_store"]
