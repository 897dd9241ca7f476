"""The Files and Batches endpoints of the OpenAI protocol for the fake server, with faults.

Registered on the fake server's app (:func:`add_batch_routes`):

* ``POST /v1/files`` (multipart ``file`` + ``purpose``), ``GET /v1/files`` (cursor pages,
  ``purpose`` filter), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``,
  ``DELETE /v1/files/{id}``;
* ``POST /v1/batches``, ``GET /v1/batches`` (cursor pages, newest first),
  ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``.

A batch goes ``validating`` -> ``in_progress`` -> ``finalizing`` -> ``completed`` (or
``failed`` when its input file is invalid, ``expired``, ``cancelling`` -> ``cancelled``),
its request counts move as it works, and it ends with an output file (answers, status 200)
and an error file (error responses; requests that never ran, with code ``batch_expired`` /
``batch_cancelled``). Each request is answered by the same code as an online request, so
the per-request :class:`~tests.support.fake_openai.FaultRule`\\s apply inside batches too
(``server_error`` -> an error line with status 500, ``wrong_count`` -> an invalid answer...),
and is recorded as a :class:`~tests.support.fake_openai.RecordedRequest` with ``batch_id``.

Batch faults (:class:`BatchFaultRule`, by 1-based batch creation number): ``fail`` (status
failed at validation), ``expire_half`` (expires once half its requests ran),
``cancel_half`` (cancelled once half ran, as by a user). ``hold`` keeps batches
``in_progress`` before their first request until released (``POST /_fake/batch_hold``).
The control endpoint ``GET /_fake/batch_log`` reports uploads, creations and every call.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

BatchFaultKind = Literal["fail", "expire_half", "cancel_half"]
_ENDPOINTS = ("/v1/chat/completions",)


class BatchFaultRule(BaseModel):
    """A fault of whole batches (all given conditions must hold)."""

    model_config = ConfigDict(extra="forbid")

    kind: BatchFaultKind
    batch_numbers: list[int] | None = None  # 1-based creation order; None: every batch
    limit: int | None = None


class BatchSettings(BaseModel):
    """How the fake runs batches."""

    model_config = ConfigDict(extra="forbid")

    faults: list[BatchFaultRule] = Field(default_factory=list)
    validate_s: float = 0.02  # time in "validating"
    request_delay_s: float = 0.0  # per request while "in_progress"
    finalize_s: float = 0.02  # time in "finalizing"
    hold: bool = False  # keep batches in_progress (before any request) until released


class BatchStore:
    """Files, batches and the call log of one fake server (touched on its event loop)."""

    def __init__(self, settings: BatchSettings) -> None:
        self.settings = settings
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.created = 0
        self.fired: dict[int, int] = {}
        self.log: list[dict[str, Any]] = []
        self.hold = asyncio.Event()
        if not settings.hold:
            self.hold.set()
        self.tasks: set[asyncio.Task[None]] = set()

    def note(self, call: str, **detail: Any) -> None:
        self.log.append({"call": call, "at": time.time(), **detail})

    def add_file(self, name: str, purpose: str, data: bytes) -> dict[str, Any]:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        record = {"id": file_id, "object": "file", "bytes": len(data),
                  "created_at": int(time.time()), "filename": name, "purpose": purpose,
                  "status": "processed", "status_details": None}  # fmt: skip
        self.files[file_id] = record
        self.contents[file_id] = data
        return record

    def batch_fault(self, number: int) -> BatchFaultKind | None:
        for index, rule in enumerate(self.settings.faults):
            if rule.limit is not None and self.fired.get(index, 0) >= rule.limit:
                continue
            if rule.batch_numbers is None or number in rule.batch_numbers:
                self.fired[index] = self.fired.get(index, 0) + 1
                return rule.kind
        return None

    def summary(self) -> dict[str, Any]:
        calls = [entry["call"] for entry in self.log]
        return {
            "uploads": calls.count("upload"),
            "creations": calls.count("create"),
            "retrieves": calls.count("retrieve"),
            "batches": [dict(b) for b in self.batches.values()],
            "log": list(self.log),
        }


def _page(items: list[dict[str, Any]], request: web.Request) -> dict[str, Any]:
    after = request.query.get("after")
    limit = int(request.query.get("limit", "20"))
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:limit]
    return {"object": "list", "data": page, "has_more": len(items) > limit,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None}  # fmt: skip


def _not_found(what: str) -> web.StreamResponse:
    payload = {"error": {"message": f"No such {what}", "type": "invalid_request_error",
                         "param": None, "code": None}}  # fmt: skip
    return web.json_response(payload, status=404)


def _bad_request(message: str) -> web.StreamResponse:
    payload = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                         "code": None}}  # fmt: skip
    return web.json_response(payload, status=400)


def _check_input(data: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The requests of an input file, and the validation errors (as the API reports them)."""
    lines: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[str] = set()
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            errors.append({"code": "invalid_json_line", "message": "not JSON", "line": number})
            continue
        custom_id = line.get("custom_id") if isinstance(line, dict) else None
        if not isinstance(custom_id, str) or custom_id in seen:
            errors.append({"code": "duplicate_custom_id" if custom_id in seen
                           else "missing_custom_id", "message": "bad custom_id",
                           "line": number})  # fmt: skip
            continue
        if line.get("method") != "POST" or line.get("url") not in _ENDPOINTS:
            errors.append({"code": "invalid_url", "message": "bad method or url", "line": number})
            continue
        seen.add(custom_id)
        models.add(str(line.get("body", {}).get("model")))
        lines.append(line)
    if len(models) > 1:
        errors.append({"code": "mixed_models", "message": "one model per batch", "line": None})
    if not lines and not errors:
        errors.append({"code": "empty_file", "message": "the file has no requests", "line": None})
    return lines, errors


