"""The queue layer: the only code that imports Celery or kombu.

* :mod:`labelq.queue.app`: the app factory and its delivery config, task names,
  ``QueueApp`` (the app type stage packages name);
* :mod:`labelq.queue.task`: the chunk task base (``ChunkTask``, ``Paused``) and
  ``register_chunk_task`` / ``register_task``, how stage packages define tasks;
* :mod:`labelq.queue.worker`: the app a worker process runs, in-process workers;
* :mod:`labelq.queue.publish`: the producer's ``ChunkPublisher``, the workers'
  ``republish`` (hand-back, escalation, bisection), the trainer trigger;
* :mod:`labelq.queue.inspect`: queue depths, queued and unacknowledged chunks.

Nothing is imported here, so reading queues (``inspect``) does not load Celery.
"""
