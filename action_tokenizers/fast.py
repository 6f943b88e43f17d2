"""FAST-style compression (Pertsch et al. 2025): DCT over time, scale and round, BPE over the integers.

Algorithm (as published in ``physical-intelligence/fast``): for each normalized chunk (h, d), take
the orthonormal DCT-II over time per dimension, multiply by ``scale``, round, flatten row-major over
the (h, d) coefficient matrix (frequency 0 of every dimension, then frequency 1, ...: low
frequencies first, interleaved across dimensions), subtract the minimum coefficient, map each
integer ``c`` to the character ``chr(c)`` and run BPE (Hugging Face ``tokenizers``) over the string.
Decoding inverts each step. Everything is batched: one DCT over the whole batch, one string build,
one ``encode_batch_fast`` call; decode is a table gather (or one ``decode_batch`` for byte-level).

What differs from the published processor, for the project's own fits
----------------------------------------------------------------------
- **Alphabet covers the clipped range**: with a clipping normalizer (quantile/minmax) every
  normalized value lies in [-1, 1], so coefficient k is bounded by ``scale * sum_t |C[k, t]|``
  (``C`` the orthonormal DCT matrix); the initial alphabet spans that bound (and the fit data's
  range), so every finite input round-trips. Coefficients beyond it (only possible with an
  unbounded normalizer) are clipped to the alphabet instead of crashing or being dropped.
- **Consistent decode**: where the normalizer clips, the decoded chunk is projected back into
  [-1, 1] without leaving its quantization cell, so re-encoding a decoded chunk gives the same ids.
- **Malformed sequences decode to the best available chunk** (:mod:`action_tokenizers.fast_repair`):
  never an all-zero fallback, never a crash, always flagged. Well-formed sequences decode exactly
  as the published processor does.
- **No remembered state**: h and d come from the fit (or the published config), not from the last
  encode call.
- **Pre-tokenization ``none`` (the default for new fits)**: the published byte-level pre-tokenizer
  splits a chunk's string with GPT-2's regex and BPE cannot merge across pieces; it also
  re-encodes every coefficient above 127 as two UTF-8 bytes. Treating the whole chunk string as
  one word lets merges span the long runs of small high-frequency coefficients: fewer tokens per
  chunk and a table-gather decode (docs/benchmarks.md compares both). ``byte_level`` stays
  available and is what published directories use. Both export exactly to the published layout
  (``save_pretrained(dir, layout="published")``, :mod:`action_tokenizers.fast_export`), so
  exportability does not decide between them (docs/ecosystem.md).

Speed: decode never calls the BPE library with the default pre-tokenization (each id's
coefficients sit in one table: a gather, :func:`_run_indices`, and one inverse DCT over the batch,
run by the base class in cache-sized blocks). Encode is one ``encode_batch_fast`` call; the
project does not write its own BPE. Batching is what this class is built for; figures per batch
size are in docs/benchmarks.md. One sequence (a robot's batch of one: ``decode_with_report([ids])``
with a list of Python ints) takes a short path instead (:meth:`FASTTokenizer._decode_one`): the
per-call costs of the batch machinery (validation passes, blocks, repair bookkeeping) would
otherwise dominate a single chunk. ``encode_batch_fast`` uses threads unless
``TOKENIZERS_PARALLELISM`` is false; this class leaves that switch to the user: forcing it on
would mark parallelism as "configured", which turns off the library's own guard (after a fork it
disables parallelism in the child instead of deadlocking, e.g. in DataLoader workers).

Published directories load through :mod:`action_tokenizers.fast_published`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from action_tokenizers.base import CONFIG_FILE, ActionTokenizer, Decoded, TokenBatch, TokenizerConfig, segment_sums
from action_tokenizers.fast_repair import coefficient_model, repair_coefficients, repair_reason

PRETOKENIZERS = ("none", "byte_level")
TOKENIZER_FILE = "tokenizer.json"
PUBLISHED_CONFIG_FILE = "processor_config.json"
PUBLISHED_SUBFOLDER = "bpe_tokenizer"
# Published encode maps c -> chr(c); clip below the UTF-16 surrogates so chr() never fails (openpi#333).
_MAX_CHAR = 0xD7FF
_REPLACEMENT_CHAR = 0xFFFD


@dataclass
class FASTConfig(TokenizerConfig):
    scale: float = 10.0
    """Multiplier applied to the DCT coefficients before rounding (larger: finer, more tokens)."""
    vocab_size: int = 1024
    """BPE vocabulary size (the initial alphabet of coefficient values counts towards it)."""
    min_frequency: int = 2
    """A pair must occur at least this often in the fit data to become a merge."""
    pretokenizer: str = "none"
    """How a chunk's string is split before BPE: none (one word per chunk) or byte_level (as published)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {self.scale!r}")
        self.scale = float(self.scale)
        if not 2 <= int(self.vocab_size) <= 1 << 20:
            raise ValueError(f"vocab_size must be in [2, 2**20], got {self.vocab_size}")
        if int(self.min_frequency) < 1:
            raise ValueError(f"min_frequency must be >= 1, got {self.min_frequency}")
        if self.pretokenizer not in PRETOKENIZERS:
            raise ValueError(f"pretokenizer must be one of {PRETOKENIZERS}, got {self.pretokenizer!r}")


