"""The OpenAI Files and Batches endpoints, as negforge uses them (through the ``openai`` SDK).

Every call goes through :func:`negforge.generation.retry.call_with_retries`: 429s, 5xx,
timeouts and dropped connections are retried with backoff; a rejected key or request stops
the run (:class:`~negforge.generation.errors.FatalCallError`). Lookups by name
(:meth:`BatchAPI.find_file`, :meth:`BatchAPI.find_batch`) let a restarted run adopt a file
or batch that an earlier run made but was killed before it could journal the id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from negforge.generation.batch_files import CHAT_ENDPOINT
from negforge.generation.client import BackendSpec, openai_api_key
from negforge.generation.config import GenerateConfig
from negforge.generation.retry import call_with_retries

T = TypeVar("T")

#: Batch statuses after which nothing changes any more.
TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
#: The batch metadata key that names the negforge plan a batch was made from.
PLAN_METADATA_KEY = "negforge_plan"


class BatchInfo(BaseModel):
    """What negforge reads of a Batch object."""

    id: str
    status: str
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: list[str] = []
    metadata: dict[str, str] = {}

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_sdk(cls, batch: Any) -> BatchInfo:
        counts = getattr(batch, "request_counts", None)
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        return cls(
            id=batch.id,
            status=str(batch.status),
            input_file_id=getattr(batch, "input_file_id", None),
            output_file_id=getattr(batch, "output_file_id", None),
            error_file_id=getattr(batch, "error_file_id", None),
            total=int(getattr(counts, "total", 0) or 0),
            completed=int(getattr(counts, "completed", 0) or 0),
            failed=int(getattr(counts, "failed", 0) or 0),
            errors=[
                f"{getattr(e, 'code', None) or 'error'}: {getattr(e, 'message', '')}"
                + (f" (line {e.line})" if getattr(e, "line", None) else "")
                for e in errors
            ],
            metadata=dict(getattr(batch, "metadata", None) or {}),
        )


class BatchAPI:
    """Upload, create, retrieve, cancel, download: one ``openai.AsyncOpenAI`` client."""

    def __init__(self, spec: BackendSpec, config: GenerateConfig) -> None:
        import openai

        self._client = openai.AsyncOpenAI(
            api_key=openai_api_key(spec), base_url=spec.api_base, max_retries=0,
            timeout=max(config.timeout_s, 120.0),  # uploads and downloads can be large
        )  # fmt: skip
        self._config = config
        self.uploads = 0  # files this client uploaded
        self.created = 0  # batches this client created

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        return await call_with_retries(
            call, max_retries=self._config.max_retries, max_backoff_s=self._config.max_backoff_s
        )

    async def upload(self, name: str, data: bytes) -> str:
        """Upload a batch input file; its file id."""
        uploaded = await self._call(
            lambda: self._client.files.create(
                file=(name, data, "application/jsonl"), purpose="batch"
            )
        )
        self.uploads += 1
        return str(uploaded.id)

    async def find_file(self, name: str) -> str | None:
        """The id of an uploaded batch file with this name (the newest), if any."""

        async def scan() -> str | None:
            async for item in self._client.files.list(purpose="batch"):
                if getattr(item, "filename", None) == name:
                    return str(item.id)
            return None

        return await self._call(scan)

    async def create(self, file_id: str, metadata: Mapping[str, str]) -> BatchInfo:
        """Create a batch over an uploaded file."""
        batch = await self._call(
            lambda: self._client.batches.create(
                input_file_id=file_id,
                endpoint=CHAT_ENDPOINT,
                completion_window=self._config.batch_completion_window,  # type: ignore[arg-type]
                metadata=dict(metadata),
            )
        )
        self.created += 1
        return BatchInfo.from_sdk(batch)

    async def find_batch(self, plan_id: str) -> BatchInfo | None:
        """The batch created from a plan (by its metadata), if any."""

        async def scan() -> BatchInfo | None:
            async for item in self._client.batches.list(limit=100):
                if (getattr(item, "metadata", None) or {}).get(PLAN_METADATA_KEY) == plan_id:
                    return BatchInfo.from_sdk(item)
            return None

        return await self._call(scan)

    async def retrieve(self, batch_id: str) -> BatchInfo:
        batch = await self._call(lambda: self._client.batches.retrieve(batch_id))
        return BatchInfo.from_sdk(batch)

    async def cancel(self, batch_id: str) -> BatchInfo:
        batch = await self._call(lambda: self._client.batches.cancel(batch_id))
        return BatchInfo.from_sdk(batch)

    async def content(self, file_id: str) -> bytes:
        """The bytes of an output or error file."""

        async def download() -> bytes:
            response = await self._client.files.content(file_id)
            return bytes(response.content)

        return await self._call(download)

    async def aclose(self) -> None:
        await self._client.close()
