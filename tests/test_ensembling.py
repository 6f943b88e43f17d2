"""Decoding and execution knobs of the closed-loop evaluation (issue 16): ``--temperature`` and
``--ensemble-decay`` (ACT's temporal ensembling of overlapping chunks).

Fake environments and policies stand in for the simulator and the LM where exact actions must be
known; one test drives a tiny real ``TokenizedPolicy`` to check that seeded sampling repeats.
"""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.rollout import EnvPool, ensemble_weights, rollout, samples

TASK = "reach-v3"  # a real task name: the loop asks the registry for its description


class WideEnv:
    """Actions in a wide box (nothing is clipped); observation = [seed, step, 0, ...]; records executed actions."""

    def __init__(self, action_dim: int = 2, obs_dim: int = 3) -> None:
        self.action_space = gym.spaces.Box(-1e6, 1e6, shape=(action_dim,), dtype=np.float64)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float64)
        self.obs_dim, self.seed, self.t, self.actions = obs_dim, None, 0, []

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.obs_dim)
        obs[:2] = self.seed, self.t
        return obs

    def reset(self, seed: int | None = None):
        self.seed, self.t, self.actions = seed, 0, []
        return self._obs(), {}

    def step(self, action):
        self.actions.append(np.array(action, dtype=np.float64))
        self.t += 1
        return self._obs(), 0.0, False, False, {"success": False}

    def close(self) -> None:
        pass


def _pool(envs: list[WideEnv]) -> EnvPool:
    made: list[WideEnv] = []

    def make(env_name: str, task: str, seed: int = 0, **kwargs) -> WideEnv:
        made.append(envs[len(made) % len(envs)])
        return made[-1]

    return EnvPool(make)


def planned(s: float, k: int, seed: float = 0.0) -> float:
    """The value a KnownChunks chunk planned at step ``s`` predicts for step ``s + k`` (first dimension)."""
    return 10.0 * s + k + seed / 100.0


class KnownChunks:
    """Deterministic chunks: action k of the chunk planned at step s is (10 s + k + seed/100, -(10 s + k))."""

    def __init__(self, chunk_size: int = 4, action_dim: int = 2) -> None:
        self.chunk_size, self.action_dim = chunk_size, action_dim
        self.last_stats = {"malformed": 0, "latency_s": 0.0}

    def predict_action_chunk(self, batch):
        states = np.asarray(batch["observation.state"])
        seed, s = states[:, :1], states[:, 1:2]  # (b, 1)
        k = np.arange(self.chunk_size)[None, :]
        chunk = np.zeros((len(states), self.chunk_size, self.action_dim))
        chunk[:, :, 0] = planned(s, k, seed)
        chunk[:, :, 1] = -(10.0 * s + k)
        return chunk


class SamplingFake(KnownChunks):
    """Takes a temperature like a TokenizedPolicy; records it; adds torch-sampled noise scaled by it."""

    def __init__(self, chunk_size: int = 4, action_dim: int = 2, state_dim: int | None = None) -> None:
        super().__init__(chunk_size, action_dim)
        self.state_dim = state_dim
        self.temperature = 0.0  # its "saved" setting
        self.seen: list[float | None] = []

    def predict_action_chunk(self, batch, temperature: float | None = None):
        import torch

        self.seen.append(temperature)
        chunk = super().predict_action_chunk(batch)
        temp = self.temperature if temperature is None else temperature
        return chunk + temp * torch.rand(chunk.shape, dtype=torch.float64).numpy()


def _executed(policy, n_action_steps: int, horizon: int, seeds=(0, 1), **kw) -> list[np.ndarray]:
    envs = [WideEnv(policy.action_dim) for _ in seeds]
    rollout(policy, "metaworld", [TASK], list(seeds), n_action_steps=n_action_steps, horizon=horizon, n_envs=len(seeds),
            pool=_pool(envs), **kw)
    return [np.stack(e.actions) for e in envs]


def _reference_ensemble(t: int, h: int, n: int, decay: float, seed: int = 0) -> float:
    """Hand-written ACT ensemble for step t (first dimension): chunks planned at multiples of n, oldest first."""
    preds = [planned(s, t - s, seed) for s in range(0, t + 1, n) if t - s < h]
    w = [math.exp(-decay * i) for i in range(len(preds))]
    return sum(wi * p for wi, p in zip(w, preds)) / sum(w)


