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

from labelq import keyspace
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
    assert services["flower"]["command"][:2] == ["labelq", "flower"]
    assert "LABELQ_FLOWER_BASIC_AUTH" in services["flower"]["environment"]


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
        argv = [sys.executable, "-m", "labelq.app.cli.main", *[c for c in command[1:] if not c.startswith("--")
                                                          and not c.isdigit()], "--help"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELQ_")}
    result = subprocess.run(argv, capture_output=True, env=env, timeout=120, cwd=ROOT)
    assert result.returncode == 0, (service, result.stderr.decode()[-2000:])


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((ROOT / "infra" / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _k8s_commands() -> list[tuple[str, list[str]]]:
    return [(d["metadata"]["name"], c["command"]) for d in k8s_documents() if d["kind"] == "Deployment"
            for c in d["spec"]["template"]["spec"]["containers"]]


def test_k8s_manifests_parse_and_keda_scales_real_deployments_on_real_queues() -> None:
    docs = k8s_documents()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert {"labelq-teacher", "labelq-student", "labelq-trainer", "labelq-flower"} <= set(deployments)
    student = deployments["labelq-student"]["spec"]["template"]["spec"]["containers"][0]
    assert student["resources"]["limits"]["nvidia.com/gpu"] == 1
    scaled = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    assert set(scaled) == {"labelq-teacher", "labelq-student"}
    settings = Settings()
    for name, obj in scaled.items():
        assert obj["spec"]["scaleTargetRef"]["name"] in deployments
        [trigger] = obj["spec"]["triggers"]
        queue = name.removeprefix("labelq-")
        assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == keyspace.queue(settings, queue)
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    unknown = {k for k in config["data"] if k.startswith("LABELQ_") and k[7:].lower() not in Settings.model_fields}
    assert not unknown


@pytest.mark.parametrize(("deployment", "command"), _k8s_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_k8s_commands_are_real_entry_points(deployment: str, command: list[str]) -> None:
    assert command[0] == "labelq"
    argv = [sys.executable, "-m", "labelq.app.cli.main", *[c for c in command[1:] if not c.startswith("--")
                                                      and not c.isdigit()], "--help"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELQ_")}
    result = subprocess.run(argv, capture_output=True, env=env, timeout=120, cwd=ROOT)
    assert result.returncode == 0, (deployment, result.stderr.decode()[-2000:])
