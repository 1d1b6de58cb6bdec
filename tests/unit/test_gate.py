from trainer.gate import gate

GOOD = {"exact_match": 0.8, "cosine": 0.92, "within_contract": 1.0}


def test_first_adapter_is_promoted() -> None:
    assert gate(GOOD, None, margin_exact=0, margin_cosine=0) == (True, "no adapter serves yet")


def test_worse_adapter_is_refused_with_reasons() -> None:
    worse = {"exact_match": 0.7, "cosine": 0.93, "within_contract": 0.99}
    ok, why = gate(worse, GOOD, margin_exact=0.0, margin_cosine=0.0)
    assert not ok and "exact_match 0.700 < 0.800" in why and "within_contract" in why and "cosine" not in why


def test_margins_allow_small_regressions() -> None:
    slightly = {"exact_match": 0.79, "cosine": 0.915, "within_contract": 1.0}
    assert gate(slightly, GOOD, margin_exact=0.02, margin_cosine=0.01)[0]
    assert not gate(slightly, GOOD, margin_exact=0.0, margin_cosine=0.01)[0]
