"""Training: data, the generic loop (checkpoints, resume, logs, DDP, AMP) and the tasks it runs."""
