"""The Celery app a worker runs: ``celery -A labelq.app.worker_app worker -Q teacher``.

Settings come from the environment (``LABELQ_*``) because Celery imports this
module itself. The broker URL (and with it the embedded Redis) is resolved
only when Celery first reads its configuration, so ``--help`` starts nothing.
Worker modules that are installed register their tasks; a producer never
imports this module.
"""

from __future__ import annotations

import importlib
from typing import Any

from celery import Celery
from celery.signals import worker_init

from labelq.logging import configure
from labelq.metrics import prepare_multiprocess, serve
from labelq.queue.app import WORKER_MODULES, celery_config, use_orjson_for_json
from labelq.redis_server import resolve_redis_url
from labelq.settings import load_settings

settings = load_settings()
configure(settings.log_level, settings.log_format)
prepare_multiprocess(settings)  # before any metric exists, so prefork children share one endpoint


class _LazyConfig:
    """Celery reads this object on first access to ``app.conf``."""

    def __init__(self) -> None:
        self._values: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._values is None:
            self._values = celery_config(settings, resolve_redis_url(settings))
        return self._values

    def __dir__(self) -> list[str]:
        return list(self._load())

    def __getattr__(self, name: str) -> Any:
        try:
            return self._load()[name]
        except KeyError:
            raise AttributeError(name) from None


use_orjson_for_json()
app = Celery("labelq", set_as_current=False)
app.config_from_object(_LazyConfig())
app.conf.labelq_settings = settings



@worker_init.connect(weak=False)  # type: ignore[untyped-decorator]
def _serve_metrics(**_: Any) -> None:
    serve(settings)


# Queue name -> why its worker module could not be loaded (a missing extra, say).
UNAVAILABLE: dict[str, str] = {}
for _queue, _module in WORKER_MODULES.items():
    try:
        importlib.import_module(_module).register(app)
    except ImportError as exc:
        UNAVAILABLE[_queue] = f"{_module}: {exc}"
