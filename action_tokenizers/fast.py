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
- **Malformed sequences decode to the best available chunk**: unknown ids are skipped, extras are
  dropped, missing coefficients are filled, and the sequence is flagged; never an all-zero
  fallback, never a crash. A short sequence is usually one lost token, and with ~6 tokens per real
  chunk the lost one often carried every non-zero coefficient; reading the survivors from position
  0 (the published rule, missing *trailing* coefficients as zeros) then gives an all-zero chunk.
  Instead the decoder weighs where the gap most likely was (each placement scored by how likely
  the surviving coefficients are at their positions under per-coefficient statistics of the fit
  data, saved in ``tensors.safetensors``), fills the gap with the fit data's mean coefficients,
  and returns the posterior mean over placements (:func:`_realign`). Measured after one deleted
  token (scale 10, vocabulary 1024, mean absolute error in normalized units, 3 seeds): Meta-World
  (4 tasks x 20 scripted episodes) 0.369 -> 0.223 (all-zero chunks 14% -> 0%), SO-101 0.415 ->
  0.344 (32% -> 0%), synthetic 10 x 34 0.171 -> 0.139; after one substituted token 0.413 -> 0.247,
  0.478 -> 0.329, 0.134 -> 0.100.
  Well-formed sequences decode exactly as before (bit for bit). Published directories carry no
  statistics: there a generic smooth-signal prior places the gap and missing coefficients are 0.
- **No remembered state**: h and d come from the fit (or the published config), not from the last
  encode call.
- **Pre-tokenization ``none`` (the default for new fits)**: the published byte-level pre-tokenizer
  splits a chunk's string with GPT-2's regex (letters, digits, spaces, punctuation...: 52 pieces for
  one 10 x 34 chunk) and BPE cannot merge across pieces; it also re-encodes every coefficient above
  127 as two UTF-8 bytes. Treating the whole chunk string as one word (no pre-tokenizer) lets merges
  span the long runs of small high-frequency coefficients. Measured in ``docs/benchmarks.md``
  (scale 10, vocabulary 1024, same data, same error), none vs byte-level: tokens per chunk 96.0 vs
  99.3 (synthetic 10 x 34), 5.3 vs 6.2 (Meta-World), 6.2 vs 8.3 (SO-101); batch encode 32.0 vs 51.4
  and decode 4.7 vs 20.4 us per 10 x 34 chunk. So ``none`` is the default; ``byte_level`` stays
  available and is what published directories use.

Speed (``docs/benchmarks.md``, batches of distinct chunks against the per-chunk reference loop):
with the default pre-tokenization, decode never calls the BPE library: each id's coefficients sit
in one table, so decoding is a gather (:func:`_run_indices`) and one inverse DCT over the batch,
run by the base class in cache-sized blocks: 9.5x the reference on 10 x 34 chunks, 21-22x on
Meta-World and SO-101. Encode is bound by Hugging Face ``tokenizers`` (one ``encode_batch_fast``
call; the project does not write its own BPE): 3.8x (10 x 34), 5.1x (Meta-World), 4.0x (SO-101)
on 2 cores, BPE's word cache emptied before each batch. The library spreads chunks over threads,
but 2-3 us per short real-robot chunk stay serial: about a tenth of the reference loop on their
own. At batch size 1 fixed per-call costs dominate: 40-81 us per chunk to encode and 64-68 us to
decode, where the reference takes 37-155 and 16-41 us; batching is what this class is built for.
``encode_batch_fast`` uses threads unless ``TOKENIZERS_PARALLELISM`` is false; this class leaves
that switch to the user: forcing it on would mark parallelism as "configured", which turns off the
library's own guard (after a fork it disables parallelism in the child instead of deadlocking,
e.g. in DataLoader workers).

Published directories (``processor_config.json`` + ``tokenizer.json`` at the root or in
``bpe_tokenizer/``) load with identity normalization (FAST expects inputs already in [-1, 1]) and
keep their exact behaviour: the same ids and, on well-formed ids, the same decoded chunks as the
published processor; only malformed sequences differ (best chunk + flag instead of zeros).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from action_tokenizers.base import CONFIG_FILE, ActionTokenizer, TokenBatch, TokenizerConfig, segment_sums
from action_tokenizers.io import read_json
from action_tokenizers.normalize import Normalizer

