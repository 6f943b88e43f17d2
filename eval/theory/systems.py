"""The small systems the theory experiments run on: scalar linear dynamics, the paper's trap, quantizers.

Everything is batched over rollouts with NumPy: a state is a ``(b,)`` array of scalars (or
``(b, 1)`` behind the :class:`~eval.theory.diagnostics.SeededSimulator` protocol).

The trap (Cao & Xie 2026): ``x' = A x + B u`` with ``A = 0.2``, ``B = 0.3``, ``x0 ~ N(0, 1)``,
expert ``u = arctan(x)``, reward ``1 - |u - arctan(x)|`` (so per-step regret is the on-policy
action error). With ``k = 2``, ``d = 1.2`` the learned quantizer outputs

=====================================  =====================================
state interval                         action
=====================================  =====================================
``[-k eps/2, k eps/2]``                ``((d + 1/2) / B) eps``
``[d eps, (d+1) eps]``                 ``1``
``[A d eps + B, A (d+1) eps + B]``     ``((d+1)(1 - A^2) / B) eps - A``
elsewhere                              ``arctan(x) - eps/2``
=====================================  =====================================

The expert is a bijection of the state, so this is a quantizer of the expert action
``u = arctan(x)`` written in state coordinates. Its error is O(eps) where the expert spends its
time (near 0), yet the closed loop goes: near 0 -> ``[1.5, 1.9] eps`` (interval 2, action 1, error
~1) -> ``A x + B`` (interval 3, error ~0.3-0.5) -> ``A^2 x + (d+1)(1 - A^2) eps``, back in interval 2,
for ever. The ``- eps/2`` elsewhere pulls every trajectory to ``-0.3 eps``, inside interval 1,
within about ``log2(1/eps)`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from action_tokenizers.binning import BinningTokenizer

TRAP_A, TRAP_B, TRAP_K, TRAP_D = 0.2, 0.3, 2, 1.2


# --------------------------------------------------------------------------- dynamics
class LinearSystem:
    """``x' = a x + b u + noise_std * w`` for a batch of scalar states; a SeededSimulator.

    ``reset_to(states, seed)`` restarts the noise stream, so two rollouts with the same seed see
    the same ``w_t`` (common random numbers) whatever their actions.
    """

    def __init__(self, a: float, b: float, noise_std: float = 0.0) -> None:
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.a, self.b, self.noise_std = float(a), float(b), float(noise_std)
        self._x: np.ndarray | None = None
        self._rng = np.random.default_rng(0)

    def reset_to(self, states: np.ndarray, seed: int) -> None:
        self._x = np.asarray(states, dtype=np.float64).reshape(-1, 1).copy()
        self._rng = np.random.default_rng(seed)

    def step(self, actions: np.ndarray) -> np.ndarray:
        if self._x is None:
            raise RuntimeError("call reset_to(states, seed) before step")
        u = np.asarray(actions, dtype=np.float64).reshape(self._x.shape)
        w = self._rng.standard_normal(self._x.shape)
        self._x = self.a * self._x + self.b * u + self.noise_std * w
        return self._x.copy()

    def gain(self, horizon: int) -> float:
        """Analytic incremental gain for a constant perturbation: ``|b| * sum_{k<T} |a|^k``."""
        a = abs(self.a)
        return abs(self.b) * (horizon if a == 1.0 else (1.0 - a**horizon) / (1.0 - a))


# --------------------------------------------------------------------------- the trap
@dataclass(frozen=True)
class Trap:
    """The paper's learned quantizer at resolution ``eps`` (see the module docstring)."""

    eps: float
    a: float = TRAP_A
    b: float = TRAP_B
    k: float = TRAP_K
    d: float = TRAP_D

    def intervals(self) -> list[tuple[float, float]]:
        e, a, b, k, d = self.eps, self.a, self.b, self.k, self.d
        return [(-k * e / 2, k * e / 2), (d * e, (d + 1) * e), (a * d * e + b, a * (d + 1) * e + b)]

    def piece(self, x: np.ndarray) -> np.ndarray:
        """Which piece decides the action: 0 elsewhere, 1..3 the three intervals (the 'token' kind)."""
        x = np.asarray(x, dtype=np.float64)
        out = np.zeros(x.shape, dtype=np.int64)
        for i, (lo, hi) in enumerate(self.intervals(), start=1):
            out[(x >= lo) & (x <= hi)] = i
        return out

    def action(self, x: np.ndarray) -> np.ndarray:
        """The trap quantizer's action at states ``x``."""
        e, a, b, d = self.eps, self.a, self.b, self.d
        x = np.asarray(x, dtype=np.float64)
        values = [np.arctan(x) - e / 2, np.full_like(x, (d + 0.5) / b * e), np.ones_like(x),
                  np.full_like(x, (d + 1) * (1 - a**2) / b * e - a)]
        return np.choose(self.piece(x), values)


