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
- **Malformed sequences decode to the best available chunk**: unknown ids are skipped, missing
  trailing coefficients are zeros (the high frequencies, which carry the least energy), extras are
  dropped; the sequence is flagged. Never an all-zero fallback, never a crash.
- **No remembered state**: h and d come from the fit (or the published config), not from the last
  encode call.
- **Pre-tokenization ``none`` (the default for new fits)**: the published byte-level pre-tokenizer
  splits a chunk's string with GPT-2's regex (letters, digits, spaces, punctuation...: 52 pieces for
  one 10 x 34 chunk) and BPE cannot merge across pieces; it also re-encodes every coefficient above
  127 as two UTF-8 bytes. Treating the whole chunk string as one word (no pre-tokenizer) lets merges
  span the long runs of small high-frequency coefficients. Measured in ``docs/benchmarks.md``
  (scale 10, vocabulary 1024, same data, same error): tokens per chunk 98.8 vs 101.6 (synthetic
  10 x 34), 7.6 vs 8.6 (Meta-World), 6.2 vs 8.3 (SO-101), and batch encode/decode about 1.7x /
  2.2x faster (81 / 36 vs 135 / 80 us per 10 x 34 chunk). So ``none`` is the default;
  ``byte_level`` stays available and is what published directories use.

Speed note: Hugging Face ``tokenizers`` costs about 115 ns per character even with no merges
(measured: 40 us for a 340-character chunk), which bounds batch encode at roughly 3-4x the
published per-chunk loop on 10 x 34 chunks; the DCT and string building take ~2-5 us per chunk.

Published directories (``processor_config.json`` + ``tokenizer.json`` at the root or in
``bpe_tokenizer/``) load with identity normalization (FAST expects inputs already in [-1, 1]) and
keep their exact behaviour: the same ids and, on well-formed ids, the same decoded chunks as the
published processor; only malformed sequences differ (best chunk + flag instead of zeros).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from action_tokenizers.base import CONFIG_FILE, ActionTokenizer, TokenizerConfig
from action_tokenizers.io import read_json
from action_tokenizers.normalize import Normalizer

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
        # no pre-tokenizer: id i stands for characters _chars_flat[_tok_start[i] : _tok_start[i] + _tok_len[i]]
        self._chars_flat: np.ndarray | None = None
        self._tok_start: np.ndarray | None = None
        self._tok_len: np.ndarray | None = None

    # ------------------------------------------------------------------ sizes
    @property
    def vocab_size(self) -> int:
        if self.bpe is None or self.published:
            return int(self.config.vocab_size)
        return int(self.bpe.get_vocab_size())

    @property
    def n_coefficients(self) -> int:
        return int(self.chunk_size * self.action_dim)

    # ------------------------------------------------------------------ DCT core
    def coefficients(self, x: np.ndarray) -> np.ndarray:
        """Normalized chunks (n, h, d) -> rounded, scaled DCT coefficients (n, h * d) int64, low frequencies first."""
        from scipy.fft import dct

        c = np.around(dct(x, type=2, norm="ortho", axis=1) * self.config.scale)  # (n, h, d)
        return c.reshape(x.shape[0], -1).astype(np.int64)

    def from_coefficients(self, q: np.ndarray) -> np.ndarray:
        """Coefficients (n, h * d) -> normalized chunks (n, h, d) by the inverse DCT."""
        from scipy.fft import idct

        q = np.asarray(q, dtype=np.float64).reshape(-1, self.chunk_size, self.action_dim)
        return idct(q / self.config.scale, type=2, norm="ortho", axis=1)

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
        bpe.train_from_iterator(self._strings(self.coefficients(x)), trainer=trainer)
        self._set_bpe(bpe)

    def _set_bpe(self, bpe) -> None:
        self.bpe = bpe
        self._chars_flat = self._tok_start = self._tok_len = None
        if self.config.pretokenizer == "none":
            self._chars_flat, self._tok_start, self._tok_len = _char_table(bpe)

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
    def _decode(self, seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        n, size = len(seqs), self.n_coefficients
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=n)
        flat = np.concatenate(seqs) if n else np.zeros(0, dtype=np.int64)
        tok_owner = np.repeat(np.arange(n), lengths)
        known = (flat >= 0) & (flat < int(self.bpe.get_vocab_size()))
        unknown = np.bincount(tok_owner[~known], minlength=n)
        chars, owner = self._chars(flat[known], tok_owner[known], n)  # flat character indices and their sequence
        bad = (chars < 0) | (chars > self.max_char) | (chars == _REPLACEMENT_CHAR)
        dropped = np.bincount(owner[bad], minlength=n)
        chars, owner = chars[~bad], owner[~bad]
        counts = np.bincount(owner, minlength=n)
        starts = np.cumsum(counts) - counts
        pos = np.arange(chars.size) - starts[owner]  # position of each character in its sequence
        inside = pos < size
        q = np.zeros((n, size), dtype=np.float64)
        q[owner[inside], pos[inside]] = chars[inside] + self.min_token
        x = self._clip_bounded(self.from_coefficients(q), q)
        malformed = (counts != size) | (unknown > 0) | (dropped > 0)
        reasons = [_reason(int(unknown[i]), int(dropped[i]), int(counts[i]), size) if malformed[i] else ""
                   for i in range(n)]
        return x, malformed, reasons

    def _chars(self, ids: np.ndarray, owner: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Known ids (flat, with their sequence index) -> flat character indices with their sequence index."""
        if self._chars_flat is not None:  # no pre-tokenizer: each id is a fixed run of characters
            lens = self._tok_len[ids]
            out_start = np.cumsum(lens) - lens
            idx = np.arange(int(lens.sum())) + np.repeat(self._tok_start[ids] - out_start, lens)
            return self._chars_flat[idx], np.repeat(owner, lens)
        # byte-level: a character may span several ids, so decode whole sequences (one batch call)
        bounds = np.searchsorted(owner, np.arange(n + 1))
        seqs = [ids[bounds[i]:bounds[i + 1]].tolist() for i in range(n)]
        texts = self.bpe.decode_batch(seqs, skip_special_tokens=False)
        counts = np.fromiter((len(t) for t in texts), dtype=np.int64, count=n)
        chars = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
        return chars, np.repeat(np.arange(n), counts)

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


def _char_table(bpe) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every id's characters, concatenated (flat int64), with each id's start and length."""
    v = bpe.get_vocab_size()
    tokens = [bpe.id_to_token(i) or "" for i in range(v)]
    lens = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=v)
    flat = np.frombuffer("".join(tokens).encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
    return flat, np.cumsum(lens) - lens, lens


def _reason(unknown: int, dropped: int, count: int, size: int) -> str:
    parts = []
    if unknown:
        parts.append(f"{unknown} unknown id(s) skipped")
    if dropped:
        parts.append(f"{dropped} character(s) outside the alphabet skipped")
    if count < size:
        parts.append(f"{count} coefficients, expected {size}: missing trailing coefficients set to 0")
    elif count > size:
        parts.append(f"{count} coefficients, expected {size}: extra coefficients dropped")
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
