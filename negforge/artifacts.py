"""Parquet artifacts: versioned row schemas (pydantic) and provenance in the file metadata.

Three artifact kinds flow through the pipeline:

* ``dictionary`` -- one :class:`DictionaryEntry` per (primitive type, word);
* ``masked`` -- one :class:`MaskedLevel` per (query, masking level);
* ``negatives`` -- one :class:`NegativeRow` per (query, masking level), a masked level plus
  the LLM's fill.

``negforge score-plausibility`` adds two: ``scored_negatives`` (a :class:`ScoredNegativeRow`:
a negatives row plus its plausibility) and ``scored_queries`` (a :class:`ScoredQueryRow`:
the fields of a query plus its plausibility).

Every file carries a :class:`Provenance` JSON document twice, so that tools other than
negforge can read it: under the Parquet metadata key ``negforge`` (pyarrow, DuckDB's
``parquet_kv_metadata``) and as the sidecar ``<artifact>.provenance.json`` beside the file
(plain JSON: ``json.load``, DuckDB's ``read_json``, ``datasets.Dataset.from_json``; Hugging
Face ``datasets`` 5 rewrites the Parquet metadata when it loads a file, so the sidecar is its
way in). Input paths are absolute, each with its sha256. The artifact and its sidecar are
written atomically, together (temp files, then rename).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, TypeAdapter, ValidationError

from negforge import __version__
from negforge.atomic import AtomicFiles, atomic_files
from negforge.errors import InputError

PrimitiveType = Literal["verb", "noun", "adjective", "preposition", "adverb"]
#: The five primitive types, in the paper's masking priority order.
PRIMITIVE_TYPES: tuple[PrimitiveType, ...] = ("verb", "noun", "adjective", "preposition", "adverb")

ArtifactKind = Literal["dictionary", "masked", "negatives", "scored_negatives", "scored_queries"]
METADATA_KEY = b"negforge"
#: The suffix of the plain-JSON provenance sidecar beside each artifact file.
SIDECAR_SUFFIX = ".provenance.json"
#: Bump when a row schema changes incompatibly.
SCHEMA_VERSIONS: dict[str, int] = {
    "dictionary": 1,
    "masked": 1,
    "negatives": 1,
    "scored_negatives": 1,
    "scored_queries": 1,
}


class DictionaryEntry(BaseModel):
    """A word of the POS dictionary D with its count in the training queries."""

    model_config = ConfigDict(extra="forbid")

    type: PrimitiveType
    word: str  # lower-cased surface form
    lemma: str  # most frequent lemma of that surface form and type
    count: int = Field(ge=1)


class QueryFields(BaseModel):
    """The fields of the query a masked or negative row belongs to."""

    qid: str
    query: str
    vid: str
    duration: FiniteFloat
    relevant_windows: list[tuple[FiniteFloat, FiniteFloat]]


class MaskedLevel(QueryFields):
    """One masking level of one query (levels are nested: level j+1 masks a superset).

    A new rule here needs its column form in ``generation.masked_input._columns_pass``.
    """

    model_config = ConfigDict(extra="forbid")

    level: int = Field(ge=1)  # 1 = fewest masks = closest to the positive query
    ratio: float
    tokens: list[str]  # spaCy tokens of the query
    masked_positions: list[int]  # token indices replaced by <mask>, left to right
    original_words: list[str]  # tokens[masked_positions[i]]
    original_lemmas: list[str]  # spaCy lemma of each original word (lower case)
    types: list[PrimitiveType]  # primitive type of each masked token (subjects: noun)
    masked_query: str  # rendered with <mask> (masking rule 7, negforge.masking)


class GeneratedFields(BaseModel):
    """What a generation run adds to a masked level: a negatives row's own columns."""

    model_config = ConfigDict(extra="forbid")

    negative: str | None  # None when the row was dropped as invalid
    fills: list[str]  # one fill per masked position, same order
    valid: bool
    invalid_reasons: list[str] = Field(default_factory=list)
    attempts: int = 0  # backend calls spent on this query (re-asks included)
    fallback: str | None = None  # "random" or "keep" when --on-invalid replaced the answer
    cache_hit: bool = False
    backend: str
    model: str
    prompt_version: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0


