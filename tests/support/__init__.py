"""What tests share besides fixtures (those stay in the conftest.py files). Test modules import
helpers from here only, never ``conftest`` or another test package.

* ``helpers``: wait_until, store rows, queued and in-flight chunks, dead letters, JSONL files
* ``redis_process``: a redis-server a test can stop, kill and restart
* ``worker_procs``: real ``celery worker`` processes (``Fleet``) and their environment
* ``openai_server``: a fake OpenAI-protocol HTTP server with injectable faults
* ``teacher`` / ``student``: settings, chunks, adapters and records of each stage
* ``cli``: the ``labelq`` command as a subprocess
* ``chaos``, ``hostile``, ``crashy_app``: the chaos tally and results, hostile inputs, a worker app
  that crashes on a poison pill; ``chaos_table`` prints docs/reliability.md's table
"""
