"""The tokenizer contract every family implements, written once.

A family (binning, FAST, VQ) subclasses :class:`ActionTokenizer` and implements four hooks on
*normalized* chunks; this base owns everything else: input checks, the normalizer, strict and
non-strict decoding with validity reporting, save/load as data files, and the Hub.

Shapes: ``n`` chunks, ``h`` chunk length, ``d`` action dimension, ``t`` tokens.

Saved directory (``save_pretrained``)::

    config.json          {"model_type", "action_tokenizer_class", "format_version", "config", "chunk_size", "action_dim",
                          "vocab_size", "normalizer", "metrics", "heldout_episodes" (when fitted on a split)}
    tensors.safetensors  normalizer arrays + the family's arrays
    README.md            model card with measured figures and a usage snippet
    (family files)       e.g. tokenizer.json (FAST's BPE), model.safetensors (VQ weights)

Nothing is pickled and nothing from the directory is executed on load.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from action_tokenizers.hf_processor import MODEL_TYPE as HF_MODEL_TYPE
from action_tokenizers.io import (atomic_directory, checksums, load_safetensors, read_json, verify_checksums,
                                  verify_manifest, write_json)
from action_tokenizers.normalize import Normalizer, check_mode
from action_tokenizers.token_batch import (  # noqa: F401  (TokenBatch, TokenIds, segment_sums: public here too)
    TokenBatch, TokenIds, as_token_input, check_token_ids, check_token_ids_each, is_single_sequence, join_reasons,
    out_of_range_note, segment_sums)

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
TENSORS_FILE = "tensors.safetensors"
CARD_FILE = "README.md"
CHECKSUMS_KEY = "checksums"
"""config.json key: sha256 of each data file of the directory, checked on load."""
CLASS_KEY = "action_tokenizer_class"
"""config.json key naming the tokenizer class (``tokenizer_class`` is transformers' reserved key)."""
LEGACY_CLASS_KEY = "tokenizer_class"
"""Where directories saved by earlier versions name the class (still read, never written)."""

DECODE_BLOCK = 1024
"""Sequences decoded per block (see ``ActionTokenizer._decode_in_blocks``)."""


class MalformedTokensError(ValueError):
    """Raised by ``decode(strict=True)`` when a sequence cannot be decoded exactly."""


@dataclass
class TokenizerConfig:
    """Fields every family shares. Families subclass this dataclass and add their own."""

    normalization: str = "quantile"
    """Normalizer mode: one of quantile, minmax, meanstd, identity."""
    skip_dims: tuple[int, ...] = ()
    """Action dimensions the normalizer leaves untouched (e.g. a binary gripper)."""

    def __post_init__(self) -> None:
        check_mode(self.normalization)
        self.skip_dims = tuple(int(i) for i in self.skip_dims)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TokenizerConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; valid: {sorted(names)}")
        return cls(**data)


@dataclass
class Decoded:
    """What a decode produced, beyond the actions: which sequences were malformed and why."""

    actions: np.ndarray
    """(n, h, d) float64 in raw action units; always finite."""
    malformed: np.ndarray
    """(n,) bool: True where the sequence was not a well-formed encoding."""
    reasons: list[str]
    """One message per sequence; empty string where well-formed."""

    @property
    def n_malformed(self) -> int:
        return int(self.malformed.sum())


@dataclass
class EncodeStats:
    """What an encode did to its input beyond tokenizing: values clipped to the fitted range."""

    chunks: int
    clipped_values: int
    """Scalars outside the normalizer's fitted range (saturated to its edge before tokenizing)."""
    clipped_chunks: int
    """Chunks holding at least one clipped value."""
    clipped_per_dim: list[int]
    """Clipped scalars per action dimension."""


@dataclass
class Encoded:
    """Ids (as :meth:`ActionTokenizer.encode` returns them) and the :class:`EncodeStats`."""

    ids: list[list[int]] | list[int]
    stats: EncodeStats


class ActionTokenizer(ABC):
    """Base class: ``fit``, ``encode``, ``decode``, ``vocab_size``, save/load/push.

    Subclasses set ``config_class`` and implement ``_fit``, ``_encode``, ``_decode`` and
    ``vocab_size`` on normalized chunks; optionally ``_tensors``/``_load_tensors`` (arrays in
    ``tensors.safetensors``) and ``_save_files``/``_load_files`` (other data files).
    """

    config_class: ClassVar[type[TokenizerConfig]] = TokenizerConfig
    family: ClassVar[str] = "base"

    def __init__(self, config: TokenizerConfig | None = None, **kwargs: Any) -> None:
        if config is None:
            config = self.config_class(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.normalizer = Normalizer(mode=config.normalization, skip_dims=config.skip_dims)
        self.chunk_size: int | None = None
        self.action_dim: int | None = None
        self.metrics: dict[str, Any] = {}
        self.last_encode_stats: EncodeStats | None = None
        """Clipping counts of the latest :meth:`encode` call."""
        self.heldout_episodes: list[int] | None = None
        self.source: dict[str, Any] = {}
        """Where the fit data came from (``{"dataset": ..., "action_key": ...}``); saved, read by the model card."""
        """Episodes (dataset ``episode_index``) kept out of the fit; saved so every stage can check its split."""
        self._normalizer_from_stats = False

    # ------------------------------------------------------------------ family hooks
    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of local token ids: every id is in ``range(vocab_size)``."""

    @property
    def tokens_per_chunk(self) -> int | None:
        """Fixed number of tokens per chunk, or None for variable-length families (FAST)."""
        return None

    def position_id_ranges(self) -> list[tuple[int, int]] | None:
        """For fixed-length families whose positions use disjoint id ranges (VQ levels): the
        ``[start, stop)`` of local ids valid at each position, for constrained generation.
        None (the default) means every id is valid at every position."""
        return None

    def token_lengths(self) -> np.ndarray | None:
        """For variable-length families whose ids each decode to a known number of the chunk's
        ``h * d`` values (FAST without a pre-tokenizer): that number per local id (-1 for ids no
        well-formed sequence holds), so constrained generation can always emit exactly ``h * d``.
        None (the default) means no such table."""
        return None

    @abstractmethod
    def _fit(self, x: np.ndarray) -> None:
        """Fit on normalized chunks ``x`` of shape (n, h, d)."""

    @abstractmethod
    def _encode(self, x: np.ndarray) -> list[list[int]]:
        """Encode normalized chunks (n, h, d) into one id list per chunk."""

    @abstractmethod
    def _decode(self, batch: TokenBatch) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Decode a batch of id sequences (see :class:`TokenBatch`) into normalized chunks.

        Out-of-range ids arrive clamped to -1 or ``vocab_size``; the base has already flagged those.
        Returns ``(x (n, h, d) finite, malformed (n,) bool, one reason per sequence ("" if fine))``;
        must never raise.
        """

    def _tensors(self) -> dict[str, np.ndarray]:
        return {}

    def _load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        pass

    def _save_files(self, directory: Path) -> None:
        pass

    def _load_files(self, directory: Path) -> None:
        pass

    def _fit_state(self) -> dict[str, Any]:
        """JSON-able fitted state beyond the config (saved in config.json under ``state``)."""
        return {}

    def _load_fit_state(self, state: dict[str, Any]) -> None:
        pass

    # ------------------------------------------------------------------ public API
    @property
    def is_fitted(self) -> bool:
        return self.chunk_size is not None

    def fit(self, chunks: np.ndarray) -> "ActionTokenizer":
        """Fit the normalizer and the family on raw chunks ``(n, h, d)``; returns ``self``."""
        x = self._check_chunks(chunks, fitting=True)
        if x.shape[0] == 0:
            raise ValueError("cannot fit a tokenizer on zero chunks: the dataset or selection is empty")
        self.chunk_size, self.action_dim = int(x.shape[1]), int(x.shape[2])
        if not self._normalizer_from_stats:
            self.normalizer.fit(x)
        try:
            self._fit(self.normalizer.normalize(x))
        except BaseException:
            self.chunk_size = self.action_dim = None
            raise
        return self

    def fit_normalizer_from_stats(self, stats: dict, key: str = "action") -> "ActionTokenizer":
        """Use a dataset's ``meta/stats.json`` for normalization; a later ``fit`` keeps it."""
        self.normalizer.from_stats(stats, key)
        self._normalizer_from_stats = True
        return self

    def encode(self, chunks: np.ndarray) -> list[list[int]] | list[int]:
        """Raw chunks ``(n, h, d)`` -> one id list per chunk; a single ``(h, d)`` chunk -> one list.

        Values beyond the normalizer's fitted range are clipped (saturated), not refused; how many
        were is in :attr:`last_encode_stats` (and :meth:`encode_with_report`).
        """
        return self.encode_with_report(chunks).ids

    def __call__(self, chunks: np.ndarray) -> list[list[int]] | list[int]:
        """``tok(chunks)`` is ``tok.encode(chunks)``: tools that take a tokenizer object (LeRobot's action
        tokenizer step, transformers-style processors) call it."""
        return self.encode(chunks)

    def encode_with_report(self, chunks: np.ndarray) -> "Encoded":
        """:meth:`encode`, plus how many values were clipped to the normalizer's fitted range."""
        self._require_fitted()
        single = np.ndim(chunks) == 2
        x = self._check_chunks(np.asarray(chunks)[None] if single else chunks)
        stats = self._clip_stats(x)
        ids = self._encode(self.normalizer.normalize(x)) if len(x) else []  # families need not handle n = 0
        self.last_encode_stats = stats
        return Encoded(ids[0] if single else ids, stats)

    def _clip_stats(self, x: np.ndarray) -> "EncodeStats":
        """Values of ``x`` (n, h, d) outside the range the normalizer maps onto [-1, 1] (they get clipped)."""
        n, _, d = x.shape
        if not self.normalizer.clips or x.size == 0:
            return EncodeStats(n, 0, 0, [0] * d)
        lo, hi = self.normalizer.unnormalize(-np.ones(d)), self.normalizer.unnormalize(np.ones(d))
        lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
        if self.normalizer.mask is not None:  # skipped dims are never clipped
            lo, hi = np.where(self.normalizer.mask, lo, -np.inf), np.where(self.normalizer.mask, hi, np.inf)
        out = (x < lo) | (x > hi)
        per_dim = out.sum(axis=(0, 1))
        return EncodeStats(n, int(per_dim.sum()), int(out.any(axis=(1, 2)).sum()), per_dim.tolist())

    def decode(self, tokens: TokenIds, strict: bool = False) -> np.ndarray:
        """Id lists -> raw chunks ``(n, h, d)`` (a single flat list -> ``(h, d)``).

        An empty list (like an empty 1-D array) is one sequence of no ids: it decodes to one
        chunk flagged as malformed, never to a silent empty batch. Tensors are accepted as arrays.

        Non-strict (default): never raises on integer input; malformed sequences decode to the
        best available chunk (see :meth:`decode_with_report` for which ones). ``strict=True``
        raises :class:`MalformedTokensError` instead.
        """
        tokens = as_token_input(tokens)
        single = is_single_sequence(tokens)
        report = self.decode_with_report([tokens] if single else tokens)
        if strict and report.n_malformed:
            bad = [f"sequence {i}: {r}" for i, r in enumerate(report.reasons) if r][:5]
            raise MalformedTokensError(
                f"{report.n_malformed} of {len(report.reasons)} sequences are malformed: " + "; ".join(bad)
            )
        return report.actions[0] if single else report.actions

    def decode_with_report(self, tokens: TokenIds) -> Decoded:
        """Decode a batch of id lists and say which were malformed (never raises on ints)."""
        self._require_fitted()
        batch, out_of_range = self._check_tokens(as_token_input(tokens))
        if not len(batch):
            empty = np.zeros((0, self.chunk_size, self.action_dim))
            return Decoded(empty, np.zeros(0, dtype=bool), [])
        x, malformed, reasons = self._decode_in_blocks(batch)
        for i in np.flatnonzero(out_of_range).tolist():
            malformed[i] = True
            reasons[i] = join_reasons(out_of_range_note(int(out_of_range[i]), self.vocab_size), reasons[i])
        x = np.asarray(x, dtype=np.float64)
        if not np.isfinite(x).all():  # the check is several times cheaper than nan_to_num
            x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
        return Decoded(self.normalizer.unnormalize(x, inplace=True), malformed, reasons)  # x is ours

    def _decode_in_blocks(self, batch: TokenBatch) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """:meth:`_decode` over blocks of :data:`DECODE_BLOCK` sequences: a block's working arrays stay
        in the CPU cache, where one pass over a large batch would not (docs/measurements.md)."""
        parts = [self._decode(block) for block in batch.blocks(DECODE_BLOCK)]
        x = np.concatenate([np.asarray(p[0], dtype=np.float64) for p in parts])
        malformed = np.concatenate([np.asarray(p[1], dtype=bool) for p in parts])
        return x, malformed, [r for p in parts for r in p[2]]

    # ------------------------------------------------------------------ checks
    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(chunks) or from_pretrained(dir)")

    def _check_chunks(self, chunks: np.ndarray, fitting: bool = False) -> np.ndarray:
        try:
            x = np.asarray(chunks, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"chunks must be a float array of shape (n, h, d): {e}") from e
        if x.ndim != 3:
            raise ValueError(f"chunks must have shape (n, h, d) (or (h, d) for one chunk), got shape {x.shape}")
        if x.shape[1] == 0 or x.shape[2] == 0:
            raise ValueError(f"chunks of shape {x.shape} have no {'time steps' if x.shape[1] == 0 else 'action dimensions'}"
                             " (h and d must be >= 1): check the action key and the chunk size")
        if not fitting:
            expected = (self.chunk_size, self.action_dim)
            if x.shape[1:] != expected:
                raise ValueError(
                    f"tokenizer was fitted on chunks of (h, d) = {expected}, got {x.shape[1:]} "
                    f"(chunk length {x.shape[1]}, action dimension {x.shape[2]})"
                )
        if not np.all(np.isfinite(x)):
            bad = np.argwhere(~np.isfinite(x))[0]
            raise ValueError(f"chunks contain NaN or inf (first at index {tuple(int(i) for i in bad)}): clean the actions first")
        return x

    def _check_distributions(self, probs: np.ndarray, positions: int) -> np.ndarray:
        """``decode_expected``'s input as float64 (n, positions, vocab_size): finite, non-negative rows
        summing to 1 (an LM's softmax over the ids at each position), else a ``ValueError``."""
        self._require_fitted()
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 3 or p.shape[1:] != (positions, self.vocab_size):
            raise ValueError(f"probs must have shape (n, {positions}, {self.vocab_size}), got {p.shape}")
        if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(-1), 1.0, atol=1e-4):
            raise ValueError("probs must be finite, non-negative distributions over the ids (rows summing to 1)")
        return p

    def _check_tokens(self, tokens: TokenIds) -> tuple[TokenBatch, np.ndarray]:
        """Ids clamped to ``[-1, vocab_size]`` in a :class:`TokenBatch`, and out-of-range counts per sequence."""
        return check_token_ids(tokens, self.vocab_size)

    def _check_tokens_each(self, tokens: TokenIds) -> tuple[TokenBatch, np.ndarray]:
        """The per-token path of :meth:`_check_tokens` (names the first bad value)."""
        return check_token_ids_each(tokens, self.vocab_size)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write config.json, tensors.safetensors, family files and a model card, atomically.

        Follows the output rule (``action_tokenizers.io``): a folder holding other files than an
        earlier saved tokenizer is refused unless ``overwrite`` (the other files are kept);
        config.json records the sha256 of every data file, checked on load.
        """
        from safetensors.numpy import save_file

        self._require_fitted()
        directory = Path(directory)
        with atomic_directory(directory, kind="tokenizer", overwrite=overwrite) as tmp:
            tensors = {**self.normalizer.tensors(), **self._tensors()}
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / TENSORS_FILE))
            self._save_files(tmp)
            write_json(tmp / CONFIG_FILE, {**self._saved_config(), CHECKSUMS_KEY: checksums(tmp)})
            (tmp / CARD_FILE).write_text(self.model_card())
        return directory

    def _saved_config(self) -> dict[str, Any]:
        return {
            "model_type": HF_MODEL_TYPE,  # what transformers' AutoConfig/AutoProcessor dispatch on (hf_processor)
            CLASS_KEY: type(self).__name__,
            "family": self.family,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "chunk_size": self.chunk_size,
            "action_dim": self.action_dim,
            "vocab_size": self.vocab_size,
            "tokens_per_chunk": self.tokens_per_chunk,
            "normalizer": self.normalizer.config(),
            "state": self._fit_state(),
            "metrics": self.metrics,
            **({"heldout_episodes": self.heldout_episodes} if self.heldout_episodes is not None else {}),
            **({"source": self.source} if self.source else {}),
        }

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, revision: str | None = None) -> "ActionTokenizer":
        """Load from a local directory or a Hub repo id (downloaded data files only)."""
        from action_tokenizers.hub import resolve_directory

        directory = resolve_directory(path_or_repo_id, revision=revision)
        return cls._from_directory(directory)

    @classmethod
    def _from_directory(cls, directory: Path) -> "ActionTokenizer":
        saved = read_json(directory / CONFIG_FILE, what="tokenizer config")
        name = saved_class_name(saved)
        if name != cls.__name__ and cls is not ActionTokenizer:
            raise ValueError(f"{directory} holds a {name}, not a {cls.__name__}; use AutoActionTokenizer")
        missing = [k for k in ("config", "chunk_size", "action_dim", "normalizer") if k not in saved]
        if missing:
            raise ValueError(f"{directory / CONFIG_FILE} is incomplete: missing {missing}")
        _check_saved_types(saved, directory / CONFIG_FILE)
        if saved.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{directory} was written by a newer version (format {saved['format_version']})")
        verify_manifest(directory, (CONFIG_FILE,))
        verify_checksums(directory, saved.get(CHECKSUMS_KEY) or {}, f"{directory / CONFIG_FILE}")
        try:
            tok = cls(cls.config_class.from_dict(saved["config"]))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{directory / CONFIG_FILE}: bad 'config': {e}") from e
        tensors = load_safetensors(directory / TENSORS_FILE, what="tokenizer directory")
        tok.normalizer = Normalizer.from_saved(saved["normalizer"], tensors)
        tok.chunk_size, tok.action_dim = int(saved["chunk_size"]), int(saved["action_dim"])
        tok.metrics = saved.get("metrics", {})
        tok.heldout_episodes = saved.get("heldout_episodes")
        tok.source = saved.get("source") if isinstance(saved.get("source"), dict) else {}
        tok._load_fit_state(saved.get("state", {}))
        tok._load_tensors(tensors)
        tok._load_files(directory)
        if saved.get("vocab_size") is not None and saved["vocab_size"] != tok.vocab_size:
            raise ValueError(
                f"{directory / CONFIG_FILE} says vocab_size {saved['vocab_size']} but the files give {tok.vocab_size}"
            )
        return tok

    def push_to_hub(self, repo_id: str, private: bool = False, token: str | None = None,
                    commit_message: str = "Upload action tokenizer") -> str:
        """Save to a temp directory and upload it as a Hub model repo; returns the commit URL."""
        from action_tokenizers.hub import push_directory

        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(Path(tmp) / "tok")
            return push_directory(Path(tmp) / "tok", repo_id, private=private, token=token,
                                  commit_message=commit_message)

    # ------------------------------------------------------------------ model card
    def model_card(self) -> str:
        from action_tokenizers.card import tokenizer_card

        return tokenizer_card(self)

    def __repr__(self) -> str:
        shape = f"h={self.chunk_size}, d={self.action_dim}, vocab={self.vocab_size}" if self.is_fitted else "unfitted"
        return f"{type(self).__name__}({self.config}, {shape})"


def saved_class_name(saved: dict[str, Any]) -> str | None:
    """The tokenizer class a saved config.json names (new key, or the key earlier versions wrote)."""
    return saved.get(CLASS_KEY, saved.get(LEGACY_CLASS_KEY))


def _check_saved_types(saved: dict[str, Any], path: Path) -> None:
    """Hand-edited configs (``"format_version": "1"``, ``"chunk_size": "ten"``) fail here, naming the file."""
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if "format_version" in saved and not is_int(saved["format_version"]):
        raise ValueError(f"{path}: 'format_version' must be an integer, got {saved['format_version']!r}")
    for key in ("chunk_size", "action_dim"):
        if not is_int(saved[key]) or saved[key] < 1:
            raise ValueError(f"{path}: {key!r} must be a positive integer, got {saved[key]!r}")
    for key in ("config", "normalizer"):
        if not isinstance(saved[key], dict):
            raise ValueError(f"{path}: {key!r} must be a JSON object, got {saved[key]!r}")