def expert(x: np.ndarray) -> np.ndarray:
    """The continuous expert of the trap system."""
    return np.arctan(x)


def expert_states(x0: np.ndarray, horizon: int, a: float = TRAP_A, b: float = TRAP_B) -> np.ndarray:
    """States ``(b, t)`` the continuous expert visits from ``x0`` over ``horizon`` steps."""
    xs, x = [], np.asarray(x0, dtype=np.float64)
    for _ in range(horizon):
        xs.append(x)
        x = a * x + b * expert(x)
    return np.stack(xs, axis=1)


def closed_loop_error(act, x0: np.ndarray, horizon: int, a: float = TRAP_A, b: float = TRAP_B) -> tuple[np.ndarray, np.ndarray]:
    """Run ``u = act(x)`` in closed loop; returns (states (b, t), per-step error |u - arctan x| (b, t)).

    With the reward ``1 - |u - arctan(x)|`` the per-step error is the per-step regret.
    """
    xs, errs, x = [], [], np.asarray(x0, dtype=np.float64)
    for _ in range(horizon):
        u = act(x)
        xs.append(x)
        errs.append(np.abs(u - expert(x)))
        x = a * x + b * u
    return np.stack(xs, axis=1), np.stack(errs, axis=1)


# --------------------------------------------------------------------------- quantizers
class ScalarBinning:
    """The library's uniform binning on scalar actions: same edges and rounding as ``BinningTokenizer``."""

    def __init__(self, actions: np.ndarray, n_bins: int) -> None:
        u = np.asarray(actions, dtype=np.float64).reshape(-1, 1, 1)
        self.tokenizer = BinningTokenizer(n_bins=int(n_bins), edges="uniform", normalization="minmax").fit(u)
        self.width = float((u.max() - u.min()) / n_bins)

    @classmethod
    def with_half_width(cls, actions: np.ndarray, eps: float, symmetric: bool = True) -> "ScalarBinning":
        """Uniform bins whose half width (the worst-case error inside the range) is at most ``eps``.

        ``symmetric`` fits on the actions and their negatives with an even number of bins, so 0 is
        a bin edge for an odd expert such as ``arctan``: the closed loop then settles at a
        resolution-limited error of order eps rather than at an accident of where 0 falls in a bin.
        """
        u = np.asarray(actions, dtype=np.float64).ravel()
        if symmetric:
            u = np.concatenate([u, -u])
            return cls(u, max(2, 2 * int(np.ceil(float(np.ptp(u)) / (4 * eps)))))
        return cls(u, max(2, int(np.ceil(float(np.ptp(u)) / (2 * eps)))))

    def tokens(self, u: np.ndarray) -> np.ndarray:
        tok = self.tokenizer
        return tok.encode_array(tok.normalizer.normalize(np.asarray(u, dtype=np.float64).reshape(-1, 1, 1)))[:, 0]

    def decode(self, ids: np.ndarray) -> np.ndarray:
        tok = self.tokenizer
        return tok.normalizer.unnormalize(tok.decode_array(np.asarray(ids).reshape(-1, 1)))[:, 0, 0]

    def quantize(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)
        return self.decode(self.tokens(u)).reshape(u.shape)


