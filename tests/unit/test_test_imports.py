"""Tests share helpers through ``tests.support`` only: no test module imports ``conftest`` or
another test package, so moving or deleting one test never breaks another."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_tests_import_only_the_support_package() -> None:
    offenders = {}
    for path in TESTS.rglob("*.py"):
        bad = {m for m in imported_modules(path)
               if m.split(".")[0] == "conftest"
               or (m.startswith("tests.") and not m.startswith("tests.support"))}
        if bad:
            offenders[str(path.relative_to(TESTS))] = sorted(bad)
    assert offenders == {}
