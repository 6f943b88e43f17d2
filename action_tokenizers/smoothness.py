"""Smoothness and vocabulary-usage diagnostics for any fitted tokenizer.

Why: Cao & Xie (2026) show that behaviour cloning on quantized actions compounds error only
polynomially with the horizon if the quantized policy is *smooth*: nearby inputs must give nearby
outputs. Binning is smooth by construction (a scalar moves at most one bin when its input moves
less than a bin); a learned quantizer can reconstruct its training data well and still send two
nearby chunks to codes whose decoded chunks are far apart. This module measures that, for every
family, through the public API only (``encode`` then ``decode``).

Units. Every distance is the RMS over the ``h * d`` scalars of a chunk in the tokenizer's
normalized units (roughly [-1, 1] per dimension): ``dist(a, b) = sqrt(mean((a - b) ** 2))``.
Inputs are measured as the tokenizer sees them (normalized and clipped); decoded outputs are
mapped with the same affine map but not clipped.

Thresholds.

- ``delta``: two chunks are *nearby* when ``0 < dist(x, x') < delta``.
- ``eps`` (the paper's eps'): a nearby pair *violates* smoothness when its decoded chunks are
  farther apart than ``eps``: ``dist(Q(x), Q(x')) > eps`` with ``Q = decode . encode``. The share
  of violating pairs is the thresholded transport cost ``P(dist(Q(x), Q(x')) > eps)`` between the
  two decoded point masses, in the spirit of the paper's relaxed total-variation continuity.
  A quantizer that is 1-Lipschitz up to a resolution ``w`` (binning with bin width ``w``:
  ``dist(Q(x), Q(x')) <= dist(x, x') + w``) has no violations when ``eps >= delta + w``; the
  defaults (``delta=0.05``, ``eps=0.1``) leave room for ``w`` up to 0.05, i.e. binning with
  40 or more uniform bins over [-1, 1] scores exactly zero, while a learned codebook whose cells
  cut through dense data shows its jumps at this ``eps`` and hides them at a coarser one
  (docs/measurements.md).

Pairs come from the data (each sampled chunk and its nearest neighbours within ``delta``, e.g.
the next chunk of a slow motion) and from small random perturbations (a random direction, a radius
uniform in (0, delta)).

The array primitives (:func:`chunk_distance`, :func:`nearby_pairs`, :func:`perturb`,
:func:`violation_share`, :func:`code_usage`) take plain arrays, so a policy-level diagnostic can
reuse them with its own map in place of ``decode . encode``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from action_tokenizers.base import ActionTokenizer

__all__ = [
    "CodeUsage",
    "ErrorTail",
    "GroupUsage",
    "PositionGroup",
    "SmoothnessConfig",
    "SmoothnessReport",
    "chunk_distance",
    "code_usage",
    "nearby_pairs",
    "perturb",
    "position_groups",
    "quantization_error",
    "smoothness_report",
    "violation_share",
    "vocabulary_usage",
]


@dataclass
class SmoothnessConfig:
    """Thresholds and sample sizes of the smoothness diagnostic (see the module docstring)."""

    delta: float = 0.05
    """Input radius: pairs with 0 < dist(x, x') < delta (normalized RMS units) are nearby."""
    eps: float = 0.1
    """Output tolerance eps': a nearby pair violates when dist(Q(x), Q(x')) > eps."""
    n_pairs: int = 2000
    """Most pairs of each kind (data neighbours, perturbations)."""
    neighbours: int = 4
    """Nearest neighbours looked up per sampled chunk when forming data pairs."""
    seed: int = 0
    """Seed for the sampled chunks and perturbations."""

    def __post_init__(self) -> None:
        if not (self.delta > 0 and np.isfinite(self.delta)):
            raise ValueError(f"delta must be a positive number, got {self.delta}")
        if not (self.eps > 0 and np.isfinite(self.eps)):
            raise ValueError(f"eps must be a positive number, got {self.eps}")
        if self.n_pairs < 1 or self.neighbours < 1:
            raise ValueError(f"n_pairs and neighbours must be >= 1, got {self.n_pairs} and {self.neighbours}")


@dataclass
class CodeUsage:
    """How much of a code range the encoded data uses."""

    n_codes: int
    used: int
    share_used: float
    """used / n_codes."""
    perplexity: float
    """exp(entropy) of the code frequencies: the effective number of codes (n_codes when uniform)."""


@dataclass(frozen=True)
class PositionGroup:
    """Token positions that share one id range (e.g. one VQ level), for usage reports."""

    name: str
    positions: tuple[int, ...]
    first_id: int
    n_ids: int


@dataclass
class GroupUsage:
    """Vocabulary usage of one position group."""

    group: PositionGroup
    usage: CodeUsage


@dataclass
class ErrorTail:
    """Per-chunk quantization error (normalized RMS units) on held-out chunks: mean, tail, worst."""

    mean_error: float
    p99_error: float
    worst_error: float
    worst_to_mean: float
    """worst_error / mean_error (1.0 when every chunk is exact): large means a heavy error tail."""


@dataclass
class SmoothnessReport:
    """Share of nearby pairs whose decoded chunks jump apart, and the error tail."""

    delta: float
    eps: float
    n_data_pairs: int
    n_perturbed_pairs: int
    violation_rate: float
    """Share of all pairs (data + perturbed) with dist(Q(x), Q(x')) > eps (0 = smooth)."""
    data_violation_rate: float
    perturbed_violation_rate: float
    mean_output_distance: float
    """Mean dist(Q(x), Q(x')) over all pairs (compare with delta)."""
    error: ErrorTail
    """Per-chunk quantization error tail on the same chunks."""
    usage: list[GroupUsage]
    """Vocabulary usage per position group (per level for VQ; one group for binning and FAST)."""

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


# ---------------------------------------------------------------------- array primitives
def chunk_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS distance over all scalars of each chunk: (n, h, d), (n, h, d) -> (n,)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return np.sqrt((diff.reshape(diff.shape[0], -1) ** 2).mean(axis=1))


def violation_share(out_a: np.ndarray, out_b: np.ndarray, eps: float) -> float:
    """Thresholded transport cost of paired outputs: share of pairs with ``dist > eps`` (0.0 if no pairs)."""
    if len(out_a) == 0:
        return 0.0
    return float(np.mean(chunk_distance(out_a, out_b) > eps))


def nearby_pairs(x: np.ndarray, delta: float, n_pairs: int, neighbours: int = 4,
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) of chunks in ``x`` (n, h, d) with ``0 < dist < delta``, at most ``n_pairs``.

    Samples up to ``n_pairs`` chunks and pairs each with its ``neighbours`` nearest chunks (a k-d
    tree on the flattened chunks), keeping those strictly within ``delta``.
    """
    from scipy.spatial import cKDTree

    rng = rng or np.random.default_rng(0)
    n = x.shape[0]
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    flat = x.reshape(n, -1)
    radius = delta * np.sqrt(flat.shape[1])  # RMS delta as a Euclidean radius
    anchors = np.sort(rng.choice(n, size=min(n, n_pairs), replace=False))
    k = min(neighbours + 1, n)
    dist, idx = cKDTree(flat).query(flat[anchors], k=k, distance_upper_bound=radius)
    i = np.repeat(anchors, k)
    j, dist = idx.ravel(), dist.ravel()
    keep = (j < n) & (dist > 0) & (dist < radius)
    i, j = i[keep], j[keep]
    if len(i) > n_pairs:
        pick = np.sort(rng.choice(len(i), size=n_pairs, replace=False))
        i, j = i[pick], j[pick]
    return i, j


def perturb(x: np.ndarray, delta: float, rng: np.random.Generator) -> np.ndarray:
    """Each chunk moved in a random direction by an RMS distance uniform in (0, delta)."""
    u = rng.standard_normal(x.shape)
    u /= np.maximum(chunk_distance(u, np.zeros_like(u)), 1e-12)[:, None, None]
    r = rng.uniform(0.0, delta, size=x.shape[0])
    return x + r[:, None, None] * u


def code_usage(ids: np.ndarray, n_codes: int) -> CodeUsage:
    """Share of ``n_codes`` codes that occur in ``ids`` (values in [0, n_codes)) and their perplexity."""
    ids = np.asarray(ids, dtype=np.int64).ravel()
    ids = ids[(ids >= 0) & (ids < n_codes)]
    counts = np.bincount(ids, minlength=n_codes)
    used = int((counts > 0).sum())
    if ids.size == 0:
        return CodeUsage(n_codes, 0, 0.0, 0.0)
    p = counts[counts > 0] / ids.size
    return CodeUsage(n_codes, used, used / n_codes, float(np.exp(-(p * np.log(p)).sum())))


# ---------------------------------------------------------------------- tokenizer diagnostics
def _unit(tok: "ActionTokenizer", raw: np.ndarray) -> np.ndarray:
    """Raw -> normalized units with the tokenizer's affine map, without clipping (for decoded outputs)."""
    norm = tok.normalizer
    x = np.asarray(raw, dtype=np.float64)
    if norm.center is None:  # identity normalizer
        return x
    center, scale = norm.center, norm.scale
    if norm.mask is not None:
        center, scale = np.where(norm.mask, center, 0.0), np.where(norm.mask, scale, 1.0)
    return (x - center) / scale


def _roundtrip(tok: "ActionTokenizer", x_norm: np.ndarray) -> np.ndarray:
    """Normalized chunks -> decode(encode(.)) in unclipped normalized units."""
    raw = tok.normalizer.unnormalize(x_norm)
    return _unit(tok, tok.decode(tok.encode(raw)))


def _error_tail(err: np.ndarray) -> ErrorTail:
    mean, worst = float(err.mean()), float(err.max())
    return ErrorTail(mean, float(np.quantile(err, 0.99)), worst, worst / mean if mean > 0 else 1.0)


def quantization_error(tok: "ActionTokenizer", chunks: np.ndarray) -> ErrorTail:
    """Per-chunk RMS error of ``decode(encode(x))`` against the (clipped) normalized input.

    The normalizer's own clipping of outliers is left out: all families share it, so the figure
    isolates the quantizer.
    """
    x = tok.normalizer.normalize(tok._check_chunks(chunks))
    if x.shape[0] == 0:
        raise ValueError("quantization_error needs at least one chunk, got 0")
    return _error_tail(chunk_distance(_roundtrip(tok, x), x))


def smoothness_report(tok: "ActionTokenizer", chunks: np.ndarray, config: SmoothnessConfig | None = None,
                      seed: int | None = None) -> SmoothnessReport:
    """Violation shares over nearby data pairs and perturbations, the error tail and vocabulary usage.

    ``chunks`` (n, h, d) in raw units should be held out from the tokenizer's fit. ``seed``, when
    given, replaces ``config.seed``.
    """
    cfg = config or SmoothnessConfig()
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    tok._require_fitted()
    x = tok.normalizer.normalize(tok._check_chunks(chunks))
    if x.shape[0] == 0:
        raise ValueError("smoothness needs at least one chunk, got 0")
    rng = np.random.default_rng(cfg.seed)
    ids = tok.encode(tok.normalizer.unnormalize(x))
    y = _unit(tok, tok.decode(ids))
    i, j = nearby_pairs(x, cfg.delta, cfg.n_pairs, cfg.neighbours, rng)
    anchors = np.sort(rng.choice(x.shape[0], size=min(x.shape[0], cfg.n_pairs), replace=False))
    moved = tok.normalizer.normalize(tok.normalizer.unnormalize(perturb(x[anchors], cfg.delta, rng)))
    keep = (chunk_distance(moved, x[anchors]) > 0) & (chunk_distance(moved, x[anchors]) < cfg.delta)
    anchors, moved = anchors[keep], moved[keep]
    y_moved = _roundtrip(tok, moved) if len(moved) else moved
    d_data = chunk_distance(y[i], y[j]) if len(i) else np.zeros(0)
    d_pert = chunk_distance(y[anchors], y_moved) if len(anchors) else np.zeros(0)
    d_all = np.concatenate([d_data, d_pert])
    return SmoothnessReport(
        delta=cfg.delta,
        eps=cfg.eps,
        n_data_pairs=int(len(d_data)),
        n_perturbed_pairs=int(len(d_pert)),
        violation_rate=float(np.mean(d_all > cfg.eps)) if d_all.size else 0.0,
        data_violation_rate=float(np.mean(d_data > cfg.eps)) if d_data.size else 0.0,
        perturbed_violation_rate=float(np.mean(d_pert > cfg.eps)) if d_pert.size else 0.0,
        mean_output_distance=float(d_all.mean()) if d_all.size else 0.0,
        error=_error_tail(chunk_distance(y, x)),
        usage=_usage_of_ids(tok, ids),
    )


def position_groups(tok: "ActionTokenizer") -> list[PositionGroup]:
    """The tokenizer's own groups (``tok.usage_groups()``, e.g. VQ levels) or one group of all positions."""
    hook = getattr(tok, "usage_groups", None)
    if callable(hook):
        return list(hook())
    t = tok.tokens_per_chunk
    return [PositionGroup("all", tuple(range(t)) if t is not None else (), 0, tok.vocab_size)]


def vocabulary_usage(tok: "ActionTokenizer", chunks: np.ndarray) -> list[GroupUsage]:
    """Usage of each position group's id range over the encoded ``chunks`` (all positions if variable-length)."""
    return _usage_of_ids(tok, tok.encode(tok._check_chunks(chunks)))


def _usage_of_ids(tok: "ActionTokenizer", seqs: list[list[int]]) -> list[GroupUsage]:
    out = []
    for group in position_groups(tok):
        if group.positions:
            ids = np.fromiter((s[p] for s in seqs for p in group.positions if p < len(s)), dtype=np.int64)
        else:
            ids = np.fromiter((v for s in seqs for v in s), dtype=np.int64)
        out.append(GroupUsage(group, code_usage(ids - group.first_id, group.n_ids)))
    return out
