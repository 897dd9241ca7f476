"""A loopback HTTP server that speaks OpenAI chat-completions and injects faults on request.

It answers ``POST /v1/chat/completions`` with fills for the masks of negforge's generation
prompt and ``GET /v1/models`` with one model. The number of fills per level is read from the
request's ``response_format`` JSON schema (``level_N`` arrays with ``minItems``), falling back
to the fenced ```json block of the last user message (``levels[].masks``). Fills are words of
a built-in list, never words of the query, distinct across levels.

Faults (:class:`FaultRule`) are matched per global request number, per query text and/or per
attempt number of that query, e.g. "the first 2 requests for query X get 429"::

    FaultRule(kind="rate_limit", query="X", query_attempts=[1, 2], retry_after_s=0.2)

Every request is recorded (:class:`RecordedRequest`: body, query, fault, status), in memory
and optionally as JSON lines in a file, so tests can prove that nothing was asked twice.

Run it inside the test process (:class:`FakeOpenAIServer`, a thread with its own event loop)
or as a separate process (:func:`spawn_fake_openai`, or
``python -m tests.support.fake_openai --port P --delay-s 0.1 --faults plan.json``), which the
SIGKILL test and the benchmark need. A separate process is controlled over HTTP:
``GET /_fake/requests``, ``POST /_fake/faults`` (replace the plan), ``POST /_fake/reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from negforge.template import MASK

FaultKind = Literal[
    "rate_limit",  # 429 with a Retry-After header
    "server_error",  # 500
    "stall",  # no answer for stall_s (past the client's timeout)
    "drop",  # close the connection without any response
    "malformed",  # 200 whose message content is not valid JSON
    "wrong_count",  # 200 whose first level has one fill too many
    "copy_original",  # 200 whose first fill of level 1 is the masked original word
    "auth",  # 401 (echoes the presented API key in the error message, as a hostile server)
    "bad_request",  # 400
    "leak_key",  # 200 whose first fill is the presented credentials (leak_encoding applied)
]
LeakEncoding = Literal["raw", "base64", "url", "hex"]

MODEL_ID = "fake-gpt"
_FENCE = re.compile(r"```json\s*(\{.*?\})\s*```", re.DOTALL)
_TOKEN = re.compile(re.escape(MASK) + r"|\w+|[^\w\s]")

#: Fill words: neutral words, unlikely in activity captions, all of different stems.
FILL_WORDS: tuple[str, ...] = (
    "juggles",
    "violin",
    "purple",
    "beneath",
    "slowly",
    "kangaroo",
    "trumpet",
    "orbits",
    "velvet",
    "across",
    "gently",
    "lantern",
    "meadow",
    "scarlet",
    "polishes",
    "harbor",
    "quietly",
    "glacier",
    "emerald",
    "whistles",
    "saddle",
    "beyond",
    "crimson",
    "compass",
    "tulip",
    "swiftly",
    "anchor",
    "ivory",
    "paddles",
    "volcano",
    "amber",
    "beside",
    "pebble",
    "knits",
    "walrus",
    "marble",
    "upward",
    "canyon",
    "sketches",
    "olive",
    "zipper",
    "barely",
    "falcon",
    "copper",
    "riddle",
    "rarely",
    "hammock",
    "dolphin",
    "saffron",
    "tumbles",
    "pyramid",
    "wagon",
    "feather",
    "onto",
    "mosaic",
    "plum",
)


class FaultRule(BaseModel):
    """One fault and the requests it applies to (all given conditions must hold)."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    query: str | None = None  # only requests for this query text
    queries: list[str] | None = None  # only requests for one of these query texts
    request_numbers: list[int] | None = None  # global 1-based request numbers
    query_attempts: list[int] | None = None  # 1-based number of the request for its query
    limit: int | None = None  # fire at most this many times in total
    retry_after_s: float = 1.0  # rate_limit: the Retry-After header (seconds)
    stall_s: float = 3600.0  # stall: how long to hold the request
    leak_encoding: LeakEncoding = "raw"  # leak_key: how the credentials are echoed

    def matches(self, number: int, query: str | None, attempt: int) -> bool:
        """Whether this rule applies to the request (ignores ``limit``)."""
        if self.query is not None and query != self.query:
            return False
        if self.queries is not None and query not in self.queries:
            return False
        if self.request_numbers is not None and number not in self.request_numbers:
            return False
        return self.query_attempts is None or attempt in self.query_attempts


