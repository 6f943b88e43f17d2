"""The augmentation execution mode on a linear gymnasium env with a scripted chunk policy."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from action_tokenizers.binning import BinningTokenizer
from eval.augmentation import AugmentedExecutor, TransitionModel, quantize_actions

A = np.array([[0.9, 0.1], [0.0, 0.8]])
B = np.array([[0.5], [1.0]])


class LinearEnv(gym.Env):
    """x' = A x + B a (+ optional noise); reward -||x||; the observation is the state."""

    def __init__(self, noise: float = 0.0, horizon: int = 30) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gym.spaces.Box(-5.0, 5.0, (1,), np.float64)
        self.noise, self.horizon = noise, horizon

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.x, self.t = self.np_random.normal(size=2), 0
        return self.x.copy(), {}

    def step(self, action):
        self.x = A @ self.x + B @ np.asarray(action, dtype=np.float64) + self.noise * self.np_random.normal(size=2)
        self.t += 1
        return self.x.copy(), -float(np.linalg.norm(self.x)), False, self.t >= self.horizon, {"success": bool(np.linalg.norm(self.x) < 0.05)}


class ChunkPolicy:
    """Scripted: plans a chunk with feedback a = -K x on the exact model from the queried state; logs queries."""

    chunk_size, action_dim = 4, 1

    def __init__(self) -> None:
        self.queries: list[np.ndarray] = []
        self.last_stats = {"malformed": 0}

    def predict_action_chunk(self, batch: dict) -> np.ndarray:
        x = np.asarray(batch["observation.state"], dtype=np.float64)  # (b, s)
        assert len(batch["task"]) == x.shape[0]
        self.queries.append(x.copy())
        chunk = []
        for _ in range(self.chunk_size):
            a = -(x @ np.array([[0.6], [0.5]]))  # (b, 1)
            chunk.append(a)
            x = x @ A.T + a @ B.T
        return np.stack(chunk, axis=1)  # (b, h, d)


def _transitions(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x, a = rng.normal(size=(n, 2)), rng.normal(size=(n, 1))
    return x, a, x @ A.T + a @ B.T


def _exact_model() -> TransitionModel:
    return TransitionModel(ridge=0.0).fit(*_transitions())


def test_model_recovers_linear_dynamics_and_round_trips(tmp_path) -> None:
    model = _exact_model()
    x, a, y = _transitions(50, seed=1)
    np.testing.assert_allclose(model.predict(x, a), y, atol=1e-9)
    assert model.metrics["rmse"] < 1e-9 < model.metrics["rmse_hold_state"]
    model.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"model.safetensors", "transition_model.json"}
    loaded = TransitionModel.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict(x, a), model.predict(x, a))
    np.testing.assert_allclose(loaded.rollout(x[:3], np.zeros((3, 5, 1)))[:, -1], x[:3] @ np.linalg.matrix_power(A, 5).T, atol=1e-9)
    with pytest.raises(ValueError, match=r"states \(b, 2\)"):
        model.predict(np.zeros((1, 3)), np.zeros((1, 1)))
    with pytest.raises(FileNotFoundError):
        TransitionModel.load(tmp_path / "missing")


def test_exact_model_augmentation_equals_closed_loop() -> None:
    env, model = LinearEnv(), _exact_model()
    aug = AugmentedExecutor(model, n_action_steps=2, max_steps=20).run(ChunkPolicy(), env, task="stabilize", seed=3)
    ref = AugmentedExecutor(None, mode="closed_loop", n_action_steps=2, max_steps=20).run(ChunkPolicy(), env, task="stabilize", seed=3)
    assert aug.length == ref.length == 20 and aug.policy_calls == 10
    np.testing.assert_allclose(np.stack(aug.real_states), np.stack(ref.real_states), atol=1e-9)
    assert aug.max_deviation < 1e-9 and aug.episode_return == pytest.approx(ref.episode_return)


def test_policy_is_queried_on_model_states_and_executes_open_loop() -> None:
    env, model = LinearEnv(noise=0.05), _exact_model()
    model.bias = np.array([0.02, -0.01])
    policy = ChunkPolicy()
    ep = AugmentedExecutor(model, max_steps=30).run(policy, env, task="stabilize", seed=0)  # n_action_steps = chunk size 4
    assert ep.policy_calls == len(policy.queries) == 8  # ceil(30 / 4)
    aux = np.stack(ep.aux_states)
    for j, q in enumerate(policy.queries):
        np.testing.assert_allclose(q[0], aux[4 * j])  # queried on the auxiliary state, never the real one
    assert ep.max_deviation > 0.01
    np.testing.assert_allclose(ep.aux_states[0], ep.real_states[0])  # both start at the real initial state
    resynced = AugmentedExecutor(model, max_steps=30, resync_every=4).run(ChunkPolicy(), env, task="stabilize", seed=0)
    assert resynced.max_deviation < ep.max_deviation


def test_quantize_actions_decodes_tokens_chunk_by_chunk() -> None:
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (11, 2))  # 11 frames: the last chunk of 4 is padded
    tok = BinningTokenizer(n_bins=8, normalization="minmax").fit(rng.uniform(-1, 1, (50, 4, 2)))
    q = quantize_actions(tok, actions)
    assert q.shape == actions.shape
    np.testing.assert_allclose(q[:8], tok.decode(tok.encode(actions[:8].reshape(2, 4, 2))).reshape(8, 2))
    assert np.abs(q - actions).max() <= 0.125 + 0.02  # half of a 2/8 bin, plus clipping at the fitted range


@pytest.mark.slow  # importing LeRobot's dataset reader dominates (~10-30 s on a busy machine)
def test_model_from_the_shared_dataset_with_a_tokenizer(so101_root) -> None:
    from action_tokenizers.data import load_chunks

    tok = BinningTokenizer(n_bins=64).fit(load_chunks(so101_root, chunk_size=5).actions)
    model = TransitionModel.from_dataset(so101_root, tokenizer=tok)
    assert model.state_dim == 6 and model.action_dim == 6
    assert model.metrics["rmse"] < model.metrics["rmse_hold_state"]  # better than predicting no motion


def test_executor_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        AugmentedExecutor(_exact_model(), mode="open")
    with pytest.raises(ValueError, match="needs a TransitionModel"):
        AugmentedExecutor(None)
