"""The promotion gate's rules: floor, champion, and the forced modes."""

from __future__ import annotations

from credit_risk.training.gate import Champion, decide

NO_CHAMPION = Champion()


def test_gate_promotes_a_first_model_that_clears_the_minimum():
    decision = decide("auto", 0.80, 0.75, NO_CHAMPION)
    assert decision.promote and "no version in Production" in decision.reason


def test_gate_rejects_a_model_below_the_minimum_even_without_a_champion():
    decision = decide("auto", 0.74, 0.75, NO_CHAMPION)
    assert decision.decision == "rejected"
    assert decision.reason == "test AUC 0.7400 is below the minimum 0.7500"


def test_gate_rejects_a_challenger_worse_than_the_champion_on_the_same_split():
    decision = decide("auto", 0.80, 0.75, Champion("4", 0.81, "Production version 4"))
    assert decision.decision == "rejected"
    assert "below Production version 4's 0.8100" in decision.reason


def test_gate_promotes_a_challenger_as_good_as_the_champion():
    decision = decide("auto", 0.81, 0.75, Champion("4", 0.81, "Production version 4"))
    assert decision.promote and "Production version 4's 0.8100" in decision.reason


def test_gate_names_every_failed_condition():
    decision = decide("auto", 0.70, 0.75, Champion("2", 0.86, "Production version 2"))
    assert "below the minimum" in decision.reason and "below Production version 2's" in decision.reason


def test_promote_never_skips_even_an_excellent_model():
    decision = decide("never", 0.99, 0.75, NO_CHAMPION)
    assert decision.decision == "skipped" and not decision.promote


def test_promote_always_promotes_below_the_minimum_and_the_champion():
    decision = decide("always", 0.55, 0.75, Champion("3", 0.9, "Production version 3"))
    assert decision.promote and "always" in decision.reason
