"""Training: recipes, the trainer, distributed launch, checkpoints."""
