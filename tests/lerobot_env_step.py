"""One step of a saved policy in LeRobot's own Meta-World env, through LeRobot's factories and pipelines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class LeRobotStep:
    policy: Any
    """What LeRobot's ``make_policy`` built."""
    batch: dict[str, Any]
    """The first observation as LeRobot preprocesses it (with the task string)."""
    action: Any
    """The action after the policy's and the env's postprocessors."""
    obs: dict[str, Any]
    reward: Any


def one_lerobot_step(inner: Path, task: str) -> LeRobotStep:
    from lerobot.envs.configs import MetaworldEnv
    from lerobot.envs.factory import make_env, make_env_pre_post_processors
    from lerobot.envs.utils import preprocess_observation
    from lerobot.policies.factory import make_policy, make_pre_post_processors

    from eval.lerobot_bridge import ActionTokenizerConfig

    env_cfg = MetaworldEnv(task=task)
    cfg = ActionTokenizerConfig(inner=str(inner), n_action_steps=2, device="cpu")
    policy = make_policy(cfg, env_cfg=env_cfg)  # LeRobot's factory finds the class by the registered type
    preprocessor, postprocessor = make_pre_post_processors(cfg)
    env_pre, env_post = make_env_pre_post_processors(env_cfg, cfg)
    vec = make_env(env_cfg, n_envs=1)[task][0]
    try:
        obs, _ = vec.reset(seed=[0])
        batch = preprocess_observation(obs)
        batch["task"] = list(vec.call("task_description"))
        action = postprocessor(policy.select_action(preprocessor(env_pre(batch))))
        action = env_post({"action": action})["action"]
        obs, reward, *_ = vec.step(action.numpy())
    finally:
        vec.close()
    return LeRobotStep(policy, batch, action, obs, reward)