def _result_line(custom_id: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"batch_req_{uuid.uuid4().hex[:20]}", "custom_id": custom_id,
            "response": {"status_code": status, "request_id": uuid.uuid4().hex, "body": body},
            "error": None}  # fmt: skip


def _error_body(status: int, message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}


def _answer(state: Any, line: dict[str, Any], batch_id: str) -> tuple[dict[str, Any], bool]:
    """The result line of one batch request (``True`` when answered with status 200)."""
    from tests.support.fake_openai import RecordedRequest, completion_payload, request_query

    body = line.get("body") or {}
    received = time.time()
    state.number += 1
    number = state.number
    query = request_query(body)
    state.per_query[query] += 1
    attempt = state.per_query[query]
    rule = state.pick_fault(number, query, attempt)
    fault = rule.kind if rule else None
    status = {"rate_limit": 429, "server_error": 500, "auth": 401, "bad_request": 400,
              "stall": 504, "drop": 502}.get(fault or "", 200)  # fmt: skip
    if status == 200:
        payload = completion_payload(body, fault, number, received)
    else:
        payload = _error_body(status, f"injected {fault}", "server_error")
    state.record(RecordedRequest(
        number=number, query=query, query_attempt=attempt, fault=fault, status=status,
        received_at=received, answered_at=time.time(),
        body=body if state.config.record_bodies else {}, batch_id=batch_id,
    ))  # fmt: skip
    return _result_line(line["custom_id"], status, payload), status == 200


async def _run_batch(store: BatchStore, state: Any, batch: dict[str, Any], number: int) -> None:
    """Move one batch through its statuses."""
    settings = store.settings
    fault = store.batch_fault(number)
    await asyncio.sleep(settings.validate_s)
    lines, errors = _check_input(store.contents[batch["input_file_id"]])
    if fault == "fail":
        errors.append({"code": "injected_failure", "message": "this batch fails (injected)",
                       "line": None})  # fmt: skip
    if errors:
        batch.update(status="failed", failed_at=int(time.time()),
                     errors={"object": "list", "data": errors})  # fmt: skip
        return
    batch.update(status="in_progress", in_progress_at=int(time.time()))
    batch["request_counts"]["total"] = len(lines)
    await store.hold.wait()
    outputs: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    stop_at = len(lines) // 2 if fault in ("expire_half", "cancel_half") else None
    ran = 0
    for line in lines:
        if batch["status"] == "cancelling" or (stop_at is not None and ran >= stop_at):
            break
        if settings.request_delay_s:
            await asyncio.sleep(settings.request_delay_s)
        result, ok = _answer(state, line, batch["id"])
        (outputs if ok else failures).append(result)
        batch["request_counts"]["completed" if ok else "failed"] += 1
        ran += 1
    ended = "completed"
    if fault == "expire_half" and batch["status"] != "cancelling":
        ended = "expired"
    elif fault == "cancel_half" or batch["status"] == "cancelling":
        ended = "cancelled"
        batch.update(status="cancelling", cancelling_at=int(time.time()))
    if ended == "completed":
        batch.update(status="finalizing", finalizing_at=int(time.time()))
    code = {"expired": "batch_expired", "cancelled": "batch_cancelled"}.get(ended)
    for line in lines[ran:]:  # never ran
        failures.append({"id": f"batch_req_{uuid.uuid4().hex[:20]}",
                         "custom_id": line["custom_id"], "response": None,
                         "error": {"code": code, "message": f"This request was not executed "
                                   f"because the batch was {ended}."}})  # fmt: skip
        batch["request_counts"]["failed"] += 1
    await asyncio.sleep(settings.finalize_s)

    def as_file(results: list[dict[str, Any]], kind: str) -> str | None:
        if not results:
            return None
        data = "".join(json.dumps(r) + "\n" for r in results).encode()
        return str(store.add_file(f"{batch['id']}_{kind}.jsonl", "batch_output", data)["id"])

    batch["output_file_id"] = as_file(outputs, "output")
    batch["error_file_id"] = as_file(failures, "error")
    batch.update(status=ended, **{f"{ended}_at": int(time.time())})


