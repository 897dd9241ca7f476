"""A chat client whose answers come from the OpenAI Batch API (``negforge generate --batch``).

:class:`BatchChatClient` is a :class:`~negforge.generation.client.ChatClient`: the filler
(:class:`~negforge.generation.filling.LLMFiller`) asks it exactly as it asks the online
client, so prompts, the response cache, validation, re-asks, ``--on-invalid`` and the journal
of finished queries are the online path's own. What differs is transport:

* **rounds** -- every query's fill runs at once; a request waits in the client until *every*
  running fill is waiting on an answer (or a file's worth of requests has gathered), then the
  waiting requests become batch input files (split at the request-count and byte limits),
  are uploaded through the Files API and turned into batches. Re-asks of invalid answers are
  the next round: a follow-up batch (or online, ``batch_retry="online"``);
* **polling** -- one task polls the running batches with growing pauses (``batch_poll_s``
  up to ``batch_max_poll_s``) and prints a status line; a finished batch's output and error
  files are downloaded and each waiting request gets its answer or an error;
* **failures** -- an error line, a request an expired or cancelled batch never ran, and every
  request of a failed batch raise :class:`~negforge.generation.errors.RetryableCallError`;
  the filler's retry layer (``--max-retries``, with backoff) then asks again, which sends
  the request in a later batch (or online). Answers a batch did produce are kept;
* **exactly once** -- before a file is uploaded its plan (custom ids and request keys) is
  journaled, then the file id, then the batch id (each line fsynced). A restarted run
  attaches its requests to the journaled batches by request key and polls them; it never
  uploads or creates again what the journal (or, after a kill between two of those steps,
  a lookup by file name or batch metadata) shows was already sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from negforge.generation.batch_api import PLAN_METADATA_KEY, BatchAPI, BatchInfo
from negforge.generation.batch_files import (
    BatchResult,
    batch_line,
    custom_id_for,
    parse_custom_id,
    parse_result_file,
    request_key,
    split_lines,
)
from negforge.generation.client import (
    BackendSpec,
    ChatClient,
    Completion,
    SamplingParams,
    chat_request_body,
    completion_from_body,
)
from negforge.generation.config import GenerateConfig
from negforge.generation.errors import BackendCallError, FatalCallError, RetryableCallError
from negforge.generation.journal import RunJournal

#: The query whose fill is running in the current task (custom ids name it).
CURRENT_QID: ContextVar[str | None] = ContextVar("negforge_batch_qid", default=None)
#: How much longer each pause between polls gets.
POLL_GROWTH = 1.5


class BatchReport(BaseModel):
    """What the Batch API did in one run (stored in the run summary)."""

    batches_created: int = 0
    batches_resumed: int = 0  # journaled batches of an earlier run that this run polled
    uploads: int = 0
    batch_requests: int = 0  # requests answered by a batch
    batch_request_errors: int = 0  # requests a batch did not answer (error line, expiry, ...)
    online_requests: int = 0  # --batch-retry online
    batch_input_tokens: int = 0
    batch_output_tokens: int = 0
    online_input_tokens: int = 0
    online_output_tokens: int = 0
    statuses: dict[str, int] = Field(default_factory=dict)  # final status -> batches


@dataclass
class _Request:
    custom_id: str
    key: str
    body: dict[str, Any]
    future: asyncio.Future[Completion]


@dataclass
class _Plan:
    """One batch input file and the batch made of it."""

    plan_id: str
    requests: dict[str, str]  # custom_id -> request key
    file_name: str
    data: bytes | None = None  # the file, until uploaded (new plans only)
    file_id: str | None = None
    batch_id: str | None = None
    info: BatchInfo | None = None
    waiters: dict[str, list[asyncio.Future[Completion]]] = field(default_factory=dict)
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)  # of journaled plans
    delivered: bool = False
    from_journal: bool = False

    @property
    def by_key(self) -> dict[str, str]:
        return {key: custom_id for custom_id, key in self.requests.items()}


def _attempt_of(messages: Sequence[Mapping[str, str]]) -> int:
    """1 for a query's first request, 2 for the first re-ask, ..."""
    return 1 + sum(1 for message in messages if message.get("role") == "assistant")


