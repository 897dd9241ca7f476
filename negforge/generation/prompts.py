"""Versioned prompt templates (package ``negforge.prompts``) and the messages they render.

A template file ``<id>.v<version>.txt`` has three sections, ``system``, ``user`` and
``reask``, each opened by a line ``=== name ===``; lines before the first section starting
with ``#`` are comments. Placeholders use :class:`string.Template` syntax (``$name``).

One request covers every masking level of a query. The last user message carries a fenced
JSON block ``{"query", "levels": [{"level", "masked_query", "masks", "mask_types"}],
"dictionary": {type: [words]}}``; the answer is ``{"level_1": [...], "level_2": [...], ...}``.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from negforge.artifacts import MaskedLevel
from negforge.errors import ConfigError

TEMPLATE_PACKAGE = "negforge.prompts"
_FILE_NAME = re.compile(r"^(?P<id>[A-Za-z0-9_\-]+)\.v(?P<version>\d+)\.txt$")
_SECTION = re.compile(r"^=== (?P<name>[a-z_]+) ===\s*$")
_SECTIONS = ("system", "user", "reask")

Message = dict[str, str]


def level_key(level: int) -> str:
    """The answer key of a masking level (``level_1`` ...)."""
    return f"level_{level}"


@dataclass(frozen=True)
class PromptTemplate:
    """One version of a prompt template."""

    template_id: str
    version: int
    system: string.Template
    user: string.Template
    reask_text: string.Template

    @property
    def label(self) -> str:
        """``<id>@v<version>``, as stored in rows and provenance."""
        return f"{self.template_id}@v{self.version}"

    def render(
        self, levels: Sequence[MaskedLevel], dictionary_subset: Mapping[str, Sequence[str]]
    ) -> list[Message]:
        """The chat messages asking for every level's fills of one query."""
        first = levels[0]
        values = {
            "query": first.query,
            "n_levels": str(len(levels)),
            "payload": payload_json(levels, dictionary_subset),
            "keys": _keys_text(levels),
        }
        return [
            {"role": "system", "content": substitute(self.system, values)},
            {"role": "user", "content": substitute(self.user, values)},
        ]

    def reask(
        self, messages: Sequence[Message], levels: Sequence[MaskedLevel], problems: Sequence[str]
    ) -> Message:
        """The user message that asks again, listing what was wrong.

        It repeats the request's fenced JSON block, so the last user message of every
        request carries the query (servers and logs can rely on that).
        """
        reasons = "\n".join(f"- {problem}" for problem in problems)
        block = fenced_payload(messages)
        return {
            "role": "user",
            "content": self.reask_text.substitute(
                reasons=reasons, keys=_keys_text(levels), payload=block or ""
            ),
        }


@lru_cache(maxsize=64)
def _segments(template: string.Template) -> tuple[tuple[str, bool], ...]:
    """A template cut into (text, is_placeholder) pieces, ``$$`` already unescaped."""
    pieces: list[tuple[str, bool]] = []
    position = 0
    text = template.template
    for match in template.pattern.finditer(text):
        pieces.append((text[position:match.start()], False))
        if match.group("escaped") is not None:
            pieces.append((template.delimiter, False))
        elif match.group("named") is not None or match.group("braced") is not None:
            pieces.append((match.group("named") or match.group("braced"), True))
        else:
            raise ValueError(f"invalid placeholder in a prompt template at {match.start()}")
        position = match.end()
    pieces.append((text[position:], False))
    return tuple(piece for piece in pieces if piece[0] or piece[1])


def substitute(template: string.Template, values: Mapping[str, str]) -> str:
    """``template.substitute(values)``, without its per-call regex pass (prompt rendering
    runs once per query on the event loop); a missing value raises KeyError as there."""
    return "".join(values[text] if placeholder else text
                   for text, placeholder in _segments(template))  # fmt: skip


def payload_json(
    levels: Sequence[MaskedLevel], dictionary_subset: Mapping[str, Sequence[str]]
) -> str:
    """The JSON block of a request: the query, its levels and the dictionary sample."""
    first = levels[0]
    payload = {
        "query": first.query,
        "levels": [
            {
                "level": level.level,
                "masked_query": level.masked_query,
                "masks": len(level.masked_positions),
                "mask_types": list(level.types),
            }
            for level in levels
        ],
        "dictionary": {kind: list(words) for kind, words in dictionary_subset.items()},
    }
    return json.dumps(payload, ensure_ascii=False)