# ------------------------------------------------------------------------------------------ (a) off
@pytest.mark.parametrize(("h", "n"), [(4, 1), (4, 3), (4, 4)])
def test_ensembling_off_executes_the_receding_horizon_plan(h: int, n: int) -> None:
    horizon = 10
    for seed, actions in zip((0, 1), _executed(KnownChunks(h), n, horizon)):
        want = [planned(t - t % n, t % n, seed) for t in range(horizon)]  # today's path: plan[t % n]
        assert actions[:, 0].tolist() == want  # bit-identical, not approximately


@settings(max_examples=20, deadline=None)
@given(decay=st.floats(0.0, 20.0))
def test_without_overlap_ensembling_changes_nothing(decay: float) -> None:
    off = _executed(KnownChunks(4), 4, 9)
    on = _executed(KnownChunks(4), 4, 9, ensemble_decay=decay)
    assert all(np.array_equal(a, b) for a, b in zip(off, on))  # one prediction per step: weight exactly 1


# ------------------------------------------------------------------------------------------ (b) on
def test_hand_computed_ensemble_at_one_step() -> None:
    # h=4, n=1, t=5: chunks planned at 2, 3, 4, 5 predict 23, 32, 41, 50 for step 5 (seed 0)
    preds = np.array([23.0, 32.0, 41.0, 50.0])
    w = np.exp(-0.5 * np.arange(4))
    actions = _executed(KnownChunks(4), 1, 6, ensemble_decay=0.5)[0]
    assert actions[5, 0] == pytest.approx(float(w @ preds / w.sum()), rel=1e-12)
    assert actions[0, 0] == 0.0 and actions[1, 0] == pytest.approx((1.0 + 10.0 * np.exp(-0.5)) / (1 + np.exp(-0.5)))


@pytest.mark.parametrize(("h", "n", "decay"), [(4, 1, 0.0), (4, 1, 0.3), (5, 2, 0.0), (5, 2, 1.0), (6, 4, 0.7)])
def test_executed_action_is_the_weighted_mean_of_overlapping_predictions(h: int, n: int, decay: float) -> None:
    horizon = 12
    for seed, actions in zip((0, 1), _executed(KnownChunks(h), n, horizon, ensemble_decay=decay)):
        want = [_reference_ensemble(t, h, n, decay, seed) for t in range(horizon)]
        assert actions[:, 0] == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_zero_decay_is_the_plain_mean_and_large_decay_the_oldest() -> None:
    h, horizon = 4, 10
    mean = _executed(KnownChunks(h), 1, horizon, ensemble_decay=0.0)[0][:, 1]
    oldest = _executed(KnownChunks(h), 1, horizon, ensemble_decay=50.0)[0][:, 1]
    for t in range(horizon):
        starts = [s for s in range(t + 1) if t - s < h]
        assert mean[t] == pytest.approx(np.mean([-(10.0 * s + t - s) for s in starts]), rel=1e-12)
        assert oldest[t] == pytest.approx(-(10.0 * starts[0] + t - starts[0]), abs=1e-12)


def test_weights_follow_acts_convention() -> None:
    w = ensemble_weights(3, 1.0)
    assert w.sum() == pytest.approx(1.0) and w[0] > w[1] > w[2]  # the oldest prediction weighs most
    assert ensemble_weights(4, 0.0).tolist() == [0.25] * 4


# ------------------------------------------------------------------------------------------ (c) refusals
@pytest.mark.parametrize("decay", [-0.1, math.nan, math.inf])
def test_bad_decay_is_refused(decay: float) -> None:
    from eval.evaluate import EvalConfig

    with pytest.raises(ValueError, match="--ensemble-decay must be finite and >= 0"):
        EvalConfig(tasks=(TASK,), ensemble_decay=decay)
    with pytest.raises(ValueError, match="--ensemble-decay must be finite and >= 0"):
        _executed(KnownChunks(4), 1, 3, ensemble_decay=decay)


@pytest.mark.parametrize("temperature", [-1.0, math.nan, math.inf])
def test_bad_temperature_is_refused(temperature: float) -> None:
    from eval.evaluate import EvalConfig

    with pytest.raises(ValueError, match="--temperature must be finite and >= 0"):
        EvalConfig(tasks=(TASK,), temperature=temperature)
    with pytest.raises(ValueError, match="--temperature must be finite and >= 0"):
        _executed(SamplingFake(4), 1, 3, temperature=temperature)


def test_temperature_on_a_policy_that_does_not_sample_is_refused() -> None:
    from training import TokenizedPolicy
    from training.regression import RegressionPolicy

    assert samples(TokenizedPolicy.__new__(TokenizedPolicy)) and not samples(RegressionPolicy.__new__(RegressionPolicy))
    with pytest.raises(ValueError, match="applies only to tokenized .* KnownChunks predicts deterministically"):
        _executed(KnownChunks(4), 1, 3, temperature=0.5)


