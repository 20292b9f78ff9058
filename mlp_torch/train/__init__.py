"""Training with Lightning: the LightningModule and its epoch loop for K >= 1 members, the notes'
learning-rate callbacks, checkpoints and run folders, logging, threads, data parallelism."""