PRETOKENIZERS = ("none", "byte_level")
TOKENIZER_FILE = "tokenizer.json"
PUBLISHED_CONFIG_FILE = "processor_config.json"
PUBLISHED_SUBFOLDER = "bpe_tokenizer"
# Published encode maps c -> chr(c); clip below the UTF-16 surrogates so chr() never fails (openpi#333).
_MAX_CHAR = 0xD7FF
_REPLACEMENT_CHAR = 0xFFFD
# Realigning a malformed sequence: the share of coefficients assumed arbitrary (outliers), and the
# prior log-odds against "a token was substituted" vs "a token was deleted" (3 balanced the mean error
# after one deletion and after one substitution on Meta-World, SO-101 and synthetic chunks).
_OUTLIER_RATE = 0.01
_SUBSTITUTION_COST = 3.0


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
        emit exactly ``n_coefficients`` coefficients (``training.policy``), so no output is malformed.
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
        from scipy.fft import idct

        q = np.asarray(q, dtype=np.float64).reshape(-1, self.chunk_size, self.action_dim)
        return idct(q / self.config.scale, type=2, norm="ortho", axis=1, workers=-1)

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
        self._bpe_size = int(bpe.get_vocab_size())  # the call costs ~0.15 ms (it builds the vocabulary map)
        self._values_flat = self._tok_start = self._tok_len = self._tok_dropped = None
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
            q = self._best_coefficients(values, counts, tok_lens, tok_ends, malformed)
        x = self._clip_bounded(self.from_coefficients(q), q)
        reasons = [""] * n
        for i in np.flatnonzero(malformed).tolist():
            reasons[i] = _reason(int(unknown[i]), int(dropped[i]), int(counts[i]), size, self.coef_mean is not None)
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

    def _best_coefficients(self, values: np.ndarray, counts: np.ndarray, tok_lens: np.ndarray | None,
                           tok_ends: np.ndarray, malformed: np.ndarray) -> np.ndarray:
        """(n, h * d) coefficients: well-formed rows exactly, malformed rows by :meth:`_realign`."""
        n, size = len(counts), self.n_coefficients
        char_ends = np.cumsum(counts)
        q = np.empty((n, size), dtype=np.float64)
        good = ~malformed
        if good.any():
            owner = np.repeat(good, counts)
            q[good] = values[owner].reshape(-1, size)
        model = self._coefficient_model()
        for i in np.flatnonzero(malformed).tolist():
            c = values[char_ends[i] - counts[i]:char_ends[i]]
            if tok_lens is None:
                bounds = None
            else:
                lens = tok_lens[(tok_ends[i - 1] if i else 0):tok_ends[i]]
                bounds = np.concatenate(([0], np.cumsum(lens[lens > 0])))
            q[i] = _realign(c, bounds, model)
        return q

    def _coefficient_model(self) -> "_CoefficientModel":
        """What realignment knows about each coefficient position (see :class:`_CoefficientModel`)."""
        h, d, size = self.chunk_size, self.action_dim, self.n_coefficients
        alphabet = min(self.max_char + 1, self.config.vocab_size)  # published: max_char is only chr()'s limit
        if self.coef_mean is not None and self.coef_mean.shape == (size,):
            return _CoefficientModel(self.coef_mean, self.coef_std, alphabet)
        freq = np.repeat(np.arange(h), d)
        return _CoefficientModel(np.zeros(size), self.config.scale * math.sqrt(h) / 2.0 / (1.0 + freq) ** 2, alphabet)

    def _clip_bounded(self, x: np.ndarray, q: np.ndarray, iterations: int = 30) -> np.ndarray:
        """Keep bounded dimensions in [-1, 1] without leaving the chunk's quantization cell.

        Where the normalizer clips, the true chunk lies in the box [-1, 1] *and* in the cell
        ``|dct(x) * scale - q| <= 0.5``; the inverse DCT of ``q`` may overshoot the box. Alternating
        projections onto the two convex sets find a point of their intersection: the error can only
        shrink, and re-encoding the decoded chunk gives the same ids (idempotent decode).
        """
        if not self.normalizer.clips or self.published:
            return x
        bounded = np.ones(x.shape[2], dtype=bool) if self.normalizer.mask is None else self.normalizer.mask
        over = np.any(np.abs(x[:, :, bounded]) > 1.0, axis=(1, 2))
        if not over.any():
            return x
        from scipy.fft import dct, idct

        y, s = x[over], self.config.scale
        cell = q[over].reshape(y.shape)
        lo, hi = (cell - 0.45) / s, (cell + 0.45) / s
        for _ in range(iterations):
            y[:, :, bounded] = np.clip(y[:, :, bounded], -1.0, 1.0)
            c = dct(y, type=2, norm="ortho", axis=1)
            if np.all((c >= lo) & (c <= hi)):
                break
            y = idct(np.clip(c, lo, hi), type=2, norm="ortho", axis=1)
        y[:, :, bounded] = np.clip(y[:, :, bounded], -1.0, 1.0)
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
        return cls._from_published(directory, chunk_size, action_dim)

    @classmethod
    def _from_published(cls, directory: Path, chunk_size: int | None, action_dim: int | None) -> "FASTTokenizer":
        """A published FAST processor directory: processor_config.json + tokenizer.json (root or bpe_tokenizer/)."""
        path = directory / PUBLISHED_CONFIG_FILE
        cfg = read_json(path, what="FAST processor config")
        scale = _field(cfg, "scale", path, (int, float), positive=True)
        vocab = _field(cfg, "vocab_size", path, int, positive=True)
        min_token = _field(cfg, "min_token", path, int)
        h = _shape_field(cfg, "time_horizon", chunk_size, "chunk_size", path)
        d = _shape_field(cfg, "action_dim", action_dim, "action_dim", path)
        tok_path = directory / TOKENIZER_FILE
        if not tok_path.is_file():
            tok_path = directory / PUBLISHED_SUBFOLDER / TOKENIZER_FILE
        if not tok_path.is_file():
            raise FileNotFoundError(
                f"{directory} has {PUBLISHED_CONFIG_FILE} but no {TOKENIZER_FILE} at its root or in "
                f"{PUBLISHED_SUBFOLDER}/: the published FAST directory is incomplete"
            )
        tok = cls(FASTConfig(scale=float(scale), vocab_size=vocab, normalization="identity", pretokenizer="byte_level"))
        tok.normalizer = Normalizer(mode="identity")
        tok.bpe = _load_bpe(tok_path)
        if tok.bpe.get_vocab_size() > vocab:
            raise ValueError(
                f"{tok_path} holds {tok.bpe.get_vocab_size()} tokens but {path} field 'vocab_size' is {vocab}: "
                "the files are inconsistent"
            )
        tok.min_token, tok.max_char, tok.published = min_token, _MAX_CHAR, True
        tok.chunk_size, tok.action_dim = h, d
        tok._set_bpe(tok.bpe)
        return tok


