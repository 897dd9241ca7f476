"""Prompt templates: loading, deterministic rendering, the fenced request block, the schema."""

from __future__ import annotations

import json

import pytest

from negforge.errors import ConfigError
from negforge.generation import prompts
from negforge.generation.answers import parse_answer, strip_code_fence
from negforge.generation.sampling import FrozenDictionary, sample_dictionary
from tests.support.masked_levels import toy_dictionary, toy_levels
from tests.support.require import require_module


def _render(seed: int = 0, query: int = 0, per_type: int = 3):
    levels = toy_levels()[query]
    dictionary = FrozenDictionary(toy_dictionary())
    subset = sample_dictionary(dictionary, levels, per_type, seed)
    return prompts.load_template().render(levels, subset), levels, subset


def test_template_is_shipped_and_versioned():
    available = prompts.available_templates()
    assert 1 in available["negative_fill"]
    template = prompts.load_template("negative_fill")
    assert template.label == f"negative_fill@v{available['negative_fill'][-1]}"
    with pytest.raises(ConfigError):
        prompts.load_template("no_such_template")
    with pytest.raises(ConfigError):
        prompts.load_template("negative_fill", 999)


def test_parse_template_rejects_missing_sections():
    with pytest.raises(ConfigError):
        prompts.parse_template("x", 1, "=== system ===\nhello\n=== user ===\nhi\n")
    with pytest.raises(ConfigError):
        prompts.parse_template("x", 1, "stray text\n=== system ===\n")


def test_rendering_is_deterministic_per_seed_and_qid():
    first, _, subset = _render(seed=7)
    again, _, subset_again = _render(seed=7)
    assert first == again and subset == subset_again
    subsets = {json.dumps(_render(seed=seed)[2], sort_keys=True) for seed in range(10)}
    assert len(subsets) > 1  # the seed matters
    assert [m["role"] for m in first] == ["system", "user"]


def test_last_user_message_carries_the_request_block():
    messages, levels, subset = _render()
    block = json.loads(prompts.fenced_payload(messages))
    assert block["query"] == levels[0].query
    assert [lv["masks"] for lv in block["levels"]] == [1, 2, 3]
    assert block["levels"][1]["masked_query"] == levels[1].masked_query
    assert block["dictionary"] == subset
    reask = prompts.load_template().reask(messages, levels, ["level_1: give one word"])
    assert json.loads(prompts.fenced_payload([*messages, reask])) == block
    assert "level_1: give one word" in reask["content"]


def test_dictionary_sample_never_shows_the_hidden_words():
    levels = toy_levels()[0]  # masks opens, door, red (and their lemmas)
    dictionary = FrozenDictionary(toy_dictionary())
    for seed in range(20):
        subset = sample_dictionary(dictionary, levels, 50, seed)
        shown = {word for words in subset.values() for word in words}
        assert not shown & {"opens", "open", "door", "red"}
        assert set(subset) == {"verb", "noun", "adjective"}  # only the types the masks need
        assert all(len(words) == len(set(words)) for words in subset.values())
    assert len(sample_dictionary(dictionary, levels, 2, 0)["verb"]) == 2


def test_response_schema_fixes_the_fill_counts():
    levels = toy_levels()[0]
    schema = prompts.response_schema(levels)
    assert schema["required"] == ["level_1", "level_2", "level_3"]
    assert schema["additionalProperties"] is False
    assert [schema["properties"][k]["minItems"] for k in schema["required"]] == [1, 2, 3]
    assert [schema["properties"][k]["maxItems"] for k in schema["required"]] == [1, 2, 3]


def test_parse_answer_tolerates_fences_and_reports_problems():
    levels = toy_levels()[0]
    good = (
        '```json\n{"level_1": ["closes"], "level_2": ["holds", "cup"], '
        '"level_3": ["a", "b", "c"]}\n```'
    )
    assert strip_code_fence(good).startswith("{")
    parsed = parse_answer(good, levels)
    assert parsed.problem is None and parsed.fills[1] == ["holds", "cup"]
    assert parse_answer("not json at all", levels).problem == "the answer is not valid JSON"
    assert parse_answer('["a"]', levels).problem == "the answer is not a JSON object of word lists"
    missing = parse_answer('Sure! {"level_1": "closes"}', levels)
    assert missing.fills == [["closes"], [], []]
    assert "level_2" in (missing.problem or "")


def test_constrained_schema_lists_the_allowed_words_per_mask():
    levels = toy_levels()[0]  # level 3, left to right: opens (verb), red (adj.), door (noun)
    assert levels[2].types == ["verb", "adjective", "noun"]
    choices = {"verb": ["closes", "holds"], "noun": ["cup"], "adjective": []}
    schema = prompts.response_schema(levels, choices)
    level3 = schema["properties"]["level_3"]
    assert "items" not in level3 and level3["minItems"] == level3["maxItems"] == 3
    assert level3["prefixItems"] == [
        {"type": "string", "enum": ["closes", "holds"]},
        {"type": "string"},  # no words of that type: left free
        {"type": "string", "enum": ["cup"]},
    ]


def test_local_requests_constrain_every_fill_and_compile_to_a_grammar():
    from negforge.generation.client import resolve_backend
    from negforge.generation.config import GenerateConfig
    from negforge.generation.filling import LLMFiller, QueryJob
    from negforge.generation.ratelimit import RateLimiter

    levels = toy_levels()[0]
    job = QueryJob(qid=levels[0].qid, levels=levels)

    def request(**settings):
        config = GenerateConfig(llm="local", **settings)
        filler = LLMFiller(config=config, spec=resolve_backend(config), client=None,  # type: ignore[arg-type]
                           template=prompts.load_template(), cache=None, limiter=RateLimiter(),
                           dictionary=FrozenDictionary(toy_dictionary()))  # fmt: skip
        return filler.request_for(job)

    messages, response_format = request()
    assert response_format is not None and response_format["type"] == "json_object"
    schema = response_format["schema"]
    level2 = schema["properties"]["level_2"]
    assert "items" not in level2  # llama.cpp would prefer "items" over "prefixItems"
    block = json.loads(prompts.fenced_payload(messages))
    assert [item["enum"] for item in level2["prefixItems"]] == [
        block["dictionary"]["verb"], block["dictionary"]["noun"]
    ]
    _, free = request(constrain_fills=False)
    assert free is not None
    free_items = free["schema"]["properties"]["level_1"]["items"]
    assert free_items["pattern"] == prompts.SINGLE_WORD_PATTERN
    _, phrases = request(constrain_fills=False, allow_phrases=True)
    assert phrases is not None
    assert "pattern" not in phrases["schema"]["properties"]["level_1"]["items"]
    llama_grammar = require_module("llama_cpp.llama_grammar", "requirements/llama.txt")
    for fmt in (response_format, free):
        assert llama_grammar.json_schema_to_gbnf(json.dumps(fmt["schema"]))