class RecordedRequest(BaseModel):
    """What the server saw and did for one request."""

    number: int  # global 1-based request number (chat completions only)
    query: str | None  # the query of the prompt's fenced JSON block, if found
    query_attempt: int  # 1-based number of the request for this query
    fault: FaultKind | None
    status: int | None  # HTTP status sent; None when the connection was dropped/stalled
    received_at: float  # time.time() when the request arrived
    answered_at: float | None  # time.time() when the answer was handed to the transport
    body: dict[str, Any]
    batch_id: str | None = None  # answered inside this batch (Batch API), not online


class FakeServerConfig(BaseModel):
    """Settings of a fake server."""

    model_config = ConfigDict(extra="forbid")

    delay_s: float = 0.0  # added before every answer (benchmark: 0.1)
    faults: list[FaultRule] = Field(default_factory=list)
    api_key: str | None = None  # when set, any other bearer token gets 401
    record_path: str | None = None  # append every RecordedRequest as a JSON line
    record_bodies: bool = True  # keep request bodies in the records
    #: Files / Batches endpoints (tests/support/fake_openai_batch.py: BatchSettings)
    batch: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Reading the request and building the answer
# ---------------------------------------------------------------------------------------------


def _prompt_block(body: dict[str, Any]) -> dict[str, Any] | None:
    """The fenced JSON block of the last user message, parsed, or None."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            return None
        match = _FENCE.search(content)
        if not match:
            return None
        try:
            block = json.loads(match.group(1))
        except json.JSONDecodeError:
            return None
        return block if isinstance(block, dict) else None
    return None


def _schema_of(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema of ``response_format`` (OpenAI json_schema or llama.cpp json_object)."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict):
        return None
    if isinstance(response_format.get("json_schema"), dict):
        schema = response_format["json_schema"].get("schema")
    else:
        schema = response_format.get("schema")
    return schema if isinstance(schema, dict) else None


def mask_counts(body: dict[str, Any]) -> dict[str, int]:
    """``{"level_1": k1, ...}``: how many fills each level needs, from schema or prompt."""
    schema = _schema_of(body)
    counts: dict[str, int] = {}
    if schema:
        for name, prop in (schema.get("properties") or {}).items():
            if isinstance(prop, dict) and isinstance(prop.get("minItems"), int):
                counts[name] = prop["minItems"]
    if counts:
        return counts
    block = _prompt_block(body) or {}
    for level in block.get("levels") or []:
        if isinstance(level, dict) and "level" in level and "masks" in level:
            counts[f"level_{int(level['level'])}"] = int(level["masks"])
    return counts


def masked_levels(body: dict[str, Any]) -> dict[str, str]:
    """``{"level_1": masked_query, ...}`` from the prompt's fenced block (may be empty)."""
    block = _prompt_block(body) or {}
    out: dict[str, str] = {}
    for level in block.get("levels") or []:
        if isinstance(level, dict) and "masked_query" in level and "level" in level:
            out[f"level_{int(level['level'])}"] = str(level["masked_query"])
    return out


