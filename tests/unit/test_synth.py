from __future__ import annotations

from collections import Counter

from labelq.synth import JOURNEYS, REFERENCE_FIELD, generate


def test_at_least_twenty_journeys_with_short_labels() -> None:
    assert len(JOURNEYS) >= 20
    sessions = list(generate(3_000, seed=7))
    journeys = Counter(s[REFERENCE_FIELD]["journey"] for s in sessions)
    assert len(journeys) == len(JOURNEYS)
    for s in sessions:
        label = s[REFERENCE_FIELD]["label"]
        assert 1 <= len(label.split()) <= 8, label
        assert s["events"], s
        for event in s["events"]:
            assert {"type", "ts"} <= set(event)


def test_same_seed_same_sessions_and_ids_unique() -> None:
    a = list(generate(200, seed=3))
    assert a == list(generate(200, seed=3))
    assert a != list(generate(200, seed=4))
    assert len({s["session_id"] for s in a}) == 200


def test_noise_is_present_and_labels_name_visible_content() -> None:
    sessions = list(generate(2_000, seed=11))
    kinds = Counter(e["type"] for s in sessions for e in s["events"])
    assert kinds["navigate"] and kinds["visibility"] and kinds["scroll"]
    for s in sessions:
        if s[REFERENCE_FIELD]["journey"] == "search_and_buy":
            query = next(e["value"] for e in s["events"] if e["type"] == "input")
            assert query in s[REFERENCE_FIELD]["label"]
