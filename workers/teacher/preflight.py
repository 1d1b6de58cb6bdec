"""What a teacher needs before it sends one request: a backend chosen on purpose, a usable key, a price.

Checked when a teacher worker starts (it refuses to start), by ``labelq teach``
before it reads a session, and before each chunk (a worker started some other
way pauses instead of failing its work). Every refusal names the setting that
fixes it.

* ``replay`` runs only when chosen (``LABELQ_TEACHER_BACKEND=replay``, or the
  demo): a missing or blank key never turns into replay.
* ``openai`` needs a key, except on a self-hosted base URL (a vLLM server or
  local proxy that asks for none); OpenAI's and Azure's hosts always need one.
* the teacher model needs a price (``labelq.ledger.model_price``): an
  unpriced model would spend a budget at $0 a call.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from labelq.errors import ConfigError
from labelq.ledger import model_price
from labelq.settings import Settings

HOSTED_API_DOMAINS = ("openai.com", "openai.azure.com", "cognitiveservices.azure.com")


def _hosted(base_url: str | None) -> bool:
    """True for OpenAI's own API (no base URL) and for hosts of OpenAI and Azure OpenAI."""
    if not base_url:
        return True
    host = (urlsplit(base_url).hostname or "").lower()
    return any(host == d or host.endswith("." + d) for d in HOSTED_API_DOMAINS)


def check_teacher(settings: Settings) -> None:
    """Raise ConfigError, naming the setting to change, when the configured teacher must not run."""
    if settings.teacher_backend == "replay":
        model_price(settings, "replay")
        return
    if settings.teacher_api_key is None and _hosted(settings.teacher_base_url):
        where = f" for {settings.teacher_base_url}" if settings.teacher_base_url else ""
        raise ConfigError(
            f"the teacher has no API key{where}: set OPENAI_API_KEY (or LABELQ_TEACHER_API_KEY); an empty or "
            "blank key counts as none. To label offline with the sessions' reference labels instead (no API "
            "calls; demos and tests), choose it: LABELQ_TEACHER_BACKEND=replay")
    model_price(settings, settings.teacher_model)
