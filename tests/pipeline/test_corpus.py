"""The corpus store: a file read and parsed once, handed from stage to stage explicitly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pydantic
import pytest

from negforge.corpus import CorpusStore
from negforge.dictionary import build_dictionary
from negforge.errors import InputError
from negforge.masking import mask_file
from negforge.readers import read_queries

ROW = {"qid": "q1", "query": "a person opens the door.", "vid": "v1", "duration": 30.0,
       "relevant_windows": [[1.0, 5.0]]}  # fmt: skip


def _write(path: Path, *queries: str) -> Path:
    rows = [{**ROW, "qid": f"q{i}", "query": q} for i, q in enumerate(queries)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_a_store_reads_a_file_once_and_again_when_it_changes(tmp_path: Path) -> None:
    source = _write(tmp_path / "q.jsonl", "a person opens the door.")
    store = CorpusStore()
    first = store.read(source)
    assert store.read(source) is first  # the same read, handed on
    assert store.read(source, on_error="skip") is not first  # other options: another read
    assert CorpusStore().read(source) is not first  # nothing shared between stores
    _write(source, "a person closes the door.", "a dog barks.")
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    changed = store.read(source)
    assert [r.query for r in changed.records] == ["a person closes the door.", "a dog barks."]


def test_a_store_hands_one_parse_to_both_stages(tmp_path: Path) -> None:
    source = _write(tmp_path / "q.jsonl", "a person opens the door.", "a man sits on a chair.")
    store = CorpusStore()
    built = build_dictionary([source], tmp_path / "d.parquet", corpora=store,
                             cache_dir=tmp_path / "c1")  # fmt: skip
    assert built.entries > 0
    # mask gets build-dict's parse from the store (another cache folder: no disk hit possible)
    masked = mask_file(source, tmp_path / "m.parquet", corpora=store, cache_dir=tmp_path / "c2")
    assert masked.cache_hit and not (tmp_path / "c2").exists()
    alone = mask_file(source, tmp_path / "m2.parquet", cache_dir=tmp_path / "c3")
    assert not alone.cache_hit  # no store: nothing reused behind the caller's back
    corpus = store.corpus(source)
    assert [r.query for r in corpus.records] == ["a person opens the door.",
                                                 "a man sits on a chair."]
    assert [t[0] for t in corpus.tokens[1]] == ["a", "man", "sits", "on", "a", "chair", "."]


def test_an_empty_file_is_refused_unless_allowed_even_from_the_store(tmp_path: Path) -> None:
    source = tmp_path / "empty.jsonl"
    source.write_text("", encoding="utf-8")
    store = CorpusStore()
    assert store.read(source, allow_empty=True).records == []
    with pytest.raises(InputError, match="no rows"):
        store.read(source)


def test_query_records_are_immutable(repo_root: Path) -> None:
    records = read_queries(repo_root / "negforge" / "sample_data" / "sample_queries.jsonl").records
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        records[0].query = "something else"
    changed = records[0].model_copy(update={"query": "something else"})
    assert changed.query == "something else" and records[0].query != "something else"
