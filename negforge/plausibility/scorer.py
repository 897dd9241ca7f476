"""Sentence plausibility: the mean token negative log-likelihood of a text under a causal LM.

``NLL(text) = -1/n * sum_i log p(t_i | start, t_1 .. t_{i-1})`` over the text's n tokens,
in nats per token, the first token predicted from the model's document-start token
(:mod:`negforge.plausibility.llama`). Lower is more plausible. For a hard negative,
``Delta NLL = NLL(negative) - NLL(positive query)``: 0 means as plausible as the query it
was made from; positive means less plausible.

:class:`SentenceScorer` looks every distinct text up in the cache first, loads the model only
when something is missing, packs the missing texts into batches of up to ``n_batch`` tokens
and ``n_seq_max - 1`` sequences (one ``llama_decode`` each, logits of every position, each
text's score independent of its batch: :mod:`negforge.plausibility.llama`), and stores each
batch's scores as soon as it is done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from negforge.errors import ConfigError
from negforge.generation.local_server import find_gguf
from negforge.plausibility.cache import ScoreCache, SentenceScore, score_key
from negforge.plausibility.llama import (
    DecodeRequest,
    LlamaLM,
    LlamaSettings,
    aligned,
    log_softmax_at,
    model_sha256,
)

#: Called with (texts done, whether they came from the cache).
Progress = Callable[[int, bool], None]


class SentenceScorer:
    """Mean token NLL of texts (see the module docstring); use as a context manager."""

    def __init__(
        self,
        settings: LlamaSettings | None = None,
        *,
        cache: ScoreCache | None = None,
        model: LlamaLM | None = None,
    ) -> None:
        self.settings = settings or (model.settings if model is not None else LlamaSettings())
        self.path: Path = model.path if model is not None else find_gguf(self.settings.model_path)
        self.model_sha256 = model_sha256(self.path)
        self.cache = cache
        self._model = model
        self._owns_model = model is None
        self.texts_scored = 0  # texts the model computed (cache misses)
        self.cache_hits = 0

    @property
    def model_name(self) -> str:
        return self.path.name

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    @property
    def decode_calls(self) -> int:
        """``llama_decode`` calls made so far (0: every score came from the cache)."""
        return self._model.decode_calls if self._model is not None else 0

    def model(self) -> LlamaLM:
        """The model, loaded on first use."""
        if self._model is None:
            self._model = LlamaLM(self.settings)
        return self._model

    def score(self, texts: Sequence[str], progress: Progress | None = None
              ) -> list[SentenceScore]:  # fmt: skip
        """The score of every text (repeats scored once); ``progress`` after each batch."""
        for text in texts:
            if not text.strip():
                raise ConfigError("an empty text has no plausibility score")
        unique = list(dict.fromkeys(texts))
        keys = {text: score_key(self.model_sha256, text) for text in unique}
        found: dict[str, SentenceScore] = {}
        if self.cache is not None:
            cached = self.cache.get_many(keys.values())
            found = {text: cached[key] for text, key in keys.items() if key in cached}
            self.cache_hits += len(found)
            if found and progress is not None:
                progress(len(found), True)
        missing = [text for text in unique if text not in found]
        if missing:
            for batch_texts, batch_scores in self._compute(missing):
                fresh = dict(zip(batch_texts, batch_scores, strict=True))
                found.update(fresh)
                self.texts_scored += len(fresh)
                if self.cache is not None:
                    self.cache.set_many({keys[text]: score for text, score in fresh.items()})
                if progress is not None:
                    progress(len(fresh), False)
        return [found[text] for text in texts]

    # -- model work -------------------------------------------------------------------------

    def _compute(self, texts: Sequence[str]
                 ) -> Iterator[tuple[list[str], list[SentenceScore]]]:  # fmt: skip
        model = self.model()
        sequences = [[model.start_token, *model.tokenize(text)] for text in texts]
        limit_slots, limit_seqs = model.n_batch, model.max_sequences
        batch: list[int] = []
        used = 0
        for index, tokens in enumerate(sequences):
            slots = aligned(len(tokens))
            if slots > limit_slots:
                raise ConfigError(
                    f"a text of {len(tokens)} tokens does not fit one decode of {limit_slots} "
                    f"(raise --batch-tokens): {texts[index][:60]!r}"
                )
            if batch and (used + slots > limit_slots or len(batch) >= limit_seqs):
                yield [texts[i] for i in batch], self._score_batch([sequences[i] for i in batch])
                batch, used = [], 0
            batch.append(index)
            used += slots
        if batch:
            yield [texts[i] for i in batch], self._score_batch([sequences[i] for i in batch])

    def _score_batch(self, sequences: Sequence[Sequence[int]]) -> list[SentenceScore]:
        """Scores of sequences that fit one decode (start token first)."""
        import numpy as np

        model = self.model()
        requests = [
            DecodeRequest(seq_ids=(index,), tokens=tokens, start=0,
                          outputs=[True] * (len(tokens) - 1) + [False])
            for index, tokens in enumerate(sequences)
        ]  # fmt: skip
        logits = model.decode(requests)
        targets = np.fromiter((t for tokens in sequences for t in tokens[1:]), dtype=np.int64)
        logprobs = log_softmax_at(logits, targets)
        scores: list[SentenceScore] = []
        offset = 0
        for tokens in sequences:
            count = len(tokens) - 1
            part = logprobs[offset:offset + count]
            scores.append(SentenceScore(nll=float(-part.mean()), tokens=count))
            offset += count
        return scores

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        if self._model is not None and self._owns_model:
            self._model.close()
            self._model = None

    def __enter__(self) -> SentenceScorer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
