"""The safe loader against a real registry: round trip, and refusal of anything we did not log."""

from __future__ import annotations

import numpy as np
import pytest
import skops.io
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from credit_risk.features import FEATURES, TARGET, CreditFeatures
from credit_risk.model_io import TRUSTED_TYPES, ModelRejected, load_model_version, log_model
from credit_risk.training.candidates import CANDIDATES
from support.registration import log_sklearn, register


def _halve(X):
    return X / 2


@pytest.fixture
def mlflow_env(tracking_uri, monkeypatch) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    return tracking_uri


@pytest.mark.integration
def test_logged_model_round_trips_predictions_threshold_and_hash(
    mlflow_env, model_name, fitted_candidates, candidate_frame
):
    pipeline = fitted_candidates["hist_gradient_boosting"]
    version = register(
        mlflow_env, model_name, lambda: log_model(pipeline, candidate_frame.head(5), 0.237, "abc123")
    )
    loaded = load_model_version(MlflowClient(mlflow_env), model_name, version)
    X = candidate_frame[list(FEATURES)].to_numpy(copy=True)
    X[:5, FEATURES.index("MonthlyIncome")] = np.nan  # the API sends NaN for a null field
    np.testing.assert_array_equal(loaded.predict_proba(X), pipeline.predict_proba(X)[:, 1])
    assert (loaded.threshold, loaded.dataset_hash, loaded.version) == (0.237, "abc123", version)


@pytest.mark.integration
def test_loader_refuses_a_pickled_model(mlflow_env, model_name, fitted_candidates, candidate_frame):
    pipeline = fitted_candidates["logistic_regression"]
    version = register(
        mlflow_env,
        model_name,
        lambda: log_sklearn(pipeline, candidate_frame, serialization_format="cloudpickle"),
    )
    with pytest.raises(ModelRejected, match="serialization format is 'cloudpickle'"):
        load_model_version(MlflowClient(mlflow_env), model_name, version)


@pytest.mark.integration
def test_loader_refuses_a_type_the_model_trusts_but_we_do_not(mlflow_env, model_name, candidate_frame):
    # The crafted model lists its own function as trusted in its MLmodel; our list does not.
    X, y = candidate_frame[list(FEATURES)].to_numpy(), candidate_frame[TARGET].to_numpy()
    pipeline = make_pipeline(
        CreditFeatures(),
        FunctionTransformer(_halve),
        CANDIDATES[1].build(0).set_params(model__monotonic_cst=None),
    ).fit(X, y)
    (extra,) = set(skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))) - set(TRUSTED_TYPES)
    log = lambda: log_sklearn(pipeline, candidate_frame, skops_trusted_types=[*TRUSTED_TYPES, extra])  # noqa: E731
    version = register(mlflow_env, model_name, log)
    with pytest.raises(ModelRejected, match="cannot be loaded safely"):
        load_model_version(MlflowClient(mlflow_env), model_name, version)


@pytest.mark.integration
def test_loader_refuses_a_signature_without_the_api_field_names(
    mlflow_env, model_name, fitted_candidates, candidate_frame
):
    pipeline = fitted_candidates["logistic_regression"]
    renamed = candidate_frame[list(FEATURES)].head(5).rename(columns=lambda c: c.replace("_", "-"))
    signature = infer_signature(renamed, pipeline.predict_proba(renamed.to_numpy())[:, 1])
    version = register(
        mlflow_env, model_name, lambda: log_sklearn(pipeline, candidate_frame, signature=signature)
    )
    with pytest.raises(ModelRejected, match="do not match the API's fields"):
        load_model_version(MlflowClient(mlflow_env), model_name, version)


@pytest.mark.integration
@pytest.mark.parametrize(
    "metadata", [{"dataset_hash": "x"}, {"decision_threshold": 1.5, "dataset_hash": "x"}]
)
def test_loader_refuses_a_missing_or_impossible_threshold(
    mlflow_env, model_name, fitted_candidates, candidate_frame, metadata
):
    pipeline = fitted_candidates["logistic_regression"]
    version = register(
        mlflow_env, model_name, lambda: log_sklearn(pipeline, candidate_frame, metadata=metadata)
    )
    with pytest.raises(ModelRejected, match="threshold"):
        load_model_version(MlflowClient(mlflow_env), model_name, version)
