"""Benchmark: plausibility scoring and the rank fill against llama.cpp on the same work.

Part 1, sentences scored per second (mean token NLL of each sentence, no cache), on the
first ``--sentences`` Charades-CG training queries and their released negatives, three ways:

* ``negforge``: :class:`negforge.plausibility.scorer.SentenceScorer` (packed batches of up
  to 512 tokens, every text aligned so its score does not depend on its batch);
* ``llama.cpp Llama.eval``: llama-cpp-python's own API, one sentence at a time
  (``Llama(logits_all=True)``, ``reset()``, ``eval(tokens)``, log-softmax of ``scores``);
* ``raw decode``: a bare ``llama_decode`` loop over the same sentences packed densely (no
  alignment), the throughput bound of the batched approach.

Part 2, the rank fill of ``generate --llm local`` on the first ``--queries`` masked sample
queries: negforge's queries per second, and the same decode work (every group negforge
sent, recorded) replayed as a bare ``llama_decode`` loop packed densely: negforge's real
tokens per second over the raw loop's, and the Charades-CG (8,281 queries) estimate.

Every side runs ``--rounds`` times, alternating; each figure is the median over rounds, in
process CPU seconds (this machine is shared: wall time is printed too, but CPU time is what
the work costs). Both sides of a ratio compute the same thing on the same tokens.

    .venv/bin/python benchmarks/bench_plausibility.py
    .venv/bin/python benchmarks/bench_plausibility.py --sentences 400 --queries 30 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import negforge.plausibility.llama as llama_module  # noqa: E402
from negforge.plausibility.llama import (  # noqa: E402
    DecodeRequest,
    LlamaLM,
    LlamaSettings,
    log_softmax_at,
)
from negforge.plausibility.scorer import SentenceScorer  # noqa: E402

CHARADES = ROOT.parent / "shared" / "data" / "charades_cg" / "charades_cg_gpt_train.jsonl"
SAMPLE = ROOT / "negforge" / "sample_data" / "sample_queries.jsonl"


def timed(work: Callable[[], object]) -> tuple[float, float, object]:
    """(CPU seconds, wall seconds, result) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = work()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def sentences(count: int) -> list[str]:
    """Charades-CG queries and their released negatives, distinct, in file order."""
    texts: list[str] = []
    with open(CHARADES, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            texts += [row["query"], *row["recomposed_queries"]]
            if len(texts) >= 2 * count:
                break
    return list(dict.fromkeys(t.strip() for t in texts))[:count]


def raw_decode_nll(model: LlamaLM, token_lists: Sequence[list[int]], n_batch: int
                   ) -> list[float]:  # fmt: skip
    """Mean token NLL per sequence with a bare llama_decode loop, densely packed."""
    llama, ctx, vocab = model._llama, model._ctx, model.n_vocab
    batch = llama.llama_batch_init(n_batch, 0, 1)
    memory = llama.llama_get_memory(ctx)
    out: list[float] = []
    try:
        start = 0
        while start < len(token_lists):
            group: list[list[int]] = []
            used = 0
            while (start + len(group) < len(token_lists) and len(group) < model.max_sequences
                   and used + len(token_lists[start + len(group)]) <= n_batch):  # fmt: skip
                used += len(token_lists[start + len(group)])
                group.append(token_lists[start + len(group)])
            llama.llama_memory_clear(memory, True)
            index = 0
            for seq_id, tokens in enumerate(group):
                for pos, token in enumerate(tokens):
                    batch.token[index], batch.pos[index] = token, pos
                    batch.n_seq_id[index], batch.seq_id[index][0] = 1, seq_id
                    batch.logits[index] = pos < len(tokens) - 1
                    index += 1
            batch.n_tokens = index
            assert llama.llama_decode(ctx, batch) == 0
            rows = sum(len(tokens) - 1 for tokens in group)
            logits = np.ctypeslib.as_array(llama.llama_get_logits(ctx), shape=(rows, vocab))
            targets = [t for tokens in group for t in tokens[1:]]
            logprobs = log_softmax_at(logits, targets)
            offset = 0
            for tokens in group:
                out.append(float(-logprobs[offset:offset + len(tokens) - 1].mean()))
                offset += len(tokens) - 1
            start += len(group)
    finally:
        llama.llama_batch_free(batch)
    return out


def bench_scoring(count: int, rounds: int) -> None:
    from llama_cpp import Llama

    texts = sentences(count)
    settings = LlamaSettings(n_batch=512, n_ctx=512)
    model = LlamaLM(settings)
    tokens = [[model.start_token, *model.tokenize(text)] for text in texts]
    real = sum(len(t) for t in tokens)
    print(f"== scoring: {len(texts)} distinct Charades-CG sentences, {real} tokens "
          f"(start token included), {model.threads} threads")  # fmt: skip
    own = Llama(model_path=str(model.path), n_ctx=512, n_batch=512, logits_all=True,
                n_threads=model.threads, n_threads_batch=model.threads, verbose=False)

    def negforge() -> list[float]:
        return [s.nll for s in SentenceScorer(model=model).score(texts)]

    def llama_eval() -> list[float]:
        result = []
        for sequence in tokens:
            own.reset()
            own.eval(sequence)
            logits = np.asarray(own.scores[: len(sequence) - 1], dtype=np.float32)
            result.append(float(-log_softmax_at(logits, sequence[1:]).mean()))
        return result

    def raw() -> list[float]:
        return raw_decode_nll(model, tokens, settings.n_batch)

    sides = {"negforge": negforge, "llama.cpp Llama.eval": llama_eval, "raw decode": raw}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    wall: dict[str, list[float]] = {name: [] for name in sides}
    values: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, work in sides.items():  # alternate: one run of each side per round
            spent, elapsed, result = timed(work)
            cpu[name].append(spent)
            wall[name].append(elapsed)
            values[name] = result  # type: ignore[assignment]
    for name in sides:
        c, w = statistics.median(cpu[name]), statistics.median(wall[name])
        print(f"  {name:22s} CPU {c:7.2f} s ({len(texts) / c:6.1f} sentences/CPU-s)   "
              f"wall {w:7.2f} s ({len(texts) / w:6.1f} sentences/s)")  # fmt: skip
    base = statistics.median(cpu["negforge"])
    for name in ("llama.cpp Llama.eval", "raw decode"):
        ratio = statistics.median(cpu[name]) / base
        print(f"  negforge / {name}: {ratio:.2f}x the throughput (CPU time)")
    # Same numbers? Each side's NLLs come from its own context and its own batches; only the
    # ggml kernels and the tokens are shared. Llama.eval decodes every sentence alone from
    # an empty cache at cell 0, the layout negforge's alignment gives every sentence of a
    # packed batch: bit-identical NLLs are what batch independence predicts. The dense raw
    # loop starts sentences at any batch index: that layout does change roundings.
    print("  same work, NLL agreement (nats/token):")
    for name in ("llama.cpp Llama.eval", "raw decode"):
        print(f"    negforge vs {name:22s} {agreement(values['negforge'], values[name])}")
    padding = model.padding_tokens / max(rounds, 1)
    print(f"  padding negforge added: {padding:.0f} tokens/run ({padding / real:.0%} of the "
          f"real tokens)")
    # Which padding rule matters: every sentence in a decode of its own, without the
    # 64-token minimum (a batch of 8-20 tokens), and after a 3-token sequence (unaligned).
    default_minimum = llama_module.MIN_BATCH_TOKENS
    llama_module.MIN_BATCH_TOKENS = 1
    try:
        alone = [nll_in_layout(model, sequence, lead=0) for sequence in tokens]
        shifted = [nll_in_layout(model, sequence, lead=3) for sequence in tokens]
    finally:
        llama_module.MIN_BATCH_TOKENS = default_minimum
    print(f"    negforge vs each sentence alone, no {default_minimum}-token minimum     "
          f"{agreement(values['negforge'], alone)}")
    print(f"    negforge vs each sentence at batch index 3 (unaligned) "
          f"{agreement(values['negforge'], shifted)}")
    model.close()


def nll_in_layout(model: LlamaLM, sequence: list[int], lead: int) -> float:
    """A sentence's NLL decoded after ``lead`` throw-away tokens of another sequence."""
    requests = [DecodeRequest((1,), [model.start_token] * lead, 0, [False] * lead)] if lead else []
    requests.append(DecodeRequest((0,), sequence, 0, [True] * (len(sequence) - 1) + [False],
                                  align=not lead))  # fmt: skip
    rows = model.decode(requests)
    return float(-log_softmax_at(rows, sequence[1:]).mean())


def agreement(first: Sequence[float], second: Sequence[float]) -> str:
    """How far two lists of NLLs agree: bit-identical count and the largest difference."""
    gaps = [abs(a - b) for a, b in zip(first, second, strict=True)]
    same = sum(gap == 0.0 for gap in gaps)
    return f"bit-identical {same}/{len(gaps)}, max |difference| {max(gaps):.2e}"


class RecordingModel(LlamaLM):
    """A LlamaLM that keeps every decode's requests, to replay the same work."""

    def __init__(self, settings: LlamaSettings) -> None:
        super().__init__(settings)
        self.recorded: list[list[DecodeRequest]] = []

    def decode(self, requests: Sequence[DecodeRequest]) -> np.ndarray:
        self.recorded.append(list(requests))
        return super().decode(requests)


def replay_raw(model: LlamaLM, recorded: Sequence[Sequence[DecodeRequest]]) -> int:
    """The recorded decodes again, each as one densely packed batch (no alignment padding,
    no 64-token minimum); returns the tokens decoded."""
    llama, ctx = model._llama, model._ctx
    batch = llama.llama_batch_init(model.n_batch, 0, model.settings.n_seq_max)
    memory = llama.llama_get_memory(ctx)
    tokens = 0
    try:
        for requests in recorded:
            llama.llama_memory_clear(memory, True)
            index = 0
            for request in requests:
                ids = list(request.seq_ids)
                for offset, (token, flag) in enumerate(zip(request.tokens, request.outputs,
                                                           strict=True)):  # fmt: skip
                    batch.token[index], batch.pos[index] = token, request.start + offset
                    batch.n_seq_id[index] = len(ids)
                    for slot, seq_id in enumerate(ids):
                        batch.seq_id[index][slot] = seq_id
                    batch.logits[index] = flag
                    index += 1
            batch.n_tokens = index
            tokens += index
            assert llama.llama_decode(ctx, batch) == 0
    finally:
        llama.llama_batch_free(batch)
    return tokens


def bench_rank_fill(count: int, rounds: int) -> None:
    from negforge.generation.config import GenerateConfig
    from negforge.generation.masked_input import load_jobs, load_word_source
    from negforge.generation.rank_fill import RANK_SEQUENCES, RankFiller, form_index
    from negforge.generation.runner import _run_jobs
    from negforge.plausibility.batching import DecodeBatcher
    from tests.support.generation_inputs import make_generation_inputs

    folder = Path(tempfile.mkdtemp(prefix="bench-rank-"))
    inputs = make_generation_inputs(folder)
    jobs = load_jobs(inputs.masked)[0][:count]
    dictionary = load_word_source(inputs.dictionary)
    forms = form_index(inputs.dictionary)
    config = GenerateConfig(llm="local")
    model = RecordingModel(LlamaSettings(n_batch=512, n_ctx=512, n_seq_max=RANK_SEQUENCES))
    print(f"\n== rank fill: {len(jobs)} sample queries ({sum(len(j.levels) for j in jobs)} "
          f"rows), --concurrency {config.concurrency}, {model.threads} threads")  # fmt: skip

    def negforge() -> int:
        model.recorded.clear()
        filler = RankFiller(config, dictionary, forms, DecodeBatcher(model))
        done: list[object] = []
        asyncio.run(_run_jobs(jobs, filler.fill, done.append, config.concurrency))
        return len(done)

    cpu: dict[str, list[float]] = {"negforge": [], "raw": []}
    wall: dict[str, list[float]] = {"negforge": [], "raw": []}
    real = replayed = 0
    for _ in range(rounds):
        before = model.tokens_decoded
        spent, elapsed, _ = timed(negforge)
        real = model.tokens_decoded - before
        cpu["negforge"].append(spent)
        wall["negforge"].append(elapsed)
        recorded = list(model.recorded)
        spent, elapsed, count = timed(lambda done=recorded: replay_raw(model, done))
        replayed = int(count)  # type: ignore[call-overload]
        cpu["raw"].append(spent)
        wall["raw"].append(elapsed)
    c_neg, c_raw = statistics.median(cpu["negforge"]), statistics.median(cpu["raw"])
    w_neg = statistics.median(wall["negforge"])
    rate = len(jobs) / c_neg
    print(f"  negforge rank fill   CPU {c_neg:7.2f} s ({rate:.2f} queries/CPU-s, "
          f"{real / c_neg:.0f} real tokens/CPU-s)   wall {w_neg:.2f} s")
    print(f"  raw llama_decode     CPU {c_raw:7.2f} s ({replayed / c_raw:.0f} tokens/CPU-s) on "
          f"the same {len(recorded)} decodes, {replayed} tokens, packed densely")
    print(f"  negforge / raw token throughput: {(real / c_neg) / (replayed / c_raw):.2f}")
    hours = 8281 / rate / 3600
    print(f"  Charades-CG train (8,281 queries): about {hours:.1f} CPU-hours at this rate "
          f"({hours / model.threads:.1f} h wall with {model.threads} free cores); "
          f"free generation through serve-local took ~6 s a query (~14 h)")
    model.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=240)
    parser.add_argument("--queries", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-scoring", action="store_true")
    parser.add_argument("--skip-rank", action="store_true")
    args = parser.parse_args()
    if not args.skip_scoring:
        bench_scoring(args.sentences, args.rounds)
    if not args.skip_rank:
        bench_rank_fill(args.queries, args.rounds)


if __name__ == "__main__":
    main()
