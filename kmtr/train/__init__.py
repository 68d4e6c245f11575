"""Training: generic loop, checkpoints, distributed helpers and the stage-I entry point."""
