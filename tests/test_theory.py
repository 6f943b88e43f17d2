"""Each theory experiment on its quick instance: the paper's qualitative claims must hold."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from eval.theory import EXPERIMENTS, TheoryConfig, run_experiment, run_theory
from eval.theory.results import ExperimentResult
from eval.theory.systems import TRAP_A, TRAP_B, Trap, closed_loop_error, expert


@functools.cache
def quick(name: str) -> ExperimentResult:
    return run_experiment(name, quick=True, seed=0)


def _failed(result: ExperimentResult) -> list[str]:
    return [f"{c.claim}: measured {c.measured:.4g}, expected {c.expected}" for c in result.claims if not c.holds]


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_claim_holds_on_the_quick_instance(name: str) -> None:
    result = quick(name)
    assert result.claims, f"{name} checks no claim"
    assert not _failed(result), _failed(result)


def test_e1_slope_near_one_and_flat_in_horizon() -> None:
    d = quick("e1").data
    assert 0.8 <= d["slope_eps"] <= 1.2
    per_step = np.array(next(iter(d["total_regret_by_horizon"].values()))) / np.array(d["horizons"])
    assert per_step.max() / per_step.min() < 1.5


def test_e2_bounded_for_stable_and_exponential_for_unstable() -> None:
    d = quick("e2").data
    stable, unstable = d["deviation_by_horizon"]["0.5"], d["deviation_by_horizon"]["2.0"]
    assert stable[-1] / stable[len(stable) // 2] < 1.25
    assert d["log_growth_rate"]["2.0"] == pytest.approx(np.log(2.0), rel=0.15)
    assert d["log_growth_rate"]["1.1"] == pytest.approx(np.log(1.1), rel=0.15)


def test_e3_trap_regret_stays_high_while_in_distribution_error_shrinks() -> None:
    d = quick("e3").data
    keys = [str(e) for e in (1 / 32, 1 / 128, 1 / 512)]
    assert set(d["regret_per_step"]) == {"learned_trap", "binning", "kmeans"}
    assert all(d["regret_per_step"]["learned_trap"][k] > 0.5 for k in keys)
    ind = [d["details"]["learned_trap"][k]["in_distribution_error_mean"] for k in keys]
    binning = [d["regret_per_step"]["binning"][k] for k in keys]
    assert ind[0] > ind[1] > ind[2] and binning[0] > binning[1] > binning[2]


def test_e4_augmentation_reaches_order_eps_and_bias_leaves_a_floor() -> None:
    d = quick("e4").data
    r = d["regret_per_step"]
    assert {"augmented_exact", "augmented_learned", "augmented_biased"} <= set(r)
    for eps in (1 / 32, 1 / 128, 1 / 512):
        k = str(eps)
        assert r["augmented_exact"][k] <= 10 * eps and r["augmented_learned"][k] <= 10 * eps
        assert r["augmented_exact"][k] < r["learned_trap"][k] / 5
    small = str(1 / 512)
    floors = [d["bias_sweep"][str(b)][small] for b in (0.05, 0.1, 0.2)]
    assert floors[0] < floors[1] < floors[2] and floors[0] > 3 * r["augmented_exact"][small]


def test_e5_rates() -> None:
    d = quick("e5").data
    assert -1.35 <= d["slope_deterministic"] <= -0.7
    assert -0.7 <= d["slope_stochastic"] <= -0.3


def test_e6_kernel_beats_centre_decoding_with_coarse_bins() -> None:
    d = quick("e6").data
    err, reg = d["heldout_abs_error"], d["regret_per_step"]
    assert err["kernel"][0] < 0.8 * err["centre"][0]
    assert err["kernel_state"][0] < err["kernel"][0]
    assert reg["kernel_state"][0] < 0.5 * reg["centre"][0]


def test_the_trap_construction_cycles_between_intervals_two_and_three() -> None:
    eps = 1 / 128
    trap = Trap(eps)
    _, i2, i3 = trap.intervals()
    x = np.array([0.3 * eps])  # inside interval 1
    seen = []
    for _ in range(8):
        seen.append(int(trap.piece(x)[0]))
        x = TRAP_A * x + TRAP_B * trap.action(x)
    assert seen == [1, 2, 3, 2, 3, 2, 3, 2]
    assert i2[0] < 2 * eps < i2[1] and i3[0] > TRAP_B
    # and the whole N(0, 1) start distribution falls in within |log eps| steps
    xs, err = closed_loop_error(trap.action, np.random.default_rng(0).standard_normal(500), 40)
    assert np.all(trap.piece(xs[:, -1]) >= 2) and err[:, 20:].mean() > 0.5
    assert np.abs(trap.action(np.linspace(-3, 3, 101)) - expert(np.linspace(-3, 3, 101))).min() >= eps / 2 - 1e-12


def test_run_theory_writes_json_markdown_and_plot(tmp_path, capsys) -> None:
    out = run_theory(TheoryConfig("e2", out=tmp_path, quick=True))
    assert set(out) == {"e2"}
    saved = json.loads((tmp_path / "e2.json").read_text())
    assert saved["claims"] and {"claim", "measured", "expected", "holds"} == set(saved["claims"][0])
    assert (tmp_path / "e2.png").stat().st_size > 1000 and "## Claims" in (tmp_path / "e2.md").read_text()
    assert "| claim | measured | expected | holds |" in capsys.readouterr().out


def test_config_rejects_unknown_experiments() -> None:
    with pytest.raises(ValueError, match="e1, e2"):
        TheoryConfig("e7")
    assert TheoryConfig("all").experiments == tuple(EXPERIMENTS)
