"""Floor 2: fitting models — the trainer, metrics, the suspect-label algorithm, experiment tracking."""