class FASTTokenizer(ActionTokenizer):
    """DCT + BPE; variable tokens per chunk; vocabulary at most ``vocab_size``."""

    config_class = FASTConfig
    family = "fast"
    config: FASTConfig

    def __init__(self, config: FASTConfig | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.bpe = None  # tokenizers.Tokenizer
        self.min_token: int = 0  # coefficient value of character 0
        self.max_char: int = 0  # largest character index encode may produce
        self.published = False  # loaded from a published processor directory: keep its exact behaviour
        self._bpe_size = 0  # ids the BPE model knows (cached: asking the model is slow)
        # no pre-tokenizer: id i stands for the coefficients _values_flat[_tok_start[i] : _tok_start[i] + _tok_len[i]]
        self._values_flat: np.ndarray | None = None  # float64: decoding gathers straight into the inverse DCT's input
        self._tok_start: np.ndarray | None = None
        self._tok_len: np.ndarray | None = None  # (V + 1,): the last entry (length 0) stands for unknown ids
        self._tok_dropped: np.ndarray | None = None  # (V + 1,): characters of each id outside the alphabet
        self._any_dropped = False  # whether any id holds characters outside the alphabet
        # per-coefficient statistics of the fit data (own fits): fill gaps and place surviving tokens
        self.coef_mean: np.ndarray | None = None  # (h * d,) mean quantized coefficient
        self.coef_std: np.ndarray | None = None  # (h * d,) its standard deviation
        self._one: _OneChunkTables | None = None  # the single-sequence decode's tables, built on first use

    # ------------------------------------------------------------------ sizes
    @property
    def vocab_size(self) -> int:
        if self.bpe is None or self.published:
            return int(self.config.vocab_size)
        return self._bpe_size

    @property
    def n_coefficients(self) -> int:
        return int(self.chunk_size * self.action_dim)

    def token_lengths(self) -> np.ndarray | None:
        """Coefficients each id decodes to (-1 for ids no well-formed sequence holds), or None.

        None for byte-level BPE, where a coefficient may span ids. A constrained decoder uses it to
        emit exactly ``n_coefficients`` coefficients (``training.generation``), so no output is malformed.
        """
        if self._tok_len is None or self.published:
            return None
        v = self.vocab_size
        lens = self._tok_len[:v]
        bad = (lens == 0) | (self._tok_dropped[:v] > 0)  # ids holding characters outside the alphabet
        return np.where(bad, -1, lens).astype(np.int64)

    # ------------------------------------------------------------------ DCT core
    def coefficients(self, x: np.ndarray) -> np.ndarray:
        """Normalized chunks (n, h, d) -> rounded, scaled DCT coefficients (n, h * d) int64, low frequencies first."""
        from scipy.fft import dct

        # workers=-1: SciPy splits the batch's independent transforms over the cores (same bits as one thread)
        c = np.around(dct(x, type=2, norm="ortho", axis=1, workers=-1) * self.config.scale)  # (n, h, d)
        return c.reshape(x.shape[0], -1).astype(np.int64)

    def from_coefficients(self, q: np.ndarray) -> np.ndarray:
        """Coefficients (n, h * d) -> normalized chunks (n, h, d) by the inverse DCT."""
        q = np.asarray(q, dtype=np.float64).reshape(-1, self.chunk_size, self.action_dim)
        return _inverse_dct(q / self.config.scale)

    def _alphabet_bounds(self, x: np.ndarray) -> tuple[int, int]:
        """Smallest and largest coefficient the fit must cover: the data's, and the clipped range's."""
        q = self.coefficients(x)
        from scipy.fft import dct

        # Any chunk in [-1, 1] (what clipping normalizers produce, and what FAST expects) stays within
        # scale * max_k sum_t |C[k, t]|; unbounded normalizers add the fit data's own range.
        basis = dct(np.eye(x.shape[1]), type=2, norm="ortho", axis=0)  # (h, h): row k = frequency k
        bound = int(math.ceil(self.config.scale * np.abs(basis).sum(axis=1).max() + 0.5))
        return min(int(q.min()), -bound), max(int(q.max()), bound)

    # ------------------------------------------------------------------ fit
    def _fit(self, x: np.ndarray) -> None:
        from tokenizers.trainers import BpeTrainer

        lo, hi = self._alphabet_bounds(x)
        n_chars = hi - lo + 1
        alphabet = [chr(i) for i in range(n_chars)]
        if self.config.pretokenizer == "byte_level":  # BPE sees UTF-8 bytes: every byte of every character
            alphabet = _byte_level_alphabet(n_chars)
        if len(alphabet) > self.config.vocab_size:
            raise ValueError(
                f"the coefficient range [{lo}, {hi}] needs {len(alphabet)} initial tokens but vocab_size is "
                f"{self.config.vocab_size}: raise vocab_size or lower scale (now {self.config.scale})"
            )
        self.min_token, self.max_char, self.published = lo, n_chars - 1, False
        bpe = _new_bpe(self.config.pretokenizer)
        trainer = BpeTrainer(
            vocab_size=int(self.config.vocab_size), min_frequency=int(self.config.min_frequency),
            show_progress=False, special_tokens=[], initial_alphabet=alphabet,
            max_token_length=10000,
        )
        q = self.coefficients(x)
        bpe.train_from_iterator(self._strings(q), trainer=trainer)
        self._set_bpe(bpe)
        self.coef_mean, self.coef_std = q.mean(axis=0), q.std(axis=0)

    def _set_bpe(self, bpe) -> None:
        self.bpe = bpe
        self._bpe_size = int(bpe.get_vocab_size())  # cached: the call builds the vocabulary map
        self._values_flat = self._tok_start = self._tok_len = self._tok_dropped = None
        self._one = None
        if self.config.pretokenizer == "none":
            chars, self._tok_start, self._tok_len, self._tok_dropped = _char_table(bpe, self.max_char)
            self._values_flat = (chars + self.min_token).astype(np.float64)
            self._any_dropped = bool(self._tok_dropped.any())

    # ------------------------------------------------------------------ encode
    def _strings(self, q: np.ndarray) -> list[str]:
        """Coefficients (n, h * d) -> one string per chunk (``chr(c - min_token)``), built in one pass."""
        n, length = q.shape
        if self.published:  # as published: negatives clipped to character 0, no upper bound
            chars = np.clip(q - self.min_token, 0, _MAX_CHAR)
        else:  # the alphabet covers the clipped range; anything beyond saturates
            chars = np.clip(q - self.min_token, 0, self.max_char)
        text = chars.astype("<u4").tobytes().decode("utf-32-le")
        return [text[i * length:(i + 1) * length] for i in range(n)]

    def _encode(self, x: np.ndarray) -> list[list[int]]:
        if x.shape[0] == 0:
            return []
        strings = self._strings(self.coefficients(x))
        return [e.ids for e in self.bpe.encode_batch_fast(strings, add_special_tokens=True)]

    # ------------------------------------------------------------------ decode
    def decode_with_report(self, tokens: Any) -> Decoded:
        """As the base class; one well-formed sequence of Python ints takes :meth:`_decode_one`."""
        if type(tokens) is list and len(tokens) == 1 and type(tokens[0]) is list and self._values_flat is not None:
            x = self._decode_one(tokens[0])
            if x is not None:
                return Decoded(x, np.zeros(1, dtype=bool), [""])
        return super().decode_with_report(tokens)

    def _decode_one(self, seq: list) -> np.ndarray | None:
        """One id list -> its raw chunk (1, h, d), or None when the batch path must handle it.

        The batch path's steps for a well-formed sequence, with per-call costs removed: the ids'
        coefficients (already divided by the scale) from a per-id list (no validation arrays, no
        blocks), the same inverse DCT,
        the clip-into-the-box projection only when a bounded value leaves [-1, 1], no finiteness
        pass (table values are finite integers). Anything else (an id out of range, a non-int, a
        malformed sequence) returns None: the batch path then decodes, repairs and flags it.
        """
        one = self._one or self._build_one()
        scaled: list[float] = []
        n_ids = len(one.scaled)
        for i in seq:
            if type(i) is not int or not 0 <= i < n_ids:
                return None
            part = one.scaled[i]
            if part is None:  # an id no well-formed sequence holds
                return None
            scaled += part
        if len(scaled) != one.size:
            return None
        # (1, h, d) normalized: the batch path's transform of the same values, so the same bits
        x = _inverse_dct(np.array(scaled).reshape(1, self.chunk_size, self.action_dim))
        norm = self.normalizer
        if norm.clips and not self.published:
            inside = x if norm.mask is None else x[:, :, norm.mask]
            if np.abs(inside).max() > 1.0:  # the batch path's projection, on this one chunk
                q = self._values_flat[_run_indices(self._tok_start[seq], self._tok_len[seq])]
                x = self._clip_bounded(x, q.reshape(1, one.size))
        return x if norm.mode == "identity" else norm.unnormalize(x, inplace=True)

    def _build_one(self) -> "_OneChunkTables":
        v = self._bpe_size
        ok = (self._tok_len[:v] > 0) & (self._tok_dropped[:v] == 0)
        scaled = self._values_flat / self.config.scale  # the batch path divides the same values the same way
        values = [scaled[a:a + n].tolist() if good else None
                  for a, n, good in zip(self._tok_start[:v].tolist(), self._tok_len[:v].tolist(), ok.tolist())]
        self._one = _OneChunkTables(values, self.n_coefficients)
        return self._one

    def _decode(self, batch: TokenBatch) -> tuple[np.ndarray, np.ndarray, list[str]]:
        n, size = len(batch), self.n_coefficients
        ids, v = batch.flat, self._bpe_size
        unknown_tok = (ids < 0) | (ids >= v)
        tok_ends = batch.ends
        unknown = np.zeros(n, dtype=np.int64)
        if unknown_tok.any():
            ids = np.where(unknown_tok, v, ids)  # id v: the empty entry of the character tables
            unknown = segment_sums(unknown_tok, tok_ends)
        values, counts, dropped, tok_lens = self._values(ids, tok_ends)
        malformed = (counts != size) | (unknown > 0) | (dropped > 0)
        if not malformed.any():  # the common case: every sequence holds exactly h * d coefficients
            q = values.reshape(n, size)
        else:
            model = coefficient_model(self.coef_mean, self.coef_std, self.chunk_size, self.action_dim,
                                      self.config.scale, min(self.max_char + 1, self.config.vocab_size))
            q = repair_coefficients(values, counts, tok_lens, tok_ends, malformed, model)
        x = self._clip_bounded(self.from_coefficients(q), q)
        reasons = [""] * n
        for i in np.flatnonzero(malformed).tolist():
            reasons[i] = repair_reason(int(unknown[i]), int(dropped[i]), int(counts[i]), size, self.coef_mean is not None)
        return x, malformed, reasons

    def _values(self, ids: np.ndarray,
                tok_ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Flat ids (unknown ones = V) -> the coefficients (float64) of all sequences, concatenated;
        characters kept and dropped per sequence; each id's character count (None for byte-level,
        where an id need not hold whole characters)."""
        if self._values_flat is not None:  # no pre-tokenizer: each id is a fixed run of characters
            lens = self._tok_len[ids]
            counts = segment_sums(lens, tok_ends)
            dropped = segment_sums(self._tok_dropped[ids], tok_ends) if self._any_dropped else np.zeros_like(counts)
            return self._values_flat[_run_indices(self._tok_start[ids], lens)], counts, dropped, lens
        # byte-level: a character may span several ids, so decode whole sequences (one batch call)
        keep = ids < self._bpe_size
        bounds = np.cumsum(np.concatenate(([0], segment_sums(keep, tok_ends))))
        kept = ids[keep]
        seqs = [kept[a:b].tolist() for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]
        texts = self.bpe.decode_batch(seqs, skip_special_tokens=False)
        chars = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
        owner = np.repeat(np.arange(len(texts)), np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
        bad = (chars > self.max_char) | (chars == _REPLACEMENT_CHAR)
        dropped = np.bincount(owner[bad], minlength=len(texts))
        counts = np.bincount(owner[~bad], minlength=len(texts))
        return (chars[~bad] + self.min_token).astype(np.float64), counts, dropped, None

    def _clip_bounded(self, x: np.ndarray, q: np.ndarray, iterations: int = 30) -> np.ndarray:
        """Keep bounded dimensions in [-1, 1] without leaving the chunk's quantization cell.

        Where the normalizer clips, the true chunk lies in the box [-1, 1] *and* in the cell
        ``|dct(x) * scale - q| <= 0.5``; the inverse DCT of ``q`` may overshoot the box. Alternating
        projections onto the two convex sets find a point of their intersection: the error can only
        shrink, and re-encoding the decoded chunk gives the same ids (idempotent decode). The DCT here
        is the (h, h) orthonormal matrix: a chunk takes several rounds, and for h of a few dozen a
        matrix product costs far less per call than the FFT library's dispatch (one chunk at a time
        is the robot's case).
        """
        if not self.normalizer.clips or self.published:
            return x
        bounded = np.ones(x.shape[2], dtype=bool) if self.normalizer.mask is None else self.normalizer.mask
        over = np.any(np.abs(x[:, :, bounded]) > 1.0, axis=(1, 2))
        if not over.any():
            return x
        basis = _dct_matrix(x.shape[1])  # (h, h): c = basis @ y over time; orthonormal, so its inverse is basis.T
        y, s = x[over], self.config.scale
        cell = q[over].reshape(y.shape)
        lo, hi = (cell - 0.45) / s, (cell + 0.45) / s
        box = slice(None) if bounded.all() else bounded  # a view when every dimension is bounded
        for _ in range(iterations):
            y[:, :, box] = np.clip(y[:, :, box], -1.0, 1.0)
            c = basis @ y
            if np.all((c >= lo) & (c <= hi)):
                break
            y = basis.T @ np.clip(c, lo, hi)
        y[:, :, box] = np.clip(y[:, :, box], -1.0, 1.0)
        out = x.copy()
        out[over] = y
        return out

    # ------------------------------------------------------------------ persistence
    def _fit_state(self) -> dict[str, Any]:
        return {"min_token": self.min_token, "max_char": self.max_char, "published": self.published}

    def _load_fit_state(self, state: dict[str, Any]) -> None:
        missing = [k for k in ("min_token", "max_char") if k not in state]
        if missing:
            raise ValueError(f"{CONFIG_FILE} 'state' lacks {missing}: the FAST tokenizer directory is incomplete")
        self.min_token, self.max_char = int(state["min_token"]), int(state["max_char"])
        self.published = bool(state.get("published", False))

    def _tensors(self) -> dict[str, np.ndarray]:
        if self.coef_mean is None:
            return {}
        return {"fast.coef_mean": self.coef_mean.astype(np.float64), "fast.coef_std": self.coef_std.astype(np.float64)}

    def _load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        """Coefficient statistics are optional (directories saved before they existed decode clean ids the same)."""
        if "fast.coef_mean" not in tensors:
            return
        size = self.n_coefficients
        mean = np.asarray(tensors["fast.coef_mean"], dtype=np.float64)
        std = np.asarray(tensors.get("fast.coef_std", np.zeros(0)), dtype=np.float64)
        if mean.shape != (size,) or std.shape != (size,) or not (np.all(np.isfinite(mean)) and np.all(std >= 0)):
            raise ValueError(
                f"tensors.safetensors 'fast.coef_mean'/'fast.coef_std' must be finite arrays of shape ({size},) "
                f"(h * d), got {mean.shape} and {std.shape}: the tokenizer directory is corrupted"
            )
        self.coef_mean, self.coef_std = mean, std

    def save_pretrained(self, directory: str | Path, overwrite: bool = False, layout: str = "native") -> Path:
        """``layout="native"``: the project's folder (see the base class). ``layout="published"``: the
        ``physical-intelligence/fast`` layout that transformers' ``AutoProcessor`` (remote code) and
        LeRobot's pi0-FAST load, or a refusal naming what to change (:mod:`action_tokenizers.fast_export`)."""
        from action_tokenizers.fast_export import LAYOUTS, save_published

        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if layout == "published":
            return save_published(self, directory, overwrite=overwrite)
        return super().save_pretrained(directory, overwrite=overwrite)

    def _save_files(self, directory: Path) -> None:
        self.bpe.save(str(directory / TOKENIZER_FILE))

    def _load_files(self, directory: Path) -> None:
        self._set_bpe(_load_bpe(directory / TOKENIZER_FILE))
        if self.bpe.get_vocab_size() > self.config.vocab_size:
            raise ValueError(
                f"{directory / TOKENIZER_FILE} holds {self.bpe.get_vocab_size()} tokens, more than the "
                f"configured vocab_size {self.config.vocab_size}"
            )

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, revision: str | None = None, *,
                        chunk_size: int | None = None, action_dim: int | None = None) -> "FASTTokenizer":
        """Load a saved FASTTokenizer or a published FAST processor directory (local or Hub).

        ``chunk_size``/``action_dim`` fill in a published ``processor_config.json`` whose
        ``time_horizon``/``action_dim`` are null (the universal FAST+ tokenizer).
        """
        from action_tokenizers.hub import resolve_directory

        directory = resolve_directory(path_or_repo_id, revision=revision)
        return cls._from_directory(directory, chunk_size=chunk_size, action_dim=action_dim)

    @classmethod
    def _from_directory(cls, directory: Path, chunk_size: int | None = None,
                        action_dim: int | None = None) -> "FASTTokenizer":
        directory = Path(directory)
        if (directory / CONFIG_FILE).is_file() or not (directory / PUBLISHED_CONFIG_FILE).is_file():
            tok = super()._from_directory(directory)
            for name, value in (("chunk_size", chunk_size), ("action_dim", action_dim)):
                if value is not None and value != getattr(tok, name):
                    raise ValueError(f"{directory} was fitted with {name}={getattr(tok, name)}, got {name}={value}")
            return tok
        from action_tokenizers.fast_published import load_published

        return load_published(directory, chunk_size, action_dim)

