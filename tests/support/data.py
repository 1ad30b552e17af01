"""Data for tests: rows shaped like the real file, written the way Kaggle's file looks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from credit_risk.features import CSV_TO_API, FEATURES, TARGET
from support import ROOT

REAL_CSV = ROOT / "data" / "cs-training.csv"
API_TO_CSV = {v: k for k, v in CSV_TO_API.items()}


def synthetic_frame(n: int = 3000, seed: int = 0, signal: float = 1.0) -> pd.DataFrame:
    """Rows shaped like the real file (API names), with a learnable target.

    `signal` scales how much the target depends on the features: 0 gives a useless model.
    """
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "RevolvingUtilizationOfUnsecuredLines": rng.beta(0.6, 2.0, n),
            "age": rng.integers(21, 90, n).astype(float),
            "NumberOfTime30_59DaysPastDueNotWorse": rng.poisson(0.3, n).astype(float),
            "DebtRatio": rng.gamma(1.2, 0.4, n),
            "MonthlyIncome": rng.gamma(2.0, 3000.0, n).round(),
            "NumberOfOpenCreditLinesAndLoans": rng.poisson(8, n).astype(float),
            "NumberOfTimes90DaysLate": rng.poisson(0.15, n).astype(float),
            "NumberRealEstateLoansOrLines": rng.poisson(1, n).astype(float),
            "NumberOfTime60_89DaysPastDueNotWorse": rng.poisson(0.1, n).astype(float),
            "NumberOfDependents": rng.poisson(0.8, n).astype(float),
        }
    )
    df.loc[rng.random(n) < 0.15, "MonthlyIncome"] = np.nan
    df.loc[rng.random(n) < 0.02, "NumberOfDependents"] = np.nan
    logit = -3.0 + signal * (
        2.5 * df["RevolvingUtilizationOfUnsecuredLines"]
        - 0.03 * (df["age"] - 50)
        + 0.8 * df["NumberOfTime30_59DaysPastDueNotWorse"]
        + 1.2 * df["NumberOfTimes90DaysLate"]
    )
    df.insert(0, TARGET, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int))
    return df[[TARGET, *FEATURES]]


def write_kaggle_csv(df: pd.DataFrame, path: Path, id_column: str = "", line_ending: str = "\r\n") -> Path:
    """Write a frame the way Kaggle's file looks: hyphenated names, blank id column, NA, CRLF."""
    out = df.rename(columns=API_TO_CSV)
    out.insert(0, id_column, range(1, len(out) + 1))
    out.to_csv(path, index=False, na_rep="NA", lineterminator=line_ending)
    return path
