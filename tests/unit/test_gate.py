"""The promotion gate (trainer/gate.py) and golden sets (trainer/golden.py): pure."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from labelq.errors import ConfigError
from labelq.spec import load_spec
from trainer.evaluate import EvalScores
from trainer.gate import Floors, GateCheck, GoldenOutcome, gate
from trainer.golden import GoldenCase, golden_path, judge, judge_all, load_golden


def scores(exact_match: float, cosine: float, within_contract: float) -> EvalScores:
    return EvalScores(n=100, exact_match=exact_match, cosine=cosine, within_contract=within_contract,
                      mean_words=6.0)


GOOD = scores(0.8, 0.92, 1.0)
NO_FLOORS = Floors(0.0, 0.0, 0.0)
FLOORS = Floors(exact_match=0.3, cosine=0.85, within_contract=0.95)


def test_first_adapter_is_promoted_above_the_floors_with_every_check_recorded() -> None:
    decision = gate(GOOD, None, floors=FLOORS, margin_exact=0, margin_cosine=0)
    assert decision.promote and "no adapter serves yet" in decision.why and "no golden set" in decision.why
    assert [c.name for c in decision.checks] == ["floor_exact_match", "floor_cosine", "floor_within_contract",
                                                 "golden", "serving"]
    assert decision.checks[0] == GateCheck("floor_exact_match", True, 0.8, ">=", 0.3)
    assert decision.checks[3].value is None and decision.checks[3].line() == "golden: skipped (no golden set)"


def test_a_first_adapter_below_a_floor_is_refused() -> None:
    decision = gate(scores(0.9, 0.8, 1.0), None, floors=FLOORS, margin_exact=0, margin_cosine=0)
    assert not decision.promote
    assert decision.why == "refused: floor_cosine 0.800 < 0.850"
    assert [c.name for c in decision.checks if not c.passed] == ["floor_cosine"]


def test_worse_adapter_is_refused_with_reasons() -> None:
    worse = scores(0.7, 0.93, 0.99)
    decision = gate(worse, GOOD, floors=NO_FLOORS, margin_exact=0.0, margin_cosine=0.0, serving_version=4)
    assert not decision.promote
    failed = {c.name: c for c in decision.checks if not c.passed}
    assert sorted(failed) == ["serving_exact_match", "serving_within_contract"]
    assert failed["serving_exact_match"].line() == "serving_exact_match 0.700 < 0.800 (serving v4 0.800 - margin 0.000)"
    assert "cosine" not in decision.why


def test_margins_allow_small_regressions() -> None:
    slightly = scores(0.79, 0.915, 1.0)
    assert gate(slightly, GOOD, floors=NO_FLOORS, margin_exact=0.02, margin_cosine=0.01).promote
    assert not gate(slightly, GOOD, floors=NO_FLOORS, margin_exact=0.0, margin_cosine=0.01).promote


def test_golden_cases_must_pass_at_the_minimum_share() -> None:
    one_miss = GoldenOutcome(total=10, failures=("refund: 'Buys a gift card' does not mention 'refund'",))
    passed = gate(GOOD, None, floors=FLOORS, margin_exact=0, margin_cosine=0, golden=one_miss, golden_min_share=0.9)
    assert passed.promote and "golden 9/10" in passed.why
    refused = gate(GOOD, None, floors=FLOORS, margin_exact=0, margin_cosine=0, golden=one_miss, golden_min_share=1.0)
    assert not refused.promote
    [check] = [c for c in refused.checks if not c.passed]
    assert (check.name, check.value, check.threshold) == ("golden", 0.9, 1.0)
    assert "9/10 cases; failed: refund: 'Buys a gift card' does not mention 'refund'" in check.note
    many = GoldenOutcome(total=10, failures=tuple(f"case{i}: wrong" for i in range(8)))
    note = gate(GOOD, None, floors=FLOORS, margin_exact=0, margin_cosine=0, golden=many).checks[3].note
    assert "case4: wrong" in note and "case5" not in note and "3 more" in note


SPEC = load_spec("session-label")


def case(**fields: object) -> GoldenCase:
    return GoldenCase.model_validate({"name": "c", "session": {"events": []}, **fields})


@pytest.mark.parametrize(("expect", "answer", "why"), [
    ({"label": "Tracks delivery status of an order"}, "tracks delivery status of an order.", None),
    ({"label": "Tracks delivery status of an order"}, "Tracks an order", "'Tracks an order' is not"),
    ({"rules": [{"mentions": "refund"}]}, "Contacts support chat about Refund status", None),
    ({"rules": [{"mentions": "refund"}]}, "Contacts support chat about late delivery", "does not mention 'refund'"),
    ({"rules": [{"not_mentions": "chat"}]}, "Contacts support chat about refund status", "mentions 'chat'"),
    ({"rules": [{"max_words": 4}]}, "Buys a 200 dollar gift card", "more than 4 words"),
    ({"rules": [{"mentions": "gift card"}]}, "one two three four five six seven eight nine", "outside the contract"),
])
def test_golden_rules(expect: dict[str, object], answer: str, why: str | None) -> None:
    verdict = judge(case(**expect), answer, SPEC.contract)
    assert verdict == why if why is None else why in (verdict or "")


def test_golden_outcome_names_the_failed_cases() -> None:
    cases = [case(name="a", label="Deletes the account permanently"), case(name="b", rules=[{"max_words": 3}])]
    outcome = judge_all(cases, ["Deletes the account permanently", "Subscribes to the newsletter"], SPEC.contract)
    assert outcome.total == 2 and outcome.passed == 1
    assert outcome.failures == ("b: 'Subscribes to the newsletter' has more than 3 words",)


def test_golden_file_beside_the_spec_missing_and_malformed(tmp_path: Path) -> None:
    assert golden_path("session-label", None).name == "session-label.golden.jsonl"
    shipped = load_golden(golden_path("session-label", None))
    assert shipped is not None and len(shipped) >= 10
    spec_file = tmp_path / "session-label.toml"  # a user spec wins, and brings its own golden set (or none)
    spec_file.write_text((Path(__file__).parents[2] / "labelq/specs/session-label.toml").read_text())
    assert golden_path("session-label", tmp_path) == tmp_path / "session-label.golden.jsonl"
    assert load_golden(golden_path("session-label", tmp_path)) is None
    good = orjson.dumps({"name": "a", "session": {}, "label": "x"}).decode()
    bad_lines = {
        "{not json": "line 2 is not JSON",
        orjson.dumps({"name": "b", "session": {}}).decode(): "line 2 is invalid",  # no expectation
        orjson.dumps({"name": "b", "session": {}, "rules": [{"mentions": "a", "max_words": 2}]}).decode():
            "line 2 is invalid",
        orjson.dumps({"name": "b", "session": {}, "rules": [{"says": "a"}]}).decode(): "line 2 is invalid",
        good: "line 2: case name 'a' is used twice",
    }
    path = tmp_path / "session-label.golden.jsonl"
    for line, message in bad_lines.items():
        path.write_text(f"{good}\n{line}\n")
        with pytest.raises(ConfigError, match=message) as err:
            load_golden(path)
        assert str(path) in str(err.value)
    path.write_text("\n\n")
    with pytest.raises(ConfigError, match="has no cases"):
        load_golden(path)
