"""The rollout loop on small scripted environments: receding horizon, seeds, faults, non-finite actions.

The fake environment stands in for the simulator only where a fault must be injected or calls
counted; the real Meta-World loop runs in tests/test_evaluate.py.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from eval.rollout import EnvPool, rollout, sanitize_action

TASK = "reach-v3"  # any real task name: the loop asks the registry for its description


class FakeEnv:
    """2-D actions in [-1, 1]; observation = [seed, step, 0]; reward 1 per step; success from step 3 on."""

    def __init__(self, fail: dict[int, int] | None = None, action_dim: int = 2) -> None:
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(action_dim,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float64)
        self.fail = fail or {}  # seed -> step at which step() raises
        self.seed, self.t, self.actions, self.resets = None, 0, [], []

    def reset(self, seed: int | None = None):
        self.seed, self.t = seed, 0
        self.resets.append(seed)
        return np.array([seed, 0.0, 0.0]), {}

    def step(self, action):
        if self.fail.get(self.seed) == self.t:
            raise RuntimeError(f"simulator blew up at step {self.t}")
        self.actions.append(np.array(action))
        self.t += 1
        return np.array([self.seed, self.t, 0.0]), 1.0, False, False, {"success": float(self.t >= 3)}

    def close(self) -> None:
        pass


class CountingPolicy:
    """Returns chunks whose action k is (k, row's seed / 100); counts calls and batch sizes."""

    def __init__(self, chunk_size: int = 4, action_dim: int = 2, poison: float | None = None) -> None:
        self.chunk_size, self.action_dim, self.poison = chunk_size, action_dim, poison
        self.calls: list[int] = []
        self.last_stats = {"malformed": 0, "latency_s": 0.0}

    def predict_action_chunk(self, batch):
        states = np.asarray(batch["observation.state"])
        b = len(states)
        assert batch["task"] == ["Reach a goal position"] * b  # the task text, from the env registry
        self.calls.append(b)
        chunk = np.zeros((b, self.chunk_size, self.action_dim))
        chunk[:, :, 0] = np.arange(self.chunk_size) / 10.0
        chunk[:, :, 1] = states[:, :1] / 100.0
        if self.poison is not None:
            chunk[0, 0, 0] = self.poison
        self.last_stats = {"malformed": 1, "malformed_per_row": [1] + [0] * (b - 1), "latency_s": 0.0}
        return chunk


def _factory(envs: list[FakeEnv]):
    def make(env_name: str, task: str, seed: int = 0, **kwargs):
        env = envs[len(make.made) % len(envs)] if envs else FakeEnv()
        make.made.append(env)
        return env

    make.made = []
    return make


@pytest.mark.parametrize(("horizon", "n_action_steps"), [(10, 3), (10, 4), (9, 3), (7, 1)])
def test_policy_called_once_per_chunk(horizon: int, n_action_steps: int) -> None:
    envs = [FakeEnv(), FakeEnv()]
    policy = CountingPolicy(chunk_size=4)
    out = rollout(policy, "metaworld", [TASK], [0, 1], n_action_steps=n_action_steps, horizon=horizon,
                  n_envs=2, env_factory=_factory(envs))
    assert policy.calls == [2] * math.ceil(horizon / n_action_steps)  # batched: one call for both envs
    executed = [a[0] for a in envs[0].actions]
    assert executed == pytest.approx([(t % n_action_steps) / 10.0 for t in range(horizon)])
    assert all(e.length == horizon and len(e.latency_s) == len(policy.calls) for e in out.episodes)


def test_seeds_are_per_episode_and_reach_the_policy() -> None:
    envs = [FakeEnv(), FakeEnv()]
    out = rollout(CountingPolicy(), "metaworld", [TASK], [7, 8, 9], horizon=5, n_envs=2, env_factory=_factory(envs))
    assert [e.seed for e in out.episodes] == [7, 8, 9]
    assert envs[0].resets == [7, 9] and envs[1].resets == [8]
    assert envs[1].actions[0][1] == pytest.approx(0.08)  # the seed-8 env's own observation drove its action
    e = out.episodes[0]
    assert e.success and e.first_success_step == 3 and e.episode_return == 5.0 and e.rewards == [1.0] * 5


def test_env_raising_mid_episode_is_a_failed_episode_and_the_run_goes_on() -> None:
    envs = [FakeEnv(fail={1: 2}), FakeEnv(fail={1: 2})]
    policy = CountingPolicy()
    out = rollout(policy, "metaworld", [TASK], [0, 1, 2], horizon=6, n_envs=2, env_factory=_factory(envs))
    by_seed = {e.seed: e for e in out.episodes}
    assert by_seed[1].error == "RuntimeError: simulator blew up at step 2"
    assert not by_seed[1].success and by_seed[1].length == 2
    assert by_seed[0].error is None and by_seed[0].length == 6 and by_seed[0].success
    assert by_seed[2].error is None and by_seed[2].length == 6  # the next batch ran
    # after the failure, the policy is called for the surviving instance only
    assert policy.calls[:2] == [2, 1]


def test_reset_failure_is_recorded_too() -> None:
    class BadReset(FakeEnv):
        def reset(self, seed=None):
            raise OSError("no display")

    out = rollout(CountingPolicy(), "metaworld", [TASK], [0], horizon=3, n_envs=1, env_factory=_factory([BadReset()]))
    assert out.episodes[0].error == "OSError: no display" and out.episodes[0].length == 0


@pytest.mark.parametrize("poison", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_actions_are_clipped_and_counted(poison: float) -> None:
    envs = [FakeEnv(), FakeEnv()]
    policy = CountingPolicy(chunk_size=4, poison=poison)
    out = rollout(policy, "metaworld", [TASK], [0, 1], n_action_steps=4, horizon=8, n_envs=2, env_factory=_factory(envs))
    first, second = out.episodes
    assert first.nonfinite_actions == 2 and second.nonfinite_actions == 0  # row 0, step 0 of each of 2 chunks
    sent = np.stack(envs[0].actions)
    assert np.all(np.isfinite(sent)) and np.all(np.abs(sent) <= 1.0)
    assert sent[0, 0] == {"nan": 0.0, "inf": 1.0, "-inf": -1.0}[str(poison)]
    assert first.malformed == 2 and second.malformed == 0  # per-row counts from last_stats


def test_mismatched_action_dim_rejected_before_any_step() -> None:
    env = FakeEnv(action_dim=3)
    policy = CountingPolicy(action_dim=2)
    with pytest.raises(ValueError, match="action dimension 2 does not match the environment's 3"):
        rollout(policy, "metaworld", [TASK], [0], horizon=5, n_envs=1, env_factory=_factory([env]))
    assert policy.calls == [] and env.actions == [] and env.resets == []


def test_n_action_steps_longer_than_chunk_rejected() -> None:
    with pytest.raises(ValueError, match=r"n_action_steps must be in \[1, chunk_size=4\], got 5"):
        rollout(CountingPolicy(), "metaworld", [TASK], [0], n_action_steps=5, horizon=5, env_factory=_factory([FakeEnv()]))


def test_wrong_chunk_shape_is_a_clear_error() -> None:
    class Short(CountingPolicy):
        def predict_action_chunk(self, batch):
            return np.zeros((1, 2, 2))

    with pytest.raises(ValueError, match=r"policy returned chunks of shape \(1, 2, 2\)"):
        rollout(Short(chunk_size=4), "metaworld", [TASK], [0], n_action_steps=3, horizon=5, env_factory=_factory([FakeEnv()]))


def test_env_pool_reuses_instances() -> None:
    factory = _factory([])
    with EnvPool(factory) as pool:
        a = pool.get("metaworld", TASK, 2, seed=0)
        b = pool.get("metaworld", TASK, 3, seed=0)
    assert b[:2] == a and len(factory.made) == 3


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, 4, elements=st.floats(allow_nan=True, allow_infinity=True)))
def test_sanitize_action_is_always_inside_the_box(action: np.ndarray) -> None:
    low, high = np.array([-1.0, -2.0, 0.0, -1.0]), np.array([1.0, 2.0, 0.5, 1.0])
    out, bad = sanitize_action(action, low, high)
    assert np.all(np.isfinite(out)) and np.all(out >= low) and np.all(out <= high)
    assert bad == (not np.all(np.isfinite(action)))
    finite = np.isfinite(action)
    assert np.array_equal(out[finite], np.clip(action[finite], low[finite], high[finite]))
