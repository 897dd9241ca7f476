"""A query file read and parsed once, handed from stage to stage.

``build-dict`` and ``mask`` both need a file's records and the spaCy tokens of its queries.
:class:`CorpusStore` holds the files read and parsed so far; whoever runs several stages
(``negforge run``, a benchmark) makes one store and passes it to each stage, which asks it
for the file with its own read options. A stage given no store makes its own (the file is
read and parsed for that stage alone; the on-disk parse cache of :mod:`negforge.nlp` still
saves the parse across processes).

A store keys a file by its resolved path, size, modification time and inode and by the read
options, so a file changed between two stages is read again. What it hands out is shared:
treat it as read-only (records are immutable; the lists are the store's).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from negforge.gc_settings import gc_paused
from negforge.nlp import ParsedCorpus, Token, parse_queries
from negforge.readers import ReadResult, empty_input_error, read_queries
from negforge.records import QueryRecord

_ReadKey = tuple[object, ...]


@dataclass(frozen=True)
class QueryCorpus:
    """One query file: its read result (records, bad rows) and the tokens of each query."""

    read: ReadResult
    parsed: ParsedCorpus

    @property
    def records(self) -> list[QueryRecord]:
        """The valid records, in file order."""
        return self.read.records

    @property
    def tokens(self) -> list[list[Token]]:
        """The parsed tokens of each record's query, in the same order."""
        return self.parsed.tokens


class CorpusStore:
    """The query files read (and parsed) so far in one run, for the stages that follow."""

    def __init__(self) -> None:
        self._reads: dict[_ReadKey, ReadResult] = {}
        self._corpora: dict[tuple[_ReadKey, str | None], QueryCorpus] = {}

    def read(
        self,
        path: str | Path,
        *,
        fmt: str | None = None,
        split: str | None = None,
        on_error: str = "raise",
        allow_empty: bool = False,
    ) -> ReadResult:
        """The file's read result (see :func:`negforge.readers.read_queries`), read once."""
        key = _read_key(Path(path), fmt, split, on_error)
        result = self._reads.get(key) if key is not None else None
        if result is None:
            result = read_queries(path, fmt=fmt, split=split, on_error=on_error,
                                  allow_empty=True)  # fmt: skip
            if key is not None:
                self._reads[key] = result
        if not result.records and not allow_empty:
            raise empty_input_error(path, result.bad_rows)
        return result

    def corpus(
        self,
        path: str | Path,
        *,
        fmt: str | None = None,
        split: str | None = None,
        on_error: str = "raise",
        allow_empty: bool = False,
        spacy_model: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> QueryCorpus:
        """The file read and its queries parsed (once per file, options and model); a corpus
        handed out a second time counts as a parse-cache hit."""
        with gc_paused():
            result = self.read(path, fmt=fmt, split=split, on_error=on_error,
                               allow_empty=allow_empty)  # fmt: skip
            key = _read_key(Path(path), fmt, split, on_error)
            known = self._corpora.get((key, spacy_model)) if key is not None else None
            if known is not None:
                return QueryCorpus(result, replace(known.parsed, cache_hit=True))
            parsed = parse_queries([r.query for r in result.records], spacy_model,
                                   cache_dir=cache_dir)  # fmt: skip
        corpus = QueryCorpus(result, parsed)
        if key is not None:
            self._corpora[(key, spacy_model)] = corpus
        return corpus


def _read_key(path: Path, fmt: str | None, split: str | None, on_error: str
              ) -> _ReadKey | None:
    """What identifies one read of a file (None: the file cannot be stat'ed; read_queries
    then reports it)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino, fmt, split,
            on_error)
