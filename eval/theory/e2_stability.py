"""E2: the same quantization error under stable and unstable dynamics: bounded vs ~A^H deviation.

Claim: the polynomial-in-H regret bounds need (exponentially incrementally) stable dynamics. With
``x' = A x + B u`` the deviation caused by action errors e_t is ``B sum_k A^(t-1-k) e_k``: bounded
by ``B eps / (1 - A)`` for A < 1, growing like A^H for A > 1.

System: ``x' = A x + B u`` for A in {0.5, 0.9, 1.0, 1.1, 2.0}, B = 1, an expert that plays a
feed-forward signal ``u = 0.8 sin(phi)`` of its phase (state (x, phi), ``phi' = phi + 0.37``) so
that A alone sets the stability, and the library's binning of u (eps = half bin width). Measured:
the largest deviation from the expert's trajectory up to H (mean over rollouts), a fit of its
log against H for A > 1 (the slope should be log A), and the incremental-stability gain estimated
by :func:`eval.theory.diagnostics.incremental_gain` from paired rollouts with common random
numbers on a noisy copy of the system, against the analytic ``B (1 - A^H) / (1 - A)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eval.theory.diagnostics import constant_perturbation, incremental_gain
from eval.theory.results import Claim, ExperimentResult, figure, loglog_slope, markdown_table, save_figure
from eval.theory.systems import LinearSystem, ScalarBinning

A_VALUES = (0.5, 0.9, 1.0, 1.1, 2.0)
B, OMEGA, AMPLITUDE = 1.0, 0.37, 0.8


def _deviation(a: float, phi0: np.ndarray, horizon: int, quantize) -> np.ndarray:
    """max_{s <= t} |x_s - x*_s| for t = 1..horizon, per rollout (b, t); same start for both."""
    dev, phi, out = np.zeros_like(phi0), phi0.copy(), []
    for _ in range(horizon):
        u = AMPLITUDE * np.sin(phi)
        dev = a * dev + B * (quantize(u) - u)  # the deviation obeys the same linear dynamics
        out.append(np.abs(dev))
        phi = phi + OMEGA
    return np.maximum.accumulate(np.stack(out, axis=1), axis=1)


def run(quick: bool = False, seed: int = 0) -> ExperimentResult:
    rng = np.random.default_rng(seed)
    n_rollouts = 200 if quick else 2000
    h_max = 40 if quick else 60
    horizons = np.arange(5, h_max + 1, 5)
    quantizer = ScalarBinning(AMPLITUDE * np.sin(rng.uniform(0, 2 * np.pi, 5000)), n_bins=32)
    eps = quantizer.width / 2
    phi0 = rng.uniform(0, 2 * np.pi, n_rollouts)

    rows, curves, claims, fits, gains = [], {}, [], {}, {}
    for a in A_VALUES:
        dev = _deviation(a, phi0, h_max, quantizer.quantize).mean(axis=0)  # (t,)
        d_h = dev[horizons - 1]
        curves[str(a)] = d_h.tolist()
        sim = LinearSystem(a, B, noise_std=0.1)
        x0 = rng.standard_normal((n_rollouts // 10, 1))
        delta = constant_perturbation(x0.shape[0], h_max, 1, eps, seed=seed)
        g = incremental_gain(sim, x0, delta, policy=lambda x: np.zeros_like(x), seed=seed)
        gains[str(a)] = {"estimated": g.gain, "analytic": sim.gain(h_max)}
        gain_err = abs(g.gain - sim.gain(h_max)) / sim.gain(h_max)
        row = [a, d_h[len(d_h) // 2], d_h[-1], d_h[-1] / d_h[len(d_h) // 2], g.gain, sim.gain(h_max)]
        if a < 1:
            bound = B * eps / (1 - a)
            claims.append(Claim(f"E2 A={a}: deviation at H={h_max} over deviation at H={horizons[len(horizons) // 2]}",
                                float(row[3]), "< 1.25: bounded (the running max creeps up, no growth law)", row[3] < 1.25))
            claims.append(Claim(f"E2 A={a}: deviation at H={h_max} / (B eps / (1 - A))", float(d_h[-1] / bound),
                                "<= 1: below the analytic bound", d_h[-1] <= bound * (1 + 1e-9)))
        if a == 1:
            slope = loglog_slope(horizons, d_h)
            claims.append(Claim("E2 A=1.0: log-log slope of deviation vs H", slope, "<= 1.1: polynomial, not exponential",
                                slope <= 1.1))
        if a > 1:
            late = horizons >= horizons[len(horizons) // 4]
            rate = float(np.polyfit(horizons[late], np.log(d_h[late]), 1)[0])
            fits[str(a)] = rate
            claims.append(Claim(f"E2 A={a}: growth rate of log deviation per step", rate,
                                f"log A = {np.log(a):.3f} (within 15%)", abs(rate / np.log(a) - 1) < 0.15))
        claims.append(Claim(f"E2 A={a}: estimated incremental gain / analytic (CRN, noisy system)", g.gain / sim.gain(h_max),
                            "1 (within 1e-6)", gain_err < 1e-6))
        rows.append(row)

    data = {"A": list(A_VALUES), "B": B, "eps": eps, "horizons": horizons.tolist(), "rollouts": n_rollouts,
            "deviation_by_horizon": curves, "log_growth_rate": fits, "incremental_gain": gains}
    mid = horizons[len(horizons) // 2]
    table = markdown_table(["A", f"deviation H={mid}", f"deviation H={h_max}", "ratio", f"gain H={h_max} (estimated)",
                            "gain (analytic)"], rows)
    table += "\n\n" + "; ".join(f"A={a}: fitted growth {r:.4f}/step vs log A = {np.log(float(a)):.4f}" for a, r in fits.items())

    def plot(path: Path) -> None:
        fig, (ax,) = figure(1, 6.0, 4.2)
        for a in A_VALUES:
            ax.semilogy(horizons, curves[str(a)], "o-", ms=3, label=f"A={a}")
            if a < 1:
                ax.axhline(B * eps / (1 - a), ls=":", lw=0.8, color=ax.lines[-1].get_color())
        ax.set(xlabel="horizon H", ylabel="max deviation from the expert (mean)",
               title=f"E2: quantization error eps={eps:.3g} under stable / unstable dynamics")
        ax.legend()
        save_figure(fig, path)

    return ExperimentResult("e2", "bounded vs exponential deviation under stable and unstable dynamics", data, claims, table, plot)
