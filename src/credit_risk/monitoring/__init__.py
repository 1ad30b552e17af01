"""Watching the model in production: stability against the training split, and realized performance."""
