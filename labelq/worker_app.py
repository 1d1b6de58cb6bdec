"""``celery -A labelq.worker_app worker -Q teacher``: the entry point compose, Kubernetes and the docs use.

The app itself lives in the app layer (:mod:`labelq.app.worker_app`); this module only names it.
"""

from labelq.app.worker_app import UNAVAILABLE, app

__all__ = ["UNAVAILABLE", "app"]
