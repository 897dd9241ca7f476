"""Memoised attribute_ruler + lemmatizer output, exact where the components are token-local.

In spaCy's English pipelines the two rule components after the tagger and parser
(``attribute_ruler``, which sets ``pos_`` from the tag, and the rule ``lemmatizer``) act on one
token at a time, so their output for a token is a function of its text, tag, morph and
dependency label -- except where a multi-token attribute-ruler pattern (``gon na``,
``let 's``, ``there is``...) may start. :class:`PostParse` runs them for real only on tokens
it has not seen yet (all new ones of a batch in one small Doc) and over the few adjacent
tokens a multi-token pattern could cover, and memoises the results. The token tuples equal
those of the full pipeline (``tests/pipeline/test_nlp.py``);
``benchmarks/bench_pipeline.py`` measures what it saves. A pipeline whose components are
not token-local (a morphologizer, a trainable lemmatizer, ruler patterns with other keys) is
left alone: :attr:`PostParse.enabled` is False and every component runs.

spaCy is imported inside the functions here, never at module import time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc
    from spacy.tokens import Token as SpacyToken

#: A parsed token: ``(text, pos_, dep_, lemma_)``, the form every stage reads.
Token = tuple[str, str, str, str]
#: Docs per batch (``nlp.pipe`` and the memo's flushes).
BATCH_SIZE = 256
#: Components after the parser whose per-token output PostParse memoises.
POST_COMPONENTS = ("attribute_ruler", "lemmatizer")
#: Attribute-ruler pattern keys whose value depends on the token alone (text, tag, dep).
_LOCAL_KEYS = frozenset({"ORTH", "TEXT", "LOWER", "TAG", "DEP", "IS_SPACE"})
_LEMMATIZER_MODES = frozenset({"rule", "lookup", "pos_lookup"})
#: Attributes the attribute ruler may set for the memo to stay exact.
_RULER_SETS = frozenset({"POS", "LEMMA", "MORPH", "TAG", "DEP"})


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
