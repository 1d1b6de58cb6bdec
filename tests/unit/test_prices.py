"""Every teacher call is priced, and only a teacher chosen on purpose runs: prices, snapshots, overrides
from the environment and TOML, reasoning tokens, keys, the replay backend. In-process, no services."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from labelq.errors import ConfigError
from labelq.ledger import model_price, price_usd
from labelq.settings import DEFAULT_PRICES, PRICES_AS_OF, Settings, load_settings
from workers.teacher.preflight import check_teacher
from workers.teacher.reasoning import usage_tokens

FAMILIES = ["gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini", "gpt-5", "gpt-5-mini",
            "gpt-5-nano", "o1", "o1-mini", "o3", "o3-mini", "o4-mini"]


def test_the_default_table_prices_todays_openai_families_with_their_date() -> None:
    assert set(FAMILIES) <= set(DEFAULT_PRICES)
    assert all(p_in > 0 and p_out > 0 for p_in, p_out in DEFAULT_PRICES.values())
    assert PRICES_AS_OF in Settings.model_fields["teacher_prices"].description  # type: ignore[operator]


@pytest.mark.parametrize(("model", "family"), [
    ("gpt-4o-2024-11-20", "gpt-4o"),
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # the longest family: never gpt-4o's price
    ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
    ("gpt-4.1-2025-04-14", "gpt-4.1"),
    ("o3-mini-2025-01-31", "o3-mini"),
    ("gpt-5-nano-2025-08-07", "gpt-5-nano"),
    ("gpt-4-0613", "gpt-4"),
])
def test_dated_snapshots_take_their_familys_price(model: str, family: str) -> None:
    assert model_price(Settings(), model) == DEFAULT_PRICES[family]


@pytest.mark.parametrize("model", ["my-azure-gpt4o", "gpt-4o-realtime-preview", "gpt-4o-2024-11-20-x",
                                   "llama-3.1-70b", "o5"])
def test_an_unpriced_model_raises_naming_the_setting_never_costs_zero(model: str) -> None:
    with pytest.raises(ConfigError) as raised:
        price_usd(Settings(teacher_model=model), model, 1000, 100)
    message = str(raised.value)
    assert model in message and "LABELQ_TEACHER_PRICES" in message and "[teacher.prices]" in message
    # Not even when the configured teacher model is priced: the old fallback priced strangers like it.
    with pytest.raises(ConfigError):
        price_usd(Settings(teacher_model="gpt-4o"), model, 1000, 100)


def test_prices_from_the_environment_add_to_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELQ_TEACHER_PRICES", '{"my-azure-gpt4o": [2.5, 10], "gpt-4o": [3, 12]}')
    s = Settings()
    assert model_price(s, "my-azure-gpt4o") == (2.5, 10.0)
    assert model_price(s, "gpt-4o-2024-11-20") == (3.0, 12.0)  # an override reaches the snapshots too
    assert model_price(s, "o3") == DEFAULT_PRICES["o3"]  # the rest of the table stays
    assert price_usd(s, "my-azure-gpt4o", 1_000_000, 1_000_000) == pytest.approx(12.5)


def test_prices_from_a_toml_table_keep_model_names_as_written(tmp_path: Path) -> None:
    conf = tmp_path / "labelq.toml"
    conf.write_text('[teacher]\nmodel = "Qwen/Qwen2.5-72B-Instruct"\n'
                    '[teacher.prices]\n"Qwen/Qwen2.5-72B-Instruct" = [0.0, 0.0]\n"gpt-4.1-mini" = [0.5, 2.0]\n')
    s = load_settings(conf)
    assert model_price(s, "Qwen/Qwen2.5-72B-Instruct") == (0.0, 0.0)  # free on purpose, not by accident
    assert model_price(s, "gpt-4.1-mini-2025-04-14") == (0.5, 2.0)
    assert model_price(s, "gpt-5") == DEFAULT_PRICES["gpt-5"]
    negative = tmp_path / "negative.toml"
    negative.write_text('[teacher.prices]\n"m" = [-1.0, 2.0]\n')
    with pytest.raises(ConfigError, match="teacher_prices"):
        load_settings(negative)


@pytest.mark.parametrize(("usage", "billed"), [
    ({"prompt_tokens": 90, "completion_tokens": 7, "total_tokens": 97}, (90, 7)),
    # OpenAI: reasoning is inside completion_tokens, broken down in details: counted once.
    ({"prompt_tokens": 90, "completion_tokens": 307, "total_tokens": 397,
      "completion_tokens_details": {"reasoning_tokens": 300}}, (90, 307)),
    # A server that reports reasoning beside completion_tokens: added, never dropped.
    ({"prompt_tokens": 90, "completion_tokens": 7, "total_tokens": 397,
      "completion_tokens_details": {"reasoning_tokens": 300}}, (90, 307)),
    ({"prompt_tokens": 90, "completion_tokens": 7, "completion_tokens_details": {"reasoning_tokens": 300}},
     (90, 307)),
    ({"prompt_tokens": 90, "completion_tokens": 7, "completion_tokens_details": {"reasoning_tokens": None}},
     (90, 7)),
])
def test_reasoning_tokens_are_billed_as_output_once(usage: dict[str, object], billed: tuple[int, int]) -> None:
    assert usage_tokens(usage) == billed


def test_replay_and_auto_are_never_the_default() -> None:
    assert Settings().teacher_backend == "openai"
    with pytest.raises(ConfigError, match="LABELQ_TEACHER_BACKEND=replay"):
        load_settings(None, teacher_backend="auto")


@pytest.mark.parametrize("key", [None, "", "   ", "\n"])
def test_no_usable_key_refuses_the_teacher_with_both_ways_out(key: str | None) -> None:
    s = Settings(teacher_api_key=None if key is None else SecretStr(key))
    assert s.teacher_api_key is None  # blank is no key
    with pytest.raises(ConfigError) as raised:
        check_teacher(s)
    message = str(raised.value)
    assert "OPENAI_API_KEY" in message and "LABELQ_TEACHER_API_KEY" in message
    assert "LABELQ_TEACHER_BACKEND=replay" in message


def test_empty_openai_api_key_from_compose_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "")  # docker-compose's ${OPENAI_API_KEY:-}
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        check_teacher(Settings())


def test_which_teachers_may_start() -> None:
    key = SecretStr("sk-test-0123456789")
    check_teacher(Settings(teacher_backend="replay"))  # chosen: needs no key
    check_teacher(Settings(teacher_api_key=key))
    check_teacher(Settings(teacher_api_key=SecretStr("  sk-test-0123456789\n")))
    assert Settings(teacher_api_key=SecretStr(" sk-x \n")).teacher_api_key.get_secret_value() == "sk-x"  # type: ignore[union-attr]
    # A self-hosted OpenAI-compatible server may need no key; OpenAI's and Azure's hosts always do.
    local = Settings(teacher_base_url="http://vllm.internal:8000/v1", teacher_model="qwen-72b",
                     teacher_prices={"qwen-72b": (0.0, 0.0)})
    check_teacher(local)
    for hosted in ("https://api.openai.com/v1", "https://acme.openai.azure.com/openai/v1"):
        with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
            check_teacher(Settings(teacher_base_url=hosted))
    # A key, but a model with no price: refused, naming the setting that adds one.
    with pytest.raises(ConfigError, match="LABELQ_TEACHER_PRICES"):
        check_teacher(Settings(teacher_api_key=key, teacher_model="my-azure-gpt4o"))
    with pytest.raises(ConfigError, match="LABELQ_TEACHER_PRICES"):
        check_teacher(local.model_copy(update={"teacher_model": "unpriced-local"}))


def test_the_demo_chooses_replay_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from labelq.app.demo import worker_env
    from labelq.app.demo_plan import demo_settings

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")  # a key lying around spends nothing by itself
    demo = demo_settings(Settings(state_dir=tmp_path), "run1")
    assert demo.teacher_backend == "replay"
    check_teacher(demo)
    assert worker_env(demo, "tiny", "auto")["LABELQ_TEACHER_BACKEND"] == "replay"  # its workers are told
    monkeypatch.setenv("LABELQ_TEACHER_BACKEND", "openai")  # chosen on purpose: the real teacher
    assert demo_settings(Settings(state_dir=tmp_path), "run2").teacher_backend == "openai"
