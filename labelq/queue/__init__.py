"""The queue layer: the only code that knows Celery and kombu."""
