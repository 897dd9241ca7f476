"""Read each mask's fill off a negative, and mark the words a negative changed.

A mask's fill is *located* when it can be read off without guessing:

1. the negative keeps every unmasked word of its masked query verbatim (it matches the
   template, :func:`negforge.template.extract_fills`, and no fill still
   contains ``<mask>``), and
2. the mask stands alone (no neighbouring mask), or the run of adjacent masks it belongs to
   was filled with exactly one word per mask. Between adjacent masks filled with more words
   than masks, where one fill ends and the next begins is a guess, so none of that run's
   fills is located.

A negative that edited, added or dropped unmasked words locates no fill.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from negforge.template import MASK, TRAILING_PUNCTUATION, extract_fills, split_words

_WORD = re.compile(r"\S+")


def mask_runs(masked_query: str) -> list[list[int]]:
    """Masks grouped into runs of adjacent masks (indices in left-to-right mask order)."""
    runs: list[list[int]] = []
    previous_was_mask = False
    mask_number = 0
    for word in split_words(masked_query):
        if word == MASK:
            if previous_was_mask:
                runs[-1].append(mask_number)
            else:
                runs.append([mask_number])
            mask_number += 1
            previous_was_mask = True
        else:
            previous_was_mask = False
    return runs


def located_fills(masked_query: str, fills: Sequence[str]) -> list[str | None]:
    """Keep the fills whose boundaries are unambiguous (rule 2 above); None for the others.

    ``fills`` are in left-to-right mask order, one per mask of ``masked_query``.
    """
    located: list[str | None] = [None] * len(fills)
    for run in mask_runs(masked_query):
        if any(index >= len(fills) for index in run):
            continue
        words = [fills[index].strip() for index in run]
        if any(not word for word in words):
            continue
        if len(run) == 1 or all(len(word.split()) == 1 for word in words):
            for index, word in zip(run, words, strict=True):
                located[index] = word
    return located


def locate_fills(masked_query: str, negative: str | None) -> list[str | None] | None:
    """The located fills of ``negative`` in left-to-right mask order.

    None when the negative is missing or does not keep the masked query's template.
    """
    if negative is None or not negative.strip():
        return None
    fills = extract_fills(masked_query, negative)
    if fills is None or any(MASK in fill for fill in fills):
        return None  # a "fill" that still holds a mask left the template, too
    return located_fills(masked_query, fills)


def changed_word_flags(query: str, negative: str) -> list[tuple[str, bool]]:
    """The words of ``negative`` (as written), each flagged True when it differs from ``query``.

    A word counts as unchanged when a word alignment (case-insensitive) of the negative
    against the positive query pairs it with an equal word.
    """
    raw_words = _WORD.findall(negative)
    query_keys = [w.lower() for w in split_words(query)]
    pieces: list[tuple[int, str]] = []
    for index, raw in enumerate(raw_words):
        pieces.extend((index, piece) for piece in split_words(raw))
    matcher = difflib.SequenceMatcher(
        a=query_keys, b=[piece.lower() for _, piece in pieces], autojunk=False
    )
    changed = [False] * len(raw_words)
    for tag, _i1, _i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "insert"):
            for j in range(j1, j2):
                if pieces[j][1] not in TRAILING_PUNCTUATION:
                    changed[pieces[j][0]] = True
    return list(zip(raw_words, changed, strict=True))
