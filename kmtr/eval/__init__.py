"""Evaluation of trained k-MTR runs: statistics (bootstrap, paired tests), task metrics, comparison
tables and figures (``stats``, ``metrics``, ``tables``, ``figures``), predictions (``predict``) and
the report writer (``report``)."""
