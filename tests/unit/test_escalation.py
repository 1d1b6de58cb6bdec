"""Which doubtful student answers go back to the teacher, and how many (workers/student/escalation.py):
in-process, with a scripted engine and a real redis-server (the bound is a Lua script there)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import redis

from labelq import keyspace
from labelq.engines import Adapter, Generation
from labelq.keyspace import Stat
from labelq.schemas import ChunkMessage, SessionItem
from labelq.settings import Settings
from labelq.store import open_store
from labelq.synth import generate
from tests.support.helpers import dead_letters
from tests.support.student import TASK, student_records
from tests.support.teacher import make_chunk
from workers.student import escalation
from workers.student.labeler import StudentRuntime, run_student_chunk

CONFIDENT = Generation("Searches shoes and pays by card", 0.9, 7)
TOO_LONG = Generation("one two three four five six seven eight nine", 0.95, 9)


class ScriptedEngine:
    """Answers the i-th prompt of every call with ``answers[i]``, the others with a confident label."""

    name, model = "scripted", "scripted"

    def __init__(self, answers: dict[int, Generation]) -> None:
        self.answers = answers

    def generate(self, prompts: list[str], adapter: Adapter | None, max_new_tokens: int,
                 json_schema: object = None) -> list[Generation]:
        return [self.answers.get(i, CONFIDENT) for i in range(len(prompts))]

    def close(self) -> None:
        pass


class Escalated:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, chunk: ChunkMessage, items: Sequence[SessionItem]) -> None:
        self.calls.append([s.session_id for s in items])


def student(settings: Settings, client: redis.Redis, answers: dict[int, Generation], **update: object) -> StudentRuntime:
    settings = settings.model_copy(update={"student_allow_base_model": True, "student_confidence_threshold": 0.5,
                                           **update})
    return StudentRuntime(settings, open_store(settings), client, backend_factory=lambda s: ScriptedEngine(answers))


def stats(settings: Settings, client: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(keyspace.stats(settings, TASK)).items()}  # type: ignore[union-attr]


def test_grant_is_bounded_by_the_share_of_sessions_seen_and_the_same_on_redelivery(
        settings: Settings, redis_client: redis.Redis) -> None:
    def grant(chunk_id: str, sessions: int, candidates: int) -> int:
        return escalation.grant(settings, redis_client, TASK, chunk_id, sessions=sessions, candidates=candidates,
                                share=0.25)

    assert grant("a", 10, 10) == 2  # floor(0.25 x 10)
    assert grant("b", 10, 1) == 1  # 5 allowed after 20 sessions, 2 granted, only 1 candidate
    assert grant("c", 2, 5) == 2  # floor(0.25 x 22) = 5, minus the 3 granted
    assert escalation.counts(settings, redis_client, TASK) == {"seen": 22, "granted": 5}
    assert grant("a", 10, 10) == 2  # a redelivered chunk: the same answer, nothing counted again
    assert escalation.counts(settings, redis_client, TASK) == {"seen": 22, "granted": 5}
    assert escalation.grant(settings, redis_client, TASK, "d", sessions=100, candidates=100, share=0.0) == 0


def test_the_worst_answers_escalate_first_within_the_bound_and_the_rest_are_kept(
        settings: Settings, redis_client: redis.Redis) -> None:
    sessions = list(generate(8, seed=80))
    ids = [str(s["session_id"]) for s in sessions]
    answers = {1: Generation("Searches shoes", 0.2, 2), 2: TOO_LONG, 3: Generation("Searches shoes", 0.4, 2),
               4: Generation("Searches shoes", None, 2)}
    rt = student(settings, redis_client, answers, student_escalation_share=0.25)
    chunk = make_chunk(sessions, route="steady")
    escalate = Escalated()
    result = run_student_chunk(rt, chunk, escalate)
    # 3 doubtful (a contract breach, confidences 0.2 and 0.4), 2 allowed (a quarter of 8): the breach and
    # the least confident go; the 0.4 answer is kept, flagged. No confidence counts as confident.
    assert escalate.calls == [[ids[1], ids[2]]]
    assert result.escalated == 2 and result.labelled == 6 and result.dead_lettered == 0
    records = {r.session_id: r for r in student_records(rt.settings)}
    assert sorted(records) == sorted(ids[:1] + ids[3:])
    assert [sid for sid, r in records.items() if "low_confidence" in r.flags] == [ids[3]]
    assert all("base_model" in r.flags for r in records.values())
    counted = stats(rt.settings, redis_client)
    assert counted[Stat.LABELLED_STUDENT] == 6 and counted[Stat.ESCALATED_STUDENT] == 2

    again = Escalated()
    run_student_chunk(rt, chunk, again)  # redelivered: the same sessions escalate, nothing counted twice
    assert again.calls == escalate.calls and stats(rt.settings, redis_client) == counted

    more = Escalated()  # a chunk of 8 contract breaches, on the same task
    breaches = student(settings, redis_client, dict.fromkeys(range(8), TOO_LONG), student_escalation_share=0.25)
    run_student_chunk(breaches, make_chunk(list(generate(8, seed=81)), route="steady"), more)
    # A quarter of the 16 seen, less the 2 granted before, by the share; the other 6 breaches wait
    # for the teacher all the same (a broken answer is never a label and never a dead letter).
    assert sum(map(len, more.calls)) == 8
    assert dead_letters(rt.settings, "student") == []
    assert escalation.counts(rt.settings, redis_client, TASK) == {"seen": 16, "granted": 4}


@pytest.mark.parametrize("why", ["teacher paused", "escalated chunk"])
def test_nothing_escalates_when_the_teacher_cannot_take_it(
        settings: Settings, redis_client: redis.Redis, why: str) -> None:
    sessions = list(generate(4, seed=90))
    ids = [str(s["session_id"]) for s in sessions]
    rt = student(settings, redis_client, {0: TOO_LONG, 1: Generation("Searches shoes", 0.1, 2)},
                 student_escalation_share=1.0)
    if why == "teacher paused":  # the budget is spent: low-confidence labels are kept, flagged
        redis_client.set(keyspace.teacher_paused(rt.settings, TASK), '{"reason": "budget", "since": 0}')
    escalate = Escalated()
    chunk = make_chunk(sessions, route="escalation" if why == "escalated chunk" else "steady")
    result = run_student_chunk(rt, chunk, escalate)
    if why == "teacher paused":  # the breach waits for the teacher; nothing else goes to it
        assert escalate.calls == [ids[:1]] and result.escalated == 1
        assert dead_letters(rt.settings, "student") == []
    else:  # a chunk the teacher sent back is never escalated again
        assert escalate.calls == [] and result.escalated == 0
        assert [d["reason"] for d in dead_letters(rt.settings, "student")] == ["student_too_many_words"]
    records = {r.session_id: r for r in student_records(rt.settings)}
    assert sorted(records) == sorted(ids[1:]) and "low_confidence" in records[ids[1]].flags


@pytest.mark.parametrize("calibration", [{"calibrated": True, "threshold": 0.3},
                                         {"calibrated": False, "threshold": 0.3}, None])
def test_an_adapter_s_calibrated_threshold_replaces_the_setting(
        settings: Settings, redis_client: redis.Redis, calibration: dict[str, object] | None) -> None:
    """The trainer records a threshold in the version's metrics.json; students use it when calibrated, the
    setting (0.5 here) otherwise (a failed calibration, or an adapter written before calibration)."""
    import orjson

    from labelq.keyspace import AdapterFile

    sessions = list(generate(4, seed=91))
    ids = [str(s["session_id"]) for s in sessions]
    rt = student(settings, redis_client, {1: Generation("Searches shoes", 0.2, 2),
                                          2: Generation("Searches shoes", 0.4, 2)},
                 student_escalation_share=1.0)
    rt.store.put_bytes(keyspace.adapter_file(TASK, 3, AdapterFile.METRICS),
                       orjson.dumps({"version": 3, "calibration": calibration}))
    escalate = Escalated()
    adapter = Adapter(TASK, 3, "/nowhere", 1)  # the scripted engine loads nothing
    run_student_chunk(rt, make_chunk(sessions, route="steady"), escalate, adapter=adapter)
    calibrated = calibration is not None and calibration["calibrated"]
    assert rt.confidence_threshold(adapter) == (0.3 if calibrated else 0.5)
    assert rt.confidence_threshold(None) == 0.5
    # 0.2 is doubtful under both thresholds; 0.4 only under the setting's 0.5
    assert escalate.calls == ([[ids[1]]] if calibrated else [[ids[1], ids[2]]])
