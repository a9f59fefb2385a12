"""Training: optimizer, losses, checkpoints, metrics and the train loop."""
