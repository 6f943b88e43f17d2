"""Offline tokenizer metrics: compression, reconstruction, robustness to corruption, speed.

Every figure is computed the same way for every family, from a fitted tokenizer and held-out raw
chunks, so the report can rank binning, FAST and VQ side by side.

Definitions (normalized units are the tokenizer's own normalizer's):
- quantization error eps of a chunk: max over (h, d) of |decode(encode(x)) - x|, normalized units;
  ``eps_max`` is the worst chunk, ``eps_mean`` the mean over chunks.
- a chunk *round-trips* when its ids decode without a malformed flag and re-encoding the decoded
  chunk gives the same ids (the tokenizer is idempotent on its own outputs).
- corruption: one token deleted at a random position, or one replaced by a random id; *unusable*
  means the decode was flagged malformed AND came back all zeros in normalized units (what the
  reference FAST decoder does), or was not finite.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from action_tokenizers.base import ActionTokenizer


@dataclass
class CorruptionResult:
    flagged_rate: float
    """Share of corrupted sequences the decoder flagged as malformed."""
    unusable_rate: float
    """Share whose decode was all zeros (normalized) or non-finite: nothing usable came back."""
    mae_norm: float
    """Mean absolute error of the decoded chunk against the original, normalized units."""


@dataclass
class TokenizerMetrics:
    name: str
    family: str
    vocab_size: int
    chunk_size: int
    action_dim: int
    n_chunks: int
    tokens_per_chunk_mean: float
    tokens_per_chunk_p99: float
    tokens_per_chunk_max: int
    compression_ratio: float
    bits_per_chunk: float
    mae_raw: float
    rmse_raw: float
    max_err_raw: float
    mae_norm: float
    rmse_norm: float
    max_err_norm: float
    eps_max: float
    eps_mean: float
    mae_raw_per_dim: list[float]
    max_err_raw_per_dim: list[float]
    roundtrip_rate: float
    malformed_clean: int
    vocab_used: float
    """Share of the vocabulary's ids that occur in the encoded data."""
    vocab_perplexity: float
    """exp(entropy) of the id distribution: the effective number of ids in use."""
    encode_chunks_per_s: float
    decode_chunks_per_s: float
    fit_seconds: float | None = None
    clipped_values: int = 0
    """Action values outside the normalizer's fitted range, clipped before tokenizing (counted, not hidden)."""
    clipped_chunks: int = 0
    """Chunks holding at least one clipped value."""
    deletion: CorruptionResult | None = None
    substitution: CorruptionResult | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def vocab_usage(ids: list[list[int]], vocab_size: int) -> tuple[float, float]:
    """(share of ids used, perplexity of the id distribution)."""
    flat = np.fromiter((i for seq in ids for i in seq), dtype=np.int64)
    if flat.size == 0:
        return 0.0, 0.0
    counts = np.bincount(flat, minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / flat.size
    return float((counts > 0).mean()), float(np.exp(-(p * np.log(p)).sum()))


def corrupt_one_token(ids: list[list[int]], kind: str, vocab_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Copies of ``ids`` with one random token deleted (``kind="delete"``) or replaced by another id."""
    if kind not in ("delete", "substitute"):
        raise ValueError(f"kind must be 'delete' or 'substitute', got {kind!r}")
    out = []
    for seq in ids:
        seq = list(seq)
        if seq:
            pos = int(rng.integers(len(seq)))
            if kind == "delete":
                del seq[pos]
            else:
                seq[pos] = int((seq[pos] + 1 + rng.integers(vocab_size - 1)) % vocab_size)
        out.append(seq)
    return out


def corruption(tok: ActionTokenizer, ids: list[list[int]], x_norm: np.ndarray, kind: str,
               rng: np.random.Generator) -> CorruptionResult:
    """Delete or substitute one random token per sequence and measure what decode makes of it."""
    report = tok.decode_with_report(corrupt_one_token(ids, kind, tok.vocab_size, rng))
    y = tok.normalizer.normalize(report.actions)
    zero = np.all(np.abs(y.reshape(len(y), -1)) < 1e-12, axis=1)
    finite = np.all(np.isfinite(y.reshape(len(y), -1)), axis=1)
    unusable = (report.malformed & zero) | ~finite
    return CorruptionResult(
        flagged_rate=float(report.malformed.mean()),
        unusable_rate=float(unusable.mean()),
        mae_norm=float(np.abs(y - x_norm).mean()),
    )


def tokenizer_metrics(tok: ActionTokenizer, chunks: np.ndarray, name: str | None = None,
                      fit_seconds: float | None = None, seed: int = 0) -> TokenizerMetrics:
    """All offline figures of a fitted tokenizer on raw chunks ``(n, h, d)`` (ideally held out)."""
    x = np.asarray(chunks, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] == 0:
        raise ValueError(f"metrics need a non-empty (n, h, d) array of chunks, got shape {x.shape}")
    ids, t_enc = _timed(tok.encode, x)
    clipping = tok.last_encode_stats
    report, t_dec = _timed(tok.decode_with_report, ids)
    y = report.actions
    x_norm, y_norm = tok.normalizer.normalize(x), tok.normalizer.normalize(y)
    err_raw, err_norm = np.abs(y - x), np.abs(y_norm - x_norm)
    lengths = np.array([len(s) for s in ids])
    n, h, d = x.shape
    reencoded = tok.encode(y)
    same = np.array([a == b for a, b in zip(reencoded, ids)])
    used, perplexity = vocab_usage(ids, tok.vocab_size)
    rng = np.random.default_rng(seed)
    eps_per_chunk = err_norm.reshape(n, -1).max(axis=1)
    return TokenizerMetrics(
        name=name or tok.family,
        family=tok.family,
        vocab_size=tok.vocab_size,
        chunk_size=h,
        action_dim=d,
        n_chunks=n,
        tokens_per_chunk_mean=float(lengths.mean()),
        tokens_per_chunk_p99=float(np.percentile(lengths, 99)),
        tokens_per_chunk_max=int(lengths.max()),
        compression_ratio=float(h * d / max(lengths.mean(), 1e-9)),
        bits_per_chunk=float(lengths.mean() * np.log2(tok.vocab_size)),
        mae_raw=float(err_raw.mean()),
        rmse_raw=float(np.sqrt((err_raw**2).mean())),
        max_err_raw=float(err_raw.max()),
        mae_norm=float(err_norm.mean()),
        rmse_norm=float(np.sqrt((err_norm**2).mean())),
        max_err_norm=float(err_norm.max()),
        eps_max=float(eps_per_chunk.max()),
        eps_mean=float(eps_per_chunk.mean()),
        mae_raw_per_dim=err_raw.reshape(-1, d).mean(axis=0).tolist(),
        max_err_raw_per_dim=err_raw.reshape(-1, d).max(axis=0).tolist(),
        roundtrip_rate=float((same & ~report.malformed).mean()),
        malformed_clean=report.n_malformed,
        vocab_used=used,
        vocab_perplexity=perplexity,
        encode_chunks_per_s=n / max(t_enc, 1e-9),
        decode_chunks_per_s=n / max(t_dec, 1e-9),
        fit_seconds=fit_seconds,
        clipped_values=clipping.clipped_values if clipping else 0,
        clipped_chunks=clipping.clipped_chunks if clipping else 0,
        deletion=corruption(tok, ids, x_norm, "delete", rng),
        substitution=corruption(tok, ids, x_norm, "substitute", rng),
    )
