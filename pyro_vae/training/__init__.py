"""Training runs: the optimiser and schedule settings, the Trainer, checkpoints, the run folder's lock and
clean stops on signals."""
