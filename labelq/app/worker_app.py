"""The Celery app a worker runs: ``celery -A labelq.app.worker_app worker -Q teacher``.

Settings come from the environment (``LABELQ_*``) because Celery imports this
module itself. The app is built by the queue layer
(:func:`labelq.queue.worker.create_worker_app`: nothing starts before Celery
reads its configuration, so ``--help`` starts nothing); the stage packages
that are installed register their tasks on it. A producer never imports this module.
"""

from __future__ import annotations

import importlib

from labelq.logging import configure
from labelq.metrics import prepare_multiprocess
from labelq.queue.worker import create_worker_app
from labelq.settings import load_settings

# Stage modules that register a queue's tasks (``register(app)``); imported by workers only.
WORKER_MODULES: dict[str, str] = {
    "teacher": "workers.teacher.tasks",
    "student": "workers.student.tasks",
    "trainer": "trainer.tasks",
}

settings = load_settings()
configure(settings.log_level, settings.log_format)
prepare_multiprocess(settings)  # before any metric exists, so prefork children share one endpoint
app = create_worker_app(settings)

# Queue name -> why its worker module could not be loaded (a missing extra, say).
UNAVAILABLE: dict[str, str] = {}
for _queue, _module in WORKER_MODULES.items():
    try:
        importlib.import_module(_module).register(app)
    except ImportError as exc:
        UNAVAILABLE[_queue] = f"{_module}: {exc}"
