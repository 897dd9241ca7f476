"""Read query files into validated :class:`~negforge.records.QueryRecord` rows.

Formats (picked from the file suffix unless ``fmt`` is given):

* ``jsonl`` -- Moment-DETR / SHINE rows ``{qid, query, vid, duration, relevant_windows}``
  (optional ``masked_queries``, ``recomposed_queries``);
* ``json`` -- the original Charades-CG / ActivityNet-CG split files
  ``{vid: {sentences, timestamps, duration, novels?}}``: one row per sentence in file order,
  qid ``{vid}_{split}_{i}`` with ``i`` the sentence's index within its video, query text
  verbatim (leading spaces kept);
* ``csv`` and ``parquet`` -- the jsonl columns; in CSV the list-valued columns
  (``relevant_windows``, ``masked_queries``, ``recomposed_queries``, ``novels``) hold JSON.

Every problem is located by file, line (jsonl, csv: the physical line; json, parquet: the
1-based row in file order) and field. With ``on_error="raise"`` the first bad row raises
:class:`~negforge.errors.InputError`; with ``on_error="skip"`` bad rows are left out and
listed in :attr:`ReadResult.bad_rows` (stages write them to ``<artifact>.errors.jsonl``).
A missing or unreadable file always raises, and so does a file without a valid row unless
``allow_empty`` is set (an empty input is almost always a mistake).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError, field_validator

from negforge.atomic import AtomicFiles, atomic_files
from negforge.errors import InputError
from negforge.records import QueryRecord

QueryFormat = Literal["jsonl", "json", "csv", "parquet"]
OnError = Literal["raise", "skip"]
FORMATS: tuple[str, ...] = ("jsonl", "json", "csv", "parquet")
_SUFFIX_FORMATS: dict[str, QueryFormat] = {
    ".jsonl": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
#: Split names SHINE uses in qids, by benchmark file name.
SPLIT_BY_FILE_STEM: dict[str, str] = {
    "train": "train",
    "test_trivial": "test",
    "novel_composition": "composition",
    "novel_word": "word",
}
_JSON_COLUMNS = ("relevant_windows", "masked_queries", "recomposed_queries", "novels")
_BAD_BYTES = re.compile("[\udc80-\udcff]")
_PAIRS = "\0pairs"


class BadRow(BaseModel):
    """One row left out by ``on_error="skip"``: where it was and what was wrong."""

    path: str
    line: int | None
    field: str | None
    message: str
    qid: str | None = None

    @field_validator("path", "field", "message", "qid")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        # Undecodable bytes arrive as lone surrogates: show them as \x.. escapes.
        if value is None or not _BAD_BYTES.search(value):
            return value
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")

    def to_error(self) -> InputError:
        """The InputError this row raises under ``on_error="raise"``."""
        return InputError(self.message, path=self.path, line=self.line, field=self.field)


class ReadResult(BaseModel):
    """The valid records of a file, in file order, and the rows that were left out."""

    path: str
    format: str
    records: list[QueryRecord]
    lines: list[int]  # line (jsonl, csv) or 1-based row (json, parquet) of each record
    bad_rows: list[BadRow]

    def write_report(self, target: str | Path, group: AtomicFiles | None = None) -> Path | None:
        """Write the bad rows as jsonl; remove a stale report when there are none.

        With ``group`` the report is written (or removed) together with the group's files.
        """
        target = Path(target)
        if group is None:
            with atomic_files() as own:
                return self.write_report(target, own)
        if not self.bad_rows:
            group.remove(target)
            return None
        with group.open(target) as handle:
            for row in self.bad_rows:
                handle.write(row.model_dump_json() + "\n")
        return target


def report_path(artifact: str | Path) -> Path:
    """Where a stage writes the bad-row report of its input: ``<artifact>.errors.jsonl``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".errors.jsonl")


