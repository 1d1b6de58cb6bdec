"""The app `labelq flower` serves: labelq's worker app, with Flower's ``/metrics`` behind basic auth.

Flower guards its pages and API with basic auth but leaves ``/metrics`` (worker
and task names, counts, timings) open. labelq puts it behind the same auth
(a Prometheus job scraping it needs ``basic_auth``). ``/healthcheck`` answers
only "OK" and stays open for liveness probes.
"""

from __future__ import annotations

from flower.views.monitor import Metrics
from tornado.web import authenticated

from labelq.app.worker_app import app

Metrics.get = authenticated(Metrics.get)
__all__ = ["app"]
