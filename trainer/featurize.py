"""``negforge featurize``: token-level text features of queries and their hard negatives.

Inputs are query files (jsonl / benchmark json / csv), SHINE jsonl rows with
``recomposed_queries`` or negforge ``negatives`` artifacts. The output is one HDF5 file with a
float dataset (tokens, dim) per key: ``{qid}`` for a query, ``{qid}_recomposed_gpt_{i}`` for
its i-th hard negative (closest first) -- the names of SHINE's per-query ``.npz`` files, so
:class:`~negforge.trainer.features.TextFeatureStore` reads either layout. Written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from negforge.atomic import atomic_path
from negforge.errors import InputError
from negforge.trainer.features import negative_key, query_key

#: The layout version stored in the file's attributes.
TEXT_FEATURES_FORMAT = "negforge-text-features/1"


class FeaturizeReport(BaseModel):
    """What ``featurize`` wrote."""

    output: str
    encoder: str
    dim: int
    keys: int
    queries: int
    negatives: int
    unique_texts: int


def collect_texts(path: str | Path) -> dict[str, str]:
    """``{feature key: text}`` of a query file, SHINE jsonl or negatives artifact."""
    from negforge.trainer.data import is_negatives_artifact

    path = Path(path)
    if not path.is_file():
        raise InputError("query file does not exist", path=path)
    texts: dict[str, str] = {}
    if is_negatives_artifact(path):
        from negforge.artifacts import read_artifact
        from negforge.query_view import by_query

        table, _ = read_artifact(path, "negatives")
        rows = table.select(["qid", "query", "level", "negative", "valid"]).to_pylist()
        for query in by_query(rows):
            texts[query_key(query.qid)] = query.first["query"]
            for row in query.rows:
                if row["negative"] and row["valid"]:
                    texts[negative_key(query.qid, int(row["level"]) - 1)] = row["negative"]
        return texts
    from negforge.readers import read_queries

    for record in read_queries(path, on_error="raise").records:
        texts[query_key(record.qid)] = record.query
        for index, negative in enumerate(record.recomposed_queries or []):
            if negative and negative.strip():
                texts[negative_key(record.qid, index)] = negative
    return texts


def featurize(
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    encoder: str = "clip",
    model_path: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    dtype: str = "float32",
) -> FeaturizeReport:
    """Encode every query and negative of ``inputs`` into one HDF5 file at ``output``."""
    import h5py

    from negforge.trainer.text_encoders import load_text_encoder

    if dtype not in ("float32", "float16"):
        raise InputError(f"dtype must be float32 or float16, not {dtype!r}", field="dtype")
    texts: dict[str, str] = {}
    for path in inputs:
        texts.update(collect_texts(path))
    if not texts:
        raise InputError("no queries found", path=inputs[0] if inputs else None)
    bad = next((k for k in texts if "/" in k), None)
    if bad is not None:
        raise InputError("a qid must not contain '/' (HDF5 path separator)", field=bad)
    model = load_text_encoder(encoder, model_path, device)
    unique = sorted(set(texts.values()), key=len)  # similar lengths batch with less padding
    vectors = dict(zip(unique, model.encode(unique, batch_size=batch_size), strict=True))
    with atomic_path(output) as tmp, h5py.File(tmp, "w") as handle:
        handle.attrs["format"] = TEXT_FEATURES_FORMAT
        handle.attrs["encoder"] = encoder
        handle.attrs["model"] = str(model_path) if model_path else encoder
        handle.attrs["dim"] = model.dim
        for key in sorted(texts):
            handle.create_dataset(key, data=vectors[texts[key]].astype(np.dtype(dtype)))
    negatives = sum(1 for k in texts if "_recomposed_gpt_" in k)
    return FeaturizeReport(
        output=str(output),
        encoder=encoder,
        dim=model.dim,
        keys=len(texts),
        queries=len(texts) - negatives,
        negatives=negatives,
        unique_texts=len(unique),
    )


def read_text_features(path: str | Path) -> dict[str, Any]:
    """The attributes of a featurize output (format, encoder, model, dim)."""
    import h5py

    with h5py.File(path, "r") as handle:
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in handle.attrs.items()}
