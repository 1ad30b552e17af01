"""Credit-risk model service: an MLflow-tracked trainer and an API serving the Production model."""
