"""Training utilities: metrics logging, checkpoints, bootstrap evaluation tables and plots."""
