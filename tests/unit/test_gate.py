from trainer.evaluate import EvalScores
from trainer.gate import GateDecision, gate


def scores(exact_match: float, cosine: float, within_contract: float) -> EvalScores:
    return EvalScores(n=100, exact_match=exact_match, cosine=cosine, within_contract=within_contract,
                      mean_words=6.0)


GOOD = scores(0.8, 0.92, 1.0)


def test_first_adapter_is_promoted() -> None:
    assert gate(GOOD, None, margin_exact=0, margin_cosine=0) == GateDecision(True, "no adapter serves yet")


def test_worse_adapter_is_refused_with_reasons() -> None:
    worse = scores(0.7, 0.93, 0.99)
    decision = gate(worse, GOOD, margin_exact=0.0, margin_cosine=0.0)
    assert not decision.promote
    assert "exact_match 0.700 < 0.800" in decision.why and "within_contract" in decision.why
    assert "cosine" not in decision.why


def test_margins_allow_small_regressions() -> None:
    slightly = scores(0.79, 0.915, 1.0)
    assert gate(slightly, GOOD, margin_exact=0.02, margin_cosine=0.01).promote
    assert not gate(slightly, GOOD, margin_exact=0.0, margin_cosine=0.01).promote