class GeneratedLevel(GeneratedFields):
    """The generated fields of one level of a query, as a generation run makes and journals them."""

    level: int = Field(ge=1)


#: A query's generated levels as one value (journal lines are written and read with it).
GENERATED_LEVELS: TypeAdapter[list[GeneratedLevel]] = TypeAdapter(list[GeneratedLevel])


class NegativeRow(GeneratedFields, MaskedLevel):
    """A masked level filled in by a backend: one hard negative query.

    Its columns are the masked level's, then the generated fields (pydantic lays out the
    fields of the bases in reverse MRO order: :class:`MaskedLevel`'s come first).
    """


class ScoredNegativeRow(NegativeRow):
    """A negatives row with its plausibility under a causal LM (``score-plausibility``).

    NLLs are mean negative log-likelihoods per token in nats; None where the row has no
    negative. ``plausibility_delta = plausibility_nll - plausibility_query_nll``.
    """

    plausibility_nll: float | None
    plausibility_tokens: int | None
    plausibility_query_nll: float
    plausibility_delta: float | None


class ScoredQueryRow(QueryFields):
    """A query with its plausibility under a causal LM (``score-plausibility``)."""

    model_config = ConfigDict(extra="forbid")

    plausibility_nll: float
    plausibility_tokens: int


class Provenance(BaseModel):
    """Where an artifact came from; stored as JSON in the Parquet file metadata."""

    model_config = ConfigDict(extra="allow")

    kind: ArtifactKind
    schema_version: int
    negforge_version: str = __version__
    created: str = Field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat())
    input_files: list[str] = Field(default_factory=list)
    input_sha256: list[str] = Field(default_factory=list)
    spacy_model: str | None = None
    spacy_version: str | None = None
    ratios: list[float] | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    fingerprint: str | None = None  # pipeline stage fingerprint (inputs + code + settings)
    summary: dict[str, Any] = Field(default_factory=dict)  # e.g. generation run summary


ROW_MODELS: dict[str, type[BaseModel]] = {
    "dictionary": DictionaryEntry,
    "masked": MaskedLevel,
    "negatives": NegativeRow,
    "scored_negatives": ScoredNegativeRow,
    "scored_queries": ScoredQueryRow,
}

