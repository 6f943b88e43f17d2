"""E3: a learned quantizer with O(eps) error on the expert's data and Omega(1) regret per step.

Claim (Cao & Xie 2026): small in-distribution quantization error does not make behaviour cloning
safe; the paper's construction (see :mod:`eval.theory.systems`) traps the closed loop between two
intervals where its error is about 1 and 0.3-0.5, for every eps, even with infinite data.
Against it: uniform binning with worst-case error eps (the library's ``BinningTokenizer``, which
keeps the thresholded smoothness), and a k-means codebook with the same vocabulary fitted on the
expert's actions (a learned quantizer that happens to be benign here).

Reported per eps: in-distribution error (mean and worst |q - arctan x| over the expert's states),
on-policy error (the same over the states each policy visits itself), the relaxed-TV-continuity
violation rate (pairs within distance eps whose actions differ by more than 2 eps + |dx|, the most
binning can move) on the expert's and on the policy's states, and regret per step at H much
larger than |log eps| (regret = on-policy error here, since the reward is 1 - |u - arctan x|).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eval.theory.diagnostics import action_error, continuity_violation_rate
from eval.theory.results import Claim, ExperimentResult, eps_ticks, figure, loglog_slope, markdown_table, save_figure
from eval.theory.systems import KMeans1D, ScalarBinning, Trap, closed_loop_error, expert, expert_states

EPS = (1 / 32, 1 / 128, 1 / 512)
QUANTIZERS = ("learned_trap", "binning", "kmeans")


def eps_key(eps: float) -> str:
    """The JSON key of an eps value (``str(1/32) == '0.03125'``)."""
    return str(float(eps))


def policies(eps: float, expert_x: np.ndarray, seed: int = 0) -> dict[str, object]:
    """The three quantized policies ``x -> u`` at resolution eps; binning and k-means fitted on expert data."""
    u = expert(expert_x).ravel()
    binning = ScalarBinning.with_half_width(u, eps)
    sample = np.random.default_rng(seed).choice(u, size=min(u.size, 20000), replace=False)
    kmeans = KMeans1D(sample, binning.tokenizer.vocab_size)
    return {
        "learned_trap": Trap(eps).action,
        "binning": lambda x: binning.quantize(expert(x)),
        "kmeans": lambda x: kmeans.quantize(expert(x)),
    }


def _violations(act, states: np.ndarray, eps: float, seed: int) -> float:
    sample = np.random.default_rng(seed).choice(states.ravel(), size=min(states.size, 5000), replace=False)
    rep = continuity_violation_rate(lambda s: act(s[:, 0])[:, None], sample[:, None], radius=eps,
                                    threshold=2 * eps * (1 + 1e-9), lipschitz=1.0, seed=seed)
    return rep.rate


def run(quick: bool = False, seed: int = 0) -> ExperimentResult:
    rng = np.random.default_rng(seed)
    n_rollouts, horizon = (500, 100) if quick else (5000, 300)
    x0 = rng.standard_normal(n_rollouts)
    xs_expert = expert_states(x0, horizon)
    regret = {q: {} for q in QUANTIZERS}
    stats: dict[str, dict[str, dict[str, float]]] = {q: {} for q in QUANTIZERS}
    for eps in EPS:
        for name, act in policies(eps, xs_expert, seed).items():
            xs, err = closed_loop_error(act, x0, horizon)
            ind = action_error(expert(xs_expert)[..., None], act(xs_expert)[..., None])
            on = action_error(expert(xs)[..., None], act(xs)[..., None])
            regret[name][eps_key(eps)] = float(err.mean())
            stats[name][eps_key(eps)] = {
                "in_distribution_error_mean": ind.mean, "in_distribution_error_worst": ind.worst,
                "on_policy_error_mean": on.mean, "on_policy_error_worst": on.worst,
                "violation_rate_expert_states": _violations(act, xs_expert, eps, seed),
                "violation_rate_policy_states": _violations(act, xs, eps, seed),
                "trapped_share": float(np.mean(err[:, -1] > 0.25)),
            }

    keys = [eps_key(e) for e in EPS]
    trap_ind = [stats["learned_trap"][k]["in_distribution_error_mean"] for k in keys]
    bin_regret = [regret["binning"][k] for k in keys]
    slope_ind, slope_bin = loglog_slope(EPS, trap_ind), loglog_slope(EPS, bin_regret)
    claims = [Claim(f"E3 learned_trap regret per step, eps=1/{round(1 / e)}", regret["learned_trap"][k], "> 0.5",
                    regret["learned_trap"][k] > 0.5) for e, k in zip(EPS, keys)]
    claims += [
        Claim("E3 learned_trap in-distribution error vs eps, log-log slope", slope_ind, ">= 0.7 (O(eps), expected 1)",
              slope_ind >= 0.7 and all(np.diff(trap_ind) < 0)),
        Claim("E3 learned_trap in-distribution error / eps (worst over eps)", max(i / e for i, e in zip(trap_ind, EPS)),
              "<= 10: O(eps)", max(i / e for i, e in zip(trap_ind, EPS)) <= 10),
        Claim("E3 binning regret per step vs eps, log-log slope", slope_bin, ">= 0.7 (expected 1)",
              slope_bin >= 0.7 and all(np.diff(bin_regret) < 0)),
        Claim("E3 violation rate on policy states, learned_trap minus binning (smallest eps)",
              stats["learned_trap"][keys[-1]]["violation_rate_policy_states"] - stats["binning"][keys[-1]]["violation_rate_policy_states"],
              "> 0.1: the trap is not relaxed-TV continuous, binning is",
              stats["learned_trap"][keys[-1]]["violation_rate_policy_states"] > 0.1
              and stats["binning"][keys[-1]]["violation_rate_policy_states"] == 0.0),
    ]
    data = {"eps": list(EPS), "horizon": horizon, "rollouts": n_rollouts, "regret_per_step": regret, "details": stats,
            "slope_in_distribution_error": slope_ind, "slope_binning_regret": slope_bin}
    rows = [[name, f"1/{round(1 / e)}", stats[name][k]["in_distribution_error_mean"], stats[name][k]["on_policy_error_mean"],
             stats[name][k]["violation_rate_expert_states"], stats[name][k]["violation_rate_policy_states"], regret[name][k]]
            for name in QUANTIZERS for e, k in zip(EPS, keys)]
    table = markdown_table(["quantizer", "eps", "in-dist error", "on-policy error", "violations (expert states)",
                            "violations (policy states)", f"regret/step (H={horizon})"], rows)
    table += f"\n\nslopes in eps: learned_trap in-distribution error {slope_ind:.3f} (expected 1), binning regret {slope_bin:.3f} (expected 1)"

    def plot(path: Path) -> None:
        fig, (ax,) = figure(1, 6.0, 4.2)
        for name, style in zip(QUANTIZERS, ("o-", "s-", "^-")):
            ax.loglog(EPS, [regret[name][k] for k in keys], style, label=f"{name}: regret / step")
        ax.loglog(EPS, trap_ind, "o:", color="C0", label="learned_trap: in-distribution error")
        ax.axhline(0.5, color="k", lw=0.8, ls="--")
        eps_ticks(ax, EPS)
        ax.set(xlabel="eps", ylabel="per-step regret / error", title=f"E3: the learned-quantizer trap (H={horizon})")
        ax.legend(fontsize=8)
        save_figure(fig, path)

    return ExperimentResult("e3", "a learned quantizer with O(eps) in-distribution error and Omega(1) regret", data, claims, table, plot)
