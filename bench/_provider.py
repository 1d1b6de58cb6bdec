"""A chat-completions provider for benchmarks: every answer leaves exactly ``latency_s`` after its
request arrived, served by one asyncio loop in its own process.

The tests' fake server (``tests/support/openai_server.py``) runs a Python thread per connection;
at 64 connections on a small shared machine its own work adds tens of milliseconds to each
answer, so a client that does nothing else cannot reach the ideal either. This one adds about a
millisecond. Answers are the fake server's (``answer_for``), so they pass the output contract.

    python -m bench._provider --latency-s 0.3     # prints its base URL, serves until killed

``GET /stats``: ``{"requests": n, "first_at": t}``, ``t`` on the machine's monotonic clock
(``time.monotonic()`` in any process here).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.openai_server import answer_for

ROOT = Path(__file__).resolve().parent.parent


class _Stats:
    requests = 0
    first_at: float | None = None


def _response(status: int, body: Any) -> bytes:
    data = orjson.dumps(body)
    return b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status, len(data), data)


def _completion(body: dict[str, Any]) -> dict[str, Any]:
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    text = answer_for(user)
    prompt = sum(len(m["content"]) for m in body["messages"]) // 4
    return {"id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": 3, "total_tokens": prompt + 3}}


def _serve(latency_s: float, stats: _Stats) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.monotonic()
                request_line, *headers = head.split(b"\r\n")
                length = next((int(h.split(b":", 1)[1]) for h in headers if h.lower().startswith(b"content-length:")),
                              0)
                raw = await reader.readexactly(length)
                if request_line.startswith(b"GET /stats"):
                    writer.write(_response(200, {"requests": stats.requests, "first_at": stats.first_at}))
                    continue
                stats.requests += 1
                stats.first_at = stats.first_at or arrived
                await asyncio.sleep(max(0.0, arrived + latency_s - time.monotonic()))
                writer.write(_response(200, _completion(orjson.loads(raw))))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle


async def _main(latency_s: float) -> None:
    server = await asyncio.start_server(_serve(latency_s, _Stats()), "127.0.0.1", 0, backlog=1024)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", flush=True)
    await server.serve_forever()


@contextmanager
def provider(latency_s: float) -> Iterator[str]:
    """The provider in a child process; its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "bench._provider", "--latency-s", str(latency_s)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait()


def stats(base_url: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats", timeout=10) as answer:
        found: dict[str, Any] = orjson.loads(answer.read())
        return found


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-s", type=float, default=0.3)
    asyncio.run(_main(parser.parse_args().latency_s))