class BatchChatClient:
    """Chat completions through the Batch API (see the module docstring)."""

    def __init__(
        self,
        *,
        spec: BackendSpec,
        config: GenerateConfig,
        api: BatchAPI,
        journal: RunJournal,
        online: ChatClient | None = None,
        note: Callable[[str], None] | None = None,
    ) -> None:
        self._model = spec.wire_model
        self._config = config
        self._api = api
        self._journal = journal
        self._online = online
        self._note = note or (lambda _text: None)
        self.report = BatchReport()
        self.live = 0  # fills still running (set by the runner)
        self._plans: dict[str, _Plan] = {}
        self._key_plan: dict[str, str] = {}  # request key -> latest plan that holds it
        self._unsubmitted: list[_Request] = []
        self._open: set[asyncio.Future[Completion]] = set()
        self._submissions: Counter[str] = Counter()
        self._failed_keys: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._reset_pause = False
        self._load_journal()

    # --- state from the journal -----------------------------------------------------------

    def _load_journal(self) -> None:
        for event in self._journal.events:
            kind, plan_id = event.get("event"), event.get("plan")
            if kind == "batch_plan" and isinstance(plan_id, str):
                requests = {str(cid): str(key) for cid, key in event.get("requests", [])}
                plan = _Plan(plan_id, requests, str(event.get("file")), from_journal=True)
                self._plans[plan_id] = plan
                for key in requests.values():
                    self._key_plan[key] = plan_id
            elif isinstance(plan_id, str) and plan_id in self._plans:
                plan = self._plans[plan_id]
                if kind == "batch_file":
                    plan.file_id = str(event["file_id"])
                elif kind == "batch_created":
                    plan.batch_id = str(event["batch_id"])

    async def recover(self) -> None:
        """Settle journaled plans whose batch id was never journaled (a kill in between):
        adopt the batch if the API has one for the plan, else keep the uploaded file for
        the next round, else forget the plan (nothing of it was sent)."""
        for plan in list(self._plans.values()):
            if plan.batch_id is not None:
                continue
            found = await self._api.find_batch(plan.plan_id)
            if found is not None:
                plan.batch_id, plan.file_id, plan.info = found.id, found.input_file_id, found
                self._journal.append_event(
                    {"event": "batch_created", "plan": plan.plan_id, "batch_id": found.id}
                )
                continue
            if plan.file_id is None:
                plan.file_id = await self._api.find_file(plan.file_name)
                if plan.file_id is not None:
                    self._journal.append_event(
                        {"event": "batch_file", "plan": plan.plan_id, "file_id": plan.file_id}
                    )
            if plan.file_id is None:
                self._forget(plan)

    def _forget(self, plan: _Plan) -> None:
        self._plans.pop(plan.plan_id, None)
        for key in plan.requests.values():
            if self._key_plan.get(key) == plan.plan_id:
                del self._key_plan[key]

    # --- ChatClient ------------------------------------------------------------------------

    async def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        response_format: Mapping[str, Any] | None,
        params: SamplingParams,
    ) -> Completion:
        body = chat_request_body(self._model, messages, response_format, params)
        key = request_key(body)
        attempt = _attempt_of(messages)
        if self._online is not None and (attempt > 1 or key in self._failed_keys):
            return await self._complete_online(messages, response_format, params)
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._open.add(future)
        plan = self._plans.get(self._key_plan.get(key, ""))
        if plan is not None and not plan.delivered:
            custom_id = plan.by_key[key]
            plan.waiters.setdefault(custom_id, []).append(future)
            plan.bodies[custom_id] = body
            if plan.batch_id is not None:
                if plan.from_journal and len(plan.waiters) == 1:
                    self.report.batches_resumed += 1
                self._ensure_poller()
        else:
            self._submissions[key] += 1
            qid = CURRENT_QID.get() or "query"
            custom_id = custom_id_for(qid, attempt, self._submissions[key])
            self._unsubmitted.append(_Request(custom_id, key, body, future))
            if len(self._unsubmitted) >= self._config.batch_max_requests:
                self._flush()
        self.maybe_flush()
        try:
            return await future
        finally:
            self._open.discard(future)

    async def _complete_online(
        self,
        messages: Sequence[Mapping[str, str]],
        response_format: Mapping[str, Any] | None,
        params: SamplingParams,
    ) -> Completion:
        assert self._online is not None
        self.report.online_requests += 1
        completion = await self._online.complete(messages, response_format, params)
        self.report.online_input_tokens += completion.input_tokens
        self.report.online_output_tokens += completion.output_tokens
        return completion

    def fill_finished(self) -> None:
        """One fill is done (the runner calls this): the round may be complete."""
        self.live -= 1
        self.maybe_flush()

    def maybe_flush(self) -> None:
        """Send the waiting requests once every running fill waits on an answer."""
        if len(self._open) < self.live:
            return  # some fill is still on its way to a request
        if self._unsubmitted or any(self._stalled_plans()):
            self._flush()

    def _stalled_plans(self) -> list[_Plan]:
        """Journaled plans with an uploaded file but no batch, now waited on."""
        return [p for p in self._plans.values()
                if p.batch_id is None and p.file_id is not None and p.from_journal
                and p.waiters and not p.delivered]  # fmt: skip

    # --- rounds: plan, upload, create -------------------------------------------------------

    def _flush(self) -> None:
        requests, self._unsubmitted = self._unsubmitted, []
        for plan in self._stalled_plans():
            if set(plan.waiters) == set(plan.requests):
                self._spawn(self._submit(plan))  # the whole file is wanted: create from it
                continue
            self._forget(plan)  # only part is wanted: send those again, leave the file
            plan.delivered = True
            for custom_id, futures in plan.waiters.items():
                key = plan.requests[custom_id]
                self._submissions[key] += 1
                qid, attempt, _ = parse_custom_id(custom_id)
                renamed = custom_id_for(qid, attempt, self._submissions[key] + 1)
                requests.extend(_Request(renamed, key, plan.bodies[custom_id], future)
                                for future in futures)  # fmt: skip
        if not requests:
            return
        waiting: dict[str, list[asyncio.Future[Completion]]] = {}
        lines = []
        for request in requests:  # one line per custom id (a repeated request shares it)
            if request.custom_id not in waiting:
                lines.append(batch_line(request.custom_id, request.body, request.key))
            waiting.setdefault(request.custom_id, []).append(request.future)
        try:
            groups = split_lines(lines, self._config.batch_max_requests,
                                 self._config.batch_max_bytes)  # fmt: skip
        except ValueError as exc:
            self._fail([f for group in waiting.values() for f in group], FatalCallError(str(exc)))
            return
        for group in groups:
            plan_id = uuid.uuid4().hex[:16]
            plan = _Plan(
                plan_id=plan_id,
                requests={line.custom_id: line.key for line in group},
                file_name=f"negforge-batch-{plan_id}.jsonl",
                data=b"".join(line.data for line in group),
                waiters={line.custom_id: waiting[line.custom_id] for line in group},
            )
            self._journal.append_event({
                "event": "batch_plan", "plan": plan_id, "file": plan.file_name,
                "requests": [[line.custom_id, line.key] for line in group],
            })  # fmt: skip
            self._plans[plan_id] = plan
            for line in group:
                self._key_plan[line.key] = plan_id
            self._spawn(self._submit(plan))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _submit(self, plan: _Plan) -> None:
        try:
            if plan.file_id is None:
                assert plan.data is not None
                plan.file_id = await self._api.upload(plan.file_name, plan.data)
                self.report.uploads += 1
                self._journal.append_event(
                    {"event": "batch_file", "plan": plan.plan_id, "file_id": plan.file_id}
                )
                plan.data = None
            info = await self._api.create(plan.file_id, {PLAN_METADATA_KEY: plan.plan_id})
            plan.batch_id, plan.info = info.id, info
            self._journal.append_event(
                {"event": "batch_created", "plan": plan.plan_id, "batch_id": info.id}
            )
            self.report.batches_created += 1
            self._reset_pause = True
            self._ensure_poller()
        except asyncio.CancelledError:
            raise
        except BackendCallError as exc:
            self._settle(plan, {}, error=exc)
        except Exception as exc:  # a bug or an SDK surprise: stop the run, do not hang
            self._settle(plan, {}, error=FatalCallError(f"batch submission failed: {exc!r}"))

    # --- polling and delivery ---------------------------------------------------------------

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll())

    def _watched(self) -> list[_Plan]:
        return [p for p in self._plans.values()
                if p.batch_id is not None and p.waiters and not p.delivered]  # fmt: skip

    async def _poll(self) -> None:
        pause = self._config.batch_poll_s
        first = True
        try:
            while self._watched():
                if not first:  # a resumed batch may be finished already: look at once
                    await asyncio.sleep(pause)
                first = False
                for plan in self._watched():
                    assert plan.batch_id is not None
                    info = await self._api.retrieve(plan.batch_id)
                    plan.info = info
                    if info.terminal:
                        await self._deliver(plan, info)
                if self._reset_pause:
                    pause, self._reset_pause = self._config.batch_poll_s, False
                else:
                    pause = min(pause * POLL_GROWTH, self._config.batch_max_poll_s)
                self._status_line(pause)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc if isinstance(exc, BackendCallError) else FatalCallError(
                f"polling the Batch API failed: {exc!r}")  # fmt: skip
            for plan in self._watched():
                self._settle(plan, {}, error=error)

    def _status_line(self, pause: float) -> None:
        running = [p.info for p in self._watched() if p.info is not None]
        if not running:
            return
        total = sum(info.total for info in running)
        done = sum(info.completed for info in running)
        failed = sum(info.failed for info in running)
        statuses = Counter(info.status for info in running)
        states = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
        finished = sum(1 for p in self._plans.values() if p.delivered and p.batch_id)
        self._note(
            f"batch: {len(running)} running ({states}); requests {done}/{total} done, "
            f"{failed} failed; {finished} batches finished; next poll in {pause:.0f} s"
        )

    async def _deliver(self, plan: _Plan, info: BatchInfo) -> None:
        """Download a finished batch's output and error files and answer its waiters."""
        results: dict[str, BatchResult] = {}
        for file_id in (info.error_file_id, info.output_file_id):  # output wins on overlap
            if file_id:
                parsed, _unreadable = parse_result_file(await self._api.content(file_id))
                results.update(parsed)
        self.report.statuses[info.status] = self.report.statuses.get(info.status, 0) + 1
        self._settle(plan, results, info=info)
        self._journal.append_event({
            "event": "batch_done", "plan": plan.plan_id, "batch_id": info.id,
            "status": info.status, "completed": info.completed, "failed": info.failed,
        })  # fmt: skip

    def _settle(
        self,
        plan: _Plan,
        results: Mapping[str, BatchResult],
        *,
        info: BatchInfo | None = None,
        error: BackendCallError | None = None,
    ) -> None:
        """Answer (or fail) every waiter of a plan; its keys go back to the next round."""
        plan.delivered = True
        for key in plan.requests.values():
            if self._key_plan.get(key) == plan.plan_id:
                del self._key_plan[key]
        for custom_id, futures in plan.waiters.items():
            outcome = error or self._outcome(custom_id, results.get(custom_id), info)
            if isinstance(outcome, Completion):
                self.report.batch_requests += 1
                self.report.batch_input_tokens += outcome.input_tokens
                self.report.batch_output_tokens += outcome.output_tokens
            else:
                self.report.batch_request_errors += 1
                self._failed_keys.add(plan.requests[custom_id])
            for future in futures:
                self._resolve(future, outcome)

    @staticmethod
    def _outcome(
        custom_id: str, result: BatchResult | None, info: BatchInfo | None
    ) -> Completion | BackendCallError:
        batch = f"batch {info.id} ({info.status})" if info else "batch"
        if result is None:
            why = "; ".join(info.errors) if info and info.errors else "no result line"
            return RetryableCallError(f"{batch}: request {custom_id} did not run: {why}")
        if result.ok:
            try:
                return completion_from_body(result.body)
            except json.JSONDecodeError as exc:
                return RetryableCallError(f"{batch}: request {custom_id}: malformed body: {exc}")
        detail = result.error_message or "no message"
        code = f" {result.error_code}" if result.error_code else ""
        status = f"HTTP {result.status_code}" if result.status_code else "error"
        return RetryableCallError(f"{batch}: request {custom_id}: {status}{code}: {detail}",
                                  status=result.status_code)  # fmt: skip

    def _resolve(self, future: asyncio.Future[Completion],
                 outcome: Completion | BaseException) -> None:  # fmt: skip
        self._open.discard(future)
        if future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def _fail(self, futures: Sequence[asyncio.Future[Completion]], error: BaseException) -> None:
        for future in futures:
            self._resolve(future, error)

    async def aclose(self) -> None:
        """Stop polling and submitting (running batches go on at the API; a rerun resumes)."""
        tasks = [*self._tasks, *([self._poller] if self._poller is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._online is not None:
            await self._online.aclose()
        await self._api.aclose()