_WINDOWS = pa.list_(pa.list_(pa.float64(), 2))
_QUERY_FIELDS = [
    pa.field("qid", pa.string(), nullable=False),
    pa.field("query", pa.string(), nullable=False),
    pa.field("vid", pa.string(), nullable=False),
    pa.field("duration", pa.float64(), nullable=False),
    pa.field("relevant_windows", _WINDOWS, nullable=False),
]
_MASKED_FIELDS = [
    *_QUERY_FIELDS,
    pa.field("level", pa.int16(), nullable=False),
    pa.field("ratio", pa.float64(), nullable=False),
    pa.field("tokens", pa.list_(pa.string()), nullable=False),
    pa.field("masked_positions", pa.list_(pa.int32()), nullable=False),
    pa.field("original_words", pa.list_(pa.string()), nullable=False),
    pa.field("original_lemmas", pa.list_(pa.string()), nullable=False),
    pa.field("types", pa.list_(pa.string()), nullable=False),
    pa.field("masked_query", pa.string(), nullable=False),
]
ARROW_SCHEMAS: dict[str, pa.Schema] = {
    "dictionary": pa.schema(
        [
            pa.field("type", pa.string(), nullable=False),
            pa.field("word", pa.string(), nullable=False),
            pa.field("lemma", pa.string(), nullable=False),
            pa.field("count", pa.int64(), nullable=False),
        ]
    ),
    "masked": pa.schema(_MASKED_FIELDS),
    "negatives": pa.schema(
        [
            *_MASKED_FIELDS,
            pa.field("negative", pa.string(), nullable=True),
            pa.field("fills", pa.list_(pa.string()), nullable=False),
            pa.field("valid", pa.bool_(), nullable=False),
            pa.field("invalid_reasons", pa.list_(pa.string()), nullable=False),
            pa.field("attempts", pa.int32(), nullable=False),
            pa.field("fallback", pa.string(), nullable=True),
            pa.field("cache_hit", pa.bool_(), nullable=False),
            pa.field("backend", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("prompt_version", pa.string(), nullable=True),
            pa.field("input_tokens", pa.int64(), nullable=False),
            pa.field("output_tokens", pa.int64(), nullable=False),
        ]
    ),
}

#: The columns ``score-plausibility`` adds to a negatives artifact.
PLAUSIBILITY_NEGATIVE_FIELDS = [
    pa.field("plausibility_nll", pa.float64(), nullable=True),
    pa.field("plausibility_tokens", pa.int32(), nullable=True),
    pa.field("plausibility_query_nll", pa.float64(), nullable=False),
    pa.field("plausibility_delta", pa.float64(), nullable=True),
]
ARROW_SCHEMAS["scored_negatives"] = pa.schema(
    [*ARROW_SCHEMAS["negatives"], *PLAUSIBILITY_NEGATIVE_FIELDS]
)
ARROW_SCHEMAS["scored_queries"] = pa.schema(
    [
        *_QUERY_FIELDS,
        pa.field("plausibility_nll", pa.float64(), nullable=False),
        pa.field("plausibility_tokens", pa.int32(), nullable=False),
    ]
)

RowT = TypeVar("RowT", bound=BaseModel)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def rows_to_table(kind: ArtifactKind, rows: Iterable[BaseModel | dict[str, Any]]) -> pa.Table:
    """Build the Arrow table of an artifact from row models (or their dumps)."""
    dumped = [row.model_dump() if isinstance(row, BaseModel) else row for row in rows]
    return pa.Table.from_pylist(dumped, schema=ARROW_SCHEMAS[kind])


def provenance_sidecar(path: str | Path) -> Path:
    """The plain-JSON provenance file beside an artifact: ``<artifact>.provenance.json``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def resolve_inputs(provenance: Provenance) -> Provenance:
    """The provenance with absolute input paths, each with its sha256 (computed when the
    caller did not give one per input and the input exists)."""
    files = [os.path.abspath(name) for name in provenance.input_files]
    hashes = list(provenance.input_sha256)
    if len(hashes) != len(files) and all(Path(name).exists() for name in files):
        hashes = [artifact_sha256(name) for name in files]
    return provenance.model_copy(update={"input_files": files, "input_sha256": hashes})


def write_artifact(
    path: str | Path,
    table_or_rows: pa.Table | Sequence[BaseModel] | Sequence[dict[str, Any]],
    provenance: Provenance,
    group: AtomicFiles | None = None,
    *,
    sidecar: bool = True,
) -> Path:
    """Write an artifact atomically with its provenance in the file metadata and (unless
    ``sidecar`` is False: the parts of a partitioned artifact) in its sidecar JSON.

    With ``group`` the artifact is renamed into place together with the group's other files
    (its summary, its bad-row report).
    """
    kind = provenance.kind
    provenance = resolve_inputs(provenance)
    table = (
        table_or_rows
        if isinstance(table_or_rows, pa.Table)
        else rows_to_table(kind, table_or_rows)
    )
    table = table.cast(ARROW_SCHEMAS[kind])
    metadata = dict(table.schema.metadata or {})
    metadata[METADATA_KEY] = provenance.model_dump_json().encode()
    table = table.replace_schema_metadata(metadata)
    path = Path(path)
    with contextlib.ExitStack() as stack:
        files = group if group is not None else stack.enter_context(atomic_files())
        pq.write_table(table, files.path(path), compression="zstd")
        if sidecar:
            files.write_text(provenance_sidecar(path), provenance_json(provenance) + "\n")
    return path


def read_provenance(path: str | Path) -> Provenance:
    """Read only the provenance of an artifact (cheap: the footer alone, or a dataset's
    manifest)."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path=path)
    if path.is_dir():  # a partitioned artifact (negforge.datasets), or an error naming it
        from negforge.datasets import read_manifest

        return read_manifest(path).provenance
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"not a readable Parquet artifact ({exc})", path=path) from exc
    if METADATA_KEY not in metadata:
        raise InputError("Parquet file has no negforge provenance metadata", path=path)
    try:
        return Provenance.model_validate_json(metadata[METADATA_KEY])
    except ValueError as exc:
        raise InputError(f"unreadable negforge provenance ({exc.__class__.__name__})",
                         path=path) from exc  # fmt: skip