# ---------------------------------------------------------------------- helpers
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


@dataclass
class _CoefficientModel:
    """Independent per-position model of quantized coefficients, used only to realign malformed sequences.

    Own fits use the fit data's mean and standard deviation per coefficient; without them
    (published directories, older saves) the mean is 0 and the spread follows a generic
    smooth-signal prior, ``scale * sqrt(h) / 2 / (1 + frequency)^2`` (close to what Meta-World and
    SO-101 show). A small uniform floor keeps any value possible, so one odd coefficient never
    outweighs the placement of all the others.
    """

    mean: np.ndarray
    """(h * d,) what a missing coefficient is filled with."""
    std: np.ndarray
    """(h * d,) spread of each coefficient."""
    alphabet: int
    """Number of coefficient values (characters)."""

    def __post_init__(self) -> None:
        self.sigma = np.sqrt(np.square(self.std) + 0.25)  # >= 0.5: density <= 0.8, like an integer's probability
        self.log_norm = -np.log(self.sigma * math.sqrt(2 * math.pi))
        self.log_floor = math.log(_OUTLIER_RATE / self.alphabet)
        self.log_keep = math.log1p(-_OUTLIER_RATE)
        self.garbage = -math.log(self.alphabet)  # a character of a substituted token: any value

    def ll(self, pos: np.ndarray, value: np.ndarray) -> np.ndarray:
        """Log-likelihood of coefficient ``value`` at flat position ``pos`` (elementwise)."""
        z = (value - self.mean[pos]) / self.sigma[pos]
        return np.logaddexp(self.log_keep + self.log_norm[pos] - 0.5 * z * z, self.log_floor)


