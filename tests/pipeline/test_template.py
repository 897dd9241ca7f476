"""The masked template (negforge.template): rendering, splitting, alignment, fill extraction."""

from __future__ import annotations

from negforge.template import (
    MASK,
    align,
    extract_fills,
    render,
    render_filled,
    spaced,
    split_words,
)

TOKENS = ["person", "opens", "the", "door", ",", "then", "sits", "."]


def test_render_follows_rule_7() -> None:
    assert render(["a", "b", ",", "c", "."]) == "a b, c."
    assert render(TOKENS, [1, 6]) == "person <mask> the door, then <mask>."
    assert render(TOKENS, [4]) == f"person opens the door{MASK} then sits."  # no space before ,
    assert "".join(spaced(TOKENS)) == render(TOKENS)
    assert render_filled(TOKENS, [1, 3], ["closes", "window"]) == (
        "person closes the window, then sits."
    )


def test_split_words_inverts_render() -> None:
    masked = render(TOKENS, [0, 3])
    assert split_words(masked) == ["<mask>", "opens", "the", "<mask>", ",", "then", "sits", "."]
    assert split_words("a person sits, then  stands.") == [
        "a", "person", "sits", ",", "then", "stands", ".",
    ]  # fmt: skip
    assert split_words("<mask>.") == ["<mask>", "."]


def test_align_recovers_every_masked_subset() -> None:
    for subset in ([], [0], [1, 3], [0, 1, 3, 6], [4], list(range(len(TOKENS)))):
        assert align(TOKENS, render(TOKENS, subset)) == subset
    assert align(TOKENS, "person <mask> a door, then sits.") is None


def test_extract_fills_matches_the_template() -> None:
    masked = "person <mask> a <mask> in a bag."
    assert extract_fills(masked, "person put a notebook in a bag.") == ["put", "notebook"]
    assert extract_fills(masked, "person  put a notebook in a bag. ") == ["put", "notebook"]
    assert extract_fills(masked, "person put the notebook in a bag.") is None
    assert extract_fills(masked, "person put a notebook in a box.") is None
    assert extract_fills("<mask> <mask>.", "a b c.") == ["a", "b c"]
    negative = render_filled(TOKENS, [1, 6], ["closes", "stands"])
    assert extract_fills(render(TOKENS, [1, 6]), negative) == ["closes", "stands"]
