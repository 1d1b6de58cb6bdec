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
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "labelq-config")
    unknown = {k for k in config["data"] if k.startswith("LABELQ_") and k[7:].lower() not in Settings.model_fields}
    assert not unknown


def _seconds(value: str | int) -> int:
    """A compose duration (``3660s``, ``1h1m``) or a number of seconds."""
    if isinstance(value, int):
        return value
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([hms])", value))


def test_scale_down_lets_the_longest_chunk_finish() -> None:
    """SIGTERM starts Celery's warm shutdown (the chunk in hand is finished); SIGKILL comes after the grace
    period. No chunk runs longer than the visibility timeout, so the grace period must be above it."""
    docs = k8s_documents()
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "labelq-config")
    visibility_s = Settings(visibility_timeout_s=int(config["data"]["LABELQ_VISIBILITY_TIMEOUT_S"])).visibility_timeout_s
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    scaled = [d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "ScaledObject"]
    assert set(scaled) == {"labelq-teacher", "labelq-student"}
    for name in scaled:
        pod = deployments[name]["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > visibility_s, name
        for container in pod["containers"]:  # REMAP_SIGTERM would make SIGTERM a cold shutdown
            assert "REMAP_SIGTERM" not in {e["name"] for e in container.get("env", [])}, name
            assert container["command"][:3] == ["labelq", "worker", name.removeprefix("labelq-")]
    assert "REMAP_SIGTERM" not in config["data"]
    services = compose()["services"]
    compose_visibility_s = int(_service_env(services["teacher"]).get("LABELQ_VISIBILITY_TIMEOUT_S",
                                                                     Settings().visibility_timeout_s))
    for name in ("teacher", "student"):
        assert _seconds(services[name]["stop_grace_period"]) > compose_visibility_s, name


def test_keda_counts_only_chunks_that_can_be_served() -> None:
    """The student trigger reads the queue workers consume; parked chunks (no adapter yet) live in another
    list (tests/integration/test_parking.py: parked, the queue reads 0)."""
    settings = Settings()
    [student] = [d for d in k8s_documents() if d["kind"] == "ScaledObject"
                 and d["metadata"]["name"] == "labelq-student"]
    list_name = student["spec"]["triggers"][0]["metadata"]["listName"]
    assert list_name == keyspace.queue(settings, "student")
    assert keyspace.parked(settings, "student", "session-label") != list_name
    assert not keyspace.parked(settings, "student", "session-label").startswith(list_name + ":")


@pytest.mark.parametrize(("deployment", "command"), _k8s_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_k8s_commands_are_real_entry_points(deployment: str, command: list[str]) -> None:
    assert command[0] == "labelq"
    argv = [sys.executable, "-m", "labelq.app.cli.main", *[c for c in command[1:] if not c.startswith("--")
                                                      and not c.isdigit()], "--help"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELQ_")}
    result = subprocess.run(argv, capture_output=True, env=env, timeout=120, cwd=ROOT)
    assert result.returncode == 0, (deployment, result.stderr.decode()[-2000:])


# --- locked down by default (issue 14, point 8) ---------------------------------------------------

def _directives(conf: str) -> dict[str, str]:
    """A redis.conf as directive -> value (the last one wins, as in redis-server)."""
    out = {}
    for line in conf.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.strip().partition(" ")
            out[name.lower()] = value.strip()
    return out


def _bytes(size: str) -> int:
    """``3gb`` (redis.conf: gb is GiB, g is 10^9) or ``4Gi`` (Kubernetes) in bytes."""
    number, unit = re.fullmatch(r"(\d+)\s*([a-zA-Z]*)", size).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1000, "m": 10**6, "g": 10**9, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30,
                          "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30}[unit.lower()]


def test_redis_has_a_memory_ceiling_that_fits_its_container() -> None:
    """maxmemory with noeviction (writes refused, never a queued message evicted), below the k8s limit
    with room for an AOF rewrite's fork and client buffers."""
    conf = _directives((ROOT / "infra" / "redis.conf").read_text())
    assert conf["maxmemory-policy"] == "noeviction" and _bytes(conf["maxmemory"]) > 0
    [redis_set] = [d for d in k8s_documents() if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "redis"]
    [container] = redis_set["spec"]["template"]["spec"]["containers"]
    assert _bytes(conf["maxmemory"]) <= 0.8 * _bytes(container["resources"]["limits"]["memory"])


def test_redis_conf_never_runs_open() -> None:
    conf = _directives((ROOT / "infra" / "redis.conf").read_text())
    assert conf.get("protected-mode") == "yes"  # also stops the image's entrypoint adding "no"
    # It binds beyond loopback, so the password must come from the start script (never the file).
    assert conf["bind"] != "127.0.0.1" and "requirepass" not in conf
    start = (ROOT / "infra" / "redis-start.sh").read_text()
    assert "REDIS_PASSWORD" in start and "requirepass $password" in start and 'exec "$@" -' in start


def _service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(env) if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


def test_compose_redis_requires_a_password_and_workers_carry_it() -> None:
    services = compose()["services"]
    redis_service = services["redis"]
    assert redis_service["command"][:2] == ["/bin/sh", "/usr/local/etc/redis/redis-start.sh"]
    assert redis_service["command"][-2:] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in redis_service["volumes"] if m.startswith("./")}
    assert mounts == {"./infra/redis.conf": "/usr/local/etc/redis/redis.conf",
                      "./infra/redis-start.sh": "/usr/local/etc/redis/redis-start.sh"}
    # ${VAR:?...}: compose itself refuses to start without it (no empty default).
    assert _service_env(redis_service)["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert "REDISCLI_AUTH" in " ".join(redis_service["healthcheck"]["test"])
    for name, service in services.items():
        url = _service_env(service).get("LABELQ_REDIS_URL")
        if service.get("image", "").startswith("labelq") or url:
            assert url is not None and url.startswith("redis://:${REDIS_PASSWORD:?"), name


def _published(port: str | int | dict[str, Any]) -> tuple[str, str]:
    """(host address, host port) of a compose port entry; address "" means every interface."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "")), str(port.get("published", ""))
    parts = str(port).split(":")
    return (parts[0], parts[1]) if len(parts) == 3 else ("", parts[0] if len(parts) == 2 else "")


def test_compose_publishes_nothing_beyond_localhost() -> None:
    published = {name: [_published(p) for p in service.get("ports", [])]
                 for name, service in compose()["services"].items() if service.get("ports")}
    assert published == {"flower": [("127.0.0.1", "5555")], "prometheus": [("127.0.0.1", "9090")]}
    # Host networking would publish every port a container opens, on every interface.
    assert not [name for name, s in compose()["services"].items() if s.get("network_mode") == "host"]


def test_compose_metrics_are_authenticated_and_prometheus_scrapes_with_the_secret() -> None:
    data = compose()
    env = data["x-labelq-env"]
    # On the compose network, so a password is required (compose refuses to start without it).
    assert env["LABELQ_METRICS_HOST"] == "0.0.0.0"
    assert env["LABELQ_METRICS_PASSWORD"].startswith("${METRICS_PASSWORD:?")
    assert "LABELQ_METRICS_ALLOW_UNAUTHENTICATED" not in (ROOT / "docker-compose.yml").read_text()
    prometheus = data["services"]["prometheus"]
    assert prometheus["secrets"] == ["metrics_password"]
    assert data["secrets"]["metrics_password"] == {"environment": "METRICS_PASSWORD"}
    [job] = yaml.safe_load((ROOT / "infra" / "prometheus.yml").read_text())["scrape_configs"]
    assert job["basic_auth"] == {"username": env["LABELQ_METRICS_USER"],
                                 "password_file": "/run/secrets/metrics_password"}
    port = env["LABELQ_METRICS_PORT"]
    assert all(t.endswith(f":{port}") and t.split(":")[0] in data["services"]
               for t in job["static_configs"][0]["targets"])


def test_env_example_names_every_required_compose_variable() -> None:
    required = set(re.findall(r"\$\{([A-Z_]+):\?", (ROOT / "docker-compose.yml").read_text()))
    assert {"REDIS_PASSWORD", "METRICS_PASSWORD", "FLOWER_PASSWORD"} <= required
    example = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert required <= example


def test_k8s_redis_requires_the_secret_password_and_copies_infra_files() -> None:
    docs = k8s_documents()
    [redis_config] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "labelq-redis"]
    assert redis_config["data"]["redis.conf"] == (ROOT / "infra" / "redis.conf").read_text()
    assert redis_config["data"]["redis-start.sh"] == (ROOT / "infra" / "redis-start.sh").read_text()
    [redis_set] = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "redis"]
    [container] = redis_set["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/bin/sh", "/usr/local/etc/redis/redis-start.sh"]
    assert container["args"][-2:] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    [password] = [e for e in container["env"] if e["name"] == "REDIS_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": "labelq-secrets", "key": "REDIS_PASSWORD"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert services["redis"]["spec"]["selector"] == redis_set["spec"]["template"]["metadata"]["labels"]
    # KEDA reads the queues on that Service, with the same password.
    for obj in (d for d in docs if d["kind"] == "ScaledObject"):
        assert obj["spec"]["triggers"][0]["metadata"]["address"] == "redis.labelq.svc:6379"
    [auth] = [d for d in docs if d["kind"] == "TriggerAuthentication"]
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "labelq-secrets",
                                               "key": "REDIS_PASSWORD"}]


def test_k8s_exposes_nothing_without_auth() -> None:
    docs = k8s_documents()
    assert not [d for d in docs if d["kind"] in ("Ingress", "Route")]
    services = [d for d in docs if d["kind"] == "Service"]
    assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in services)
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "labelq-config")
    # Metrics listen on the pod network: the settings refuse that without LABELQ_METRICS_PASSWORD,
    # which lives in the Secret, not in the ConfigMap.
    assert config["data"]["LABELQ_METRICS_HOST"] == "0.0.0.0"
    assert "LABELQ_METRICS_PASSWORD" not in config["data"]
    assert "LABELQ_METRICS_ALLOW_UNAUTHENTICATED" not in config["data"]
    workers = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for name, deployment in workers.items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            sources = {next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]}
            assert sources == {"configMapRef": "labelq-config", "secretRef": "labelq-secrets"}, name
    with pytest.raises(ValueError, match="LABELQ_METRICS_PASSWORD"):
        Settings(metrics_port=int(config["data"]["LABELQ_METRICS_PORT"]),
                 metrics_host=config["data"]["LABELQ_METRICS_HOST"])


@pytest.mark.parametrize(("password", "why"), [
    (None, b"REDIS_PASSWORD is not set"), ("", b"REDIS_PASSWORD is not set"),
    ("has space and 16+ chars", b"only letters"), ("p@ss/word#0123456789", b"only letters"),
    ("short-0123", b"shorter than 16"),
])
def test_redis_start_script_refuses_a_missing_or_unusable_password(password: str | None, why: bytes) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_PASSWORD"}
    if password is not None:
        env["REDIS_PASSWORD"] = password
    # `cat` stands in for redis-server: it would print the config it was handed on stdin.
    done = subprocess.run(["sh", str(ROOT / "infra" / "redis-start.sh"), "cat"], env=env, capture_output=True,
                          timeout=30)
    assert done.returncode == 2 and why in done.stderr and not done.stdout


def test_redis_start_script_hands_the_password_on_stdin_only() -> None:
    password = "Ab0-._~" + "x" * 20
    # `sh -c` stands in for redis-server: it shows its arguments, environment and stdin (the "-").
    show = 'printf "args:%s\\n" "$*"; env | grep -c REDIS_PASSWORD; cat'
    done = subprocess.run(["sh", str(ROOT / "infra" / "redis-start.sh"), "sh", "-c", show, "redis-server"],
                          env={**os.environ, "REDIS_PASSWORD": password}, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    # Not in the arguments, not in the environment (0 lines matched): only on stdin.
    assert done.stdout.decode().splitlines() == ["args:-", "0", f"requirepass {password}"]