def read_artifact(
    path: str | Path, kind: ArtifactKind | None = None
) -> tuple[pa.Table, Provenance]:
    """Read an artifact's table and provenance; check its kind and schema version."""
    provenance = read_provenance(path)
    if kind is not None and provenance.kind != kind:
        raise InputError(f"expected a {kind} artifact, found {provenance.kind}", path=path)
    expected = SCHEMA_VERSIONS[provenance.kind]
    if provenance.schema_version != expected:
        raise InputError(
            f"{provenance.kind} schema version {provenance.schema_version} is not supported "
            f"(this negforge reads version {expected})",
            path=path,
        )
    if Path(path).is_dir():
        from negforge.datasets import read_table

        return read_table(path), provenance
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"not a readable Parquet artifact ({exc})", path=path) from exc
    return table, provenance


def artifact_rows(path: str | Path) -> int:
    """The number of rows of an artifact (its footer only, or a dataset's manifest)."""
    read_provenance(path)  # a readable negforge artifact, or InputError naming it
    if Path(path).is_dir():
        from negforge.datasets import read_manifest

        return read_manifest(path).rows
    return int(pq.ParquetFile(path).metadata.num_rows)


def artifact_sha256(path: str | Path) -> str:
    """The content hash of an artifact: the file's sha256, or a dataset's (its parts')."""
    if Path(path).is_dir():
        from negforge.datasets import dataset_sha256

        return dataset_sha256(path)
    return sha256_file(path)


def load_rows(path: str | Path, model: type[RowT]) -> list[RowT]:
    """Read an artifact into validated row models."""
    kind = next(k for k, m in ROW_MODELS.items() if m is model)
    table, _ = read_artifact(path, kind)  # type: ignore[arg-type]
    rows = []
    for number, row in enumerate(table.to_pylist(), start=1):
        try:
            rows.append(model.model_validate(row))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"]) or None
            raise InputError(str(error["msg"]), path=path, line=number, field=field) from exc
    return rows


def provenance_json(provenance: Provenance) -> str:
    """Pretty JSON of a provenance record (for ``negforge inspect`` and reports)."""
    return json.dumps(provenance.model_dump(), indent=2, sort_keys=True)


def arrow_type_name(data_type: pa.DataType) -> str:
    """An Arrow type as the docs write it: ``list<fixed_size_list<double, 2>>``, ``int16``."""
    if pa.types.is_fixed_size_list(data_type):
        return f"fixed_size_list<{arrow_type_name(data_type.value_type)}, {data_type.list_size}>"
    if pa.types.is_list(data_type):
        return f"list<{arrow_type_name(data_type.value_type)}>"
    return str(data_type)


def schema_table(kind: ArtifactKind, skip: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(column, type) of an artifact kind's columns, ``(nullable)`` marked; the docs' tables
    (docs/pipeline.md#artifacts) list exactly these (``scripts/schema_docs.py`` prints them)."""
    return [
        (field.name, arrow_type_name(field.type) + (" (nullable)" if field.nullable else ""))
        for field in ARROW_SCHEMAS[kind]
        if field.name not in skip
    ]
