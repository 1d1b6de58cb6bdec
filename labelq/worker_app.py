"""The Celery app a worker runs: ``celery -A labelq.worker_app worker -Q teacher``.

Settings come from the environment (``LABELQ_*``) because Celery imports this
module itself. Worker modules that are installed register their tasks; a
producer never imports this module.
"""

from __future__ import annotations

import importlib.util

from labelq.celery_app import WORKER_MODULES, create_app
from labelq.logging import configure
from labelq.settings import load_settings

settings = load_settings()
configure(settings.log_level, settings.log_format)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


app = create_app(settings)
app.conf.include = [m for m in WORKER_MODULES.values() if _installed(m)]
