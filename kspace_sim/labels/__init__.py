"""Labels: the 18 phenotypes from the full-resolution segmentations and disease flags from UK
Biobank participant tables (REFERENCES.md).

Submodules: :mod:`ventricles` and :mod:`atria` (pure numpy), :mod:`phenotypes` (one subject),
:mod:`codes` + ``disease_codes.toml`` (disease definitions), :mod:`ukb_table` (column naming of
both export formats), :mod:`diseases` (table → labels, Dask), :mod:`label_table` (cohort →
Parquet), :mod:`summary` (cohort summary).
"""

from kspace_sim.labels.diseases import DiseaseLabels, TableError, TableReport, disease_labels
from kspace_sim.labels.label_table import build_label_table, read_label_table
from kspace_sim.labels.phenotypes import PHENOTYPE_COLUMNS, PHENOTYPE_UNITS, PhenotypeResult, subject_phenotypes
from kspace_sim.labels.summary import summary_table

__all__ = [
    "PHENOTYPE_COLUMNS",
    "PHENOTYPE_UNITS",
    "PhenotypeResult",
    "subject_phenotypes",
    "DiseaseLabels",
    "TableError",
    "TableReport",
    "disease_labels",
    "build_label_table",
    "read_label_table",
    "summary_table",
]
