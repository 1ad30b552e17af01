"""The API: serves only the Production model version and logs every prediction to MLflow.

Nothing is imported here on purpose: `python -m credit_risk.api` must set OMP_NUM_THREADS
before numpy and scikit-learn load. Use `credit_risk.api.app.create_app`.
"""