# ---------------------------------------------------------------------- helpers
def _inverse_dct(scaled: np.ndarray) -> np.ndarray:
    """Coefficients / scale (n, h, d) -> chunks (n, h, d): the one inverse transform every decode uses."""
    from scipy.fft import idct

    return idct(scaled, type=2, norm="ortho", axis=1, workers=-1)


@functools.cache
def _dct_matrix(h: int) -> np.ndarray:
    """The orthonormal DCT-II over ``h`` time steps as an (h, h) matrix (row k: frequency k); read-only."""
    from scipy.fft import dct

    m = dct(np.eye(h), type=2, norm="ortho", axis=0)
    m.setflags(write=False)
    return m


@dataclass(frozen=True)
class _OneChunkTables:
    """What :meth:`FASTTokenizer._decode_one` reads: fixed once the BPE model and the fit are."""

    scaled: list[list[float] | None]
    """Per id: its coefficients divided by the scale (None for ids holding characters outside the alphabet)."""
    size: int
    """Coefficients per chunk (h * d)."""


def _new_bpe(pretokenizer: str):
    """An untrained BPE: one word per chunk (none) or the published ByteLevelBPETokenizer set-up."""
    from tokenizers import ByteLevelBPETokenizer, Tokenizer
    from tokenizers.models import BPE

    if pretokenizer == "byte_level":
        return ByteLevelBPETokenizer()._tokenizer
    return Tokenizer(BPE())


