"""What the chaos scenarios share: a fleet of real worker processes to kill and restart,
the exactly-once tally of a run, and the results table behind docs/reliability.md.

The tally counts by content hash (two different sessions may carry the same
id): every session put in must end in exactly one label record or one worker
dead letter. ``lost`` is what ended in neither; ``duplicates`` is every extra
record or dead letter of a session beyond its first. A redriven letter
(``labelq deadletter redrive``) no longer counts as the session's end when the
tally is given the Redis client: its session went back through the pipeline
and ends in a label record or a new dead letter of its own.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from labelq import keyspace
from labelq.deadletter import LetterFilter, read_letters
from labelq.settings import Settings
from labelq.store import open_store
from tests.support.helpers import jsonl_objects, wait_until
from tests.support.worker_procs import ROOT, Fleet

__all__ = ["ROOT", "Fleet", "wait_until"]

POISON = "chaos-poison-pill"  # tests/support/crashy_app.py kills the process that meets it
RESULTS = Path(os.environ.get("LABELQ_CHAOS_RESULTS", ROOT / ".labelq" / "chaos" / "results.jsonl"))


def fake_adapter(tmp_path: Path) -> Path:
    """Adapter files for the registry; an OpenAI-protocol student server only records the path."""
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"r": 8}')
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    return folder


@dataclass
class Tally:
    sessions: int
    labelled: int
    dead_lettered: int
    lost: int
    duplicates: int
    unexpected: int  # records of sessions never put in (must be 0 too)
    dead_reasons: dict[str, int]
    redriven: int = 0  # letters sent back by a redrive, left out of the counts above

    @property
    def done(self) -> bool:
        return self.lost == 0


def tally(settings: Settings, expected_hashes: Iterable[str], client: redis.Redis | None = None) -> Tally:
    """Where every session put in ended: label records and worker dead letters, by content hash.

    With ``client``, letters marked redriven in Redis are left out (and counted in ``redriven``).
    """
    expected = set(expected_hashes)
    labels = [r["content_hash"] for r in jsonl_objects(settings, "labels/")]
    letters = [d for stage in ("teacher", "student") for d in jsonl_objects(settings, keyspace.dead_letters_prefix(stage))]
    redriven = 0
    if client is not None:
        stored = [s for stage in ("teacher", "student")
                  for s in read_letters(open_store(settings), client, settings, LetterFilter(stage=stage))]
        assert len(stored) == len(letters), "a dead-letter object did not read back as letters"
        letters = [s.letter.model_dump(mode="json") for s in stored if not s.redriven]
        redriven = len(stored) - len(letters)
    seen = Counter(labels) + Counter(str(d.get("content_hash")) for d in letters)
    return Tally(
        sessions=len(expected), labelled=len(labels), dead_lettered=len(letters),
        lost=len(expected - set(seen)), duplicates=sum(n - 1 for n in seen.values() if n > 1),
        unexpected=len(set(seen) - expected),
        dead_reasons=dict(Counter(str(d["reason"]) for d in letters)), redriven=redriven,
    )


def record_result(request: pytest.FixtureRequest, *, scenario: str, load: str, faults: str,
                  lost: int, duplicates: int, **extra: Any) -> None:
    """One row of docs/reliability.md's table, appended to ``LABELQ_CHAOS_RESULTS``."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    row = {"scenario": scenario, "load": load, "faults": faults, "lost": lost, "duplicates": duplicates,
           "command": f"pytest {request.node.nodeid}", "at": time.strftime("%Y-%m-%d %H:%M:%S"), **extra}
    with RESULTS.open("ab") as out:
        out.write(orjson.dumps(row) + b"\n")


def tally_row(t: Tally) -> dict[str, Any]:
    return {k: v for k, v in asdict(t).items() if k not in ("lost", "duplicates")}
