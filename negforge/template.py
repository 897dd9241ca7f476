"""The masked template: the one home of the mask token, rendering, splitting and alignment.

A query is a list of tokens (spaCy's). A *template* (a level's ``masked_query``) is that
list rendered with some tokens replaced by :data:`MASK`; a *negative* is it rendered with
each mask replaced by a fill. Rendering (masking rule 7): tokens joined by one space, no
space before a ``.`` or ``,`` token. Masks are always listed left to right, the order in
which a reader (or an LLM) fills them.

Everything that writes, reads or compares templates (masking, generation and its
validation, export and import, reporting, the trainer's data) goes through this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

#: The token that stands for a hidden word in a template.
MASK = "<mask>"
#: Tokens rendered without a space before them (rule 7).
NO_SPACE_BEFORE = frozenset({".", ","})
#: Trailing characters :func:`split_words` splits off a word.
TRAILING_PUNCTUATION = ".,"
_WHITESPACE = re.compile(r"\s+")


def separator(index: int, token: str) -> str:
    """The space rule 7 puts before token ``index`` ("" first and before ``.``/``,``)."""
    return "" if index == 0 or token in NO_SPACE_BEFORE else " "


def spaced(tokens: Sequence[str]) -> list[str]:
    """Each token with its separator in front: ``"".join(spaced(t)) == render(t)``."""
    return [separator(index, token) + token for index, token in enumerate(tokens)]


def render(tokens: Sequence[str], masked: Iterable[int] = ()) -> str:
    """Rule 7: the tokens joined, the ``masked`` indices shown as :data:`MASK`.

    The separator before a masked token is the one its own text would get.
    """
    hidden = set(masked)
    return "".join(
        separator(index, token) + (MASK if index in hidden else token)
        for index, token in enumerate(tokens)
    )


def render_filled(tokens: Sequence[str], positions: Sequence[int], fills: Sequence[str]) -> str:
    """The tokens rendered with ``tokens[positions[i]]`` replaced by ``fills[i]``."""
    if len(fills) != len(positions):
        raise ValueError(f"{len(fills)} fills for {len(positions)} masks")
    shown = list(tokens)
    for position, fill in zip(positions, fills, strict=True):
        shown[position] = fill
    return render(shown)


def split_words(text: str) -> list[str]:
    """Whitespace words with a trailing ``.``/``,`` split off as its own word.

    The inverse of :func:`render` for tokens without inner spaces:
    ``split_words("a <mask> sits, then <mask>.")`` is
    ``["a", "<mask>", "sits", ",", "then", "<mask>", "."]``.
    """
    words: list[str] = []
    for raw in text.split():
        tail: list[str] = []
        while len(raw) > 1 and raw[-1] in TRAILING_PUNCTUATION:
            tail.insert(0, raw[-1])
            raw = raw[:-1]
        words.append(raw)
        words.extend(tail)
    return words


def align(tokens: Sequence[str], template: str) -> list[int] | None:
    """Indices of the tokens shown as :data:`MASK` when ``template`` is
    ``render(tokens, those indices)``; None when it is no such rendering."""
    hidden: list[int] = []

    def walk(index: int, position: int) -> bool:
        if index == len(tokens):
            return position == len(template)
        token = tokens[index]
        space = separator(index, token)
        for shown, masked in ((token, False), (MASK, True)):
            piece = space + shown
            if template.startswith(piece, position):
                if masked:
                    hidden.append(index)
                if walk(index + 1, position + len(piece)):
                    return True
                if masked:
                    hidden.pop()
        return False

    return hidden if walk(0, 0) else None


def normalise_spaces(text: str) -> str:
    """Runs of whitespace as one space, no leading or trailing space."""
    return _WHITESPACE.sub(" ", text).strip()


@lru_cache(maxsize=4096)
def _template_pattern(template: str) -> re.Pattern[str]:
    literals = normalise_spaces(template).split(MASK)
    body = "(.*?)".join(re.escape(literal) for literal in literals)
    return re.compile(f"^{body}$", re.DOTALL)


def extract_fills(template: str, text: str) -> list[str] | None:
    """The words that fill the masks of ``template`` in ``text`` (left to right), or None.

    None means ``text`` does not match the template, i.e. some unmasked word was changed,
    added or dropped. Runs of whitespace count as one space.
    """
    match = _template_pattern(template).match(normalise_spaces(text))
    if match is None:
        return None
    return [fill.strip() for fill in match.groups()]
