"""E1: regret of uniform binning on a stable linear system, against eps and against the horizon H.

Claim (deterministic expert, uniform binning): regret <~ H (gamma((k+1) eps) + (k+1) eps), i.e.
per-step regret proportional to eps and flat in H, total regret linear in H, not exponential.

System: ``x' = A x + B u`` (A = 0.9, B = 0.5, open-loop stable) tracking a reference
``r_t = 0.8 sin(phi_t)``, ``phi' = phi + omega``; the state is (x, phi). The expert contracts the
tracking error, ``x' - r' = rho (x - r)`` with rho = 0.5, and its actions are binned with the
library's ``BinningTokenizer`` (uniform edges, n bins); eps is measured on the expert's data with
:func:`eval.theory.diagnostics.quantization_eps` (half the bin width). Reward
``1 - |x - r|``; regret is the expert's return minus the binned policy's, from the same starts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from action_tokenizers.binning import BinningTokenizer
from eval.theory.diagnostics import quantization_eps
from eval.theory.results import Claim, ExperimentResult, figure, loglog_slope, markdown_table, save_figure

A, B, RHO, OMEGA, AMPLITUDE = 0.9, 0.5, 0.5, 0.37, 0.8


def _reference(phi: np.ndarray) -> np.ndarray:
    return AMPLITUDE * np.sin(phi)


def _expert(x: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """The action that makes the next tracking error rho times the current one."""
    return (_reference(phi + OMEGA) + RHO * (x - _reference(phi)) - A * x) / B


def _costs(x0: np.ndarray, phi0: np.ndarray, horizon: int, quantize=None) -> np.ndarray:
    """Per-step tracking cost |x - r| (b, t) of the expert (quantize=None) or its binned version."""
    x, phi, out = x0.copy(), phi0.copy(), []
    for _ in range(horizon):
        out.append(np.abs(x - _reference(phi)))
        u = _expert(x, phi)
        if quantize is not None:
            u = quantize(u)
        x, phi = A * x + B * u, phi + OMEGA
    return np.stack(out, axis=1)


def _binning(actions: np.ndarray, n_bins: int) -> tuple[BinningTokenizer, float]:
    tok = BinningTokenizer(n_bins=n_bins, edges="uniform", normalization="minmax").fit(actions.reshape(-1, 1, 1))
    return tok, quantization_eps(tok, actions.reshape(-1, 1, 1)).worst


def _quantizer(tok: BinningTokenizer):
    def quantize(u: np.ndarray) -> np.ndarray:
        ids = tok.encode_array(tok.normalizer.normalize(u.reshape(-1, 1, 1)))
        return tok.normalizer.unnormalize(tok.decode_array(ids)).reshape(u.shape)

    return quantize


def run(quick: bool = False, seed: int = 0) -> ExperimentResult:
    rng = np.random.default_rng(seed)
    n_rollouts = 300 if quick else 3000
    bins = [8, 16, 32, 64, 128] if quick else [8, 16, 32, 64, 128, 256, 512]
    horizons = [50, 100, 200, 400] if quick else [25, 50, 100, 200, 400, 800]
    h_eps = 200
    phi0 = rng.uniform(0, 2 * np.pi, n_rollouts)
    x0 = _reference(phi0) + 0.5 * rng.standard_normal(n_rollouts)
    h_max = max(horizons + [h_eps])
    expert_cost = _costs(x0, phi0, h_max)
    x_data = np.concatenate([_reference(phi0) + rng.standard_normal(n_rollouts) for _ in range(4)])
    demo_actions = _expert(x_data, np.tile(phi0, 4))  # a spread of expert actions to fit the bins on

    eps, per_step = [], []
    by_h: dict[int, list[float]] = {}
    for n in bins:
        tok, e = _binning(demo_actions, n)
        gap = _costs(x0, phi0, h_max, _quantizer(tok)) - expert_cost  # (b, t) per-step regret
        eps.append(e)
        per_step.append(float(gap[:, :h_eps].sum(axis=1).mean() / h_eps))
        by_h[n] = [float(gap[:, :h].sum(axis=1).mean()) for h in horizons]

    slope_eps = loglog_slope(eps, per_step)
    mid = bins[len(bins) // 2]
    slope_h = loglog_slope(horizons, by_h[mid])
    flat = [r / h for r, h in zip(by_h[mid], horizons)]
    flat_ratio = max(flat) / min(flat)
    claims = [
        Claim("E1 per-step regret vs eps, log-log slope", slope_eps, "1 (0.8 to 1.2)", 0.8 <= slope_eps <= 1.2),
        Claim(f"E1 total regret vs H, log-log slope ({mid} bins)", slope_h, "1 (0.85 to 1.15): linear in H", 0.85 <= slope_h <= 1.15),
        Claim(f"E1 per-step regret max/min over H ({mid} bins)", flat_ratio, "< 1.5: flat in H", flat_ratio < 1.5),
    ]
    data = {
        "system": {"A": A, "B": B, "rho": RHO, "omega": OMEGA, "amplitude": AMPLITUDE, "rollouts": n_rollouts},
        "n_bins": bins, "eps": eps, "regret_per_step": per_step, "horizon_for_eps": h_eps,
        "horizons": horizons, "total_regret_by_horizon": {str(n): v for n, v in by_h.items()},
        "slope_eps": slope_eps, "slope_horizon": slope_h,
    }
    rows = [[n, e, r, r / e] for n, e, r in zip(bins, eps, per_step)]
    table = (markdown_table(["bins", "eps (worst, expert data)", f"regret per step (H={h_eps})", "regret / eps"], rows)
             + "\n\n" + markdown_table(["H"] + [f"total regret, {n} bins" for n in bins],
                                       [[h] + [by_h[n][i] for n in bins] for i, h in enumerate(horizons)])
             + f"\n\nslope in eps: {slope_eps:.3f} (expected 1); slope in H: {slope_h:.3f} (expected 1)")

    def plot(path: Path) -> None:
        fig, (ax1, ax2) = figure(2)
        ax1.loglog(eps, per_step, "o-", label=f"binning (slope {slope_eps:.2f})")
        ax1.loglog(eps, np.array(eps) * per_step[-1] / eps[-1], "k--", lw=0.8, label="slope 1")
        ax1.set(xlabel="eps (worst-case quantization error)", ylabel="regret per step", title=f"E1: regret vs eps (H={h_eps})")
        ax1.legend()
        for n in bins[::2]:
            ax2.loglog(horizons, by_h[n], "o-", label=f"{n} bins")
        ax2.set(xlabel="horizon H", ylabel="total regret", title=f"E1: regret vs H (slope {slope_h:.2f} at {mid} bins)")
        ax2.legend()
        save_figure(fig, path)

    return ExperimentResult("e1", "regret vs eps and H for binning on a stable linear system", data, claims, table, plot)
