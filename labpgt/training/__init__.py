"""Training: models, tasks, gradient estimators, the trainer and its records."""
