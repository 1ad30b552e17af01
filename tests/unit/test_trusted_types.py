"""Our skops trusted-type list covers every candidate pipeline."""

from __future__ import annotations

import pytest
import skops.io

from credit_risk.model_io import TRUSTED_TYPES
from credit_risk.training.candidates import CANDIDATES


@pytest.mark.parametrize("candidate", [c.name for c in CANDIDATES])
def test_trusted_types_cover_every_candidate(fitted_candidates, candidate):
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(fitted_candidates[candidate]))
    # Not vacuous: our own transformer is never trusted by skops' defaults.
    assert "credit_risk.features.CreditFeatures" in untrusted
    assert set(untrusted) <= set(TRUSTED_TYPES), set(untrusted) - set(TRUSTED_TYPES)
