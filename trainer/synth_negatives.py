"""Hard negatives made by the pipeline, turned into features of a ``negforge synth`` benchmark.

``negforge synth-negatives BENCH NEGATIVES --name NAME``: the benchmark's own word vectors for
each negative (:class:`~negforge.trainer.synth_world.World`), and a training config that
reads them, so the benchmark measures the negatives of ``build-dict -> mask -> generate``.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel

from negforge.atomic import atomic_write_text
from negforge.errors import InputError
from negforge.trainer.features import negative_key
from negforge.trainer.synth import _read_jsonl, _save_npz, read_info
from negforge.trainer.synth_world import World, words_of


class NegativeFeaturesReport(BaseModel):
    """What :func:`featurize_negatives` wrote."""

    output: str
    queries: int
    negatives: int
    unknown_words: list[str]
    train_config: str


def featurize_negatives(
    benchmark: str | Path,
    negatives: str | Path,
    name: str,
) -> NegativeFeaturesReport:
    """Text features of hard negatives made by the pipeline, for the benchmark's trainer.

    ``negatives`` is a negatives artifact (``negforge generate``) or a SHINE jsonl over the
    benchmark's ``train_queries.jsonl``. Writes ``BENCH/negatives/NAME/{qid}_recomposed_gpt_
    {i}.npz`` with the benchmark's own word vectors (a word outside the vocabulary gets a
    fixed random vector) and ``BENCH/train_config_NAME.yaml``: the benchmark's config with
    ``train`` set to ``negatives`` and that folder searched first for text features.
    """
    from negforge.trainer.data import load_train_samples

    bench = Path(benchmark)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise InputError(f"negatives name '{name}' must be letters, digits, '_', '.', '-'")
    config = read_info(bench)
    world = World(config)
    known = set(world.word_vec)
    samples = load_train_samples(negatives)
    train_qids = {row["qid"] for row in _read_jsonl(bench / "train_queries.jsonl")}
    foreign = [s.qid for s in samples if s.qid not in train_qids]
    if foreign:
        raise InputError(
            f"{len(foreign)} queries are not in {bench / 'train_queries.jsonl'} "
            f"(first: {foreign[0]})",
            path=negatives,
        )
    folder = bench / "negatives" / name
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([config.seed, zlib.crc32(name.encode())])
    unknown: set[str] = set()
    written = with_negatives = 0
    for sample in samples:
        if any(n is not None for n in sample.negatives):
            with_negatives += 1
        for i, text in enumerate(sample.negatives):
            if text is None or not words_of(text):
                continue
            unknown.update(w for w in words_of(text) if w not in known)
            _save_npz(folder, negative_key(sample.qid, i), world.text_tokens(text, rng))
            written += 1
    base = yaml.safe_load((bench / "train_config.yaml").read_text(encoding="utf-8"))
    data = base.setdefault("data", {})
    source = Path(negatives).resolve()
    try:
        data["train"] = str(source.relative_to(bench.resolve()))
    except ValueError:
        data["train"] = str(source)
    data["text_feats"] = [f"negatives/{name}", *data.get("text_feats", ["text_feats"])]
    config_path = bench / f"train_config_{name}.yaml"
    atomic_write_text(config_path, yaml.safe_dump(base, sort_keys=False))
    return NegativeFeaturesReport(
        output=str(folder),
        queries=with_negatives,
        negatives=written,
        unknown_words=sorted(unknown),
        train_config=str(config_path),
    )
