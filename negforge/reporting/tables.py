"""The report's tables as plain data, shared by the Markdown and HTML renderers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from negforge.reporting.hierarchy import HierarchyResult
from negforge.reporting.plausibility import ArtifactPlausibility, ImplausibleExample
from negforge.reporting.quality import ArtifactQuality, FillCounts, LevelQuality, share

#: Reason codes in the order the validator checks them; unknown codes follow, sorted.
REASON_ORDER = (
    "wrong_fill_count",
    "empty_fill",
    "phrase_fill",
    "unmasked_changed",
    "copied_original",
    "equals_positive",
    "duplicate_level",
    "not_in_dictionary",
    "wrong_type",
    "implausible",
)
DASH = "–"


@dataclass(frozen=True)
class Cell:
    """One table cell: its text and, for numbers, the value it sorts by."""

    text: str
    value: float | None = None
    title: str | None = None  # tooltip in HTML (e.g. the counts behind a share)


@dataclass
class Table:
    """A titled table with an optional explanation."""

    key: str
    title: str
    headers: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    note: str | None = None


def pct(value: float | None, digits: int = 1) -> str:
    """``0.9241`` -> ``92.4 %``; None -> a dash."""
    return DASH if value is None else f"{100 * value:.{digits}f} %"


def share_cell(count: int | None, total: int, digits: int = 1) -> Cell:
    """A share shown as a percentage, with ``count / total`` as its tooltip."""
    if count is None:
        return Cell(DASH)
    value = share(count, total)
    return Cell(pct(value, digits), value, f"{count:,} / {total:,}")


def count_cell(count: int) -> Cell:
    return Cell(f"{count:,}", float(count))


def number_cell(value: float | None, digits: int = 2) -> Cell:
    return Cell(DASH if value is None else f"{value:.{digits}f}", value)


def level_label(level: int | None) -> str:
    return "all" if level is None else str(level)


def _levels(artifact: ArtifactQuality) -> list[LevelQuality]:
    return [*artifact.levels, artifact.overall]


def _dictionary_cells(fills: FillCounts) -> list[Cell]:
    return [
        share_cell(fills.changed_own_type, fills.changed),
        share_cell(fills.changed_other_type, fills.changed),
        share_cell(fills.changed_outside_dictionary, fills.changed),
        share_cell(fills.changed_phrase, fills.changed),
    ]


#: Headers of the cells :func:`_dictionary_cells` makes.
DICTIONARY_HEADERS = [
    "changed: own type",
    "changed: other type",
    "changed: outside D",
    "changed: phrase",
]


def overview_table(artifacts: Sequence[ArtifactQuality]) -> Table:
    """Rows, validity and fill figures per artifact and level."""
    table = Table(
        key="levels",
        title="Per artifact and level",
        headers=[
            "artifact",
            "level",
            "rows",
            "valid",
            "template kept",
            "fills located",
            "fill = original",
            *DICTIONARY_HEADERS,
            "duplicated level",
            "negative = query",
            "words / fill",
            "one-word fills",
        ],
        note=(
            "Shares of rows, except the fill columns: 'fill = original' and 'one-word fills' "
            "are shares of located fills, the 'changed' columns shares of changed fills "
            "(located fills that differ from the masked word): a phrase (several words), or "
            "a single word in D with the masked word's type, in D with other types only, or "
            "outside D (these three need --dict). A fill is located when the negative kept "
            "every unmasked word and the mask stands alone or its run of adjacent masks got "
            "one word each."
        ),
    )
    for artifact in artifacts:
        for level in _levels(artifact):
            fills = level.fills
            table.rows.append(
                [
                    Cell(artifact.name),
                    Cell(level_label(level.level)),
                    count_cell(level.rows),
                    share_cell(level.valid, level.rows),
                    share_cell(level.template_kept, level.rows),
                    share_cell(fills.located, fills.masks),
                    share_cell(fills.equal_original, fills.located),
                    *_dictionary_cells(fills),
                    share_cell(level.duplicate_level, level.rows, 2),
                    share_cell(level.equals_query, level.rows, 2),
                    number_cell(fills.mean_words_per_fill, 3),
                    share_cell(fills.words_per_fill.get(1, 0), fills.located),
                ]
            )
    return table


def reasons_table(artifacts: Sequence[ArtifactQuality]) -> Table:
    """Share of rows carrying each failure reason, per artifact and level."""
    seen = {r for a in artifacts for level in _levels(a) for r in level.reasons}
    codes = [r for r in REASON_ORDER if r in seen] + sorted(seen - set(REASON_ORDER))
    fallbacks = sorted({f for a in artifacts for level in _levels(a) for f in level.fallbacks})
    table = Table(
        key="reasons",
        title="Failure reasons",
        headers=["artifact", "level", "rows", "invalid", *codes]
        + [f"fallback: {f}" for f in fallbacks],
        note=(
            "Share of rows whose invalid_reasons list the code (a row can list several). "
            "not_in_dictionary and wrong_type only make a row invalid with "
            "--require-dict-words. backend_error: the backend failed on the query after "
            "every retry; fallback random_after_error: such a row filled by the random "
            "baseline (--on-failed random), not by the LLM."
        ),
    )
    for artifact in artifacts:
        for level in _levels(artifact):
            table.rows.append(
                [
                    Cell(artifact.name),
                    Cell(level_label(level.level)),
                    count_cell(level.rows),
                    share_cell(level.rows - level.valid, level.rows),
                    *(share_cell(level.reasons.get(code, 0), level.rows) for code in codes),
                    *(share_cell(level.fallbacks.get(f, 0), level.rows) for f in fallbacks),
                ]
            )
    return table


def queries_table(artifacts: Sequence[ArtifactQuality]) -> Table:
    """Whole-query figures: all levels clean, repeated negatives, negatives equal to the query."""
    table = Table(
        key="queries",
        title="Whole queries (all levels of a query together)",
        headers=[
            "artifact",
            "queries",
            "all levels template kept",
            "all levels valid",
            "queries repeating a negative across levels",
            "queries with a negative = query",
        ],
    )
    for artifact in artifacts:
        q = artifact.queries
        table.rows.append(
            [
                Cell(artifact.name),
                count_cell(q.queries),
                share_cell(q.all_levels_template_kept, q.queries),
                share_cell(q.all_levels_valid, q.queries),
                count_cell(q.with_duplicate_levels),
                count_cell(q.with_negative_equal_to_query),
            ]
        )
    return table


def types_table(artifacts: Sequence[ArtifactQuality], top: int = 8) -> Table:
    """Fill figures per primitive type, with the most frequent changed fills."""
    table = Table(
        key="types",
        title="Per primitive type",
        headers=[
            "artifact",
            "type",
            "masks",
            "fills located",
            "fill = original",
            *DICTIONARY_HEADERS,
            "distinct fills",
            "most frequent fills",
        ],
    )
    for artifact in artifacts:
        for kind in artifact.types:
            fills = kind.fills
            top_fills = ", ".join(f"{word} ({n})" for word, n in kind.top_fills[:top])
            table.rows.append(
                [
                    Cell(artifact.name),
                    Cell(kind.type),
                    count_cell(fills.masks),
                    share_cell(fills.located, fills.masks),
                    share_cell(fills.equal_original, fills.located),
                    *_dictionary_cells(fills),
                    count_cell(kind.distinct_fills),
                    Cell(top_fills or DASH),
                ]
            )
    return table


def replacements_table(artifacts: Sequence[ArtifactQuality], top: int = 10) -> Table:
    """The most frequent masked word -> fill replacements of each type."""
    table = Table(
        key="replacements",
        title="Most frequent replacements per type",
        headers=["artifact", "type", "masked word → fill (count)"],
    )
    for artifact in artifacts:
        for kind in artifact.types:
            text = ", ".join(f"{o} → {f} ({n})" for o, f, n in kind.top_replacements[:top])
            table.rows.append([Cell(artifact.name), Cell(kind.type), Cell(text or DASH)])
    return table


def hierarchy_table(results: Sequence[HierarchyResult]) -> Table:
    """Mean similarity of each level's negatives to their positive, per artifact."""
    levels = sorted({level.level for r in results for level in r.levels})
    encoder = results[0].encoder if results else "minilm"
    table = Table(
        key="hierarchy",
        title="Hierarchy check: similarity of negatives to their positive",
        headers=["artifact", "queries", *(f"level {lv}" for lv in levels), "falls with level"],
        note=(
            f"Mean cosine similarity ({encoder} sentence vectors) between each negative and its "
            "positive query; it should fall from level 1 to the last level."
        ),
    )
    for result in results:
        means = {level.level: level for level in result.levels}
        table.rows.append(
            [
                Cell(result.artifact),
                count_cell(result.queries),
                *(
                    Cell(
                        f"{means[lv].mean:.3f}",
                        means[lv].mean,
                        f"std {means[lv].std:.3f} over {means[lv].pairs:,} negatives",
                    )
                    if lv in means
                    else Cell(DASH)
                    for lv in levels
                ),
                Cell("yes" if result.decreasing else "no"),
            ]
        )
    return table