def detect_format(path: str | Path) -> QueryFormat:
    """The format implied by a file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise InputError(
            f"cannot tell the format from the suffix {suffix!r}; use one of "
            f"{sorted(_SUFFIX_FORMATS)} or pass the format explicitly",
            path=path,
            field="format",
        )
    return _SUFFIX_FORMATS[suffix]


def split_from_filename(path: str | Path) -> str:
    """SHINE's split name for a benchmark file (train, test, composition, word)."""
    stem = Path(path).stem.lower()
    if stem in SPLIT_BY_FILE_STEM:
        return SPLIT_BY_FILE_STEM[stem]
    for key, split in SPLIT_BY_FILE_STEM.items():
        if stem.endswith(key):
            return split
    raise InputError(
        f"cannot tell the split from the file name {Path(path).name!r} "
        f"(expected one of {sorted(SPLIT_BY_FILE_STEM)}); pass --split",
        path=path,
        field="split",
    )


def read_queries(
    path: str | Path,
    *,
    fmt: QueryFormat | str | None = None,
    split: str | None = None,
    on_error: OnError | str = "raise",
    allow_empty: bool = False,
) -> ReadResult:
    """Read and validate every query of a file (see the module docstring)."""
    if on_error not in ("raise", "skip"):
        raise InputError(f"on_error must be 'raise' or 'skip', got {on_error!r}", field="on_error")
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path=path)
    if path.is_dir():
        raise InputError("is a folder, not a query file", path=path)
    kind = fmt or detect_format(path)
    result = _read(path, kind, split, on_error)
    if not result.records and not allow_empty:
        raise empty_input_error(path, result.bad_rows)
    return result


def empty_input_error(path: str | Path, bad_rows: list[BadRow] | None = None) -> InputError:
    """The error of an input without a (valid) row; ``--allow-empty`` accepts such input."""
    if not bad_rows:
        return InputError("the file has no rows (pass --allow-empty to accept an empty input)",
                          path=path)  # fmt: skip
    first = bad_rows[0]
    return InputError(
        f"none of its {len(bad_rows)} rows is valid; the first bad one: "
        f"{first.to_error()} (pass --allow-empty to accept an empty result)",
        path=path,
    )


def read_text(path: str | Path) -> str:
    """A UTF-8 text file (a BOM is dropped); undecodable bytes raise naming line and byte."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(f"invalid UTF-8 (byte {column} of the line); save the file as UTF-8",
                         path=path, line=line) from None  # fmt: skip
    return text[1:] if text.startswith("\ufeff") else text


def _read(path: Path, kind: str, split: str | None, on_error: str) -> ReadResult:
    if kind not in FORMATS:
        raise InputError(
            f"unknown format {kind!r}; use one of {FORMATS}", path=path, field="format"
        )
    data = _read_bytes(path)
    if kind == "jsonl":
        candidates = _jsonl_rows(path, data)
    elif kind == "json":
        candidates = _benchmark_rows(path, data, split or split_from_filename(path))
    elif kind == "csv":
        candidates = _csv_rows(path, data)
    else:
        candidates = _parquet_rows(path)
    # Undecodable bytes (or \udcXX escapes) can only hide in values when the file has any:
    # skip the per-value scan otherwise.
    suspicious = kind == "parquet" or b"\\ud" in data.lower() or not _is_utf8(data)
    return _collect(path, str(kind), candidates, raise_first=on_error == "raise",
                    check_bytes=suspicious)


# --- building blocks -------------------------------------------------------------------------

#: A candidate row: (line, raw fields or a BadRow, field-name mapping for error locations).
_Candidate = tuple[int, "dict[str, Any] | BadRow", "dict[str, str] | None"]


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise InputError("file not found", path=path) from exc
    except IsADirectoryError as exc:
        raise InputError("is a folder, not a query file", path=path) from exc
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or exc})", path=path) from exc


def _decode(data: bytes) -> str:
    """UTF-8 text; undecodable bytes become lone surrogates that validation reports."""
    text = data.decode("utf-8", errors="surrogateescape")
    return text[1:] if text.startswith("\ufeff") else text


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _bad_utf8_field(raw: dict[str, Any]) -> str | None:
    for key, value in raw.items():
        if _contains_bad_bytes(value):
            return str(key)
    return None


def _contains_bad_bytes(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_BAD_BYTES.search(value))
    if isinstance(value, list | tuple):
        return any(_contains_bad_bytes(item) for item in value)
    if isinstance(value, dict):
        return any(_contains_bad_bytes(k) or _contains_bad_bytes(v) for k, v in value.items())
    return False


def _jsonl_rows(path: Path, data: bytes) -> Iterator[_Candidate]:
    for number, raw_line in enumerate(data.split(b"\n"), start=1):
        if not raw_line.strip():
            continue
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, BadRow(
                path=str(path), line=number, field=None,
                message=f"invalid UTF-8 (byte {exc.start} of the line)",
            ), None
            continue
        if number == 1 and line.startswith("\ufeff"):
            line = line[1:]
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, BadRow(
                path=str(path), line=number, field=None,
                message=f"malformed JSON ({exc.msg} at column {exc.colno})",
            ), None
            continue
        if not isinstance(raw, dict):
            yield number, BadRow(
                path=str(path), line=number, field=None,
                message=f"expected a JSON object, found {type(raw).__name__}",
            ), None
            continue
        yield number, raw, None


def _pairs_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook that keeps repeated keys (a repeated video id) visible."""
    out = dict(pairs)
    return out if len(out) == len(pairs) else {_PAIRS: pairs}


