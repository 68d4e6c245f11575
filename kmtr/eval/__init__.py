"""Evaluation of trained k-MTR runs, the layer above training: loading a run and predicting a split
(``predict``), the report of ``kmtr eval`` (``report``), ``kmtr benchmark`` (``benchmark``, which
trains the methods it compares) and its learning-rate search (``lr_search``). The numbers, tables
and figures they write come from :mod:`kmtr.analysis`, which imports no training code."""
