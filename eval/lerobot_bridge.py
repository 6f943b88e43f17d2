"""A LeRobot ``PreTrainedPolicy`` around any policy of this toolkit, so ``lerobot-eval`` can drive it.

LeRobot's evaluation loop calls ``select_action(batch)`` once per environment step and expects
``(b, action_dim)``; our policies return whole chunks. ``ActionTokenizerPolicy`` keeps an action
queue per batch: when it is empty it calls ``predict_action_chunk`` once and queues the first
``n_action_steps`` actions of every row (the same receding horizon as ``eval.rollout``);
``reset()`` (called by LeRobot at each rollout start) clears it.

Registered as policy type ``action_tokenizer``; LeRobot's factories find the policy class and the
(identity) processors in this module by its naming convention. From the command line::

    lerobot-eval --policy.discover_packages_path=eval --policy.type=action_tokenizer \\
        --policy.inner=runs/regression --env.type=metaworld --env.task=reach-v3 \\
        --eval.n_episodes=10 --eval.batch_size=2

(``discover_packages_path=eval`` makes LeRobot import every ``eval`` module, which registers this
one. It runs slowly because LeRobot's Meta-World env renders a 480x480 frame every step:
docs/measurements.md.)

Observation caveat (measured): LeRobot's Meta-World env exposes only ``agent_pos`` = the first 4 of
the 39 state values (hand xyz, gripper) as ``observation.state``; a policy trained on this toolkit's
39-D Meta-World demos is rejected there with a message naming both dimensions. A policy trained on
camera demos (``collect --cameras corner2``: ``agent_pos`` + ``observation.images.corner2``) runs
there: LeRobot's single camera arrives as ``observation.image`` (``(b, 3, 480, 480)`` float in
[0, 1], corner2 as our collection renders it) and is resized (area averaging) to the policy's size.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.optim.optimizers import AdamWConfig
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import ACTION, OBS_IMAGE, OBS_STATE
from torch import Tensor

__all__ = ["ActionTokenizerConfig", "ActionTokenizerPolicy", "make_action_tokenizer_pre_post_processors"]

TYPE = "action_tokenizer"


@PreTrainedConfig.register_subclass(TYPE)
@dataclass
class ActionTokenizerConfig(PreTrainedConfig):
    """LeRobot config of the bridge: which toolkit policy to load and how many actions to run per chunk."""

    inner: str = "expert"
    """What ``eval.policies.load_policy`` accepts: 'expert', a regression directory or a trained-LM directory."""
    env: str = "metaworld"
    """Environment family of the expert (used when inner is 'expert')."""
    n_action_steps: int | None = None
    """Actions executed per chunk before re-planning (default: the inner policy's chunk size)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_action_steps is not None and self.n_action_steps < 1:
            raise ValueError(f"n_action_steps must be >= 1 or None, got {self.n_action_steps}")

    @property
    def observation_delta_indices(self) -> None:
        return None

    @property
    def action_delta_indices(self) -> None:
        return None

    @property
    def reward_delta_indices(self) -> None:
        return None

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig()  # never used: the bridge is for evaluation, training happens in this toolkit

    def get_scheduler_preset(self) -> None:
        return None

    def validate_features(self) -> None:
        if self.output_features and ACTION not in self.output_features:
            raise ValueError(f"the bridge needs an {ACTION!r} output feature, got {sorted(self.output_features)}")


class ActionTokenizerPolicy(PreTrainedPolicy):
    """``select_action`` -> ``(b, d)`` from a queue refilled by the inner policy's chunks."""

    config_class = ActionTokenizerConfig
    name = TYPE

    def __init__(self, config: ActionTokenizerConfig, inner: Any | None = None, **kwargs: Any) -> None:
        super().__init__(config)
        from eval.policies import load_policy

        self.config = config
        self.inner = inner if inner is not None else load_policy(config.inner, config.env)
        self.n_action_steps = int(config.n_action_steps or self.inner.chunk_size)
        if not 1 <= self.n_action_steps <= int(self.inner.chunk_size):
            raise ValueError(f"n_action_steps must be in [1, {self.inner.chunk_size}], got {self.n_action_steps}")
        self._check_features()
        self._queue: deque[Tensor] = deque()

    def _check_features(self) -> None:
        """Reject an environment whose action or state dimension the inner policy cannot handle."""
        features = {**(self.config.input_features or {}), **(self.config.output_features or {})}
        action, state = features.get(ACTION), features.get(OBS_STATE)
        if action is not None and int(action.shape[-1]) != int(self.inner.action_dim):
            raise ValueError(f"environment action dimension {action.shape[-1]} != policy action dimension {self.inner.action_dim}")
        want = getattr(self.inner, "state_dim", None)
        if state is not None and want is not None and int(state.shape[-1]) != int(want):
            raise ValueError(
                f"environment {OBS_STATE} has dimension {state.shape[-1]} but the policy was trained on {want}-D states"
            )

    def get_optim_params(self) -> dict:
        return {}

    def reset(self) -> None:
        self._queue.clear()
        if hasattr(self.inner, "reset"):
            self.inner.reset()

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict | None]:
        raise NotImplementedError("the action_tokenizer bridge evaluates policies; train them with `action-tokenizers train`")

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Any], **kwargs: Any) -> Tensor:
        """LeRobot batch (``observation.state`` (b, s) tensor, ``task`` list) -> (b, h, d) tensor."""
        state = batch[OBS_STATE]
        states = state.detach().cpu().numpy().astype(np.float64) if isinstance(state, Tensor) else np.asarray(state, np.float64)
        if states.ndim == 1:
            states = states[None]
        tasks = batch.get("task") or [""] * len(states)
        tasks = [tasks] * len(states) if isinstance(tasks, str) else list(tasks)
        query = {OBS_STATE: states, "task": tasks, **self._images(batch)}
        chunks = self.inner.predict_action_chunk(query)  # (b, h, d) numpy
        return torch.as_tensor(np.asarray(chunks), dtype=torch.float32, device=self.config.device)

    def _images(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """The inner policy's cameras from a LeRobot batch, at the size it was trained on (CHW float)."""
        keys = tuple(getattr(self.inner, "image_keys", ()))
        out = {}
        for key in keys:
            frames = batch.get(key)
            if frames is None and len(keys) == 1:  # LeRobot's single-camera envs call it observation.image
                frames = batch.get(OBS_IMAGE)
            if frames is None:
                raise KeyError(f"the policy sees cameras {list(keys)} but the batch has {sorted(batch)}")
            frames = torch.as_tensor(frames).detach().float().cpu()
            frames = frames[None] if frames.ndim == 3 else frames  # (b, 3, H, W) in [0, 1]
            h, w = int(self.inner.image_shape[0]), int(self.inner.image_shape[1])
            if tuple(frames.shape[-2:]) != (h, w):
                frames = torch.nn.functional.interpolate(frames, size=(h, w), mode="area")
            out[key] = frames
        return out

    @torch.no_grad()
    def select_action(self, batch: dict[str, Any], **kwargs: Any) -> Tensor:
        if not self._queue:
            chunk = self.predict_action_chunk(batch)[:, : self.n_action_steps]  # (b, n, d)
            self._queue.extend(chunk.transpose(0, 1))  # n tensors of (b, d)
        return self._queue.popleft()


def make_action_tokenizer_pre_post_processors(config: ActionTokenizerConfig, dataset_stats: Any = None) -> tuple[Any, Any]:
    """Found by LeRobot's factory by name. Identity apart from batching and CPU output: the inner
    policy normalizes its own inputs and returns raw actions."""
    from lerobot.processor.batch_processor import AddBatchDimensionProcessorStep
    from lerobot.processor.device_processor import DeviceProcessorStep
    from lerobot.processor.factory import make_policy_processor_pipelines

    return make_policy_processor_pipelines(
        input_steps=[AddBatchDimensionProcessorStep()],
        output_steps=[DeviceProcessorStep(device="cpu")],
    )
