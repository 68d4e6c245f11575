"""Built-in demo cohort: synthetic beating-heart phantoms in the UK Biobank NIfTI layout.

Public API: :func:`demo_subject` (one subject in memory + analytic ground truth),
:func:`demo_eids` and :func:`write_demo_cohort` (a resumable cohort folder with
``participants.csv`` and ``ground_truth.csv``). Modules: ``phantom`` (shapes, motion, analytic
volumes), ``params`` (per-subject sampling with disease effects), ``participants`` (UKB table),
``render`` (views, rasterisation, intensities, noise), ``truth`` (18 phenotypes), ``cohort``.
"""

from kspace_sim.demo.cohort import DEMO_GENERATOR_VERSION, demo_eids, demo_subject, write_demo_cohort

__all__ = ["DEMO_GENERATOR_VERSION", "demo_subject", "demo_eids", "write_demo_cohort"]
