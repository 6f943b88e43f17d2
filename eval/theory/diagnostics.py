"""Policy-level and theory diagnostics from Cao & Xie (2026), usable on any tokenizer and dataset.

The paper's regret bounds for behaviour cloning on quantized actions name four measurable things;
this module measures each from plain arrays or small callables, so it works for the 1-D theory
systems in ``eval/theory`` and for a tokenizer fitted on a LeRobot dataset alike:

- **quantization error eps** (:func:`quantization_eps`, :func:`action_error`): the worst-case and
  mean distance between an action and its quantized version, on the expert's data or on the
  states a policy visits itself (pass the expert's labels at those states);
- **relaxed total-variation continuity** (:func:`continuity_violation_rate`,
  :func:`token_continuity_violation_rate`): how often two nearby states get decoded actions
  farther apart than a threshold (the transport cost with a thresholded 0/1 ground cost), or, for
  a stochastic token policy, token distributions whose relaxed TV (:func:`relaxed_tv`) or exact
  TV (:func:`token_tv`) exceeds a tolerance;
- **incremental-stability gain** (:func:`incremental_gain`): the largest state deviation over the
  largest action perturbation over a horizon, from paired rollouts with common random numbers on
  a simulator that can be reset to a state and seeded (:class:`SeededSimulator`);
- **expert-induced dequantization kernel** (:class:`KernelDecoder`): decode a token to the
  expert's conditional mean action given the token (optionally given a binned state) instead of
  to the bin centre.

Tokenizer-level smoothness over nearby chunk pairs lives in :mod:`action_tokenizers.smoothness`;
this module measures policies and dynamics. Shapes: ``b`` batch, ``s`` state dim, ``d`` action
dim, ``h`` chunk length, ``t`` steps of a horizon, ``v`` vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from action_tokenizers.base import ActionTokenizer

__all__ = [
    "ContinuityReport",
    "EpsReport",
    "GainReport",
    "KernelDecoder",
    "SeededSimulator",
    "action_error",
    "constant_perturbation",
    "continuity_violation_rate",
    "incremental_gain",
    "perturb_states",
    "quantization_eps",
    "relaxed_tv",
    "token_continuity_violation_rate",
    "token_tv",
]


# --------------------------------------------------------------------------- quantization error
@dataclass
class EpsReport:
    """Quantization error of a set of actions, raw units, Euclidean norm over the action dimension."""

    worst: float
    """max over actions of ||a - q(a)|| (the paper's eps)."""
    mean: float
    """mean over actions of ||a - q(a)||."""
    worst_per_dim: list[float]
    """max over actions of |a_j - q(a)_j| per dimension j (half the bin width for binning)."""
    n: int
    """Number of actions measured."""


def action_error(reference: np.ndarray, actions: np.ndarray) -> EpsReport:
    """Distance between two arrays of actions ``(..., d)`` of the same shape, one per action.

    On expert data ``reference`` is the expert's action and ``actions`` its quantized version; on a
    policy's rollouts ``reference`` is the expert's label at the visited states and ``actions`` what
    the policy executed (the on-policy error the regret bounds actually pay).
    """
    ref = np.asarray(reference, dtype=np.float64)
    act = np.asarray(actions, dtype=np.float64)
    if ref.shape != act.shape:
        raise ValueError(f"reference and actions must have the same shape, got {ref.shape} and {act.shape}")
    if ref.ndim == 0 or ref.size == 0:
        raise ValueError(f"need a non-empty array of actions (..., d), got shape {ref.shape}")
    diff = (act - ref).reshape(-1, ref.shape[-1])  # (n, d)
    if not np.all(np.isfinite(diff)):
        raise ValueError("actions or reference contain NaN or inf")
    norms = np.linalg.norm(diff, axis=1)
    return EpsReport(float(norms.max()), float(norms.mean()), np.abs(diff).max(axis=0).tolist(), int(norms.size))


def quantization_eps(tokenizer: "ActionTokenizer", chunks: np.ndarray) -> EpsReport:
    """eps of ``decode(encode(x))`` against ``x`` for raw chunks ``(n, h, d)``, raw units, per step.

    Unlike :func:`action_error` on rollouts this needs no expert: it is the error the tokenizer
    itself adds on these chunks (expert data, or the actions a policy produced).
    """
    x = np.asarray(chunks, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"chunks must have shape (n, h, d), got {x.shape}")
    return action_error(x, tokenizer.decode(tokenizer.encode(x)))


# --------------------------------------------------------------------------- continuity
@dataclass
class ContinuityReport:
    """How often nearby states get far-apart decoded actions (or token distributions)."""

    rate: float
    """Share of nearby pairs that violate the continuity bound."""
    n_pairs: int
    """Number of (state, perturbed state) pairs measured."""
    mean_cost: float
    """Mean of the measured distance (action distance, or relaxed TV) over the pairs."""
    radius: float
    """Pairs are at state distance uniform in (0, radius]."""
    threshold: float
    """Actions farther apart than this count as different (the thresholded transport cost)."""


def perturb_states(states: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Each state ``(b, s)`` moved in a uniformly random direction by a distance uniform in (0, radius]."""
    x = np.asarray(states, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"states must have shape (b, s), got {x.shape}")
    u = rng.standard_normal(x.shape)
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-300)
    r = radius * (1.0 - rng.uniform(0.0, 1.0, size=(x.shape[0], 1)))  # in (0, radius]
    return x + r * u


def _check_radius(radius: float, threshold: float) -> None:
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")


def continuity_violation_rate(
    act: Callable[[np.ndarray], np.ndarray],
    states: np.ndarray,
    radius: float,
    threshold: float,
    lipschitz: float = 0.0,
    seed: int = 0,
) -> ContinuityReport:
    """Relaxed-TV continuity of a deterministic (decoded) policy ``act: (b, s) -> (b, ...)``.

    A pair (x, x') with ``||x - x'|| <= radius`` violates when its decoded actions are farther
    apart than ``threshold + lipschitz * ||x - x'||``: between two point masses, the transport cost
    with the 0/1 ground cost ``1[dist > threshold]`` is exactly that indicator. Binning of a
    L-Lipschitz expert with bin width w never violates once ``threshold >= w`` and
    ``lipschitz >= L``; a learned quantizer that jumps by O(1) next to its training data does.
    """
    _check_radius(radius, threshold)
    x = np.asarray(states, dtype=np.float64)
    x2 = perturb_states(x, radius, np.random.default_rng(seed))
    a, a2 = np.asarray(act(x), dtype=np.float64), np.asarray(act(x2), dtype=np.float64)
    if a.shape != a2.shape or a.shape[0] != x.shape[0]:
        raise ValueError(f"act must map (b, s) to (b, ...) consistently, got {a.shape} and {a2.shape} for b={x.shape[0]}")
    cost = np.linalg.norm((a - a2).reshape(x.shape[0], -1), axis=1)
    bound = threshold + lipschitz * np.linalg.norm(x - x2, axis=1)
    return ContinuityReport(float(np.mean(cost > bound)), int(x.shape[0]), float(cost.mean()), float(radius), float(threshold))


def _check_probs(p: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"{name} must be (b, v) token probabilities, got shape {p.shape}")
    if np.any(p < -1e-12) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError(f"{name} rows must be probability vectors (non-negative, summing to 1)")
    return np.clip(p, 0.0, None)


def token_tv(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Exact total variation between categorical token distributions, rows ``(b, v)`` -> ``(b,)``."""
    p, q = _check_probs(p, "p"), _check_probs(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {p.shape} and {q.shape}")
    return 0.5 * np.abs(p - q).sum(axis=1)


def relaxed_tv(p: np.ndarray, q: np.ndarray, decoded: np.ndarray, threshold: float) -> np.ndarray:
    """Optimal transport cost between token distributions with ground cost ``1[||c_i - c_j|| > threshold]``.

    ``decoded`` ``(v, ...)`` is each token's decoded action. With ``threshold = 0`` and distinct
    decoded actions this is the exact TV; a larger threshold forgives moving mass between tokens
    that decode to nearby actions (the paper's relaxation). Solved exactly as a small linear
    program on the union of the two supports, so keep supports small (tens of tokens).
    """
    from scipy.optimize import linprog

    p, q = _check_probs(p, "p"), _check_probs(q, "q")
    c = np.asarray(decoded, dtype=np.float64).reshape(p.shape[1], -1)
    out = np.empty(p.shape[0])
    for i in range(p.shape[0]):
        sp, sq = np.flatnonzero(p[i] > 0), np.flatnonzero(q[i] > 0)
        cost = (np.linalg.norm(c[sp][:, None] - c[sq][None], axis=-1) > threshold).astype(np.float64)
        if not cost.any():
            out[i] = 0.0
            continue
        m, n = len(sp), len(sq)
        rows = np.zeros((m + n, m * n))
        for j in range(m):
            rows[j, j * n : (j + 1) * n] = 1.0
        for k in range(n):
            rows[m + k, k::n] = 1.0
        marg = np.concatenate([p[i, sp] / p[i, sp].sum(), q[i, sq] / q[i, sq].sum()])
        res = linprog(cost.ravel(), A_eq=rows[:-1], b_eq=marg[:-1], bounds=(0, None), method="highs")
        out[i] = float(res.fun) if res.success else 0.5 * np.abs(p[i] - q[i]).sum()
    return np.clip(out, 0.0, 1.0)


def token_continuity_violation_rate(
    probs: Callable[[np.ndarray], np.ndarray],
    decoded: np.ndarray,
    states: np.ndarray,
    radius: float,
    threshold: float = 0.0,
    tolerance: float = 0.0,
    lipschitz: float = 0.0,
    seed: int = 0,
) -> ContinuityReport:
    """Relaxed-TV continuity of a stochastic token policy ``probs: (b, s) -> (b, v)``.

    A pair violates when ``relaxed_tv(pi(x), pi(x')) > tolerance + lipschitz * ||x - x'||``;
    ``threshold = 0`` uses the exact TV (:func:`token_tv`), which needs no linear program.
    """
    _check_radius(radius, threshold)
    x = np.asarray(states, dtype=np.float64)
    x2 = perturb_states(x, radius, np.random.default_rng(seed))
    p, q = probs(x), probs(x2)
    dist = token_tv(p, q) if threshold == 0 else relaxed_tv(p, q, decoded, threshold)
    bound = tolerance + lipschitz * np.linalg.norm(x - x2, axis=1)
    return ContinuityReport(float(np.mean(dist > bound)), int(x.shape[0]), float(dist.mean()), float(radius), float(threshold))


# --------------------------------------------------------------------------- incremental stability
@runtime_checkable
class SeededSimulator(Protocol):
    """A batched simulator that can be put in given states with a given noise seed.

    ``reset_to(states (b, s), seed)`` sets the states and restarts the noise stream from ``seed``;
    ``step(actions (b, d)) -> states (b, s)`` advances every copy. The noise drawn at step t must
    depend only on the seed and t (not on the actions), so two resets with the same seed share
    their random numbers: the paired rollouts then differ only through the actions.
    """

    def reset_to(self, states: np.ndarray, seed: int) -> None: ...

    def step(self, actions: np.ndarray) -> np.ndarray: ...


@dataclass
class GainReport:
    """Incremental-stability gain: state deviation caused per unit of action perturbation."""

    gain: float
    """max over rollouts of max_t ||x_t - x'_t|| / max_t ||delta_t||."""
    gain_mean: float
    """The same ratio averaged over rollouts."""
    deviation: list[float]
    """max over rollouts of ||x_t - x'_t|| at each step t = 1..horizon."""
    perturbation: float
    """Largest action perturbation norm used."""


def constant_perturbation(n: int, horizon: int, dim: int, scale: float, seed: int = 0) -> np.ndarray:
    """``(n, horizon, dim)`` perturbations of norm ``scale``, one random direction per rollout held fixed.

    A perturbation that keeps its direction is the worst case for a linear system with a
    non-negative response (deviations add up instead of cancelling).
    """
    if n < 1 or horizon < 1 or dim < 1 or not scale > 0:
        raise ValueError(f"need n, horizon, dim >= 1 and scale > 0, got {n}, {horizon}, {dim}, {scale}")
    u = np.random.default_rng(seed).standard_normal((n, 1, dim))
    u /= np.maximum(np.linalg.norm(u, axis=2, keepdims=True), 1e-300)
    return np.repeat(scale * u, horizon, axis=1)


def _rollout(sim: SeededSimulator, x0: np.ndarray, seed: int, actions: Callable[[int, np.ndarray], np.ndarray],
             horizon: int) -> np.ndarray:
    sim.reset_to(x0.copy(), seed)
    x, out = x0, []
    for t in range(horizon):
        x = np.asarray(sim.step(actions(t, x)), dtype=np.float64)
        out.append(x)
    return np.stack(out, axis=1)  # (b, t, s)


def incremental_gain(
    sim: SeededSimulator,
    initial_states: np.ndarray,
    perturbation: np.ndarray,
    policy: Callable[[np.ndarray], np.ndarray] | None = None,
    nominal_actions: np.ndarray | None = None,
    seed: int = 0,
) -> GainReport:
    """Gain from paired rollouts with common random numbers: same start, same seed, perturbed actions.

    Give either ``nominal_actions`` ``(b, t, d)`` (open loop) or ``policy`` ``(b, s) -> (b, d)``
    (closed loop: the perturbed copy runs ``policy(x') + delta``). ``perturbation`` is
    ``(b, t, d)``; the horizon is its length. Exponentially incrementally stable systems have a
    gain bounded in the horizon; unstable ones grow like ``|A|^t``.
    """
    x0 = np.asarray(initial_states, dtype=np.float64)
    delta = np.asarray(perturbation, dtype=np.float64)
    if x0.ndim != 2 or delta.ndim != 3 or delta.shape[0] != x0.shape[0]:
        raise ValueError(f"need initial_states (b, s) and perturbation (b, t, d) with the same b, got {x0.shape}, {delta.shape}")
    if (policy is None) == (nominal_actions is None):
        raise ValueError("give exactly one of policy (closed loop) or nominal_actions (open loop)")
    if nominal_actions is not None:
        nominal = np.asarray(nominal_actions, dtype=np.float64)
        if nominal.shape != delta.shape:
            raise ValueError(f"nominal_actions {nominal.shape} and perturbation {delta.shape} must have the same shape")
        base = lambda t, x: nominal[:, t]  # noqa: E731
    else:
        base = lambda t, x: np.asarray(policy(x), dtype=np.float64)  # noqa: E731
    horizon = delta.shape[1]
    xs = _rollout(sim, x0, seed, base, horizon)
    xp = _rollout(sim, x0, seed, lambda t, x: base(t, x) + delta[:, t], horizon)
    dev = np.linalg.norm(xs - xp, axis=2)  # (b, t)
    size = np.linalg.norm(delta, axis=2).max(axis=1)  # (b,)
    if np.any(size <= 0):
        raise ValueError("every rollout needs a non-zero perturbation")
    ratio = dev.max(axis=1) / size
    return GainReport(float(ratio.max()), float(ratio.mean()), dev.max(axis=0).tolist(), float(size.max()))


# --------------------------------------------------------------------------- dequantization kernel
class _GroupMeans:
    """Means of value rows grouped by int64 keys, looked up with a binary search (all vectorized)."""

    def __init__(self, keys: np.ndarray, values: np.ndarray) -> None:
        self.keys, inverse, self.counts = np.unique(keys, return_inverse=True, return_counts=True)
        sums = np.zeros((len(self.keys), values.shape[1]))
        np.add.at(sums, inverse, values)
        self.means = sums / self.counts[:, None]

    def lookup(self, keys: np.ndarray, min_count: int) -> tuple[np.ndarray, np.ndarray]:
        """(means (n, m), found (n,) bool) for query keys (n,)."""
        pos = np.clip(np.searchsorted(self.keys, keys), 0, max(len(self.keys) - 1, 0))
        found = (self.keys[pos] == keys) & (self.counts[pos] >= min_count)
        return self.means[pos], found


class _Ids:
    """Stable int ids for hashable rows (token sequences); unseen rows get -1."""

    def __init__(self) -> None:
        self.ids: dict[bytes | tuple, int] = {}

    def fit(self, rows: list) -> np.ndarray:
        return np.array([self.ids.setdefault(r, len(self.ids)) for r in rows], dtype=np.int64)

    def get(self, rows: list) -> np.ndarray:
        return np.array([self.ids.get(r, -1) for r in rows], dtype=np.int64)


class KernelDecoder:
    """Decode tokens to the expert's conditional mean action, E[a | token] or E[a | token, state cell].

    Binning decodes a token to its bin centre; the expert-induced kernel decodes it to the mean of
    the expert actions that fell in it, which is the squared-error-optimal decode for the expert's
    distribution and moves the reconstruction towards where the data really sits when bins are
    coarse. Conditioning on the state (binned per dimension into ``state_bins`` quantile bins) goes
    further: for a deterministic expert, the state pins down the action inside the bin.

    Fixed-length tokenizers with one token per scalar (binning: ``h * d`` tokens) get one kernel per
    token position; other tokenizers condition on the whole token sequence of the chunk. Codes seen
    fewer than ``min_count`` times fall back to the state-free mean, then to ``tokenizer.decode``.
    """

    def __init__(self, tokenizer: "ActionTokenizer", state_bins: int = 0, min_count: int = 1) -> None:
        if state_bins < 0 or min_count < 1:
            raise ValueError(f"need state_bins >= 0 and min_count >= 1, got {state_bins}, {min_count}")
        self.tokenizer, self.state_bins, self.min_count = tokenizer, int(state_bins), int(min_count)
        self._plain: _GroupMeans | None = None
        self._conditioned: _GroupMeans | None = None
        self._state_edges: np.ndarray | None = None
        self._seq_ids = _Ids()
        self._cells = np.zeros(0, dtype=np.int64)  # sorted cell codes seen at fit time

    @property
    def per_scalar(self) -> bool:
        tok = self.tokenizer
        return tok.tokens_per_chunk is not None and tok.tokens_per_chunk == tok.chunk_size * tok.action_dim

    def _cell_codes(self, states: np.ndarray | None, n: int) -> np.ndarray:
        """(n,) int64 code of each state's cell (per-dimension quantile bins; edges set by fit)."""
        if states is None:
            raise ValueError(f"this KernelDecoder conditions on the state (state_bins={self.state_bins}): pass states (n, s)")
        s = np.asarray(states, dtype=np.float64).reshape(n, -1)
        if self._state_edges is None:
            self._state_edges = np.quantile(s, np.linspace(0, 1, self.state_bins + 1)[1:-1], axis=0).T  # (s, bins-1)
        if s.shape[1] != self._state_edges.shape[0]:
            raise ValueError(f"states have dimension {s.shape[1]}, the decoder was fitted on {self._state_edges.shape[0]}")
        idx = np.stack([np.searchsorted(e, s[:, j], side="right") for j, e in enumerate(self._state_edges)], axis=1)
        if s.shape[1] * np.log2(self.state_bins + 1) < 62:  # mixed radix fits in int64
            return idx @ (self.state_bins ** np.arange(s.shape[1], dtype=np.int64))
        return np.array([hash(r.tobytes()) for r in idx.astype(np.int16)], dtype=np.int64)

    def _cell_ids(self, codes: np.ndarray) -> np.ndarray:
        """Dense ids of cell codes seen at fit time; -1 for unseen cells."""
        pos = np.clip(np.searchsorted(self._cells, codes), 0, len(self._cells) - 1)
        return np.where(self._cells[pos] == codes, pos, -1)

    def _code_keys(self, tokens: list[list[int]], fitting: bool) -> tuple[np.ndarray, int]:
        """Integer code per value row: (n * h * d,) per scalar, or (n,) per sequence; and rows per chunk."""
        if self.per_scalar:
            t = self.tokenizer.tokens_per_chunk
            bad = [i for i, seq in enumerate(tokens) if len(seq) != t]
            if bad:
                raise ValueError(f"sequences {bad[:5]} do not have {t} tokens; KernelDecoder needs well-formed sequences")
            ids = np.clip(np.asarray(tokens, dtype=np.int64).reshape(len(tokens), t), 0, self.tokenizer.vocab_size - 1)
            return (np.arange(t)[None, :] * self.tokenizer.vocab_size + ids).reshape(-1), t
        rows = [tuple(int(k) for k in seq) for seq in tokens]
        return (self._seq_ids.fit(rows) if fitting else self._seq_ids.get(rows)), 1

    def _with_cells(self, codes: np.ndarray, per_chunk: int, cells: np.ndarray) -> np.ndarray:
        return codes * (len(self._cells) + 1) + np.repeat(cells, per_chunk)

    def fit(self, chunks: np.ndarray, states: np.ndarray | None = None) -> "KernelDecoder":
        """Conditional means from expert chunks ``(n, h, d)`` (and their states ``(n, s)``)."""
        x = np.asarray(chunks, dtype=np.float64)
        n = x.shape[0]
        self._seq_ids, self._state_edges = _Ids(), None
        codes, per_chunk = self._code_keys(self.tokenizer.encode(x), fitting=True)
        values = x.reshape(n * per_chunk, -1)
        self._plain = _GroupMeans(codes, values)
        self._conditioned = None
        if self.state_bins:
            codes_c = self._cell_codes(states, n)
            self._cells = np.unique(codes_c)
            cells = self._cell_ids(codes_c)
            self._conditioned = _GroupMeans(self._with_cells(codes, per_chunk, cells), values)
        return self

    def decode(self, tokens: list[list[int]], states: np.ndarray | None = None) -> np.ndarray:
        """Token sequences -> chunks ``(n, h, d)``: kernel means where known, else the tokenizer's decode."""
        if self._plain is None:
            raise RuntimeError("KernelDecoder is not fitted: call fit(chunks[, states]) first")
        tok, n = self.tokenizer, len(tokens)
        codes, per_chunk = self._code_keys(tokens, fitting=False)
        means, found = self._plain.lookup(codes, self.min_count)
        out = np.where(found[:, None], means, 0.0)
        missing = np.flatnonzero(~found.reshape(n, per_chunk).all(axis=1))
        if missing.size:  # only chunks with an unseen code pay for the tokenizer's own decode
            base = np.asarray(tok.decode([tokens[i] for i in missing]), dtype=np.float64)
            rows = (missing[:, None] * per_chunk + np.arange(per_chunk)).ravel()
            miss = ~found[rows]
            out[rows[miss]] = base.reshape(len(rows), -1)[miss]
        if self._conditioned is not None:
            cells = self._cell_ids(self._cell_codes(states, n))
            means, found_c = self._conditioned.lookup(self._with_cells(codes, per_chunk, cells), self.min_count)
            found_c &= np.repeat(cells >= 0, per_chunk)
            out[found_c] = means[found_c]
        return out.reshape(n, tok.chunk_size, tok.action_dim)
