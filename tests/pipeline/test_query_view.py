"""The per-query view (negforge.query_view): rows grouped by qid, levels ascending."""

from __future__ import annotations

from negforge.query_view import by_query
from tests.support.negative_rows import make_row


def test_groups_arrow_rows_in_first_appearance_order_levels_ascending() -> None:
    rows = [
        {"qid": "b", "level": 2},
        {"qid": "a", "level": 3},
        {"qid": "b", "level": 1},
        {"qid": "a", "level": 1},
        {"qid": "a", "level": 2},
    ]
    queries = by_query(rows)
    assert [q.qid for q in queries] == ["b", "a"]
    assert [[r["level"] for r in q.rows] for q in queries] == [[1, 2], [1, 2, 3]]
    assert [q.indices for q in queries] == [[2, 0], [3, 4, 1]]
    assert queries[1].first is rows[3]
    assert list(queries[1].by_level()) == [1, 2, 3]
    assert all(q.repeated() == [] for q in queries)


def test_groups_row_models_and_finds_repeated_levels() -> None:
    rows = [make_row("A", 2, ["closes", "door"]), make_row("A", 1, ["closes"]),
            make_row("B", 1, ["stands"]), make_row("A", 2, ["picks", "table"])]  # fmt: skip
    (a, b) = by_query(rows)
    assert (a.qid, [r.level for r in a.rows], a.indices) == ("A", [1, 2, 2], [1, 0, 3])
    assert a.repeated() == [3] and b.repeated() == []
    assert a.by_level()[2] is rows[3]  # a repeated level: its last row
    assert by_query([]) == []
