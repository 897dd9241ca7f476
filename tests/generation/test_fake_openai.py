"""Self-test of the fake OpenAI server, through the plain ``openai`` client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from tests.support.fake_openai import (
    FILL_WORDS,
    FakeOpenAIServer,
    FaultRule,
    mask_counts,
    original_words,
    spawn_fake_openai,
)

QUERY = "person put a notebook in a bag."
LEVELS = [
    {"level": 1, "masked_query": "person <mask> a notebook in a bag.", "masks": 1},
    {"level": 2, "masked_query": "person <mask> a <mask> in a bag.", "masks": 2},
    {"level": 3, "masked_query": "person <mask> a <mask> in a <mask>.", "masks": 3},
]


def _messages(query: str = QUERY, levels: list[dict[str, Any]] = LEVELS) -> list[Any]:
    block = json.dumps({"query": query, "levels": levels, "dictionary": {"verb": ["open"]}})
    return [
        {"role": "system", "content": "You write hard negatives."},
        {"role": "user", "content": f"Fill every mask.\n```json\n{block}\n```"},
    ]


def _schema(counts: list[int]) -> Any:
    properties = {
        f"level_{i}": {"type": "array", "items": {"type": "string"}, "minItems": k, "maxItems": k}
        for i, k in enumerate(counts, start=1)
    }
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "negative_fills",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            },
        },
    }


def _client(server: FakeOpenAIServer, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, **kwargs)


def test_answers_with_one_fill_per_mask_and_usage() -> None:
    with FakeOpenAIServer() as server:
        client = _client(server)
        models = client.models.list()
        assert [m.id for m in models.data] == ["fake-gpt"]
        reply = client.chat.completions.create(
            model="fake-gpt",
            messages=_messages(),
            response_format=_schema([1, 2, 3]),
        )
        fills = json.loads(reply.choices[0].message.content or "")
        assert {k: len(v) for k, v in fills.items()} == {"level_1": 1, "level_2": 2, "level_3": 3}
        words = [w for level in fills.values() for w in level]
        assert len(set(words)) == len(words)
        assert not set(words) & set(QUERY.rstrip(".").split())
        assert set(words) <= set(FILL_WORDS)
        assert reply.usage is not None and reply.usage.prompt_tokens > 0
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
        # without a response_format the counts come from the fenced block of the prompt
        plain = client.chat.completions.create(model="fake-gpt", messages=_messages())
        assert json.loads(plain.choices[0].message.content or "") == fills
        assert [r.status for r in server.requests] == [200, 200]
        assert server.requests[0].query == QUERY


def test_schema_counts_win_over_prompt_and_llama_shape_is_read() -> None:
    body = {
        "messages": _messages(),
        "response_format": {
            "type": "json_object",
            "schema": _schema([2, 2, 4])["json_schema"]["schema"],
        },
    }
    assert mask_counts(body) == {"level_1": 2, "level_2": 2, "level_3": 4}
    assert mask_counts({"messages": _messages()}) == {"level_1": 1, "level_2": 2, "level_3": 3}


def test_original_words_alignment() -> None:
    assert original_words(QUERY, "person <mask> a <mask> in a <mask>.") == [
        "put",
        "notebook",
        "bag",
    ]
    # spaCy splits "doesn't" as "does n't": counts differ and difflib aligns the rest
    assert original_words("he doesn't open the door.", "he does n't <mask> the <mask>.") == [
        "open",
        "door",
    ]


def test_faults_per_query_and_per_request_number() -> None:
    other = "a person is playing with their camera."
    other_levels = [
        {"level": 1, "masked_query": "a person is <mask> with their camera.", "masks": 1}
    ]
    faults = [
        FaultRule(kind="rate_limit", query=QUERY, query_attempts=[1, 2], retry_after_s=0.25),
        FaultRule(kind="server_error", request_numbers=[3]),
        FaultRule(kind="malformed", query=other, limit=1),
        FaultRule(kind="wrong_count", query=other, limit=1),
        FaultRule(kind="copy_original", query=other, limit=1),
    ]
    with FakeOpenAIServer(faults=faults) as server:
        client = _client(server)
        for _ in range(2):
            with pytest.raises(openai.RateLimitError) as info:
                client.chat.completions.create(model="m", messages=_messages())
            assert info.value.response.headers["retry-after"] == "0.25"
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=_messages())  # request 3
        ok = client.chat.completions.create(model="m", messages=_messages())
        assert len(json.loads(ok.choices[0].message.content or "")["level_3"]) == 3

        malformed = client.chat.completions.create(
            model="m", messages=_messages(other, other_levels)
        )
        with pytest.raises(json.JSONDecodeError):
            json.loads(malformed.choices[0].message.content or "")
        wrong = client.chat.completions.create(model="m", messages=_messages(other, other_levels))
        assert len(json.loads(wrong.choices[0].message.content or "")["level_1"]) == 2
        copied = client.chat.completions.create(model="m", messages=_messages(other, other_levels))
        assert json.loads(copied.choices[0].message.content or "")["level_1"] == ["playing"]
        clean = client.chat.completions.create(model="m", messages=_messages(other, other_levels))
        assert json.loads(clean.choices[0].message.content or "")["level_1"] != ["playing"]

        seen = [(r.number, r.query_attempt, r.fault, r.status) for r in server.requests]
        assert seen == [
            (1, 1, "rate_limit", 429),
            (2, 2, "rate_limit", 429),
            (3, 3, "server_error", 500),
            (4, 4, None, 200),
            (5, 1, "malformed", 200),
            (6, 2, "wrong_count", 200),
            (7, 3, "copy_original", 200),
            (8, 4, None, 200),
        ]


def test_auth_bad_request_drop_and_stall() -> None:
    faults = [
        FaultRule(kind="bad_request", request_numbers=[2]),
        FaultRule(kind="drop", request_numbers=[3]),
        FaultRule(kind="stall", request_numbers=[4], stall_s=30),
    ]
    with FakeOpenAIServer(faults=faults, api_key="sk-right") as server:
        wrong_key = openai.OpenAI(base_url=server.base_url, api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong_key.chat.completions.create(model="m", messages=_messages())
        client = openai.OpenAI(
            base_url=server.base_url, api_key="sk-right", max_retries=0, timeout=0.5
        )
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="m", messages=_messages())
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model="m", messages=_messages())
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model="m", messages=_messages())
        assert client.chat.completions.create(model="m", messages=_messages()).choices
        assert [(r.fault, r.status) for r in server.requests] == [
            ("auth", 401),
            ("bad_request", 400),
            ("drop", None),
            ("stall", None),
            (None, 200),
        ]


def test_concurrent_requests_with_delay() -> None:
    async def run(base_url: str) -> list[str]:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0)
        replies = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model="m",
                    messages=_messages(
                        f"query {i}.", [{"level": 1, "masked_query": f"<mask> {i}.", "masks": 1}]
                    ),
                )
                for i in range(32)
            )
        )
        await client.close()
        return [r.choices[0].message.content or "" for r in replies]

    with FakeOpenAIServer(delay_s=0.1) as server:
        contents = asyncio.run(run(server.base_url))
        assert len(contents) == 32 and all(json.loads(c)["level_1"] for c in contents)
        arrivals = sorted(r.received_at for r in server.requests)
        answers = sorted(r.answered_at or 0 for r in server.requests)
        # all 32 were held at the same time: the first answer came after the last arrival
        assert answers[0] >= arrivals[-1]


def test_separate_process_records_and_takes_new_faults(tmp_path: Any) -> None:
    record = tmp_path / "requests.jsonl"
    with spawn_fake_openai(
        record_path=record, faults=[FaultRule(kind="server_error", request_numbers=[1])]
    ) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=_messages())
        server.set_faults([FaultRule(kind="rate_limit", query=QUERY, limit=1)])
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="m", messages=_messages())
        assert client.chat.completions.create(model="m", messages=_messages()).choices
        assert [r.fault for r in server.requests()] == ["server_error", "rate_limit", None]
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [line["status"] for line in lines] == [500, 429, 200]
