"""The policy protocol the rollout loop drives, the scripted expert, and ``load_policy(spec)``.

Every policy, whatever its insides (scripted expert, regression MLP, tokenized LM), answers one
call for a whole batch::

    chunks = policy.predict_action_chunk({"observation.state": states, "task": texts})
    # states (b, s) float array, texts list[str] of length b  ->  chunks (b, h, d) raw action units
    policy.last_stats  # {"malformed": int, "latency_s": float, ...} for that call

``load_policy("expert")`` returns the scripted expert; ``load_policy(DIR)`` reads the marker file in
DIR and returns a ``RegressionPolicy`` or a ``training.TokenizedPolicy`` (imported only then).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from training.regression import REGRESSION_MARKER

__all__ = ["EXPERT", "ExpertPolicy", "Policy", "load_policy", "policy_name"]

EXPERT = "expert"
# Marker files that say what a policy directory holds: file name -> (module, class).
_MARKERS: dict[str, tuple[str, str]] = {
    REGRESSION_MARKER: ("training.regression", "RegressionPolicy"),
    "policy_config.json": ("training", "TokenizedPolicy"),
}


@runtime_checkable
class Policy(Protocol):
    """What the rollout loop needs from a policy.

    Optional extras the loop and the report use when present: ``name`` (the results key),
    ``tokens_per_chunk``, ``state_dim`` (checked against the environment before any rollout),
    ``reset()`` (called before each batch of episodes) and ``last_stats["malformed_per_row"]``
    (per-episode attribution of malformed decodes; totals are exact without it).
    """

    chunk_size: int
    action_dim: int
    last_stats: dict[str, Any]

    def predict_action_chunk(self, batch: dict[str, Any]) -> np.ndarray:
        """``{"observation.state": (b, s), "task": list[str]}`` -> ``(b, h, d)`` raw actions."""
        ...


class ExpertPolicy:
    """Meta-World's scripted expert behind the policy protocol (chunk size 1: it re-plans every step).

    The expert of each row is chosen by ``batch["task_name"]`` when the rollout loop provides it,
    otherwise by matching the task text against every task's description.
    """

    name = EXPERT
    chunk_size = 1

    def __init__(self, env: str = "metaworld") -> None:
        from eval import envs

        self.env = env
        self._envs = envs
        self._experts: dict[str, Any] = {}
        self._by_text: dict[str, str] | None = None
        self.action_dim = envs.env_spec(env, envs.list_tasks(env)[0]).action_dim
        self.last_stats: dict[str, Any] = {"malformed": 0, "latency_s": 0.0}

    def _task_of_text(self, text: str) -> str:
        if self._by_text is None:
            self._by_text = {self._envs.task_description(self.env, t): t for t in self._envs.list_tasks(self.env)}
        if text in self._by_text:
            return self._by_text[text]
        if text in self._by_text.values():  # a task name passed as the text
            return text
        raise ValueError(f"the expert knows no {self.env} task described as {text!r}")

    def _expert(self, task: str) -> Any:
        if task not in self._experts:
            self._experts[task] = self._envs.expert_policy(self.env, task)
        return self._experts[task]

    def predict_action_chunk(self, batch: dict[str, Any]) -> np.ndarray:
        start = time.perf_counter()
        states = np.asarray(batch["observation.state"], dtype=np.float64)  # (b, s)
        names = batch.get("task_name") or [self._task_of_text(t) for t in batch["task"]]
        if len(names) != states.shape[0]:
            raise ValueError(f"got {states.shape[0]} states but {len(names)} tasks")
        actions = np.stack([np.asarray(self._expert(t)(s), dtype=np.float64) for t, s in zip(names, states)])
        self.last_stats = {"malformed": 0, "latency_s": time.perf_counter() - start}
        return actions[:, None, :]  # (b, 1, d)


def policy_name(policy: Any, fallback: str = "policy") -> str:
    """The key a policy's results go under: its ``name`` attribute, else ``fallback``."""
    name = getattr(policy, "name", None)
    return str(name) if name else fallback


def load_policy(spec: str | Path, env: str = "metaworld") -> Policy:
    """``"expert"``, a policy directory (regression baseline or trained LM) or the Hub repo id of one -> a policy object."""
    if str(spec) == EXPERT:
        return ExpertPolicy(env)
    root = Path(spec)
    if not root.is_dir():
        from action_tokenizers.hub import hub_repo_id

        if hub_repo_id(spec):  # a policy pushed with `train --push-to-hub`: its data files, fetched once
            from training.hub import resolve_policy

            return load_policy(resolve_policy(str(spec)), env)
        raise FileNotFoundError(
            f"policy {str(spec)!r} is neither {EXPERT!r} nor a directory "
            f"(expected a regression-baseline or trained-LM directory holding one of {sorted(_MARKERS)})"
        )
    for marker, (module, cls) in _MARKERS.items():
        if (root / marker).is_file():
            import importlib

            return getattr(importlib.import_module(module), cls).from_pretrained(root)
    raise ValueError(
        f"{root} holds no policy marker file: expected one of {sorted(_MARKERS)} "
        f"(found {sorted(p.name for p in root.iterdir())[:10]})"
    )