def _realign(c: np.ndarray, bounds: np.ndarray | None, model: _CoefficientModel) -> np.ndarray:
    """Best estimate of the h * d coefficients of a malformed sequence whose surviving coefficients are ``c``.

    Hypotheses (one token lost or replaced, the usual corruption): a gap at a token boundary (a
    deleted or unknown token); one token's characters read as garbage and replaced by a gap (a
    substituted token); and, always, the plain reading (missing trailing coefficients / extras
    dropped). Coefficients before the gap keep their positions, those after it shift by
    ``h * d - len(c)``; gaps take the per-position mean (zeros where no statistics exist). Each
    hypothesis is scored by the likelihood of the coefficients at their positions (a garbage
    character costs ``log(1 / alphabet)``, a substitution a further prior ``_SUBSTITUTION_COST``),
    and the result is the posterior mean over hypotheses: the estimate with the least expected
    squared error under the model (measured on Meta-World, SO-101 and synthetic chunks, it beats
    picking the single best placement). ``bounds`` are token starts in ``c`` plus ``len(c)``; None
    allows a boundary at every character (byte-level ids).
    """
    size, count = model.mean.size, c.size
    k = size - count  # > 0: coefficients missing; < 0: extras
    if k == 0:  # the length is right (e.g. an unknown id next to a well-formed sequence): read it as is
        return c.astype(np.float64)
    pos = np.arange(count)
    at = np.full(count, -np.inf)  # log-likelihood of each coefficient at its own position
    inside = pos < size
    at[inside] = model.ll(pos[inside], c[inside])
    after = np.full(count, -np.inf)  # ... and shifted past a gap
    shifted = (pos + k >= 0) & (pos + k < size)
    after[shifted] = model.ll(pos[shifted] + k, c[shifted])
    before_sum = np.concatenate(([0.0], np.cumsum(at)))
    after_sum = np.concatenate((np.cumsum(after[::-1])[::-1], [0.0]))
    if bounds is None:
        bounds = np.arange(count + 1)
    starts, ends = bounds[:-1], bounds[1:]
    wide = (ends - starts) >= -k  # replacing these tokens by a gap leaves at most h * d coefficients
    # hypothesis (s, e, prior): characters [s, e) dropped, a gap of k + (e - s) coefficients at s
    s_all = np.concatenate(([min(count, size)], bounds if k > 0 else [], starts[wide])).astype(np.int64)
    e_all = np.concatenate(([count], bounds if k > 0 else [], ends[wide])).astype(np.int64)
    prior = np.concatenate((np.zeros(s_all.size - int(wide.sum())), np.full(int(wide.sum()), -_SUBSTITUTION_COST)))
    score = before_sum[s_all] + model.garbage * (e_all - s_all) + after_sum[e_all] + prior
    weight = np.exp(score - score.max())
    keep = np.flatnonzero(weight > 1e-4)
    q = np.zeros(size)
    for i in keep.tolist():
        s, e = int(s_all[i]), int(e_all[i])
        gap = k + e - s
        q[:s] += weight[i] * c[:s]
        q[s:s + gap] += weight[i] * model.mean[s:s + gap]
        q[s + gap:] += weight[i] * c[e:]
    return q / weight[keep].sum()


def _reason(unknown: int, dropped: int, count: int, size: int, stats: bool) -> str:
    parts = []
    if unknown:
        parts.append(f"{unknown} unknown id(s) skipped")
    if dropped:
        parts.append(f"{dropped} character(s) outside the alphabet skipped")
    fill = "the fit data's mean" if stats else "0"
    if count < size:
        parts.append(f"{count} coefficients, expected {size}: placed where most likely, missing ones set to {fill}")
    elif count > size:
        parts.append(f"{count} coefficients, expected {size}: the least likely extras dropped")
    return "; ".join(parts)


def _field(cfg: dict, name: str, path: Path, kind: type | tuple, positive: bool = False):
    if name not in cfg:
        raise ValueError(f"{path} lacks the field '{name}' (needed fields: scale, vocab_size, min_token, "
                         "time_horizon, action_dim)")
    value = cfg[name]
    if isinstance(value, bool) or not isinstance(value, kind) or (positive and not value > 0):
        want = "a positive number" if positive else "an integer"
        raise ValueError(f"{path} field '{name}' must be {want}, got {value!r}")
    return value


def _shape_field(cfg: dict, name: str, given: int | None, arg: str, path: Path) -> int:
    value = cfg.get(name)
    if value is None and given is None:
        raise ValueError(
            f"{path} field '{name}' is null or missing; pass {arg}=... to FASTTokenizer.from_pretrained "
            "to say which chunk shape this tokenizer decodes"
        )
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"{path} field '{name}' must be a positive integer or null, got {value!r}")
    if value is not None and given is not None and value != given:
        raise ValueError(f"{path} field '{name}' is {value} but {arg}={given} was passed")
    return int(given if given is not None else value)


SWEEP_SCALES = (2.0, 5.0, 10.0, 20.0, 50.0)


def sweep_settings() -> list[tuple[str, Callable[[], FASTTokenizer]]]:
    """``(label, factory)`` pairs for the rate-distortion sweep: the DCT scales in ``SWEEP_SCALES``."""
    return [(f"scale {s}", lambda s=s: FASTTokenizer(scale=s)) for s in SWEEP_SCALES]
