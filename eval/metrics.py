"""Closed-loop metrics from episode records: success with a Wilson interval, return, regret, latency.

Why these: success rate alone hides how close a policy came (return), how it compares with the
expert on the very same initial states (regret, paired by ``(task, seed)``), whether its decoder
degraded (malformed decodes and non-finite actions, counted rather than hidden) and whether it is
fast enough to drive a robot (latency per chunk and the control rate it sustains).

``summarize(episodes, expert)`` returns one plain dict per policy, with the same fields overall
and under ``per_task``, ready for ``results.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from eval.rollout import EpisodeRecord

__all__ = ["regret", "regret_interval", "regret_vs_horizon", "success_interval", "summarize", "summarize_group"]

# Number of points kept for the regret-vs-horizon curve (the plot needs a shape, not every step).
_CURVE_POINTS = 25


def success_interval(successes: int, episodes: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a success rate (scipy's implementation; good at 0/n and n/n)."""
    from scipy.stats import binomtest

    if episodes <= 0:
        raise ValueError(f"a success interval needs at least one episode, got episodes={episodes}")
    if not 0 <= successes <= episodes:
        raise ValueError(f"successes must lie in [0, {episodes}], got {successes}")
    ci = binomtest(int(successes), int(episodes)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _expert_index(expert: Sequence[EpisodeRecord]) -> dict[tuple[str, int], EpisodeRecord]:
    return {(e.task, e.seed): e for e in expert}


def _paired(episodes: Sequence[EpisodeRecord], expert: Sequence[EpisodeRecord]) -> list[tuple[EpisodeRecord, EpisodeRecord]]:
    """Pair each policy episode with the expert episode of the same task and seed (same initial state)."""
    index = _expert_index(expert)
    missing = sorted({(e.task, e.seed) for e in episodes} - set(index))
    if missing:
        raise ValueError(
            f"expert episodes missing for (task, seed) {missing[:5]}{' ...' if len(missing) > 5 else ''}: "
            "regret needs the expert rolled out on the same seeds as the policy"
        )
    return [(e, index[(e.task, e.seed)]) for e in episodes]


def _gaps(episodes: Sequence[EpisodeRecord], expert: Sequence[EpisodeRecord]) -> np.ndarray:
    """Per episode, expert return - policy return on the same task and seed."""
    pairs = _paired(episodes, expert)
    if not pairs:
        raise ValueError("regret of zero episodes is undefined")
    return np.array([x.episode_return - e.episode_return for e, x in pairs], dtype=np.float64)


def regret(episodes: Sequence[EpisodeRecord], expert: Sequence[EpisodeRecord]) -> float:
    """Mean over episodes of (expert return - policy return) on the same task and seed."""
    return float(_gaps(episodes, expert).mean())


def regret_interval(episodes: Sequence[EpisodeRecord], expert: Sequence[EpisodeRecord],
                    confidence: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval for the mean paired regret (scipy's ``ttest_1samp``); None below two episodes.

    Paired by seed, so the interval reflects how the policy's episodes vary against the expert's on
    the same initial states, not the spread of returns across layouts."""
    from scipy.stats import ttest_1samp

    gaps = _gaps(episodes, expert)
    if len(gaps) < 2:
        return None
    if np.ptp(gaps) == 0:  # every episode the same gap (e.g. the expert against itself): no spread
        return float(gaps[0]), float(gaps[0])
    ci = ttest_1samp(gaps, 0.0).confidence_interval(confidence)
    return float(ci.low), float(ci.high)


def _cumulative(rewards: Sequence[float], horizon: int) -> np.ndarray:
    """Cumulative reward over ``horizon`` steps; an episode cut short (error) earns 0 afterwards."""
    r = np.zeros(horizon)
    n = min(len(rewards), horizon)
    r[:n] = np.asarray(rewards[:n], dtype=np.float64)
    return np.cumsum(r)


def regret_vs_horizon(episodes: Sequence[EpisodeRecord], expert: Sequence[EpisodeRecord]) -> dict:
    """Mean cumulative regret after t steps, at about 25 values of t: how fast the gap compounds."""
    pairs = _paired(episodes, expert)
    if not pairs:
        return {"steps": [], "regret": []}
    horizon = max(max(len(e.rewards), len(x.rewards)) for e, x in pairs)
    if horizon == 0:
        return {"steps": [], "regret": []}
    gaps = np.stack([_cumulative(x.rewards, horizon) - _cumulative(e.rewards, horizon) for e, x in pairs])
    steps = np.unique(np.linspace(1, horizon, num=min(_CURVE_POINTS, horizon)).round().astype(int))
    return {"steps": steps.tolist(), "regret": gaps.mean(axis=0)[steps - 1].tolist()}


def summarize_group(episodes: Sequence[EpisodeRecord], expert: Sequence[EpisodeRecord] | None = None) -> dict:
    """The metrics of one group of episodes (one task, or all of them)."""
    n = len(episodes)
    if n == 0:
        raise ValueError("cannot summarize zero episodes")
    k = sum(bool(e.success) for e in episodes)
    latencies = [lat for e in episodes for lat in e.latency_s]
    tokens = [n for e in episodes for n in e.tokens]
    policy_time = sum(latencies)
    steps = sum(e.length for e in episodes)
    return {
        "episodes": n,
        "successes": k,
        "success_rate": k / n,
        "success_ci": list(success_interval(k, n)),
        "mean_return": float(np.mean([e.episode_return for e in episodes])),
        "regret": None if expert is None else regret(episodes, expert),
        "regret_ci": None if expert is None else _as_list(regret_interval(episodes, expert)),
        "mean_length": float(np.mean([e.length for e in episodes])),
        "malformed": int(sum(e.malformed for e in episodes)),
        "nonfinite_actions": int(sum(e.nonfinite_actions for e in episodes)),
        "errors": int(sum(e.error is not None for e in episodes)),
        "latency_s_per_chunk": float(np.mean(latencies)) if latencies else None,
        # Actions executed per second of policy inference, per environment instance.
        "control_hz": steps / policy_time if policy_time > 0 else None,
        # Mean tokens generated per chunk, for policies that report it (tokenized LMs).
        "tokens_per_chunk": float(np.mean(tokens)) if tokens else None,
        "seconds_per_episode": float(np.mean([e.wall_s for e in episodes])),
    }


def _as_list(ci: tuple[float, float] | None) -> list[float] | None:
    return None if ci is None else list(ci)


def summarize(episodes: Sequence[EpisodeRecord], expert: Sequence[EpisodeRecord] | None = None) -> dict:
    """Overall metrics plus ``per_task`` (same fields) and the overall regret-vs-horizon curve."""
    tasks = list(dict.fromkeys(e.task for e in episodes))
    out = summarize_group(episodes, expert)
    out["per_task"] = {
        t: summarize_group([e for e in episodes if e.task == t], expert) for t in tasks
    }
    out["regret_vs_horizon"] = regret_vs_horizon(episodes, expert) if expert is not None else None
    return out

