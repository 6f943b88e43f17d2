"""Decoding a malformed FAST sequence to the best available chunk instead of zeros.

A short sequence is usually one lost token, and with a handful of tokens per real chunk the lost
one often carried every non-zero coefficient; reading the survivors from position 0 (the
published rule, missing *trailing* coefficients as zeros) then gives an all-zero chunk. Instead
:func:`realign` weighs where the gap most likely was (each placement scored by how likely the
surviving coefficients are at their positions under per-coefficient statistics of the fit data,
:class:`CoefficientModel`), fills the gap with the fit data's mean coefficients, and returns the
posterior mean over placements. Unknown ids are skipped, extras dropped, and every such sequence
is flagged. Published directories carry no statistics: a generic smooth-signal prior places the
gap and missing coefficients are 0. The effect on the decoding error is in docs/benchmarks.md
(one deleted token) and docs/measurements.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CoefficientModel", "coefficient_model", "realign", "repair_coefficients", "repair_reason"]

# The share of coefficients assumed arbitrary (outliers), and the prior log-odds against "a token
# was substituted" vs "a token was deleted" (chosen to balance the error after one deletion and
# after one substitution; docs/measurements.md).
_OUTLIER_RATE = 0.01
_SUBSTITUTION_COST = 3.0


@dataclass
class CoefficientModel:
    """Independent per-position model of quantized coefficients, used only to realign malformed sequences.

    Own fits use the fit data's mean and standard deviation per coefficient; without them
    (published directories, older saves) the mean is 0 and the spread follows a generic
    smooth-signal prior, ``scale * sqrt(h) / 2 / (1 + frequency)^2`` (see docs/measurements.md). A small uniform floor keeps any value possible, so one odd coefficient never
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


def realign(c: np.ndarray, bounds: np.ndarray | None, model: CoefficientModel) -> np.ndarray:
    """Best estimate of the h * d coefficients of a malformed sequence whose surviving coefficients are ``c``.

    Hypotheses (one token lost or replaced, the usual corruption): a gap at a token boundary (a
    deleted or unknown token); one token's characters read as garbage and replaced by a gap (a
    substituted token); and, always, the plain reading (missing trailing coefficients / extras
    dropped). Coefficients before the gap keep their positions, those after it shift by
    ``h * d - len(c)``; gaps take the per-position mean (zeros where no statistics exist). Each
    hypothesis is scored by the likelihood of the coefficients at their positions (a garbage
    character costs ``log(1 / alphabet)``, a substitution a further prior ``_SUBSTITUTION_COST``),
    and the result is the posterior mean over hypotheses: the estimate with the least expected
    squared error under the model (docs/measurements.md compares it with the single best placement). ``bounds`` are token starts in ``c`` plus ``len(c)``; None
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


def coefficient_model(coef_mean: np.ndarray | None, coef_std: np.ndarray | None, h: int, d: int, scale: float,
                      alphabet: int) -> CoefficientModel:
    """What realignment knows about each coefficient position: the fit statistics when saved, else the prior."""
    size = h * d
    if coef_mean is not None and coef_std is not None and coef_mean.shape == (size,):
        return CoefficientModel(coef_mean, coef_std, alphabet)
    freq = np.repeat(np.arange(h), d)
    return CoefficientModel(np.zeros(size), scale * math.sqrt(h) / 2.0 / (1.0 + freq) ** 2, alphabet)


def repair_coefficients(values: np.ndarray, counts: np.ndarray, tok_lens: np.ndarray | None, tok_ends: np.ndarray,
                        malformed: np.ndarray, model: CoefficientModel) -> np.ndarray:
    """(n, h * d) coefficients from every sequence's flat ``values``: well-formed rows exactly,
    malformed rows by :func:`realign` (token boundaries from ``tok_lens``; None for byte-level ids)."""
    n, size = len(counts), model.mean.size
    char_ends = np.cumsum(counts)
    q = np.empty((n, size), dtype=np.float64)
    good = ~malformed
    if good.any():
        owner = np.repeat(good, counts)
        q[good] = values[owner].reshape(-1, size)
    for i in np.flatnonzero(malformed).tolist():
        c = values[char_ends[i] - counts[i]:char_ends[i]]
        if tok_lens is None:
            bounds = None
        else:
            lens = tok_lens[(tok_ends[i - 1] if i else 0):tok_ends[i]]
            bounds = np.concatenate(([0], np.cumsum(lens[lens > 0])))
        q[i] = realign(c, bounds, model)
    return q


def repair_reason(unknown: int, dropped: int, count: int, size: int, stats: bool) -> str:
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
