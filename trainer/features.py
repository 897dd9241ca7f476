"""Video and text feature stores in the layouts Moment-DETR / QD-DETR / SHINE users already have.

Video features (one store per ``--video-feats`` path, several are concatenated):

* a folder of ``{vid}.npz`` (array under key ``features``) or raw ``{vid}.npy`` files,
  shape (clips, dim);
* one HDF5 file keyed by ``vid`` (ActivityNet C3D); an entry may be a dataset or a group
  holding one dataset (e.g. ``c3d_features``).

Each source is L2-normalised per clip (``x / (|x| + 1e-5)``, the originals' formula), then
the sources are cut to the shortest and concatenated on the feature axis. The dataset keeps
the first ``max_v_len`` clips (or pools longer videos with :func:`fit_to_length`) and
:func:`append_tef` adds ``[t/L, (t+1)/L]``, L being the clips kept.

Text features: a folder of ``{key}.npz`` (array under ``last_hidden_state``; Moment-DETR's
``qid{key}.npz`` naming is accepted too; a leading axis of size 1 is dropped as SHINE's
``squeeze`` does) or an HDF5 file written by ``negforge featurize`` (dataset name = key).
Keys are :func:`query_key` / :func:`negative_key`. Texts keep their first ``max_q_len``
tokens, each L2-normalised.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from negforge.errors import InputError

VIDEO_NPZ_KEY = "features"
TEXT_NPZ_KEY = "last_hidden_state"
H5_SUFFIXES = (".h5", ".hdf5", ".hdf")
#: Dataset names tried inside an HDF5 group keyed by vid.
H5_GROUP_KEYS = ("features", "c3d_features", "feature")


class MissingFeatureError(InputError):
    """No feature for a vid or a text key in any configured source."""


def query_key(qid: str) -> str:
    """Text-feature key of a query."""
    return str(qid)


def negative_key(qid: str, index: int) -> str:
    """Text-feature key of the ``index``-th (0-based, closest first) hard negative of a query."""
    return f"{qid}_recomposed_gpt_{index}"


def l2_normalize(array: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Divide every row (last axis) by its L2 norm + ``eps`` (the originals' formula)."""
    norm = np.linalg.norm(array, axis=-1, keepdims=True)
    return (array / (norm + eps)).astype(np.float32, copy=False)


