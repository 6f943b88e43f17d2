"""Closed-loop metrics: the Wilson interval against its closed form, regret and its curve on known cases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.metrics import regret, regret_interval, regret_vs_horizon, success_interval, summarize
from eval.rollout import EpisodeRecord


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Textbook Wilson score interval, as an independent oracle for scipy's."""
    p = k / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return center - half, center + half


def _ep(task: str, seed: int, ret: float, success: bool = False, rewards: list[float] | None = None, **kw) -> EpisodeRecord:
    rewards = rewards if rewards is not None else [ret]
    return EpisodeRecord(task=task, seed=seed, success=success, episode_return=ret, length=len(rewards), rewards=rewards, **kw)


def test_wilson_known_values() -> None:
    lo, hi = success_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert success_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert success_interval(10, 10)[1] == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_matches_closed_form(kn: tuple[int, int]) -> None:
    k, n = kn
    lo, hi = success_interval(k, n)
    want_lo, want_hi = _wilson(k, n)
    assert lo == pytest.approx(max(want_lo, 0.0), abs=1e-9)
    assert hi == pytest.approx(min(want_hi, 1.0), abs=1e-9)
    assert lo <= k / n <= hi


def test_wilson_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="at least one episode"):
        success_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        success_interval(5, 3)


def test_regret_pairs_by_task_and_seed() -> None:
    expert = [_ep("a", 1, 20.0), _ep("a", 0, 10.0), _ep("b", 0, 7.0)]
    policy = [_ep("a", 0, 4.0), _ep("a", 1, 20.0), _ep("b", 0, 1.0)]
    assert regret(policy, expert) == pytest.approx((6 + 0 + 6) / 3)
    assert regret(expert, expert) == 0.0


@settings(max_examples=40, deadline=None)
@given(gaps=st.lists(st.floats(-50, 50, allow_nan=False), min_size=2, max_size=30))
def test_regret_interval_is_the_t_interval_of_the_paired_gaps(gaps: list[float]) -> None:
    """Paired by seed; checked against the textbook mean +- t * s / sqrt(n)."""
    from scipy.stats import t

    expert = [_ep("a", i, 100.0) for i in range(len(gaps))]
    policy = [_ep("a", i, 100.0 - g) for i, g in enumerate(gaps)]
    lo, hi = regret_interval(policy, expert)
    n, mean = len(gaps), sum(gaps) / len(gaps)
    sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / (n - 1))
    half = t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert lo <= regret(policy, expert) + 1e-9 and regret(policy, expert) <= hi + 1e-9
    assert lo == pytest.approx(mean - half, abs=1e-6) and hi == pytest.approx(mean + half, abs=1e-6)


def test_regret_interval_edge_cases() -> None:
    expert = [_ep("a", 0, 5.0), _ep("a", 1, 7.0)]
    assert regret_interval(expert, expert) == (0.0, 0.0)  # the expert against itself: no spread
    assert regret_interval(expert[:1], expert) is None  # one episode: no interval
    out = summarize([_ep("a", 0, 1.0), _ep("a", 1, 4.0)], expert)  # gaps 4 and 3
    assert out["regret_ci"][0] < out["regret"] < out["regret_ci"][1]
    assert summarize([_ep("a", 0, 1.0)])["regret_ci"] is None  # without an expert


def test_regret_needs_expert_on_same_seeds() -> None:
    with pytest.raises(ValueError, match=r"expert episodes missing.*\('a', 5\)"):
        regret([_ep("a", 5, 1.0)], [_ep("a", 0, 1.0)])


def test_regret_vs_horizon_accumulates_the_gap() -> None:
    expert = [_ep("a", 0, 10.0, rewards=[1.0] * 10)]
    policy = [_ep("a", 0, 5.0, rewards=[0.5] * 10)]
    curve = regret_vs_horizon(policy, expert)
    assert curve["steps"][0] == 1 and curve["steps"][-1] == 10
    assert curve["regret"] == pytest.approx([0.5 * t for t in curve["steps"]])
    # an episode cut short by an error earns nothing after it stopped
    short = [_ep("a", 0, 2.0, rewards=[1.0, 1.0])]
    assert regret_vs_horizon(short, expert)["regret"][-1] == pytest.approx(8.0)


def test_summarize_per_task_and_overall() -> None:
    expert = [_ep("a", s, 10.0, True) for s in range(4)] + [_ep("b", s, 10.0, True) for s in range(2)]
    policy = [
        _ep("a", 0, 10.0, True, latency_s=[0.1, 0.1], malformed=2),
        _ep("a", 1, 4.0, False, error="RuntimeError: boom"),
        _ep("a", 2, 10.0, True, nonfinite_actions=3),
        _ep("a", 3, 10.0, True),
        _ep("b", 0, 0.0, False, tokens=[12.0, 14.0]),
        _ep("b", 1, 0.0, False),
    ]
    out = summarize(policy, expert)
    assert out["episodes"] == 6 and out["successes"] == 3 and out["success_rate"] == 0.5
    assert out["success_ci"] == pytest.approx(list(_wilson(3, 6)))
    assert out["regret"] == pytest.approx((0 + 6 + 0 + 0 + 10 + 10) / 6)
    assert out["malformed"] == 2 and out["nonfinite_actions"] == 3 and out["errors"] == 1
    assert out["latency_s_per_chunk"] == pytest.approx(0.1)
    assert out["tokens_per_chunk"] == pytest.approx(13.0)
    a, b = out["per_task"]["a"], out["per_task"]["b"]
    assert a["success_rate"] == 0.75 and a["regret"] == pytest.approx(1.5) and a["tokens_per_chunk"] is None
    assert b["success_rate"] == 0.0 and b["regret"] == pytest.approx(10.0) and b["malformed"] == 0
    assert set(a) == set(out) - {"per_task", "regret_vs_horizon"}


def test_summarize_without_expert_has_no_regret() -> None:
    out = summarize([_ep("a", 0, 1.0, True)])
    assert out["regret"] is None and out["regret_vs_horizon"] is None and out["per_task"]["a"]["regret"] is None