def _signed(value: float | None, digits: int = 2) -> Cell:
    return Cell(DASH if value is None else f"{value:+.{digits}f}", value)


def plausibility_table(results: Sequence[ArtifactPlausibility]) -> Table:
    """Delta NLL per artifact and level: median, quartiles, mean, share beyond the threshold."""
    threshold = results[0].threshold if results else 0.0
    models = sorted({r.model for r in results if r.model})
    table = Table(
        key="plausibility",
        title="Plausibility: Delta NLL of negatives against their query",
        headers=["artifact", "level", "negatives", "median Delta NLL", "quartiles",
                 "mean Delta NLL", f"Delta NLL > {threshold:g}", "median NLL"],
        note=(
            "NLL: mean negative log-likelihood per token (nats) under "
            f"{', '.join(models) or 'a local causal LM'}; Delta NLL = NLL(negative) - "
            "NLL(positive query): 0 is as plausible as the query, higher is less plausible. "
            f"The share column counts negatives less plausible than the threshold "
            f"({threshold:g} nats/token). Every row with a negative counts, valid or not."
        ),
    )
    for result in results:
        for level in [*result.levels, result.overall]:
            quartiles = (
                DASH if level.q25_delta is None or level.q75_delta is None
                else f"{level.q25_delta:+.2f} … {level.q75_delta:+.2f}"
            )  # fmt: skip
            table.rows.append(
                [
                    Cell(result.artifact),
                    Cell(level_label(level.level)),
                    count_cell(level.negatives),
                    _signed(level.median_delta),
                    Cell(quartiles, level.q25_delta),
                    _signed(level.mean_delta),
                    share_cell(level.beyond, level.negatives),
                    number_cell(level.median_nll),
                ]
            )
    return table


def least_plausible_table(examples: Sequence[ImplausibleExample]) -> Table:
    """The least plausible negatives of each artifact."""
    table = Table(
        key="least-plausible",
        title="Least plausible negatives",
        headers=["artifact", "level", "query", "negative", "valid", "NLL", "query NLL",
                 "Delta NLL"],
        note="The negatives of each artifact with the largest Delta NLL (nats per token).",
    )
    for example in examples:
        table.rows.append(
            [
                Cell(example.artifact),
                Cell(str(example.level), float(example.level)),
                Cell(example.query, title=example.qid),
                Cell(example.negative),
                Cell("yes" if example.valid else "no"),
                number_cell(example.nll),
                number_cell(example.query_nll),
                _signed(example.delta),
            ]
        )
    return table