def _items(obj: dict[str, Any]) -> list[tuple[str, Any]]:
    return list(obj[_PAIRS]) if _PAIRS in obj else list(obj.items())


def _benchmark_rows(path: Path, data: bytes, split: str) -> Iterator[_Candidate]:
    text = _decode(data)
    try:
        top = json.loads(text, object_pairs_hook=_pairs_object)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"malformed JSON ({exc.msg} at column {exc.colno})", path=path, line=exc.lineno
        ) from exc
    if not isinstance(top, dict):
        raise InputError("expected a JSON object {vid: {sentences, timestamps, duration}}",
                         path=path)
    row = 0
    for vid, video in _items(top):
        if not isinstance(video, dict):
            row += 1
            yield row, BadRow(path=str(path), line=row, field=vid, qid=None,
                              message="expected an object {sentences, timestamps, duration}"), None
            continue
        video = dict(_items(video))  # a key repeated inside a video: the last one wins
        sentences = video.get("sentences")
        if not isinstance(sentences, list):
            row += 1
            yield row, BadRow(path=str(path), line=row, field=f"{vid}.sentences",
                              message="missing or not a list of sentences"), None
            continue
        timestamps = video.get("timestamps")
        novels = video.get("novels")
        for index, sentence in enumerate(sentences):
            row += 1
            qid = f"{vid}_{split}_{index}"
            window: Any = (
                timestamps[index]
                if isinstance(timestamps, list) and index < len(timestamps)
                else None
            )
            raw: dict[str, Any] = {
                "qid": qid,
                "query": sentence,
                "vid": vid,
                "duration": video.get("duration"),
            }
            if window is not None:
                raw["relevant_windows"] = [window]
            if isinstance(novels, list) and index < len(novels):
                raw["novels"] = novels[index]
            names = {
                "query": f"{vid}.sentences[{index}]",
                "relevant_windows": f"{vid}.timestamps[{index}]",
                "duration": f"{vid}.duration",
                "novels": f"{vid}.novels[{index}]",
                "vid": vid,
                "qid": "qid",
            }
            yield row, raw, names


def _csv_rows(path: Path, data: bytes) -> Iterator[_Candidate]:
    reader = csv.DictReader(io.StringIO(_decode(data), newline=""))
    if reader.fieldnames is None:
        return
    while True:
        try:
            raw = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"malformed CSV ({exc})", path=path, line=reader.line_num) from exc
        line = reader.line_num
        if None in raw:
            yield line, BadRow(path=str(path), line=line, field=None,
                               message="more cells than header columns"), None
            continue
        fields: dict[str, Any] = {k: v for k, v in raw.items() if v not in (None, "")}
        bad: BadRow | None = None
        for column in _JSON_COLUMNS:
            if column in fields and not _contains_bad_bytes(fields[column]):
                try:
                    fields[column] = json.loads(fields[column])
                except json.JSONDecodeError as exc:
                    bad = BadRow(path=str(path), line=line, field=column,
                                 message=f"malformed JSON in the cell ({exc.msg})")
                    break
        yield line, bad or fields, None


