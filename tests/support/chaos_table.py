"""Print docs/reliability.md's results table from the rows the chaos tests appended.

    pytest tests/chaos && python -m tests.support.chaos_table

Rows come from ``LABELQ_CHAOS_RESULTS`` (default ``.labelq/chaos/results.jsonl``);
the latest row of each scenario is shown.
"""

from __future__ import annotations

import orjson

from tests.support.chaos import RESULTS


def main() -> None:
    latest: dict[str, dict[str, object]] = {}
    for line in RESULTS.read_bytes().splitlines():
        row = orjson.loads(line)
        latest[row["scenario"]] = row
    print("| scenario | load | faults | dead-lettered | lost | duplicates | seconds | command |")
    print("|---|---|---|---|---|---|---|---|")
    for row in latest.values():
        print(f"| {row['scenario']} | {row['load']} | {row['faults']} | {row.get('dead_lettered', '-')} "
              f"| {row['lost']} | {row['duplicates']} | {row.get('seconds', '')} | `{row['command']}` |")


if __name__ == "__main__":
    main()
