"""negforge's chat-completions transport (negforge.generation.chat_http) against a loopback
HTTP server: what it sends, how it reads answers, and that it classifies every failure as the
OpenAI SDK's exceptions are classified (the SDK is run on the same answers and compared)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest
from aiohttp import ClientSession, web

from negforge.generation.chat_http import (
    HttpChatClient,
    base_url_for,
    error_detail,
    proxy_for,
)
from negforge.generation.client import BackendSpec, SamplingParams, chat_request_body
from negforge.generation.errors import (
    BackendCallError,
    FatalCallError,
    RetryableCallError,
    classify_exception,
)

KEY = "sk-chat-http-test-key-0123456789"
PARAMS = SamplingParams(temperature=0.7, max_tokens=64, seed=3)
MESSAGES = [{"role": "system", "content": "fill the masks"},
            {"role": "user", "content": "a person <mask> the door — ünïcode"}]  # fmt: skip
FORMAT = {"type": "json_object"}
ANSWER = {"choices": [{"message": {"role": "assistant", "content": '{"level_1": ["opens"]}'}}],
          "usage": {"prompt_tokens": 21, "completion_tokens": 5}}  # fmt: skip

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(handler: Handler, *, method: str = "POST",
                path: str = "/v1/chat/completions") -> AsyncIterator[str]:  # fmt: skip
    """A loopback server answering ``path`` with ``handler``; its base URL (``.../v1``)."""
    app = web.Application()
    app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


def spec_for(base_url: str | None) -> BackendSpec:
    return BackendSpec(llm="openai/fake", provider="openai-compatible", model="openai/fake",
                       wire_model="fake", api_base=base_url, transport="openai",
                       wire_format="json_object")  # fmt: skip


async def via_negforge(base_url: str, timeout_s: float = 5.0) -> Any:
    client = HttpChatClient(spec_for(base_url), timeout_s=timeout_s)
    try:
        return await client.complete(MESSAGES, FORMAT, PARAMS)
    finally:
        await client.aclose()


async def via_sdk(base_url: str, timeout_s: float = 5.0) -> bytes:
    client = openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=timeout_s)
    try:
        body = chat_request_body("fake", MESSAGES, FORMAT, PARAMS)
        return await client.post("/chat/completions", body=body, cast_to=bytes)
    finally:
        await client.close()


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    for name in ("OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "HTTP_PROXY",
                 "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                 "all_proxy", "no_proxy"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def test_a_request_carries_the_key_the_organisation_and_the_prepared_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_ORG_ID", "org-42")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-7")
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["headers"] = dict(request.headers)
        seen["body"] = json.loads(await request.read())
        return web.json_response(ANSWER)

    async def main() -> Any:
        async with serve(handler) as base_url:
            return await via_negforge(base_url)

    completion = asyncio.run(main())
    assert completion.text == '{"level_1": ["opens"]}'
    assert (completion.input_tokens, completion.output_tokens) == (21, 5)
    assert seen["body"] == chat_request_body("fake", MESSAGES, FORMAT, PARAMS)
    headers = seen["headers"]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["Content-Type"] == "application/json"
    assert headers["OpenAI-Organization"] == "org-42" and headers["OpenAI-Project"] == "proj-7"


def _status_handler(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(body, status=status, headers=headers or {})

    return handler


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retry_after"),
    [
        (429, {"Retry-After": "2"}, RetryableCallError, 2.0),
        (429, {"retry-after-ms": "250"}, RetryableCallError, 0.25),
        (500, None, RetryableCallError, None),
        (503, None, RetryableCallError, None),
        (408, None, RetryableCallError, None),
        (400, None, FatalCallError, None),
        (401, None, FatalCallError, None),
        (403, None, FatalCallError, None),
        (404, None, FatalCallError, None),
        (422, None, FatalCallError, None),
    ],
)
def test_error_answers_are_classified_as_the_sdks_exceptions_are(
    status: int, headers: dict[str, str] | None, kind: type[BackendCallError],
    retry_after: float | None,
) -> None:  # fmt: skip
    body = {"error": {"message": f"status {status} from the server", "type": "test"}}

    async def main() -> tuple[BaseException, BaseException]:
        async with serve(_status_handler(status, body, headers)) as base_url:
            with pytest.raises(BackendCallError) as ours:
                await via_negforge(base_url)
            with pytest.raises(openai.APIStatusError) as sdk:
                await via_sdk(base_url)
        return ours.value, classify_exception(sdk.value)

    ours, theirs = asyncio.run(main())
    assert type(ours) is type(theirs) is kind
    assert ours.status == theirs.status == status  # type: ignore[attr-defined]
    assert getattr(ours, "retry_after", None) == getattr(theirs, "retry_after", None)
    assert getattr(ours, "retry_after", None) == retry_after
    assert f"HTTP {status}" in str(ours) and f"status {status} from the server" in str(ours)


def test_a_server_echoing_the_key_never_gets_it_into_the_error() -> None:
    body = {"error": {"message": f"Incorrect API key provided: {KEY}"}}

    async def main() -> BaseException:
        async with serve(_status_handler(401, body)) as base_url:
            with pytest.raises(FatalCallError) as caught:
                await via_negforge(base_url)
        return caught.value

    error = asyncio.run(main())
    assert KEY not in str(error) and "authentication failed" in str(error)


def test_a_stalled_server_a_closed_port_and_a_malformed_body_are_retryable() -> None:
    async def stall(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response(ANSWER)

    async def malformed(request: web.Request) -> web.Response:
        return web.Response(text="<html>bad gateway</html>", content_type="text/html")

    async def main() -> list[BaseException]:
        errors: list[BaseException] = []
        async with serve(stall) as base_url:
            with pytest.raises(RetryableCallError) as caught:
                await via_negforge(base_url, timeout_s=0.3)
            errors.append(caught.value)
        async with serve(malformed) as base_url:
            with pytest.raises(RetryableCallError) as caught:
                await via_negforge(base_url)
            errors.append(caught.value)
        closed = base_url  # the server above is gone: nothing listens on its port
        with pytest.raises(RetryableCallError) as caught:
            await via_negforge(closed)
        errors.append(caught.value)
        return errors

    stalled, bad_body, refused = asyncio.run(main())
    assert "timed out after 0.3 s" in str(stalled)
    assert "malformed response body" in str(bad_body)
    assert "Connection failed" in str(refused) and "Cannot connect" in str(refused)


def test_requests_go_through_the_environments_proxy_unless_no_proxy_names_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    relayed: list[str] = []

    async def backend(request: web.Request) -> web.Response:
        return web.json_response(ANSWER)

    async def main() -> None:
        async with serve(backend) as base_url:
            async def proxy(request: web.Request) -> web.Response:  # a forward proxy
                relayed.append(str(request.url))
                async with ClientSession() as session, session.post(
                    str(request.url), data=await request.read(), headers=request.headers
                ) as answer:
                    return web.Response(body=await answer.read(), status=answer.status,
                                        content_type=answer.content_type)  # fmt: skip

            async with serve(proxy, method="*", path="/{tail:.*}") as proxy_base:
                proxy_url = proxy_base.removesuffix("/v1")
                monkeypatch.setenv("HTTP_PROXY", proxy_url)
                assert proxy_for(f"{base_url}/chat/completions") == proxy_url
                await via_negforge(base_url)
                assert relayed == [f"{base_url}/chat/completions"]
                monkeypatch.setenv("NO_PROXY", "127.0.0.1")
                assert proxy_for(f"{base_url}/chat/completions") is None
                await via_negforge(base_url)
                assert len(relayed) == 1  # straight to the server this time

    asyncio.run(main())


def test_the_base_url_follows_api_base_then_openai_base_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert base_url_for(spec_for(None)) == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "https://gateway.example/v1/")
    assert base_url_for(spec_for(None)) == "https://gateway.example/v1"
    assert base_url_for(spec_for("http://127.0.0.1:9/v1")) == "http://127.0.0.1:9/v1"


def test_error_detail_reads_the_apis_error_message_or_the_text() -> None:
    assert error_detail(b'{"error": {"message": "quota exceeded"}}') == "quota exceeded"
    assert error_detail(b'{"error": "bad model"}') == "bad model"
    assert error_detail(b"upstream timeout\n") == "upstream timeout"
    assert error_detail(b"") == "(empty body)"


def test_user_info_in_the_url_becomes_basic_auth_and_leaves_the_url() -> None:
    import base64

    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["authorization"] = request.headers["Authorization"]
        seen["host"] = request.headers["Host"]
        return web.json_response(ANSWER)

    async def main() -> None:
        async with serve(handler) as base_url:
            await via_negforge(base_url.replace("http://", "http://gate%40user:s3cr%3At@"))

    asyncio.run(main())
    token = base64.b64encode(b"gate@user:s3cr:t").decode()
    assert seen["authorization"] == f"Basic {token}"
    assert "@" not in seen["host"]
