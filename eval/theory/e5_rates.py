"""E5: statistical rates of log-loss behaviour cloning on tokens: n^-1/2 (stochastic) vs 1/n (deterministic).

Claims: with a stochastic quantized expert, regret <~ H sqrt(log|Pi| / n) (and Omega(H sqrt(1/n)));
with a deterministic expert and a finite class, regret <~ H log|Pi| / n (and Omega(H / n)).

System ``x' = A x + B u`` (A = B = 0.5, x0 ~ N(0, 1), H = 10); actions are tokens of the library's
uniform binning (16 bins) and the policy class is ``f_theta(x) = arctan(x - theta)`` with
theta* = 0.1, learned from n expert trajectories by maximum likelihood (log loss):

- deterministic expert: token = bin of f_theta*(x); the class is a grid of 2^20 thetas in
  [-0.5, 0.5] (log|Pi| = 13.9); every theta consistent with all (state, token) pairs has log loss 0,
  and one is picked at random (the consistent set is an interval, computed exactly);
- stochastic expert: token ~ softmax(-(c_k - f_theta*(x))^2 / (2 tau^2)) over the bin centres c_k
  (tau = one bin width); theta by numerical maximum likelihood.

Regret is ``|J(expert) - J(learned)|`` for the bounded reward ``r = (u - u_min) / (u_max - u_min)``,
which the expert does not maximize, so the gap is first order in the policy error (as in the
lower-bound constructions; for a reward the expert maximizes it would be second order). Both
policies start from the same states and, for the stochastic expert, share the uniforms that
sample the tokens (common random numbers); expected rewards are averaged analytically per step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eval.theory.results import Claim, ExperimentResult, figure, loglog_slope, markdown_table, save_figure
from eval.theory.systems import ScalarBinning

A, B, HORIZON, THETA_STAR, N_BINS, GRID_BITS = 0.5, 0.5, 10, 0.1, 16, 20
GRID = np.linspace(-0.5, 0.5, 2**GRID_BITS)


class TokenClass:
    """The policy class over tokens: deterministic bins of f_theta, or a Gibbs distribution around it."""

    def __init__(self) -> None:
        self.bins = ScalarBinning(np.linspace(-np.pi / 2, np.pi / 2, 101), N_BINS)
        self.centres = self.bins.decode(np.arange(N_BINS))
        inner = self.bins.tokenizer.edges_[0, 1:-1]
        self.edges = self.bins.tokenizer.normalizer.unnormalize(inner[:, None])[:, 0]  # raw inner edges
        self.tau = self.bins.width
        self.lo, self.hi = float(self.centres.min()), float(self.centres.max())

    def reward(self, u: np.ndarray) -> np.ndarray:
        return (u - self.lo) / (self.hi - self.lo)

    def det_tokens(self, x: np.ndarray, theta: float | np.ndarray) -> np.ndarray:
        return self.bins.tokens(np.arctan(x - theta)).reshape(np.shape(x))

    def probs(self, x: np.ndarray, theta: float | np.ndarray) -> np.ndarray:
        """(..., v) token probabilities of the stochastic class."""
        logits = -((self.centres - np.arctan(np.asarray(x) - theta)[..., None]) ** 2) / (2 * self.tau**2)
        logits -= logits.max(axis=-1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=-1, keepdims=True)


def _rollouts(cls: TokenClass, theta, x0: np.ndarray, uniforms: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, float]:
    """States (b, H), tokens (b, H) and mean return of the deterministic (uniforms None) or stochastic policy."""
    x, states, tokens, ret = x0.copy(), [], [], np.zeros_like(x0)
    for t in range(HORIZON):
        if uniforms is None:
            k = cls.det_tokens(x, theta)
            ret += cls.reward(cls.centres[k])
        else:
            p = cls.probs(x, theta)
            ret += cls.reward(p @ cls.centres)  # expected reward given the state (Rao-Blackwellized)
            k = np.minimum((np.cumsum(p, axis=1) < uniforms[:, t : t + 1]).sum(axis=1), N_BINS - 1)
        states.append(x)
        tokens.append(k)
        x = A * x + B * cls.centres[k]
    return np.stack(states, 1), np.stack(tokens, 1), float(ret.mean())


def fit_deterministic(cls: TokenClass, x: np.ndarray, k: np.ndarray, rng: np.random.Generator) -> float:
    """A random theta on the grid among those consistent with every (state, token) pair (log loss 0)."""
    upper = np.concatenate([cls.edges, [np.pi / 2]])[k]  # arctan(x - theta) < upper edge of bin k
    lower = np.concatenate([[-np.pi / 2], cls.edges])[k]  # arctan(x - theta) >= lower edge
    lo = np.max(x - np.tan(np.minimum(upper, np.pi / 2 - 1e-12)))  # theta > lo
    hi = np.min(x - np.tan(np.maximum(lower, -np.pi / 2 + 1e-12)))  # theta <= hi
    step = GRID[1] - GRID[0]
    i_lo = int(np.clip(np.floor((lo - GRID[0]) / step) + 1, 0, len(GRID) - 1))
    i_hi = int(np.clip(np.floor((hi - GRID[0]) / step + 1e-9), 0, len(GRID) - 1))
    return float(GRID[rng.integers(i_lo, max(i_lo, i_hi) + 1)])


def fit_stochastic(cls: TokenClass, x: np.ndarray, k: np.ndarray) -> float:
    """Maximum-likelihood theta of the Gibbs class on (state, token) pairs."""
    from scipy.optimize import minimize_scalar

    def nll(theta: float) -> float:
        return -float(np.log(cls.probs(x, theta)[np.arange(x.size), k] + 1e-300).sum())

    return float(minimize_scalar(nll, bounds=(-0.5, 0.5), method="bounded", options={"xatol": 1e-7}).x)


def run(quick: bool = False, seed: int = 0) -> ExperimentResult:
    rng = np.random.default_rng(seed)
    cls = TokenClass()
    ns = [4, 16, 64, 256] if quick else [2, 4, 8, 16, 32, 64, 128, 256, 512]
    repeats, n_eval = (12, 2000) if quick else (40, 8000)
    det_repeats = 3 * repeats  # the deterministic fit is cheap and its error heavy-tailed
    x_eval = rng.standard_normal(n_eval)
    u_eval = rng.uniform(size=(n_eval, HORIZON))
    theta_star = GRID[np.argmin(np.abs(GRID - THETA_STAR))]
    j_det = _rollouts(cls, theta_star, x_eval, None)[2]
    j_sto = _rollouts(cls, theta_star, x_eval, u_eval)[2]
    regret = {"deterministic": [], "stochastic": []}
    theta_err = {"deterministic": [], "stochastic": []}
    for n in ns:
        det, sto, det_e, sto_e = [], [], [], []
        for _ in range(det_repeats):
            xs, ks, _ = _rollouts(cls, theta_star, rng.standard_normal(n), None)
            th = fit_deterministic(cls, xs.ravel(), ks.ravel(), rng)
            det.append(abs(j_det - _rollouts(cls, th, x_eval, None)[2]) / HORIZON)
            det_e.append(abs(th - theta_star))
        for _ in range(repeats):
            xs, ks, _ = _rollouts(cls, theta_star, rng.standard_normal(n), rng.uniform(size=(n, HORIZON)))
            th = fit_stochastic(cls, xs.ravel(), ks.ravel())
            sto.append(abs(j_sto - _rollouts(cls, th, x_eval, u_eval)[2]) / HORIZON)
            sto_e.append(abs(th - theta_star))
        regret["deterministic"].append(float(np.mean(det)))
        regret["stochastic"].append(float(np.mean(sto)))
        theta_err["deterministic"].append(float(np.mean(det_e)))
        theta_err["stochastic"].append(float(np.mean(sto_e)))

    s_det, s_sto = loglog_slope(ns, regret["deterministic"]), loglog_slope(ns, regret["stochastic"])
    claims = [
        Claim("E5 deterministic expert, finite class: regret vs n, log-log slope", s_det, "-1 (-1.35 to -0.7): log|Pi|/n",
              -1.35 <= s_det <= -0.7),
        Claim("E5 stochastic expert: regret vs n, log-log slope", s_sto, "-0.5 (-0.7 to -0.3): sqrt(1/n)", -0.7 <= s_sto <= -0.3),
        Claim("E5 deterministic minus stochastic slope", s_det - s_sto, "< -0.2: the deterministic rate is faster",
              s_det - s_sto < -0.2),
    ]
    data = {"n_trajectories": ns, "horizon": HORIZON, "repeats": {"deterministic": det_repeats, "stochastic": repeats}, "log_class_size": GRID_BITS * np.log(2),
            "regret_per_step": regret, "theta_error": theta_err, "slope_deterministic": s_det, "slope_stochastic": s_sto}
    rows = [[n, regret["deterministic"][i], theta_err["deterministic"][i], regret["stochastic"][i], theta_err["stochastic"][i]]
            for i, n in enumerate(ns)]
    table = markdown_table(["n trajectories", "regret/step deterministic", "|theta error| det.", "regret/step stochastic",
                            "|theta error| stoch."], rows)
    table += f"\n\nslopes in n: deterministic {s_det:.3f} (expected -1), stochastic {s_sto:.3f} (expected -0.5)"

    def plot(path: Path) -> None:
        fig, (ax,) = figure(1, 6.0, 4.2)
        ax.loglog(ns, regret["deterministic"], "o-", label=f"deterministic expert (slope {s_det:.2f}, expected -1)")
        ax.loglog(ns, regret["stochastic"], "s-", label=f"stochastic expert (slope {s_sto:.2f}, expected -0.5)")
        ax.set(xlabel="n expert trajectories", ylabel="regret per step", title=f"E5: statistical rates (H={HORIZON})")
        ax.legend(fontsize=8)
        save_figure(fig, path)

    return ExperimentResult("e5", "statistical rates: stochastic vs deterministic expert", data, claims, table, plot)
