"""The run journal: entries survive reopening, a torn last line is cut, other runs' are dropped."""

from __future__ import annotations

import json

from negforge.generation.journal import RunJournal, journal_path_for


def test_entries_survive_reopening(tmp_path):
    path = journal_path_for(tmp_path / "neg.parquet")
    assert path.name == ".neg.parquet.journal.jsonl"
    journal = RunJournal.open(path, "key-1")
    journal.append({"qid": "a", "rows": [{"level": 1, "negative": "x"}]})
    journal.append({"qid": "b", "rows": []})
    journal.close()
    again = RunJournal.open(path, "key-1")
    assert set(again.entries) == {"a", "b"}
    assert again.entries["a"]["rows"][0]["negative"] == "x"
    again.append({"qid": "c", "rows": []})
    again.close()
    last = RunJournal.open(path, "key-1")
    assert set(last.entries) == {"a", "b", "c"}
    last.close()


def test_a_torn_last_line_is_cut_and_appending_goes_on(tmp_path):
    path = tmp_path / ".j.jsonl"
    journal = RunJournal.open(path, "k")
    journal.append({"qid": "a", "rows": []})
    journal.close()
    with open(path, "a") as handle:  # a kill in the middle of a write
        handle.write('{"qid": "b", "ro')
    reopened = RunJournal.open(path, "k")
    assert set(reopened.entries) == {"a"}
    reopened.append({"qid": "c", "rows": []})
    reopened.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line).get("qid") for line in lines[1:]] == ["a", "c"]


def test_another_runs_journal_is_discarded(tmp_path):
    path = tmp_path / ".j.jsonl"
    journal = RunJournal.open(path, "old-settings")
    journal.append({"qid": "a", "rows": []})
    journal.close()
    fresh = RunJournal.open(path, "new-settings")
    assert fresh.entries == {}
    fresh.discard()
    assert not path.exists()
    unresumed = RunJournal.open(path, "x", resume=False)
    assert unresumed.entries == {}
    unresumed.discard()


def test_keep_deletes_only_a_journal_without_work(tmp_path):
    """Appended queries are not held in memory, yet ``keep`` still keeps their journal."""
    worked, idle = tmp_path / ".worked.jsonl", tmp_path / ".idle.jsonl"
    journal = RunJournal.open(worked, "k")
    journal.append({"qid": "a", "rows": []})
    assert journal.entries == {} and journal.appended == 1
    journal.keep()
    reopened = RunJournal.open(worked, "k")
    assert set(reopened.entries) == {"a"}
    reopened.close()
    RunJournal.open(idle, "k").keep()
    assert not idle.exists()