def test_eval_refuses_temperature_for_the_expert_before_any_rollout(tmp_path: Path) -> None:
    from eval.evaluate import EvalConfig, run_eval

    with pytest.raises(ValueError, match="ExpertPolicy predicts deterministically"):
        run_eval(EvalConfig(tasks=(TASK,), temperature=1.0, out=tmp_path / "e", progress=False))
    with pytest.raises(ValueError, match="--ensemble-decay does nothing for the expert"):
        run_eval(EvalConfig(tasks=(TASK,), ensemble_decay=0.1, out=tmp_path / "e", progress=False))
    assert not (tmp_path / "e").exists()


# ------------------------------------------------------------------------------------------ (d) temperature
def test_temperature_reaches_the_policy_and_none_keeps_the_old_call() -> None:
    policy = SamplingFake(4)
    _executed(policy, 2, 6, temperature=0.7)
    assert policy.seen == [0.7] * 3
    policy.seen.clear()
    _executed(policy, 2, 6)
    assert policy.seen == [None] * 3  # called as before: the policy's own setting


def test_evaluation_seeds_sampling_and_records_the_knobs() -> None:
    from eval.envs import env_spec
    from eval.evaluate import EvalConfig, _meta, evaluate_policy

    spec = env_spec("metaworld", TASK)

    def run(seed: int, temperature: float | None) -> tuple[SamplingFake, list[np.ndarray], dict]:
        policy = SamplingFake(4, spec.action_dim, spec.obs_dim)
        envs = [WideEnv(spec.action_dim, spec.obs_dim) for _ in range(2)]
        cfg = EvalConfig(tasks=(TASK,), episodes=2, n_envs=2, horizon=6, n_action_steps=2, seed=seed,
                         temperature=temperature, ensemble_decay=0.25, progress=False)
        ev = evaluate_policy(policy, cfg, "fake", pool=_pool(envs))
        assert _meta(cfg, 1.0, 2)["temperature"] == temperature and _meta(cfg, 1.0, 2)["ensemble_decay"] == 0.25
        return policy, [e.actions for e in envs], ev.entry

    policy, first, entry = run(1000, 0.5)
    assert policy.seen[1:] == [0.5] * 3  # after the untimed warm-up call
    assert entry["temperature"] == 0.5 and entry["ensemble_decay"] == 0.25
    _, again, _ = run(1000, 0.5)
    _, other, _ = run(1001, 0.5)
    assert all(np.array_equal(a, b) for a, b in zip(np.concatenate(first), np.concatenate(again)))  # same seed: same draws
    assert not np.allclose(np.concatenate(first), np.concatenate(other))  # another seed: other draws
    _, _, saved = run(1000, None)
    assert saved["temperature"] == 0.0  # the policy's own setting is what the entry records


@pytest.mark.slow
def test_seeded_sampling_repeats_with_a_real_tokenized_policy(so101_root: Path, tmp_path: Path) -> None:
    from action_tokenizers.binning import BinningTokenizer
    from action_tokenizers.data import load_chunks
    from eval.evaluate import seeded_sampling
    from training import TokenizedPolicy
    from training.train import TrainConfig, run_train

    chunks = load_chunks(so101_root, chunk_size=4, pad="last")
    BinningTokenizer(n_bins=16).fit(chunks.actions).save_pretrained(tmp_path / "tok")
    run_train(TrainConfig(dataset=so101_root, tokenizer=tmp_path / "tok", out=tmp_path / "out", hidden_size=32,
                          n_layers=1, n_heads=2, max_steps=2, batch_size=4, eval_chunks=2, progress=False,
                          readout="argmax"))  # sampled ids are decoded; the expectation readout refuses T > 0
    policy = TokenizedPolicy.from_pretrained(tmp_path / "out", device="cpu")

    def run(seed: int) -> np.ndarray:
        envs = [WideEnv(policy.action_dim, policy.state_dim) for _ in range(2)]
        with seeded_sampling(1.0, seed):
            rollout(policy, "metaworld", [TASK], [0, 1], n_action_steps=2, horizon=6, n_envs=2, pool=_pool(envs),
                    temperature=1.0)
        return np.stack([np.stack(e.actions) for e in envs])

    first = run(7)
    assert np.array_equal(first, run(7))
    assert not np.array_equal(first, run(8))  # an untrained LM sampled at T=1: other seeds draw other bins
