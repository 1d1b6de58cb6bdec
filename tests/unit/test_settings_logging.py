from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from labelq.errors import ConfigError
from labelq.logging import bind, configure, get_logger, scrub_text
from labelq.masking import masked_dump
from labelq.settings import Settings, load_settings


def test_env_prefix_and_toml_sections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "labelq.toml"
    conf.write_text('chunk_size = 10\nsession_id_field = "meta.id"\n[queue]\nhigh_water_chunks = 7\n')
    monkeypatch.setenv("LABELQ_CONFIG_FILE", str(conf))
    monkeypatch.setenv("LABELQ_CHUNK_SIZE", "20")  # the environment beats the file
    s = Settings()
    assert s.chunk_size == 20
    assert s.session_id_field == "meta.id"
    assert s.queue_high_water_chunks == 7


def test_unknown_and_invalid_settings_are_clear(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text("chunk_sise = 3\n")
    with pytest.raises(ConfigError, match="chunk_sise"):
        load_settings(conf)
    with pytest.raises(ConfigError, match="store_url"):
        load_settings(None, store_url="ftp://x")


def test_memory_waters_and_dedupe_buckets_are_checked() -> None:
    with pytest.raises(ConfigError, match="redis_memory_low_water"):
        load_settings(redis_memory_high_water=0.6, redis_memory_low_water=0.7)
    with pytest.raises(ConfigError, match="lengthen the buckets"):
        load_settings(dedupe_window_days=30, dedupe_bucket_s=60)  # 43,200 sets to look up
    assert load_settings(dedupe_window_days=365).dedupe_bucket_s == 6 * 86_400  # 61 buckets: fine


def test_masked_dump_hides_secrets() -> None:
    s = Settings(redis_url="redis://:hunter2pass@10.0.0.1:6379/0")  # type: ignore[arg-type]
    dumped = masked_dump(s)
    assert "hunter2pass" not in orjson.dumps(dumped).decode()
    assert dumped["redis_url"] == "redis://:***@10.0.0.1:6379/0"


def test_json_logs_bind_ids_and_scrub_secrets() -> None:
    out = io.StringIO()
    configure("INFO", "json", stream=out)
    with bind(task_id="t1", chunk_id="c1", session_id=None):
        get_logger("x").info("hello", api_key="sk-abcdefghijklmnop", url="redis://:pw123456@h:1/0")
    line = orjson.loads(out.getvalue().strip().splitlines()[-1])
    assert line["task_id"] == "t1" and line["chunk_id"] == "c1" and "session_id" not in line
    assert line["api_key"] == "***"
    assert "pw123456" not in line["url"]
    assert "abcdefghijklmnop" not in scrub_text("key sk-abcdefghijklmnop here")