def original_words(query: str, masked_query: str) -> list[str]:
    """The query words hidden by each ``<mask>``, by aligning the masked query with the query.

    Tokens are split the same simple way on both sides; when the counts agree each mask takes
    the query token at its position, otherwise difflib aligns the unmasked tokens.
    """
    query_tokens = _TOKEN.findall(query)
    masked_tokens = _TOKEN.findall(masked_query)
    if len(query_tokens) == len(masked_tokens):
        return [q for q, m in zip(query_tokens, masked_tokens, strict=True) if m == MASK]
    originals: list[str] = []
    matcher = difflib.SequenceMatcher(a=masked_tokens, b=query_tokens, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        words = query_tokens[j1:j2] or [""]
        for offset, token in enumerate(masked_tokens[i1:i2]):
            if token == MASK:  # the word at the same relative place of the replaced span
                originals.append(words[min(len(words) - 1, offset * len(words) // (i2 - i1))])
    return originals


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def make_fills(query: str, counts: dict[str, int]) -> dict[str, list[str]]:
    """Deterministic fills: distinct words of :data:`FILL_WORDS` that share no stem with query."""
    stems = {t.lower()[:4] for t in _TOKEN.findall(query)}
    pool = [w for w in FILL_WORDS if w[:4] not in stems]
    start = _stable_int(query) % len(pool)
    fills: dict[str, list[str]] = {}
    cursor = start
    for name in sorted(counts, key=lambda n: (len(n), n)):
        words = []
        for _ in range(counts[name]):
            words.append(pool[cursor % len(pool)])
            cursor += 1
        fills[name] = words
    return fills


def build_answer(body: dict[str, Any], fault: FaultKind | None) -> str:
    """The assistant message content for a request, with a content fault applied."""
    block = _prompt_block(body) or {}
    query = str(block.get("query", ""))
    counts = mask_counts(body)
    fills = make_fills(query, counts)
    if fault == "malformed":
        text = json.dumps(fills)
        return text[: max(1, len(text) // 2)]  # cut in the middle: not JSON
    if fault == "wrong_count" and fills:
        first = min(fills, key=lambda n: (len(n), n))
        fills[first] = [*fills[first], FILL_WORDS[-1]]
    if fault == "copy_original" and fills:
        first = min(fills, key=lambda n: (len(n), n))
        masked = masked_levels(body).get(first)
        originals = original_words(query, masked) if masked else []
        if fills[first]:
            fills[first][0] = originals[0] if originals else (query.split() or ["person"])[0]
    return json.dumps(fills)


def leak_answer(body: dict[str, Any], credentials: str, encoding: LeakEncoding) -> str:
    """A well-formed answer whose first fill echoes ``credentials`` (a hostile server)."""
    import base64
    import urllib.parse

    fills = json.loads(build_answer(body, None))
    secret = {
        "raw": credentials,
        "base64": base64.b64encode(f"token={credentials};".encode()).decode(),
        "url": urllib.parse.quote(credentials, safe=""),
        "hex": credentials.encode().hex(),
    }[encoding]
    first = min(fills, key=lambda n: (len(n), n)) if fills else "level_1"
    fills.setdefault(first, [""])[0] = secret
    return json.dumps(fills)


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def completion_payload(
    body: dict[str, Any], fault: FaultKind | None, number: int, received: float,
    content: str | None = None,
) -> dict[str, Any]:
    """The chat.completion object answering a request (a content fault applied, unless
    ``content`` is given)."""
    if content is None:
        content = build_answer(body, fault)
    prompt_tokens = _estimate_tokens(json.dumps(body.get("messages", [])))
    completion_tokens = _estimate_tokens(content)
    return {
        "id": f"chatcmpl-fake-{number}",
        "object": "chat.completion",
        "created": int(received),
        "model": body.get("model", MODEL_ID),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": "fake",
    }


def request_query(body: dict[str, Any]) -> str | None:
    """The query text of a negforge request (from the prompt's fenced block)."""
    block = _prompt_block(body) or {}
    return block.get("query") if isinstance(block.get("query"), str) else None


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


class _FakeState:
    """Mutable server state; touched only on the event loop (reads copy under a lock)."""

    def __init__(self, config: FakeServerConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self.per_query: Counter[str | None] = Counter()
        self.fired: Counter[int] = Counter()
        self.number = 0
        self.in_flight = 0  # chat requests received and not yet answered or abandoned
        self._record_file = open(config.record_path, "a") if config.record_path else None  # noqa: SIM115

    def pick_fault(self, number: int, query: str | None, attempt: int) -> FaultRule | None:
        for index, rule in enumerate(self.config.faults):
            if rule.limit is not None and self.fired[index] >= rule.limit:
                continue
            if rule.matches(number, query, attempt):
                self.fired[index] += 1
                return rule
        return None

    def record(self, entry: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(entry)
        if self._record_file is not None:
            self._record_file.write(entry.model_dump_json() + "\n")
            self._record_file.flush()

    def set_faults(self, faults: Sequence[FaultRule]) -> None:
        with self.lock:
            self.config = self.config.model_copy(update={"faults": list(faults)})
            self.fired.clear()

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.per_query.clear()
            self.fired.clear()
            self.number = 0

    def close(self) -> None:
        if self._record_file is not None:
            self._record_file.close()
            self._record_file = None


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> Any:
    payload = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.json_response(payload, status=status, headers=headers)


def build_app(state: _FakeState) -> web.Application:
    """The aiohttp application of the fake server."""

    async def models(_: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "negforge-tests"}
                ],
            }
        )

    async def chat(request: web.Request) -> web.StreamResponse:
        state.in_flight += 1
        try:
            return await _chat(request)
        finally:
            state.in_flight -= 1

    async def _chat(request: web.Request) -> web.StreamResponse:
        received = time.time()
        state.number += 1
        number = state.number
        raw = await request.read()
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return _error(400, "request body is not JSON", "invalid_request_error")
        block = _prompt_block(body) or {}
        query = block.get("query") if isinstance(block.get("query"), str) else None
        state.per_query[query] += 1
        attempt = state.per_query[query]
        config = state.config
        rule = state.pick_fault(number, query, attempt)
        fault = rule.kind if rule else None
        entry = RecordedRequest(
            number=number,
            query=query,
            query_attempt=attempt,
            fault=fault,
            status=None,
            received_at=received,
            answered_at=None,
            body=body if config.record_bodies else {},
        )

        authorization = request.headers.get("Authorization", "")
        presented = authorization.removeprefix("Bearer ").strip()
        if fault is None and config.api_key is not None and presented != config.api_key:
            fault = entry.fault = "auth"

        if config.delay_s > 0:
            await asyncio.sleep(config.delay_s)

        response: web.StreamResponse | None
        if fault == "stall":
            state.record(entry)
            assert rule is not None
            await asyncio.sleep(rule.stall_s)
            return _error(504, "stalled", "timeout")
        if fault == "drop":
            state.record(entry)
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError  # aiohttp abandons the request: nothing is sent
        if fault == "rate_limit":
            assert rule is not None
            retry_after = rule.retry_after_s
            header = str(int(retry_after)) if retry_after == int(retry_after) else str(retry_after)
            response = _error(
                429,
                "Rate limit reached; please retry.",
                "rate_limit_exceeded",
                {"Retry-After": header, "retry-after-ms": str(int(retry_after * 1000))},
            )
        elif fault == "server_error":
            response = _error(500, "The server had an error.", "server_error")
        elif fault == "auth":
            response = _error(
                401, f"Incorrect API key provided: {presented}.", "invalid_request_error"
            )
        elif fault == "bad_request":
            response = _error(
                400, "Invalid request: unsupported parameter.", "invalid_request_error"
            )
        elif body.get("stream"):
            response = _error(400, "the fake server does not stream", "invalid_request_error")
        else:
            content = (
                leak_answer(body, authorization, rule.leak_encoding)
                if fault == "leak_key" and rule is not None
                else None
            )
            response = web.json_response(
                completion_payload(body, fault, number, received, content=content)
            )
        entry.status = response.status
        entry.answered_at = time.time()
        state.record(entry)
        return response

    async def get_requests(_: web.Request) -> web.StreamResponse:
        with state.lock:
            payload = [r.model_dump() for r in state.requests]
        return web.json_response(payload)

    async def post_faults(request: web.Request) -> web.StreamResponse:
        rules = [FaultRule.model_validate(r) for r in await request.json()]
        state.set_faults(rules)
        return web.json_response({"faults": len(rules)})

    async def post_reset(_: web.Request) -> web.StreamResponse:
        state.reset()
        return web.json_response({"reset": True})

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/chat/completions", chat)
    app.router.add_get("/_fake/requests", get_requests)
    app.router.add_post("/_fake/faults", post_faults)
    app.router.add_post("/_fake/reset", post_reset)
    from tests.support.fake_openai_batch import add_batch_routes

    add_batch_routes(app, state)
    return app


async def _start_site(state: _FakeState, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(
        build_app(state), access_log=None, shutdown_timeout=0.5, handle_signals=False
    )
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    site = web.SockSite(runner, sock, backlog=1024)
    await site.start()
    return runner, int(sock.getsockname()[1])


class FakeOpenAIServer:
    """The fake server in a background thread of the test process (a context manager)."""

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        faults: Iterable[FaultRule] = (),
        api_key: str | None = None,
        record_path: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        batch: dict[str, Any] | None = None,
    ) -> None:
        self.config = FakeServerConfig(
            delay_s=delay_s,
            faults=list(faults),
            api_key=api_key,
            record_path=str(record_path) if record_path else None,
            batch=batch or {},
        )
        self.host = host
        self.port = port
        self._state = _FakeState(self.config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def batch_log(self) -> dict[str, Any]:
        """Uploads, creations, batches and the call log of the Files/Batches endpoints."""
        return _http_json("GET", f"http://{self.host}:{self.port}/_fake/batch_log")  # type: ignore[no-any-return]

    def set_batch_hold(self, hold: bool) -> None:
        """Hold batches in_progress before their first request (or release them)."""
        _http_json("POST", f"http://{self.host}:{self.port}/_fake/batch_hold", {"hold": hold})

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the recorded chat-completion requests, in arrival order."""
        with self._state.lock:
            return list(self._state.requests)

    def set_faults(self, faults: Iterable[FaultRule]) -> None:
        """Replace the fault plan (counters of ``limit`` restart)."""
        self._state.set_faults(list(faults))

    def reset(self) -> None:
        """Forget recorded requests and restart request numbering.

        Waits (up to 30 s) for requests still in flight, e.g. the last one of an interrupted
        client, so that they are not recorded as the next client's.
        """
        deadline = time.monotonic() + 30.0
        while self._state.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        self._state.reset()

    def start(self) -> FakeOpenAIServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._runner, self.port = loop.run_until_complete(
                    _start_site(self._state, self.host, self.port)
                )
            except BaseException as exc:  # pragma: no cover - reported to the caller
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            pending = asyncio.all_tasks(loop)  # stalled handlers still asleep
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._state.close()
        self._loop = self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# A separate process
# ---------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _http_json(method: str, url: str, payload: Any = None, timeout: float = 10.0) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # loopback only
        return json.loads(response.read())


class FakeOpenAIProcess:
    """The fake server running as a child process (a context manager)."""

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        faults: Iterable[FaultRule] = (),
        api_key: str | None = None,
        record_path: str | Path | None = None,
        port: int | None = None,
        record_bodies: bool = True,
        batch: dict[str, Any] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.batch = batch or {}
        self.delay_s = delay_s
        self.faults = list(faults)
        self.api_key = api_key
        self.record_path = str(record_path) if record_path else None
        self.record_bodies = record_bodies
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def _control(self) -> str:
        return f"http://127.0.0.1:{self.port}/_fake"

    def start(self, timeout_s: float = 20.0) -> FakeOpenAIProcess:
        repo_root = Path(__file__).resolve().parents[2]
        command = [
            sys.executable,
            "-m",
            "tests.support.fake_openai",
            "--port",
            str(self.port),
            "--delay-s",
            str(self.delay_s),
            "--faults",
            json.dumps([f.model_dump() for f in self.faults]),
        ]
        if self.api_key:
            command += ["--api-key", self.api_key]
        if self.record_path:
            command += ["--record", self.record_path]
        if not self.record_bodies:
            command.append("--no-bodies")
        if self.batch:
            command += ["--batch", json.dumps(self.batch)]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(repo_root), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        self.process = subprocess.Popen(command, cwd=repo_root, env=env, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fake server exited with {self.process.returncode}")
            try:
                _http_json("GET", f"{self.base_url}/models", timeout=1.0)
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"fake server did not answer on port {self.port}")

    def requests(self) -> list[RecordedRequest]:
        """The requests recorded so far (fetched over HTTP)."""
        data = _http_json("GET", f"{self._control}/requests", timeout=60.0)
        return [RecordedRequest.model_validate(item) for item in data]

    def set_faults(self, faults: Iterable[FaultRule]) -> None:
        _http_json("POST", f"{self._control}/faults", [f.model_dump() for f in faults])

    def batch_log(self) -> dict[str, Any]:
        """Uploads, creations, batches and the call log of the Files/Batches endpoints."""
        return _http_json("GET", f"{self._control}/batch_log")  # type: ignore[no-any-return]

    def set_batch_hold(self, hold: bool) -> None:
        """Hold batches in_progress before their first request (or release them)."""
        _http_json("POST", f"{self._control}/batch_hold", {"hold": hold})

    def reset(self) -> None:
        _http_json("POST", f"{self._control}/reset", {})

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def __enter__(self) -> FakeOpenAIProcess:
        # spawn_fake_openai() already started it: a second start would leak the first process
        return self if self.process is not None and self.process.poll() is None else self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def spawn_fake_openai(**kwargs: Any) -> FakeOpenAIProcess:
    """Start the fake server as a separate process and wait until it answers."""
    return FakeOpenAIProcess(**kwargs).start()


def _load_faults(value: str | None) -> list[FaultRule]:
    if not value:
        return []
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    if not text.lstrip().startswith("[") and Path(text).is_file():
        text = Path(text).read_text()
    return [FaultRule.model_validate(item) for item in json.loads(text)]


async def _serve_forever(config: FakeServerConfig, host: str, port: int) -> None:
    state = _FakeState(config)
    runner, bound = await _start_site(state, host, port)
    print(f"fake OpenAI server on http://{host}:{bound}/v1", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    state.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--faults", help="JSON list of FaultRule, @file or a file path")
    parser.add_argument("--api-key", help="require this bearer token (else 401)")
    parser.add_argument("--record", help="append every request as a JSON line to this file")
    parser.add_argument("--no-bodies", action="store_true", help="do not keep request bodies")
    parser.add_argument("--batch", help="JSON of the Batch API settings (BatchSettings)")
    args = parser.parse_args(argv)
    config = FakeServerConfig(
        delay_s=args.delay_s,
        faults=_load_faults(args.faults),
        api_key=args.api_key,
        record_path=args.record,
        record_bodies=not args.no_bodies,
        batch=json.loads(args.batch) if args.batch else {},
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve_forever(config, args.host, args.port))


if __name__ == "__main__":
    main()
