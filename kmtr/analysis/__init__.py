"""Numbers, tables and figures from predictions, with no training code: task metrics
(``metrics``), resampling statistics (``stats``), stage II's retrieval accuracy (``retrieval``), the
predictions container (``predictions``), method comparisons (``comparison``, ``tables``), report
sections shared by tasks (``summaries``), phenotypes from segmentations (``seg_phenotypes``) and
figures (``figures``). The stage-III tasks (:mod:`kmtr.tasks`), training (:mod:`kmtr.train`) and
evaluation (:mod:`kmtr.eval`) all read it; it imports none of them."""