class KMeans1D:
    """A k-means codebook on scalar actions (Lloyd's algorithm from quantile seeds), nearest-code decode."""

    def __init__(self, actions: np.ndarray, k: int, iters: int = 30) -> None:
        u = np.sort(np.asarray(actions, dtype=np.float64).ravel())
        c = np.unique(np.quantile(u, (np.arange(k) + 0.5) / k))
        for _ in range(iters):
            idx = self._assign(u, c)
            sums, counts = np.bincount(idx, u, len(c)), np.bincount(idx, minlength=len(c))
            new = np.where(counts > 0, sums / np.maximum(counts, 1), c)
            new = np.unique(new)
            if new.shape == c.shape and np.allclose(new, c):
                break
            c = new
        self.codes = c

    @staticmethod
    def _assign(u: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.searchsorted((c[1:] + c[:-1]) / 2, u)

    def quantize(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)
        return self.codes[self._assign(u, self.codes)]


# --------------------------------------------------------------------------- transition models (E4)
def geometric_knots(smallest: float = 1e-5, largest: float = 8.0, ratio: float = 1.5) -> np.ndarray:
    """Knots at 0 and ``±smallest * ratio^j`` up to ``largest``: fine near 0 where the expert settles."""
    pos = smallest * ratio ** np.arange(int(np.ceil(np.log(largest / smallest) / np.log(ratio))) + 1)
    return np.concatenate([-pos[::-1], [0.0], pos])


class PiecewiseLinearModel:
    """Least-squares transition model ``x' = f(x) + c_token`` with ``f`` piecewise linear on fixed knots.

    Fitted on expert transitions (state, token piece, next state). In the expert's data the token
    is a function of the state, so the Bayes model ignores it; the per-token offsets are there
    because the model is learned on (state, token) pairs, and the fit drives them to ~0.
    ``bias`` is added to every prediction (the biased model of E4).
    """

    def __init__(self, knots: np.ndarray, n_tokens: int = 4, ridge: float = 1e-10) -> None:
        self.knots, self.n_tokens, self.ridge = np.asarray(knots, dtype=np.float64), int(n_tokens), float(ridge)
        self.values: np.ndarray | None = None
        self.offsets = np.zeros(self.n_tokens)
        self.bias = 0.0

    def _design(self, x: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        k = self.knots
        x = np.clip(x, k[0], k[-1])
        j = np.clip(np.searchsorted(k, x, side="right") - 1, 0, len(k) - 2)
        w = (x - k[j]) / (k[j + 1] - k[j])
        phi = np.zeros((x.size, len(k) + self.n_tokens - 1))
        rows = np.arange(x.size)
        phi[rows, j] += 1.0 - w
        phi[rows, j + 1] += w
        has = tokens > 0  # token 0 (elsewhere) is the baseline
        phi[rows[has], len(k) + tokens[has] - 1] = 1.0
        return phi

    def fit(self, x: np.ndarray, tokens: np.ndarray, x_next: np.ndarray) -> "PiecewiseLinearModel":
        x, tokens, y = (np.asarray(v).ravel() for v in (x, tokens, x_next))
        phi = self._design(x.astype(np.float64), tokens.astype(np.int64))
        gram = phi.T @ phi + self.ridge * np.eye(phi.shape[1])
        coef = np.linalg.solve(gram, phi.T @ y)
        self.values = coef[: len(self.knots)]
        self.offsets = np.concatenate([[0.0], coef[len(self.knots):]])
        return self

    def predict(self, x: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        if self.values is None:
            raise RuntimeError("PiecewiseLinearModel is not fitted")
        x = np.asarray(x, dtype=np.float64)
        return np.interp(x, self.knots, self.values) + self.offsets[np.asarray(tokens)] + self.bias


def augmented_error(act, piece, model, x0: np.ndarray, horizon: int, a: float = TRAP_A,
                    b: float = TRAP_B) -> np.ndarray:
    """Model-based augmentation on the trap system; per-step error ``|u - arctan(x)|`` (b, t).

    The policy ``act`` is queried on an auxiliary state propagated by ``model(x_aux, token)`` from
    the real initial state; its actions run open loop in the real system ``x' = a x + b u``.
    """
    x = np.asarray(x0, dtype=np.float64)
    aux, errs = x.copy(), []
    for _ in range(horizon):
        u = act(aux)
        errs.append(np.abs(u - expert(x)))
        x = a * x + b * u
        aux = model(aux, piece(aux))
    return np.stack(errs, axis=1)