def _parquet_rows(path: Path) -> Iterator[_Candidate]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"not a readable Parquet file ({exc})", path=path) from exc
    for number, raw in enumerate(table.to_pylist(), start=1):
        yield number, {k: v for k, v in raw.items() if v is not None}, None


def _field_name(loc: tuple[int | str, ...], names: dict[str, str] | None) -> str:
    if not loc:
        return "row"
    head = str(loc[0])
    base = names.get(head, head) if names else head
    return base + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:])


def _describe(error: dict[str, Any]) -> str:
    if error.get("type") == "missing":
        return "missing field"
    message = str(error.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    if error.get("type") in {"string_type", "float_type", "float_parsing", "list_type",
                             "tuple_type", "int_type", "dict_type"}:
        message += f" (got {error.get('input')!r})"
    return message


def _collect(
    path: Path,
    kind: str,
    candidates: Iterator[_Candidate],
    *,
    raise_first: bool,
    check_bytes: bool = True,
) -> ReadResult:
    records: list[QueryRecord] = []
    lines: list[int] = []
    bad_rows: list[BadRow] = []
    seen: dict[str, int] = {}
    for line, raw, names in candidates:
        bad: BadRow | None = raw if isinstance(raw, BadRow) else None
        record: QueryRecord | None = None
        if isinstance(raw, dict):
            bad_field = _bad_utf8_field(raw) if check_bytes else None
            if bad_field is not None:
                field = names.get(bad_field, bad_field) if names else bad_field
                bad = BadRow(path=str(path), line=line, field=field,
                             message="invalid UTF-8 bytes in the value")
            else:
                try:
                    record = QueryRecord.model_validate(raw)
                except ValidationError as exc:
                    first = exc.errors()[0]
                    bad = BadRow(
                        path=str(path), line=line,
                        field=_field_name(tuple(first["loc"]), names),
                        message=_describe(dict(first)),
                        qid=str(raw.get("qid")) if raw.get("qid") is not None else None,
                    )
        if record is not None and record.qid in seen:
            bad = BadRow(
                path=str(path), line=line, field=names.get("qid", "qid") if names else "qid",
                qid=record.qid,
                message=f"duplicate qid {record.qid!r} (first at line/row {seen[record.qid]})",
            )
            record = None
        if bad is not None:
            if raise_first:
                raise bad.to_error()
            bad_rows.append(bad)
            continue
        assert record is not None
        seen[record.qid] = line
        records.append(record)
        lines.append(line)
    return ReadResult(path=str(path), format=kind, records=records, lines=lines,
                      bad_rows=bad_rows)


def sample_records(records: list[QueryRecord], count: int, seed: int) -> list[QueryRecord]:
    """``count`` records drawn with ``seed`` (all of them when there are fewer), file order."""
    import random

    if count >= len(records):
        return list(records)
    chosen = sorted(random.Random(seed).sample(range(len(records)), count))
    return [records[index] for index in chosen]


def write_jsonl(
    records: list[QueryRecord], target: str | Path, group: AtomicFiles | None = None
) -> Path:
    """Write records as SHINE jsonl (atomically, or as part of ``group``), optional fields
    only when set."""
    target = Path(target)
    if group is None:
        with atomic_files() as own:
            return write_jsonl(records, target, own)
    with group.open(target) as handle:
        for record in records:
            handle.write(json.dumps(record_to_json(record), allow_nan=False) + "\n")
    return target


def record_to_json(record: QueryRecord) -> dict[str, Any]:
    """A record in the SHINE jsonl key order (windows as lists)."""
    out: dict[str, Any] = {
        "qid": record.qid,
        "query": record.query,
        "duration": record.duration,
        "vid": record.vid,
        "relevant_windows": [list(w) for w in record.relevant_windows],
    }
    for key in ("masked_queries", "recomposed_queries", "novels"):
        value = getattr(record, key)
        if value is not None:
            out[key] = value
    return out