def _byte_level_alphabet(n_chars: int) -> list[str]:
    """The byte-level symbols (GPT-2's byte-to-unicode map) of the UTF-8 bytes of chr(0..n_chars-1)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbol, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbol[b] = chr(b)
        else:
            symbol[b] = chr(256 + extra)
            extra += 1
    used = {b for i in range(n_chars) for b in chr(i).encode("utf-8")}
    return [symbol[b] for b in sorted(used)]


def _load_bpe(path: Path):
    from tokenizers import Tokenizer

    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the FAST tokenizer directory is incomplete")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON or models
        raise ValueError(f"{path} is not a valid tokenizers file: {e}") from e


def _char_table(bpe, max_char: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every id's characters within the alphabet ``[0, max_char]``, concatenated (flat int64), with
    each id's start, length and number of characters left out; one extra empty entry (id V) for unknown ids."""
    v = bpe.get_vocab_size()
    tokens = [bpe.id_to_token(i) or "" for i in range(v)]
    raw_lens = np.fromiter(map(len, tokens), dtype=np.int64, count=v)
    flat = np.frombuffer("".join(tokens).encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
    ok = (flat <= max_char) & (flat != _REPLACEMENT_CHAR)
    ends = np.cumsum(raw_lens)
    lens = segment_sums(ok, ends)
    dropped = raw_lens - lens
    flat = flat[ok]
    starts = np.cumsum(lens) - lens
    return flat, np.append(starts, flat.size), np.append(lens, 0), np.append(dropped, 0)


def _run_indices(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenated ranges ``[starts[k], starts[k] + lens[k])``: one cumulative sum of steps that are
    1 inside a run and jump at each run's first element (cheaper than ``np.repeat`` plus an offset)."""
    keep = lens > 0
    if not keep.all():  # empty runs (unknown ids) would share a jump position
        starts, lens = starts[keep], lens[keep]
    if not lens.size:
        return np.zeros(0, dtype=np.int64)
    step = np.ones(int(lens.sum()), dtype=np.int64)
    step[0] = starts[0]
    step[np.cumsum(lens[:-1])] = starts[1:] - (starts[:-1] + lens[:-1] - 1)
    return np.cumsum(step, out=step)


SWEEP_SCALES = (2.0, 5.0, 10.0, 20.0, 50.0)


def sweep_settings() -> list[tuple[str, Callable[[], FASTTokenizer]]]:
    """``(label, factory)`` pairs for the rate-distortion sweep: the DCT scales in ``SWEEP_SCALES``."""
    return [(f"scale {s}", lambda s=s: FASTTokenizer(scale=s)) for s in SWEEP_SCALES]