_FENCED = re.compile(r"```json\n(.*?)\n```", re.DOTALL)


def fenced_payload(messages: Sequence[Message]) -> str | None:
    """The JSON text of the last fenced block among the user messages, or None."""
    for message in reversed(messages):
        if message.get("role") == "user":
            match = _FENCED.search(message.get("content", ""))
            if match:
                return match.group(1)
    return None


def _keys_text(levels: Sequence[MaskedLevel]) -> str:
    return ", ".join(f'"{level_key(level.level)}"' for level in levels)


#: One word, for grammar-constrained backends (llm=local): llama.cpp's grammar for a bare
#: ``"type": "string"`` admits any text, and a small model then rambles inside a string
#: until ``max_tokens`` cuts the JSON (seen with SmolLM2).
SINGLE_WORD_PATTERN = "^[A-Za-z][A-Za-z'-]{0,23}$"


def response_schema(
    levels: Sequence[MaskedLevel],
    choices: Mapping[str, Sequence[str]] | None = None,
    *,
    word_pattern: str | None = None,
) -> dict[str, Any]:
    r"""JSON schema of the answer: ``level_j`` is an array of exactly k_j strings.

    With ``choices`` (words by primitive type, e.g. the prompt's dictionary sample) every
    position of every level is restricted to the words of its mask's type (``prefixItems``
    of ``enum``\ s): a grammar-constrained backend can then only pick dictionary words.
    ``word_pattern`` restricts the free (non-enum) strings, e.g. to one word.
    """
    free: dict[str, Any] = {"type": "string"}
    if word_pattern is not None:
        free["pattern"] = word_pattern
    properties: dict[str, Any] = {}
    for level in levels:
        count = len(level.masked_positions)
        prop: dict[str, Any] = {"type": "array", "minItems": count, "maxItems": count}
        if choices is None:
            prop["items"] = dict(free)
        else:
            prop["prefixItems"] = [
                {"type": "string", "enum": list(choices[kind])}
                if choices.get(kind)
                else dict(free)
                for kind in level.types
            ]
        properties[level_key(level.level)] = prop
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def available_templates() -> dict[str, list[int]]:
    """Template ids shipped in ``negforge.prompts`` with their versions, ascending."""
    found: dict[str, list[int]] = {}
    for entry in resources.files(TEMPLATE_PACKAGE).iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.setdefault(match["id"], []).append(int(match["version"]))
    return {key: sorted(versions) for key, versions in sorted(found.items())}


def parse_template(template_id: str, version: int, text: str) -> PromptTemplate:
    """Split a template file into its sections."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        match = _SECTION.match(line)
        if match:
            current = match["name"]
            if current not in _SECTIONS:
                raise ConfigError(f"prompt {template_id} v{version}: unknown section {current}")
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
        elif line.strip() and not line.startswith("#"):
            raise ConfigError(f"prompt {template_id} v{version}: text before the first section")
    missing = [name for name in _SECTIONS if name not in sections]
    if missing:
        raise ConfigError(f"prompt {template_id} v{version}: missing sections {missing}")
    body = {name: string.Template("\n".join(lines).strip()) for name, lines in sections.items()}
    return PromptTemplate(template_id, version, body["system"], body["user"], body["reask"])


@lru_cache(maxsize=16)
def load_template(template_id: str = "negative_fill", version: int | None = None) -> PromptTemplate:
    """Load a template by id, the newest version unless one is named."""
    versions = available_templates().get(template_id)
    if not versions:
        raise ConfigError(
            f"no prompt template {template_id!r} (available: {sorted(available_templates())})"
        )
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise ConfigError(f"prompt template {template_id!r} has no version {chosen} ({versions})")
    text = resources.files(TEMPLATE_PACKAGE).joinpath(f"{template_id}.v{chosen}.txt").read_text(
        encoding="utf-8"
    )
    return parse_template(template_id, chosen, text)
