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
    from eval.lerobot_bridge import ActionTokenizerPolicy
    from lerobot_env_step import one_lerobot_step

    step = one_lerobot_step(_save_policy(tmp_path / "reg", state_dim=4), "reach-v3")
    assert isinstance(step.policy, ActionTokenizerPolicy) and step.policy.config.type == "action_tokenizer"
    assert step.batch["observation.state"].shape == (1, 4) and step.batch["task"] == [REACH]
    assert tuple(step.action.shape) == (1, 4) and torch.isfinite(step.action).all()
    assert np.isfinite(step.reward).all() and step.obs["agent_pos"].shape == (1, 4)


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
