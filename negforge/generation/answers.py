"""Parsing a backend's answer ``{"level_1": [...], "level_2": [...], ...}`` (pydantic)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from pydantic import BaseModel, RootModel, ValidationError, field_validator

from negforge.artifacts import MaskedLevel
from negforge.generation.prompts import level_key

_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```\s*$", re.DOTALL)


class FillAnswer(RootModel[dict[str, list[str]]]):
    """The answer object: one list of fills per level key (a lone string counts as a list)."""

    @field_validator("root", mode="before")
    @classmethod
    def _lists_of_strings(cls, value: object) -> object:
        if not isinstance(value, dict):
            raise ValueError("the answer is not a JSON object")
        cleaned: dict[str, object] = {}
        for key, fills in value.items():
            if isinstance(fills, str):
                fills = [fills]
            if isinstance(fills, list):
                fills = [str(f) if isinstance(f, int | float) and not isinstance(f, bool) else f
                         for f in fills]
            cleaned[str(key)] = fills
        return cleaned


class ParsedAnswer(BaseModel):
    """Fills per level (in the levels' order; [] where the answer had none) or a problem."""

    fills: list[list[str]]
    problem: str | None = None  # why the answer could not be read at all


def strip_code_fence(text: str) -> str:
    """The text inside a Markdown code fence, or the text itself."""
    stripped = text.strip()
    match = _FENCE.match(stripped)
    return match.group(1).strip() if match else stripped


def _json_object_text(text: str) -> str:
    body = strip_code_fence(text)
    if body.startswith("{"):
        return body
    start, end = body.find("{"), body.rfind("}")
    return body[start : end + 1] if 0 <= start < end else body


def parse_answer(text: str, levels: Sequence[MaskedLevel]) -> ParsedAnswer:
    """Read the fills of every level from an answer text (fences and chatter tolerated)."""
    empty: list[list[str]] = [[] for _ in levels]
    try:
        answer = FillAnswer.model_validate(json.loads(_json_object_text(text)))
    except ValueError as exc:  # JSONDecodeError and ValidationError are ValueErrors
        reason = (
            "not a JSON object of word lists"
            if isinstance(exc, ValidationError)
            else "not valid JSON"
        )
        return ParsedAnswer(fills=empty, problem=f"the answer is {reason}")
    found = answer.root
    missing = [level_key(level.level) for level in levels if level_key(level.level) not in found]
    fills = [list(found.get(level_key(level.level), [])) for level in levels]
    problem = f"the answer lacks the keys {', '.join(missing)}" if missing else None
    return ParsedAnswer(fills=fills, problem=problem)
