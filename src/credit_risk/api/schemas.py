"""Request and response bodies of the API, named by role; bounds mirror docs/data.md."""

from __future__ import annotations

from datetime import datetime
from operator import attrgetter
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from credit_risk.features import AGE_RANGE, FEATURES

# The seed's verify-script payload: what /docs shows and what the docs' curl sends.
EXAMPLE_RECORD: dict[str, float | int | None] = {
    "RevolvingUtilizationOfUnsecuredLines": 0.766127,
    "age": 45,
    "NumberOfTime30_59DaysPastDueNotWorse": 2,
    "DebtRatio": 0.802982,
    "MonthlyIncome": 9120.0,
    "NumberOfOpenCreditLinesAndLoans": 13,
    "NumberOfTimes90DaysLate": 0,
    "NumberRealEstateLoansOrLines": 6,
    "NumberOfTime60_89DaysPastDueNotWorse": 0,
    "NumberOfDependents": 2,
}
EXAMPLE_RECORD_MISSING_INCOME = {**EXAMPLE_RECORD, "MonthlyIncome": None, "NumberOfDependents": None}

# strict: "45" and true are not numbers (lax mode would coerce them). Floats still accept
# JSON integers. Counts are floats that must be whole (multiple_of=1) so that 2.0 from a
# pandas export passes while 2.5 fails, all checked in pydantic-core without Python calls.
# 96 and 98 are the data's reporting codes in the past-due counts, hence the cap of 98.
_Ratio = Annotated[float, Field(strict=True, ge=0)]
_PastDue = Annotated[float, Field(strict=True, ge=0, le=98, multiple_of=1)]
_Count = Annotated[float, Field(strict=True, ge=0, le=1000, multiple_of=1)]


class PredictionRequest(BaseModel):
    """One applicant: the ten features, named as in the data set (underscores for hyphens)."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        frozen=True,
        json_schema_extra={"examples": [EXAMPLE_RECORD, EXAMPLE_RECORD_MISSING_INCOME]},
    )

    RevolvingUtilizationOfUnsecuredLines: _Ratio = Field(
        description="Balance on credit cards and personal lines divided by their limits."
    )
    age: float = Field(
        strict=True, ge=AGE_RANGE[0], le=AGE_RANGE[1], multiple_of=1, description="Age in years."
    )
    NumberOfTime30_59DaysPastDueNotWorse: _PastDue = Field(
        description="Times 30-59 days past due in the last 2 years (96/98 are reporting codes)."
    )
    DebtRatio: _Ratio = Field(description="Monthly debt payments and living costs over monthly income.")
    MonthlyIncome: float | None = Field(
        strict=True, ge=0, description="Monthly income; null when unknown (about 20% of the data)."
    )
    NumberOfOpenCreditLinesAndLoans: _Count = Field(description="Open loans and lines of credit.")
    NumberOfTimes90DaysLate: _PastDue = Field(description="Times 90 days or more past due.")
    NumberRealEstateLoansOrLines: _Count = Field(description="Mortgage and real-estate loans.")
    NumberOfTime60_89DaysPastDueNotWorse: _PastDue = Field(
        description="Times 60-89 days past due in the last 2 years."
    )
    NumberOfDependents: _Count | None = Field(description="Dependents in the family; null when unknown.")


_row = attrgetter(*FEATURES)


def to_array(records: list[PredictionRequest]) -> np.ndarray:
    """The model's input: float64, FEATURES order, NaN where a field is null (numpy maps None)."""
    return np.array([_row(r) for r in records], dtype=np.float64)


class BatchPredictionRequest(BaseModel):
    """Many applicants scored by one vectorised model call (at most MAX_BATCH_SIZE of them)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"records": [EXAMPLE_RECORD, EXAMPLE_RECORD_MISSING_INCOME]}]},
    )

    records: list[PredictionRequest] = Field(min_length=1)


class Reason(BaseModel):
    """A principal reason for the decision: a factor that raised this applicant's risk."""

    code: str = Field(description="Stable reason code (GET /model/reasons lists them all).")
    feature: str = Field(description="The applicant's field it comes from.")
    text: str = Field(description="Adverse-action wording.")
    value: float | None = Field(description="The applicant's value of that field (null: not reported).")
    contribution: float = Field(description="How much it raised the risk, in log-odds (exact for the model).")


_REASONS = Field(
    default_factory=list,
    description="Up to MAX_REASONS factors that raised the risk, largest first: for every decline "
    "(prediction 1), and for approvals too with ?explain=true.",
)


class PredictionResponse(BaseModel):
    """The model's answer for one applicant."""

    prediction: int = Field(description="1 = serious delinquency expected (probability >= threshold).")
    probability: float = Field(description="Probability of serious delinquency within two years.")
    model_version: str
    prediction_id: str = Field(description="Unique id; also the step of this prediction in the MLflow log.")
    reasons: list[Reason] = _REASONS


class BatchItem(BaseModel):
    """One applicant's answer inside a batch, in request order."""

    prediction: int
    probability: float
    prediction_id: str
    reasons: list[Reason] = _REASONS


class BatchPredictionResponse(BaseModel):
    """Answers in the order of the request's records, all from one model version."""

    model_version: str
    predictions: list[BatchItem]


class ModelInfo(BaseModel):
    """What is served now, and where it came from."""

    model_name: str
    model_version: str
    model_stage: str
    run_id: str
    dataset_hash: str
    decision_threshold: float
    metrics: dict[str, float] = Field(description="Test-set metrics the trainer logged on the run.")
    feature_names: list[str]
    loaded_at: datetime


class HealthResponse(BaseModel):
    """Everything an operator checks first."""

    status: str = Field(description='"ok" when a Production model is served, else "degraded".')
    ready: bool
    reason: str | None = Field(description="Why nothing is served, when nothing is.")
    tracking_server_reachable: bool | None = Field(description="At the last registry poll; null before it.")
    last_poll_at: datetime | None
    model_name: str
    model_version: str | None
    scorer: str | None = Field(description='"flat-forest" (exact fast path) or "scikit-learn".')
    prediction_log: dict[str, int | bool]


class StatusResponse(BaseModel):
    """A one-line status."""

    status: str
    detail: str | None = None


class ErrorResponse(BaseModel):
    """Every error body: a stable code, a sentence, and per-field details for bad input."""

    error: str
    detail: str
    fields: list[dict[str, str]] | None = None


class ReasonCodeInfo(BaseModel):
    """One row of the reason-code table."""

    code: str
    feature: str
    text: str


class ReasonCodesResponse(BaseModel):
    """The reason codes the API gives, their adverse-action wording, and the rules for giving them."""

    max_reasons: int = Field(description="At most this many reasons per applicant (MAX_REASONS).")
    elderly_age: int = Field(description="Age is never a reason for an applicant this old or older.")
    codes: list[ReasonCodeInfo]
