"""docker-compose.yml and infra/: parse them; every command a real entry point, every setting real."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelq.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_has_the_services_the_architecture_names() -> None:
    services = compose()["services"]
    assert {"redis", "minio", "minio-bootstrap", "flower", "producer", "teacher", "student",
            "trainer", "prometheus"} <= set(services)
    redis_conf = (ROOT / "infra" / "redis.conf").read_text()
    assert "appendonly yes" in redis_conf and "appendfsync everysec" in redis_conf
    assert "maxmemory-policy noeviction" in redis_conf
    assert "healthcheck" in services["redis"]
    assert services["student"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert any("--basic-auth" in part for part in services["flower"]["command"])


def test_every_labelq_setting_in_compose_exists() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    names = set(re.findall(r"\bLABELQ_([A-Z0-9_]+)\b", text))
    assert names, "compose sets no LABELQ_ variables"
    unknown = {n for n in names if n.lower() not in Settings.model_fields}
    assert not unknown


def test_dockerfiles_exist_and_install_real_extras() -> None:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    services = compose()["services"]
    for name, service in services.items():
        build = service.get("build")
        if build:
            dockerfile = ROOT / build["dockerfile"]
            assert dockerfile.exists(), name
            for group in re.findall(r"\.\[([a-z0-9,\-]+)\]", dockerfile.read_text()):
                assert set(group.split(",")) <= extras, (name, group)
    cpu = (ROOT / "infra" / "Dockerfile.cpu").read_text()
    assert "student" not in cpu and "trainer]" not in cpu  # the CPU image pulls no torch


def _labelq_commands() -> list[tuple[str, list[str]]]:
    out = []
    for name, service in compose()["services"].items():
        command = service.get("command")
        if isinstance(command, list) and command and command[0] in {"labelq", "celery"}:
            out.append((name, command))
    return out


@pytest.mark.parametrize(("service", "command"), _labelq_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_compose_commands_are_real_entry_points(service: str, command: list[str]) -> None:
    if command[0] == "celery":
        pytest.importorskip("flower") if "flower" in command else None
        argv = [sys.executable, "-m", "celery", *command[1:3], command[3], "--help"]
    else:
        argv = [sys.executable, "-m", "labelq.cli.main", *[c for c in command[1:] if not c.startswith("--")
                                                          and not c.isdigit()], "--help"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELQ_")}
    result = subprocess.run(argv, capture_output=True, env=env, timeout=120, cwd=ROOT)
    assert result.returncode == 0, (service, result.stderr.decode()[-2000:])