class _H5Handle:
    """An HDF5 file opened lazily, once per process (safe with forked DataLoader workers)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None
        self._pid = -1

    def get(self) -> Any:
        if self._file is None or self._pid != os.getpid():
            import h5py

            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                raise InputError(f"cannot open HDF5 feature file ({exc})", path=self.path) from exc
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_file": None, "_pid": -1}


def _read_h5_entry(entry: Any, path: Path, key: str) -> np.ndarray:
    import h5py

    if isinstance(entry, h5py.Group):
        names = [n for n in H5_GROUP_KEYS if n in entry] or list(entry.keys())
        if len(names) == 0:
            raise InputError(f"HDF5 group '{key}' holds no dataset", path=path, field=key)
        entry = entry[names[0]]
    return np.asarray(entry[()], dtype=np.float32)


class _FeatureSource:
    """One folder of per-key ``.npz`` / ``.npy`` files, or one HDF5 file."""

    def __init__(self, path: str | Path, npz_key: str, prefixes: Sequence[str] = ("",)) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError("feature path does not exist", path=self.path)
        self.npz_key = npz_key
        self.prefixes = tuple(prefixes)
        self._h5 = _H5Handle(self.path) if not self.path.is_dir() else None
        self._names: set[str] | None = None
        self._h5_keys: set[str] | None = None

    def _folder_names(self) -> set[str]:
        if self._names is None:
            self._names = set(os.listdir(self.path))
        return self._names

    def _file_for(self, key: str) -> Path | None:
        names = self._folder_names()
        for prefix in self.prefixes:
            for suffix in (".npz", ".npy"):
                name = f"{prefix}{key}{suffix}"
                if name in names:
                    return self.path / name
        return None

    def has(self, key: str) -> bool:
        if self._h5 is None:
            return self._file_for(key) is not None
        if self._h5_keys is None:
            self._h5_keys = set(self._h5.get().keys())
        return key in self._h5_keys

    def load(self, key: str) -> np.ndarray:
        if self._h5 is not None:
            handle = self._h5.get()
            if key not in handle:
                raise MissingFeatureError(f"no feature '{key}'", path=self.path, field=key)
            array = _read_h5_entry(handle[key], self.path, key)
        else:
            file = self._file_for(key)
            if file is None:
                raise MissingFeatureError(f"no feature file for '{key}'", path=self.path, field=key)
            array = _load_array_file(file, self.npz_key)
        while array.ndim > 2 and array.shape[0] == 1:  # (1, tokens, dim) as SHINE squeezes
            array = array[0]
        if array.ndim != 2 or array.shape[0] == 0:
            raise InputError(
                f"feature '{key}' has shape {array.shape}, expected (length >= 1, dim)",
                path=self.path,
                field=key,
            )
        return array


def _load_array_file(file: Path, npz_key: str) -> np.ndarray:
    try:
        if file.suffix == ".npy":
            return np.asarray(np.load(file), dtype=np.float32)
        with np.load(file) as npz:
            if npz_key not in npz:
                raise InputError(
                    f"npz file has no array '{npz_key}' (has {sorted(npz.files)})",
                    path=file,
                    field=npz_key,
                )
            return np.asarray(npz[npz_key], dtype=np.float32)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read feature file ({exc})", path=file) from exc


class VideoFeatureStore:
    """Per-video clip features from one or more sources, L2-normalised and concatenated."""

    def __init__(
        self, paths: Sequence[str | Path], *, normalize: bool = True, cache: bool = False
    ) -> None:
        if not paths:
            raise InputError("no video feature path given (--video-feats)")
        self.sources = [_FeatureSource(p, VIDEO_NPZ_KEY) for p in paths]
        self.normalize = normalize
        self._cache: dict[str, np.ndarray] | None = {} if cache else None

    def has(self, vid: str) -> bool:
        """Whether every source holds ``vid``."""
        return all(source.has(vid) for source in self.sources)

    def missing_from(self, vid: str) -> list[Path]:
        """The sources that lack ``vid``."""
        return [source.path for source in self.sources if not source.has(vid)]

    def load(self, vid: str) -> np.ndarray:
        """(clips, sum of dims) float32: each source L2-normalised, all cut to the shortest."""
        if self._cache is not None and vid in self._cache:
            return self._cache[vid]
        missing = self.missing_from(vid)
        if missing:
            raise MissingFeatureError(
                f"no video features for vid '{vid}' in {', '.join(map(str, missing))}",
                path=missing[0],
                field=vid,
            )
        parts = [source.load(vid) for source in self.sources]
        if self.normalize:
            parts = [l2_normalize(p) for p in parts]
        length = min(p.shape[0] for p in parts)
        feats = np.concatenate([p[:length] for p in parts], axis=1).astype(np.float32)
        if self._cache is not None:
            self._cache[vid] = feats
        return feats


class TextFeatureStore:
    """Token-level text features looked up by key across folders / packed HDF5 files."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        max_q_len: int = 32,
        normalize: bool = True,
        cache: bool = False,
    ) -> None:
        if not paths:
            raise InputError("no text feature path given (--text-feats)")
        self.sources = [_FeatureSource(p, TEXT_NPZ_KEY, prefixes=("", "qid")) for p in paths]
        self.max_q_len = max_q_len
        self.normalize = normalize
        self._cache: dict[str, np.ndarray] | None = {} if cache else None

    def _source_for(self, key: str) -> _FeatureSource | None:
        return next((s for s in self.sources if s.has(key)), None)

    def has(self, key: str) -> bool:
        """Whether any source holds ``key``."""
        return self._source_for(key) is not None

    def load(self, key: str) -> np.ndarray:
        """(tokens <= max_q_len, dim) float32, L2-normalised per token."""
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        source = self._source_for(key)
        if source is None:
            where = ", ".join(str(s.path) for s in self.sources)
            raise MissingFeatureError(
                f"no text features for '{key}' in {where}", path=self.sources[0].path, field=key
            )
        feats = source.load(key)[: self.max_q_len]
        if self.normalize:
            feats = l2_normalize(feats)
        if self._cache is not None:
            self._cache[key] = feats
        return feats


def fit_to_length(feats: np.ndarray, max_len: int | None) -> np.ndarray:
    """Mean-pool ``feats`` into ``max_len`` equal bins when it has more clips (else unchanged).

    Bin ``j`` averages clips ``floor(j*L/max_len)`` .. ``floor((j+1)*L/max_len) - 1``, so the
    pooled clips still tile the whole video; the effective clip length grows by L/max_len.
    """
    length = feats.shape[0]
    if max_len is None or max_len <= 0 or length <= max_len:
        return feats
    edges = np.floor(np.arange(max_len + 1) * length / max_len).astype(np.int64)
    sums = np.concatenate([np.zeros((1, feats.shape[1]), feats.dtype), np.cumsum(feats, 0)])
    counts = (edges[1:] - edges[:-1]).astype(np.float32)[:, None]
    return ((sums[edges[1:]] - sums[edges[:-1]]) / counts).astype(np.float32)


def append_tef(feats: np.ndarray) -> np.ndarray:
    """Append the temporal endpoint feature ``[t/L, (t+1)/L]`` to every clip ``t``."""
    length = feats.shape[0]
    start = np.arange(length, dtype=np.float32) / length
    tef = np.stack([start, start + 1.0 / length], axis=1)
    return np.concatenate([feats, tef], axis=1).astype(np.float32)
