"""Sharing a store: Croissant manifests, verification against them, splits, and remote (fsspec) access.

Modules: ``splits`` (seeded, stratified train/validation/test codes), ``manifest`` (Croissant
JSON-LD, ``subjects.csv`` and ``SHA256SUMS`` beside it, publishing with version checks), ``verify``
(recompute checksums and compare a store with its manifest). Remote (fsspec) access lives in
:mod:`kspace_sim.store.remote`.
"""
