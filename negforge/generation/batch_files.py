"""The Batch API's files: request lines in, result lines out (pure: no I/O, no SDK).

An input file holds one JSON line per request::

    {"custom_id": "<qid>#<attempt>", "method": "POST", "url": "/v1/chat/completions",
     "body": {...the very body an online request posts...}}

``custom_id`` names the query and the attempt (1 = first request, 2 = first re-ask, ...);
a request sent again after a failure gets ``~<n>``. Files are split so that none exceeds
the API's request-count or byte limit (:func:`split_lines`).

Result lines (output and error files) come in two shapes, both handled by
:func:`parse_result_line`: ``{"custom_id", "response": {"status_code", "body"}, "error": null}``
and ``{"custom_id", "response": null, "error": {"code", "message"}}`` (e.g. ``batch_expired``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

#: The endpoint every negforge batch targets.
CHAT_ENDPOINT: Final = "/v1/chat/completions"


def request_key(body: Mapping[str, Any]) -> str:
    """A request's identity: sha256 of its canonical JSON body (same body, same key)."""
    encoded = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


def custom_id_for(qid: str, attempt: int, submission: int = 1) -> str:
    """``<qid>#<attempt>``, with ``~<submission>`` when a failed request is sent again."""
    base = f"{qid}#{attempt}"
    return base if submission <= 1 else f"{base}~{submission}"


_CUSTOM_ID = re.compile(r"^(?P<qid>.*)#(?P<attempt>\d+)(?:~(?P<submission>\d+))?$", re.DOTALL)


def parse_custom_id(custom_id: str) -> tuple[str, int, int]:
    """``(qid, attempt, submission)`` of a custom id made by :func:`custom_id_for`."""
    match = _CUSTOM_ID.match(custom_id)
    if match is None:
        raise ValueError(f"not a negforge custom id: {custom_id!r}")
    return match["qid"], int(match["attempt"]), int(match["submission"] or 1)


@dataclass(frozen=True)
class BatchLine:
    """One request of a batch input file."""

    custom_id: str
    key: str  # request_key of the body
    data: bytes  # the JSON line, newline included


def batch_line(custom_id: str, body: Mapping[str, Any], key: str | None = None) -> BatchLine:
    """The input-file line of one chat-completions request."""
    line = {"custom_id": custom_id, "method": "POST", "url": CHAT_ENDPOINT, "body": body}
    data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    return BatchLine(custom_id=custom_id, key=key or request_key(body), data=data)


def split_lines(
    lines: Sequence[BatchLine], max_requests: int, max_bytes: int
) -> list[list[BatchLine]]:
    """Consecutive groups of lines, each within ``max_requests`` lines and ``max_bytes``."""
    groups: list[list[BatchLine]] = []
    current: list[BatchLine] = []
    size = 0
    for line in lines:
        if len(line.data) > max_bytes:
            raise ValueError(
                f"request {line.custom_id} alone is {len(line.data)} bytes, over the batch "
                f"file limit of {max_bytes}"
            )
        if current and (len(current) >= max_requests or size + len(line.data) > max_bytes):
            groups.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line.data)
    if current:
        groups.append(current)
    return groups


@dataclass(frozen=True)
class BatchResult:
    """One line of a batch output or error file."""

    custom_id: str
    status_code: int | None  # HTTP status of the request; None when it never ran
    body: Any  # the response body (a chat completion when status_code is 200)
    error_code: str | None  # e.g. batch_expired, or the response body's error code
    error_message: str | None

    @property
    def ok(self) -> bool:
        return self.status_code == 200 and isinstance(self.body, dict)


def parse_result_line(raw: bytes | str) -> BatchResult:
    """Read one result line (raises ValueError when it is not a result line at all)."""
    line = json.loads(raw)
    if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
        raise ValueError("a batch result line needs a custom_id")
    response = line.get("response") if isinstance(line.get("response"), dict) else None
    error = line.get("error") if isinstance(line.get("error"), dict) else None
    status = response.get("status_code") if response else None
    body = response.get("body") if response else None
    code = message = None
    if error is not None:
        code, message = error.get("code"), error.get("message")
    elif isinstance(body, dict) and isinstance(body.get("error"), dict):
        code, message = body["error"].get("code") or body["error"].get("type"), body[
            "error"
        ].get("message")
    return BatchResult(
        custom_id=line["custom_id"],
        status_code=int(status) if isinstance(status, int) else None,
        body=body,
        error_code=str(code) if code is not None else None,
        error_message=str(message) if message is not None else None,
    )


def parse_result_file(data: bytes) -> tuple[dict[str, BatchResult], int]:
    """Results by custom_id, and the number of unreadable lines (skipped)."""
    results: dict[str, BatchResult] = {}
    unreadable = 0
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            result = parse_result_line(raw)
        except ValueError:
            unreadable += 1
            continue
        results[result.custom_id] = result
    return results, unreadable
