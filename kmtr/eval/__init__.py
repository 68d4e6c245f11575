"""Evaluation of trained k-MTR runs, the layer above training: loading a run and predicting a split
(``predict``), the report of ``kmtr eval`` (``report``), ``kmtr benchmark`` (``benchmark``, which
trains the methods it compares) and its learning-rate search (``lr_search``); ``retrieval_probe`` locates a subject's identity in a
stage-I or stage-II checkpoint's encoders (why stage II does or does not retrieve). The numbers, tables
and figures they write come from :mod:`kmtr.analysis`, which imports no training code."""
