"""Training machinery and the stage-I / stage-II trainers: generic loop, checkpoints, run folders,
distributed helpers, the stage-I MAEs and datasets, the task network and the closed-form spectrum fit.

Stage III (:mod:`kmtr.stage3`) and the stage sequence (:mod:`kmtr.pipeline`) sit above the method
registry (:mod:`kmtr.methods`), which builds its methods from this package and :mod:`kmtr.nnunet`;
nothing here imports the registry or evaluation (:mod:`kmtr.eval`)."""
