"""The LeRobot bridge, built and stepped through LeRobot's own factories and Meta-World env config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from action_tokenizers.normalize import Normalizer
from training.regression import RegressionPolicy, _mlp, _state_normalizer

REACH = "Reach a goal position"  # LeRobot's description of reach-v3


def _save_policy(root: Path, state_dim: int, chunk_size: int = 4) -> Path:
    """A tiny regression policy on LeRobot's Meta-World observation (agent_pos) and 4-D actions."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    root.mkdir()
    RegressionPolicy(_mlp(state_dim + 1, chunk_size * 4, 8, 1), [REACH], Normalizer().fit(rng.uniform(-1, 1, (50, 4))),
                     _state_normalizer(rng.normal(size=(50, state_dim))), chunk_size, 4).save_pretrained(root)
    return root


class Counting:
    """Wraps a protocol policy and counts its calls."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0
        self.chunk_size, self.action_dim, self.state_dim = inner.chunk_size, inner.action_dim, inner.state_dim
        self.last_stats = {}

    def predict_action_chunk(self, batch):
        self.calls += 1
        return self.inner.predict_action_chunk(batch)


@pytest.mark.slow
def test_bridge_steps_lerobot_metaworld_env(tmp_path: Path) -> None:
    from lerobot.envs.configs import MetaworldEnv
    from lerobot.envs.factory import make_env, make_env_pre_post_processors
    from lerobot.envs.utils import preprocess_observation
    from lerobot.policies.factory import make_policy, make_pre_post_processors

    from eval.lerobot_bridge import ActionTokenizerConfig, ActionTokenizerPolicy

    inner = _save_policy(tmp_path / "reg", state_dim=4)
    env_cfg = MetaworldEnv(task="reach-v3")
    cfg = ActionTokenizerConfig(inner=str(inner), n_action_steps=2, device="cpu")
    policy = make_policy(cfg, env_cfg=env_cfg)  # LeRobot's factory finds the class by the registered type
    assert isinstance(policy, ActionTokenizerPolicy) and cfg.type == "action_tokenizer"
    preprocessor, postprocessor = make_pre_post_processors(cfg)
    env_pre, env_post = make_env_pre_post_processors(env_cfg, cfg)
    vec = make_env(env_cfg, n_envs=1)["reach-v3"][0]
    try:
        obs, _ = vec.reset(seed=[0])
        batch = preprocess_observation(obs)
        batch["task"] = list(vec.call("task_description"))
        assert batch["observation.state"].shape == (1, 4) and batch["task"] == [REACH]
        action = postprocessor(policy.select_action(preprocessor(env_pre(batch))))
        action = env_post({"action": action})["action"]
        assert tuple(action.shape) == (1, 4) and torch.isfinite(action).all()
        obs, reward, terminated, truncated, info = vec.step(action.numpy())
        assert np.isfinite(reward).all() and obs["agent_pos"].shape == (1, 4)
    finally:
        vec.close()


def test_select_action_runs_the_queue(tmp_path: Path) -> None:
    from lerobot.configs.types import FeatureType, PolicyFeature

    from eval.lerobot_bridge import ActionTokenizerConfig, ActionTokenizerPolicy
    from eval.policies import load_policy

    inner = Counting(load_policy(_save_policy(tmp_path / "reg", state_dim=4, chunk_size=4)))
    cfg = ActionTokenizerConfig(inner="unused", n_action_steps=3, device="cpu",
                                input_features={"observation.state": PolicyFeature(FeatureType.STATE, (4,))},
                                output_features={"action": PolicyFeature(FeatureType.ACTION, (4,))})
    policy = ActionTokenizerPolicy(cfg, inner=inner)
    batch = {"observation.state": torch.zeros(2, 4), "task": [REACH, REACH]}
    chunk = policy.predict_action_chunk(batch)
    assert tuple(chunk.shape) == (2, 4, 4)
    inner.calls = 0
    actions = [policy.select_action(batch) for _ in range(7)]
    assert inner.calls == 3  # ceil(7 / 3)
    assert all(tuple(a.shape) == (2, 4) for a in actions)
    torch.testing.assert_close(actions[1], chunk[:, 1])  # the queue serves the chunk in order
    policy.reset()
    policy.select_action(batch)
    assert inner.calls == 4  # reset dropped the queued actions


def test_bridge_rejects_a_policy_for_another_state(tmp_path: Path) -> None:
    from lerobot.envs.configs import MetaworldEnv
    from lerobot.policies.factory import make_policy

    from eval.lerobot_bridge import ActionTokenizerConfig

    inner = _save_policy(tmp_path / "reg39", state_dim=39)
    with pytest.raises(ValueError, match="observation.state has dimension 4 but the policy was trained on 39-D states"):
        make_policy(ActionTokenizerConfig(inner=str(inner), device="cpu"), env_cfg=MetaworldEnv(task="reach-v3"))
