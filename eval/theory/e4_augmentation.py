"""E4: model-based augmentation rescues the E3 trap; a biased model leaves a floor.

Claim: learn a transition model on (state, token) -> next state from expert data, propagate an
auxiliary state with it from the real initial state, query the policy on the auxiliary state and
execute the decoded actions in the real system open loop: regret <~ H (sqrt((log|Pi| + log|M|)/n)
+ eps), with no smoothness needed, only open-loop stability (here |A| = 0.2). A biased model
leaves a floor.

The policy is E3's learned trap quantizer itself. Models (of the expert's transitions, so the
auxiliary state follows the expert's trajectory and the policy is only ever asked where its error
is O(eps)):

- ``augmented_exact``: ``E[x' | x, token] = A x + B arctan(x)`` (in the expert's data the token is a
  function of the state);
- ``augmented_learned``: least squares on expert transitions with a piecewise-linear function of
  the state plus one offset per token piece (:class:`eval.theory.systems.PiecewiseLinearModel`);
- ``augmented_biased``: the learned model plus a constant bias (0.1 in ``regret_per_step``; a sweep
  over biases in ``bias_sweep``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eval.theory.e3_learned_trap import EPS, eps_key
from eval.theory.results import Claim, ExperimentResult, eps_ticks, figure, loglog_slope, markdown_table, save_figure
from eval.theory.systems import (
    TRAP_A,
    TRAP_B,
    PiecewiseLinearModel,
    Trap,
    augmented_error,
    closed_loop_error,
    expert,
    expert_states,
    geometric_knots,
)

QUANTIZERS = ("learned_trap", "augmented_exact", "augmented_learned", "augmented_biased")
DEFAULT_BIAS = 0.1
BIASES = (0.05, 0.1, 0.2)


def exact_model(x: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    return TRAP_A * x + TRAP_B * expert(x)


def learned_model(trap: Trap, n_train: int, horizon: int, seed: int, max_rows: int = 40000) -> PiecewiseLinearModel:
    """Least squares on (state, token piece) -> next state pairs from n_train expert trajectories."""
    rng = np.random.default_rng(seed + 1)
    xs = expert_states(rng.standard_normal(n_train), horizon + 1)
    x, x_next = xs[:, :-1].ravel(), xs[:, 1:].ravel()
    keep = rng.choice(x.size, size=min(x.size, max_rows), replace=False)
    return PiecewiseLinearModel(geometric_knots()).fit(x[keep], trap.piece(x[keep]), x_next[keep])


def run(quick: bool = False, seed: int = 0) -> ExperimentResult:
    rng = np.random.default_rng(seed)
    n_rollouts, horizon, n_train = (500, 100, 200) if quick else (5000, 300, 2000)
    x0 = rng.standard_normal(n_rollouts)
    regret = {q: {} for q in QUANTIZERS}
    sweep: dict[str, dict[str, float]] = {str(b): {} for b in BIASES}
    model_error: dict[str, float] = {}
    for eps in EPS:
        trap, k = Trap(eps), eps_key(eps)
        learned = learned_model(trap, n_train, horizon, seed)
        held_out = expert_states(x0[:200], horizon).ravel()  # where the auxiliary state will go
        model_error[k] = float(np.abs(learned.predict(held_out, trap.piece(held_out)) - exact_model(held_out, None)).max())
        regret["learned_trap"][k] = float(closed_loop_error(trap.action, x0, horizon)[1].mean())
        regret["augmented_exact"][k] = float(augmented_error(trap.action, trap.piece, exact_model, x0, horizon).mean())
        regret["augmented_learned"][k] = float(augmented_error(trap.action, trap.piece, learned.predict, x0, horizon).mean())
        for bias in BIASES:
            learned.bias = bias
            sweep[str(bias)][k] = float(augmented_error(trap.action, trap.piece, learned.predict, x0, horizon).mean())
        learned.bias = 0.0
        regret["augmented_biased"][k] = sweep[str(DEFAULT_BIAS)][k]

    keys = [eps_key(e) for e in EPS]
    claims = []
    for name in ("augmented_exact", "augmented_learned"):
        values = [regret[name][k] for k in keys]
        slope, worst = loglog_slope(EPS, values), max(v / e for v, e in zip(values, EPS))
        claims.append(Claim(f"E4 {name} regret per step vs eps, log-log slope", slope, "0.7 to 1.3: O(eps)", 0.7 <= slope <= 1.3))
        claims.append(Claim(f"E4 {name} regret per step / eps (worst over eps)", worst, "<= 10: O(eps)", worst <= 10))
    small = keys[-1]
    floor = [sweep[str(b)][small] for b in BIASES]
    claims += [
        Claim(f"E4 augmented_biased (bias {DEFAULT_BIAS}) regret / augmented_exact, eps=1/{round(1 / EPS[-1])}",
              regret["augmented_biased"][small] / regret["augmented_exact"][small], "> 3: a floor above O(eps)",
              regret["augmented_biased"][small] > 3 * regret["augmented_exact"][small]),
        Claim("E4 biased floor vs bias at the smallest eps, log-log slope", loglog_slope(BIASES, floor),
              "> 0.5 and increasing: the floor grows with the bias", loglog_slope(BIASES, floor) > 0.5 and all(np.diff(floor) > 0)),
        Claim("E4 biased floor spread across eps (max/min, bias 0.1)",
              max(regret["augmented_biased"].values()) / min(regret["augmented_biased"].values()),
              "< 1.5: does not shrink with eps", max(regret["augmented_biased"].values()) / min(regret["augmented_biased"].values()) < 1.5),
    ]
    data = {"eps": list(EPS), "horizon": horizon, "rollouts": n_rollouts, "train_trajectories": n_train,
            "regret_per_step": regret, "bias": DEFAULT_BIAS, "bias_sweep": sweep, "learned_model_max_error": model_error}
    rows = [[f"1/{round(1 / e)}"] + [regret[q][k] for q in QUANTIZERS] + [model_error[k]] for e, k in zip(EPS, keys)]
    table = markdown_table(["eps"] + [f"{q} regret/step" for q in QUANTIZERS] + ["learned model max error (expert states)"], rows)
    table += "\n\n" + markdown_table(["bias"] + [f"regret/step eps=1/{round(1 / e)}" for e in EPS],
                                     [[b] + [sweep[str(b)][k] for k in keys] for b in BIASES])

    def plot(path: Path) -> None:
        fig, (ax1, ax2) = figure(2)
        for name, style in zip(QUANTIZERS, ("o-", "s-", "^--", "v-")):
            ax1.loglog(EPS, [regret[name][k] for k in keys], style, label=name)
        ax1.set(xlabel="eps", ylabel="regret per step", title=f"E4: augmentation on the trap (H={horizon})")
        ax1.legend(fontsize=8)
        eps_ticks(ax1, EPS)
        for e, k in zip(EPS, keys):
            ax2.loglog(BIASES, [sweep[str(b)][k] for b in BIASES], "o-", label=f"eps=1/{round(1 / e)}")
        ax2.set(xlabel="model bias", ylabel="regret per step", title="E4: floor of a biased model")
        ax2.legend(fontsize=8)
        save_figure(fig, path)

    return ExperimentResult("e4", "model-based augmentation with exact, learned and biased models", data, claims, table, plot)