def add_batch_routes(app: web.Application, state: Any) -> None:
    """Register the Files and Batches endpoints (and their control endpoints) on ``app``."""
    store = BatchStore(BatchSettings.model_validate(state.config.batch))
    state.batch_store = store

    async def create_file(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        upload, purpose = form.get("file"), str(form.get("purpose", ""))
        if not isinstance(upload, web.FileField):
            return _bad_request("no file")
        record = store.add_file(upload.filename, purpose, upload.file.read())
        store.note("upload", file_id=record["id"], filename=record["filename"])
        return web.json_response(record)

    async def list_files(request: web.Request) -> web.StreamResponse:
        purpose = request.query.get("purpose")
        items = [f for f in reversed(list(store.files.values()))
                 if purpose is None or f["purpose"] == purpose]  # fmt: skip
        store.note("list_files")
        return web.json_response(_page(items, request))

    async def get_file(request: web.Request) -> web.StreamResponse:
        record = store.files.get(request.match_info["file_id"])
        return web.json_response(record) if record else _not_found("file")

    async def file_content(request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        if file_id not in store.contents:
            return _not_found("file")
        store.note("content", file_id=file_id)
        return web.Response(body=store.contents[file_id], content_type="application/octet-stream")

    async def delete_file(request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        if store.files.pop(file_id, None) is None:
            return _not_found("file")
        store.contents.pop(file_id, None)
        return web.json_response({"id": file_id, "object": "file", "deleted": True})

    async def create_batch(request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        file_id = payload.get("input_file_id")
        if file_id not in store.files or payload.get("endpoint") not in _ENDPOINTS:
            return _bad_request("bad input_file_id or endpoint")
        store.created += 1
        now = int(time.time())
        batch: dict[str, Any] = {
            "id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch",
            "endpoint": payload["endpoint"], "errors": None, "input_file_id": file_id,
            "completion_window": payload.get("completion_window", "24h"),
            "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": now, "in_progress_at": None, "expires_at": now + 86400,
            "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None,
            "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": payload.get("metadata") or {},
        }  # fmt: skip
        store.batches[batch["id"]] = batch
        store.note("create", batch_id=batch["id"], file_id=file_id, number=store.created)
        task = asyncio.ensure_future(_run_batch(store, state, batch, store.created))
        store.tasks.add(task)
        task.add_done_callback(store.tasks.discard)
        return web.json_response(batch)

    async def list_batches(request: web.Request) -> web.StreamResponse:
        store.note("list_batches")
        return web.json_response(_page(list(reversed(list(store.batches.values()))), request))

    async def get_batch(request: web.Request) -> web.StreamResponse:
        batch = store.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _not_found("batch")
        store.note("retrieve", batch_id=batch["id"], status=batch["status"])
        return web.json_response(batch)

    async def cancel_batch(request: web.Request) -> web.StreamResponse:
        batch = store.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _not_found("batch")
        store.note("cancel", batch_id=batch["id"])
        if batch["status"] in ("validating", "in_progress"):
            batch.update(status="cancelling", cancelling_at=int(time.time()))
        return web.json_response(batch)

    async def batch_log(_: web.Request) -> web.StreamResponse:
        return web.json_response(store.summary())

    async def batch_hold(request: web.Request) -> web.StreamResponse:
        hold = bool((await request.json()).get("hold"))
        if hold:
            store.hold.clear()
        else:
            store.hold.set()
        return web.json_response({"hold": hold})

    async def batch_faults(request: web.Request) -> web.StreamResponse:
        rules = [BatchFaultRule.model_validate(r) for r in await request.json()]
        store.settings = store.settings.model_copy(update={"faults": rules})
        store.fired.clear()
        return web.json_response({"faults": len(rules)})

    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/files", create_file)
        app.router.add_get(f"{prefix}/files", list_files)
        app.router.add_get(f"{prefix}/files/{{file_id}}", get_file)
        app.router.add_get(f"{prefix}/files/{{file_id}}/content", file_content)
        app.router.add_delete(f"{prefix}/files/{{file_id}}", delete_file)
        app.router.add_post(f"{prefix}/batches", create_batch)
        app.router.add_get(f"{prefix}/batches", list_batches)
        app.router.add_get(f"{prefix}/batches/{{batch_id}}", get_batch)
        app.router.add_post(f"{prefix}/batches/{{batch_id}}/cancel", cancel_batch)
    app.router.add_get("/_fake/batch_log", batch_log)
    app.router.add_post("/_fake/batch_hold", batch_hold)
    app.router.add_post("/_fake/batch_faults", batch_faults)
