"""GenerateConfig validation and how ``--llm`` values are resolved to backends."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from negforge.errors import ConfigError
from negforge.generation.client import resolve_backend, response_format_for
from negforge.generation.config import DEFAULT_LOCAL_URL, GenerateConfig


def test_defaults_are_the_offline_baseline():
    config = GenerateConfig()
    assert config.llm == "random" and config.is_random
    assert config.on_invalid == "random" and config.max_attempts >= 1


def test_unknown_and_bad_settings_are_rejected():
    with pytest.raises(ValidationError):
        GenerateConfig.model_validate({"llm": "random", "concurency": 4})  # typo
    with pytest.raises(ValidationError):
        GenerateConfig(on_invalid="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        GenerateConfig(concurrency=0)
    with pytest.raises(ValidationError):
        GenerateConfig(llm="random", api_base="http://127.0.0.1:1/v1")


def test_pipeline_settings_dict_validates():
    config = GenerateConfig.model_validate(
        {"llm": "gpt-3.5-turbo", "dict_sample": 30, "seed": 3, "rpm": 500, "cache_dir": "/tmp/c"}
    )
    assert config.dict_sample == 30 and str(config.cache_dir) == "/tmp/c"
    assert "limit" in config.output_settings() and "concurrency" not in config.output_settings()


def test_cache_dir_default_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NEGFORGE_LLM_CACHE_DIR", str(tmp_path / "llm"))
    monkeypatch.setenv("NEGFORGE_CACHE_DIR", str(tmp_path / "c"))
    assert GenerateConfig().resolved_cache_dir() == tmp_path / "llm"
    monkeypatch.delenv("NEGFORGE_LLM_CACHE_DIR")
    assert GenerateConfig().resolved_cache_dir() == tmp_path / "c" / "generate"
    monkeypatch.delenv("NEGFORGE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert GenerateConfig().resolved_cache_dir() == tmp_path / "x" / "negforge" / "generate"


def test_openai_models_use_the_direct_client():
    spec = resolve_backend(GenerateConfig(llm="gpt-3.5-turbo"))
    assert (spec.provider, spec.transport, spec.wire_model) == ("openai", "openai", "gpt-3.5-turbo")
    # gpt-3.5-turbo has no structured outputs (litellm's map): plain JSON mode
    assert spec.wire_format == "json_object"
    assert resolve_backend(GenerateConfig(llm="gpt-4o-mini")).wire_format == "json_schema"


def test_openai_compatible_servers():
    spec = resolve_backend(GenerateConfig(llm="openai/llama3", api_base="http://127.0.0.1:9/v1"))
    assert spec.provider == "openai-compatible" and spec.transport == "openai"
    assert spec.wire_model == "llama3" and spec.wire_format == "json_schema"
    forced = resolve_backend(
        GenerateConfig(llm="openai/llama3", api_base="http://127.0.0.1:9/v1", client="litellm")
    )
    assert forced.transport == "litellm" and forced.model == "openai/llama3"


def test_local_uses_the_serve_local_default(monkeypatch):
    monkeypatch.delenv("NEGFORGE_LOCAL_LLM_URL", raising=False)
    spec = resolve_backend(GenerateConfig(llm="local"))
    assert spec.api_base == DEFAULT_LOCAL_URL and spec.provider == "local"
    assert spec.wire_format == "json_object_schema" and spec.transport == "openai"
    monkeypatch.setenv("NEGFORGE_LOCAL_LLM_URL", "http://127.0.0.1:9999/v1")
    assert resolve_backend(GenerateConfig(llm="local")).api_base == "http://127.0.0.1:9999/v1"


def test_other_providers_go_through_litellm():
    for llm in ("gemini/gemini-1.5-flash", "ollama/llama3"):
        spec = resolve_backend(GenerateConfig(llm=llm))
        assert spec.transport == "litellm" and spec.model == llm
        assert spec.wire_format == "json_schema"
    with pytest.raises(ConfigError):
        resolve_backend(GenerateConfig(llm="gemini/gemini-1.5-flash", client="openai"))
    with pytest.raises(ConfigError):
        resolve_backend(GenerateConfig(llm="no-such-model-xyz"))


def test_response_format_shapes():
    schema = {"type": "object"}
    strict = response_format_for("json_schema", schema)
    assert strict == {
        "type": "json_schema",
        "json_schema": {"name": "negative_fills", "schema": schema, "strict": True},
    }
    assert response_format_for("json_object_schema", schema) == {
        "type": "json_object",
        "schema": schema,
    }
    assert response_format_for("json_object", schema) == {"type": "json_object"}
    assert response_format_for("none", schema) is None


def test_local_gets_its_own_defaults_unless_set():
    local = GenerateConfig(llm="local", local_fill="generate")
    assert (local.dict_sample, local.concurrency, local.timeout_s) == (15, 1, 600.0)
    assert local.fills_constrained and not local.rank_fill
    rank = GenerateConfig(llm="local")  # the rank fill: queries in flight share batches
    assert rank.rank_fill and rank.concurrency == 16
    assert "rank_top_k" in rank.output_settings()
    assert "rank_top_k" not in GenerateConfig(llm="gpt-4o-mini").output_settings()
    mine = GenerateConfig.model_validate({"llm": "local", "concurrency": 3, "dict_sample": None})
    assert mine.concurrency == 3 and mine.dict_sample == 15
    assert not GenerateConfig(llm="local", constrain_fills=False).fills_constrained
    remote = GenerateConfig(llm="gpt-4o-mini")
    assert remote.dict_sample == 40 and not remote.fills_constrained


def test_batch_is_refused_with_the_rank_fill_only():
    with pytest.raises(ValidationError, match="batch makes no sense with the rank fill"):
        GenerateConfig(llm="local", batch=True)
    assert GenerateConfig(llm="local", local_fill="generate", batch=True).batch
