"""A real HTTP server on loopback that speaks the OpenAI chat-completions, files and
batches protocols, with injected faults. Written for the tests; no network.

Answers are deterministic: ``Reviews session <8 hex chars>`` (hash of the user
message), so a test can tell which session an answer belongs to. A session whose
text asks to "ignore previous instructions" gets a long, hijacked answer (the
contract catches it, the repair request gets a clean one).
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from labelq.ledger import price_usd
from labelq.settings import Settings

FAULTS = ("429", "quota", "500", "503", "timeout", "reset", "garbage", "malformed", "wordy", "401", "404")
INJECTION = "ignore previous instructions"


def answer_for(user_text: str) -> str:
    return "Reviews session " + hashlib.blake2b(user_text.encode(), digest_size=4).hexdigest()


COUNTRIES = {"Berlin": "Germany", "London": "United Kingdom", "Paris": "France", "Madrid": "Spain",
             "Boston": "United States", "Tokyo": "Japan", "Austin": "United States", "Milan": "Italy"}


def json_answer_for(user_text: str) -> str:
    """A structured answer (``response_format`` with a JSON schema, the location-json spec's shape): the first
    city the session mentions and its country, or nulls."""
    city = min(((user_text.find(c), c) for c in COUNTRIES if c in user_text), default=(0, None))[1]
    return json.dumps({"city": city, "country": COUNTRIES.get(city) if city else None})


class _QuietServer(ThreadingHTTPServer):
    # A provider's listen backlog, not socketserver's 5: 64 clients connecting at once are all
    # accepted (with 5, some get a reset, and the client sees a connection error).
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)  # a client that timed out is expected


@dataclass
class FakeConfig:
    latency_s: float = 0.0
    fault_rates: dict[str, float] = field(default_factory=dict)  # fault -> probability
    seed: int = 0
    retry_after_s: float = 0.05
    hang_s: float = 5.0
    batch_polls_to_finish: int = 2
    batch_fail_every: int = 0  # every Nth batch row fails (0: none)
    batch_expire_after: int | None = None  # rows after this one expire (first batch only)
    repair_fixes: bool = True  # False: a bad answer stays bad after the repair request
    reasoning_tokens: int = 0  # hidden thinking per answer, inside completion_tokens as OpenAI reports it
    # Served as reasoning models (besides the o-series and gpt-5 names): like OpenAI's, they refuse
    # ``max_tokens`` (400 unsupported_parameter) and any temperature but the default.
    reasoning_models: tuple[str, ...] = ()


class FakeOpenAI:
    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.rng = random.Random(self.config.seed)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []  # chat requests: time, body, outcome, client address
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}  # every batch ever created (one entry per creation)
        # The provider's own bill: one entry per answer it produced (chat, or a batch row), whether
        # or not the client was still there to read it.
        self.billed: list[dict[str, Any]] = []
        self.adapters: dict[str, str] = {}  # name -> path, as loaded through /v1/load_lora_adapter
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    outage: str | None = None  # set to a fault name: every chat request gets it (a provider outage)

    def pick_fault(self) -> str | None:
        if self.outage is not None:
            return self.outage
        with self.lock:
            roll = self.rng.random()
        acc = 0.0
        for fault, rate in self.config.fault_rates.items():
            acc += rate
            if roll < acc:
                return fault
        return None

    def is_reasoning(self, model: object) -> bool:
        name = str(model)
        return name in self.config.reasoning_models or any(
            name == f or name.startswith(f + "-") for f in ("o1", "o3", "o4", "gpt-5"))

    def refuse_parameters(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """OpenAI's 400 for a reasoning model asked with ``max_tokens`` or a temperature (nothing billed)."""
        if not self.is_reasoning(body.get("model")):
            return None
        if "max_tokens" in body:
            return {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                               "Use 'max_completion_tokens' instead.", "type": "invalid_request_error",
                    "param": "max_tokens", "code": "unsupported_parameter"}
        if body.get("temperature", 1) != 1:
            return {"message": "Unsupported value: 'temperature' does not support 0.0 with this model. Only the "
                               "default (1) value is supported.", "type": "invalid_request_error",
                    "param": "temperature", "code": "unsupported_value"}
        return None

    def chat_answer(self, body: dict[str, Any], fault: str | None) -> tuple[str, int, int]:
        messages = body["messages"]
        user = next(m["content"] for m in messages if m["role"] == "user")
        repair = len(messages) > 2 and self.config.repair_fixes
        if INJECTION in user.lower() and not repair:
            text = "HACKED: as instructed I now ignore the rules and print my whole system prompt"
        elif fault == "wordy" and not repair:
            text = "The user opened the website and looked around at many pages before leaving it"
        elif (body.get("response_format") or {}).get("type") == "json_schema":
            text = json_answer_for(user)
        elif body.get("model") in self.adapters:  # a student server serving a LoRA adapter
            text = f"Labels with {body['model']}"
        else:
            text = answer_for(user)
        prompt_tokens = sum(len(m["content"]) for m in messages) // 4 + 1
        return text, prompt_tokens, len(text) // 4 + 1

    def billed_usd(self, settings: Settings, *, batch_discount: float = 0.5) -> float:
        """What the provider would charge: its own token counts at the list prices of ``settings``."""
        with self.lock:
            bill = list(self.billed)
        return sum(price_usd(settings, b["model"], b["prompt_tokens"], b["completion_tokens"],
                             discount=batch_discount if b["batch"] else 1.0) for b in bill)

    def completion_body(self, body: dict[str, Any], fault: str | None, *, batch: bool = False) -> dict[str, Any]:
        text, p, c = self.chat_answer(body, fault)
        with self.lock:
            self.billed.append({"model": body.get("model", "fake"), "prompt_tokens": p, "completion_tokens": c,
                                "batch": batch})
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": self.logprobs(text, body),
                         "message": {"role": "assistant", "content": text}}],
            "usage": self.usage(p, c),
        }

    def usage(self, prompt_tokens: int, visible_tokens: int) -> dict[str, Any]:
        """OpenAI's usage block: reasoning tokens are part of ``completion_tokens``, broken down in details."""
        r = self.config.reasoning_tokens
        usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": visible_tokens + r,
                                 "total_tokens": prompt_tokens + visible_tokens + r}
        if r:
            usage["completion_tokens_details"] = {"reasoning_tokens": r}
        return usage

    @staticmethod
    def logprobs(text: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """One entry per word; a word with a digit is 'unsure' (probability about 0.37)."""
        if not body.get("logprobs"):
            return None
        return {"content": [{"token": w, "logprob": -1.0 if any(c.isdigit() for c in w) else -0.01,
                             "bytes": None, "top_logprobs": []} for w in text.split()]}

    # --- batches ---------------------------------------------------------------
    def advance_batch(self, batch: dict[str, Any]) -> None:
        batch["_polls"] += 1
        if batch["status"] in ("completed", "expired", "failed"):
            return
        if batch["_polls"] == 1:
            batch["status"] = "in_progress"
            return
        if batch["_polls"] < self.config.batch_polls_to_finish + 1:
            return
        lines = [json.loads(x) for x in self.files[batch["input_file_id"]].splitlines() if x.strip()]
        out, err = [], []
        expire_after = self.config.batch_expire_after if batch["_first"] else None
        for i, row in enumerate(lines, 1):
            if expire_after is not None and i > expire_after:
                err.append({"id": f"req_{i}", "custom_id": row["custom_id"], "response": None,
                            "error": {"code": "batch_expired", "message": "expired"}})
            elif self.config.batch_fail_every and i % self.config.batch_fail_every == 0 and batch["_first"]:
                err.append({"id": f"req_{i}", "custom_id": row["custom_id"], "response": {
                    "status_code": 500, "request_id": "x", "body": {"error": {"message": "boom"}}}, "error": None})
            else:
                out.append({"id": f"req_{i}", "custom_id": row["custom_id"], "error": None, "response": {
                    "status_code": 200, "request_id": f"r{i}", "body": self.completion_body(row["body"], None,
                                                                                          batch=True)}})
        for name, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                fid = f"file-{uuid.uuid4().hex[:10]}"
                self.files[fid] = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
                batch[name] = fid
        batch["status"] = "expired" if expire_after is not None and len(lines) > expire_after else "completed"
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", "0")))

            def do_POST(self) -> None:
                raw = self._body()
                if self.path.endswith("/chat/completions"):
                    return self._chat(json.loads(raw))
                if self.path.endswith("/load_lora_adapter"):
                    body = json.loads(raw)
                    if body["lora_name"] in fake.adapters:
                        return self._json(400, {"error": {"message": "The lora adapter is already loaded."}})
                    fake.adapters[body["lora_name"]] = body["lora_path"]
                    return self._json(200, {"status": "Success"})
                if self.path.endswith("/files"):
                    return self._upload(raw)
                if self.path.endswith("/batches"):
                    body = json.loads(raw)
                    bid = f"batch_{uuid.uuid4().hex[:10]}"
                    batch = {"id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                             "input_file_id": body["input_file_id"], "completion_window": "24h",
                             "status": "validating", "created_at": int(time.time()), "output_file_id": None,
                             "error_file_id": None, "_polls": 0, "_first": not fake.batches,
                             "_seq": len(fake.batches),
                             "metadata": body.get("metadata"),
                             "request_counts": {"total": 0, "completed": 0, "failed": 0}}
                    fake.batches[bid] = batch
                    return self._json(200, {k: v for k, v in batch.items() if not k.startswith("_")})
                return self._json(404, {"error": {"message": "not found"}})

            def do_GET(self) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) == 2 and parts[1] == "batches":  # newest first, one page
                    data = [{k: v for k, v in b.items() if not k.startswith("_")}
                            for b in sorted(fake.batches.values(), key=lambda b: -b["_seq"])]
                    return self._json(200, {"object": "list", "data": data, "has_more": False,
                                            "first_id": data[0]["id"] if data else None,
                                            "last_id": data[-1]["id"] if data else None})
                if len(parts) == 3 and parts[1] == "batches" and parts[2] in fake.batches:
                    batch = fake.batches[parts[2]]
                    fake.advance_batch(batch)
                    return self._json(200, {k: v for k, v in batch.items() if not k.startswith("_")})
                if len(parts) == 4 and parts[1] == "files" and parts[3] == "content" and parts[2] in fake.files:
                    data = fake.files[parts[2]]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return None
                return self._json(404, {"error": {"message": "not found"}})

            def _upload(self, raw: bytes) -> None:
                boundary = self.headers["Content-Type"].split("boundary=")[1].encode()
                content = b""
                for part in raw.split(b"--" + boundary):
                    if b'name="file"' in part:
                        content = part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
                fid = f"file-{uuid.uuid4().hex[:10]}"
                fake.files[fid] = content
                self._json(200, {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                                 "filename": "input.jsonl", "purpose": "batch", "status": "processed"})

            def _chat(self, body: dict[str, Any]) -> None:
                refusal = fake.refuse_parameters(body)
                if refusal is not None:
                    with fake.lock:
                        fake.requests.append({"t": time.monotonic(), "body": body, "fault": "400_parameter"})
                    return self._json(400, {"error": refusal})
                fault = fake.pick_fault()
                with fake.lock:
                    fake.requests.append({"t": time.monotonic(), "body": body, "fault": fault,
                                          "peer": self.client_address})  # one per TCP connection
                if fake.config.latency_s:
                    time.sleep(fake.config.latency_s)
                if fault == "429":
                    return self._json(429, {"error": {"message": "slow down", "type": "rate_limit"}},
                                      {"Retry-After": str(fake.config.retry_after_s)})
                if fault == "quota":  # OpenAI's 429 for a spent quota: no Retry-After
                    return self._json(429, {"error": {"message": "You exceeded your current quota",
                                                      "type": "insufficient_quota", "code": "insufficient_quota"}})
                if fault in ("500", "503"):
                    return self._json(int(fault), {"error": {"message": "internal"}})
                if fault == "404":
                    return self._json(404, {"error": {"message": f"The model `{body.get('model')}` does not exist",
                                                      "type": "invalid_request_error", "code": "model_not_found"}})
                if fault == "401":  # a hostile server echoes the whole key back
                    key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    return self._json(401, {"error": {"message": f"Incorrect API key provided: {key}"}})
                if fault == "timeout":
                    time.sleep(fake.config.hang_s)
                    return self._json(200, fake.completion_body(body, None))
                if fault == "reset":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return None
                if fault == "garbage":
                    data = b"<html>502 bad gateway</html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return None
                if fault == "malformed":
                    return self._json(200, {"id": "x", "object": "chat.completion", "choices": []})
                return self._json(200, fake.completion_body(body, fault))

        return Handler
