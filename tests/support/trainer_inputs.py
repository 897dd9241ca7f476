"""Small inputs for the trainer tests: feature files, a tiny CLIP text model, artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from negforge.template import render

CHARS = "abcdefghijklmnopqrstuvwxyz.,'0123456789-"


def write_npy(folder: Path, vid: str, array: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{vid}.npy", array.astype(np.float32))
    return folder / f"{vid}.npy"


def write_npz(folder: Path, name: str, key: str, array: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{name}.npz", **{key: array.astype(np.float32)})
    return folder / f"{name}.npz"


def tiny_clip_dir(folder: Path, hidden: int = 32) -> Path:
    """A randomly initialised 2-layer CLIP text model + a character-level BPE tokenizer."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in CHARS:
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    try:
        tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    except TypeError:  # transformers 4.x: files only
        (folder / "vocab.json").write_text(json.dumps(vocab))
        (folder / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(
            vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt")
        )
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    CLIPTextModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def negative_rows(
    qid: str,
    vid: str,
    query: str,
    negatives: list[str | None],
    *,
    valid: list[bool] | None = None,
    window: tuple[float, float] = (1.0, 4.0),
    duration: float = 10.0,
) -> list[dict]:
    """Rows of a negatives artifact for one query (level i+1 holds negatives[i])."""
    valid = valid or [n is not None for n in negatives]
    rows = []
    tokens = query.split()
    for index, (negative, ok) in enumerate(zip(negatives, valid, strict=True)):
        rows.append(
            {
                "qid": qid,
                "query": query,
                "vid": vid,
                "duration": duration,
                "relevant_windows": [list(window)],
                "level": index + 1,
                "ratio": 0.25 * (index + 1),
                "tokens": tokens,
                "masked_positions": [0],
                "original_words": [tokens[0]],
                "original_lemmas": [tokens[0]],
                "types": ["noun"],
                "masked_query": render(tokens, [0]),
                "negative": negative,
                "fills": ["x"],
                "valid": ok,
                "invalid_reasons": [] if ok else ["unchanged"],
                "attempts": 1,
                "fallback": None,
                "cache_hit": False,
                "backend": "fake",
                "model": "fake",
                "prompt_version": None,
                "input_tokens": 0,
                "output_tokens": 0,
            }
        )
    return rows


def write_negatives_artifact(path: Path, rows: list[dict]) -> Path:
    from negforge.artifacts import SCHEMA_VERSIONS, Provenance, write_artifact

    provenance = Provenance(kind="negatives", schema_version=SCHEMA_VERSIONS["negatives"])
    return write_artifact(path, rows, provenance)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models run fastest on one thread (and do not fight over a shared CPU): applies
    to every test of a module that imports it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
