"""Model-based augmentation (Cao & Xie 2026) as an execution mode for any policy and gymnasium env.

Ordinary closed-loop execution queries the policy on the real observation. The augmentation
instead keeps an *auxiliary state*, starts it at the real initial state, and propagates it with a
transition model learned from the demonstrations on (state, action token) -> next state pairs;
the policy is queried on the auxiliary state and its decoded chunk runs in the real system open
loop. The paper shows this removes the need for a smooth (relaxed-TV-continuous) quantized
policy, at the price of needing open-loop stability and a good model (a biased model leaves a
regret floor). ``eval/theory/e4_augmentation.py`` shows the effect on the paper's construction.

Usage::

    from action_tokenizers import AutoActionTokenizer
    from eval.augmentation import TransitionModel, augmented_rollout

    tok = AutoActionTokenizer.from_pretrained("runs/so101-binning/tokenizer")
    model = TransitionModel.from_dataset("runs/demos", tokenizer=tok)   # ridge regression
    model.save("runs/demos-model")
    result = augmented_rollout(policy, model, "metaworld", ["push-v3"], seeds=range(10))
    [(e.episode_return, e.model_drift) for e in result.episodes]   # compare with eval.rollout.rollout

The mode runs through the one batched rollout loop, each env wrapped in :class:`ModelStateEnv`::

    action-tokenizers eval --policy runs/lm-fast --tasks reach-v3 --execution augmented --dataset runs/demos --out runs/eval-aug

The model sees the *decoded* token actions (``decode(encode(chunk))`` of the demo actions): the
action a policy can emit is a decoded token, and E[next state | state, token] is what the
augmentation needs. Shapes: ``s`` state dim, ``d`` action dim, ``h`` chunk length.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from action_tokenizers.io import atomic_directory, read_json, write_json
from eval.rollout import EnvPool, EpisodeRecord, RolloutResult, rollout

if TYPE_CHECKING:
    from action_tokenizers.base import ActionTokenizer

__all__ = ["AugmentedEpisodeRecord", "MODES", "ModelStateEnv", "TransitionModel", "augmented_rollout",
           "check_model_fits", "load_or_fit_model", "mean_model_drift", "quantize_actions"]

MODES = ("augmented", "closed_loop")
MODEL_FILE, CONFIG_FILE = "model.safetensors", "transition_model.json"


def quantize_actions(tokenizer: "ActionTokenizer", actions: np.ndarray) -> np.ndarray:
    """One episode's actions ``(T, d)`` -> their decoded tokens ``(T, d)``, chunk by chunk.

    The episode is cut into consecutive chunks of the tokenizer's length; the last one is padded
    with the final action and the padding dropped after decoding.
    """
    a = np.asarray(actions, dtype=np.float64)
    h = int(tokenizer.chunk_size)
    n = -(-a.shape[0] // h)
    padded = np.concatenate([a, np.repeat(a[-1:], n * h - a.shape[0], axis=0)])
    chunks = padded.reshape(n, h, a.shape[1])
    return np.asarray(tokenizer.decode(tokenizer.encode(chunks))).reshape(n * h, -1)[: a.shape[0]]


class TransitionModel:
    """``next_state = state + W^T phi(state, action)``: ridge regression on standardized features.

    ``phi = [(state - mu_s) / sd_s, (action - mu_a) / sd_a, 1]``; predicting the change of state keeps
    a slow robot state well conditioned. ``bias`` (s,) is added to every prediction, for studying
    how a biased model's floor grows (it is saved with the model).
    """

    def __init__(self, ridge: float = 1e-3) -> None:
        if not ridge >= 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        self.ridge = float(ridge)
        self.weights: np.ndarray | None = None  # (s + d + 1, s)
        self.mean: np.ndarray | None = None  # (s + d,)
        self.scale: np.ndarray | None = None  # (s + d,)
        self.bias: np.ndarray | None = None  # (s,)
        self.state_dim: int | None = None
        self.action_dim: int | None = None
        self.metrics: dict[str, float] = {}
        self.source: dict[str, str] = {}  # what it was fitted on (dataset, raw actions or decoded tokens)

    # ------------------------------------------------------------------ fitting
    def _features(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        z = (np.concatenate([states, actions], axis=1) - self.mean) / self.scale
        return np.concatenate([z, np.ones((z.shape[0], 1))], axis=1)

    def fit(self, states: np.ndarray, actions: np.ndarray, next_states: np.ndarray) -> "TransitionModel":
        """Least squares on transitions: states (n, s), actions (n, d), next_states (n, s)."""
        x, a, y = (np.asarray(v, dtype=np.float64) for v in (states, actions, next_states))
        if x.ndim != 2 or a.ndim != 2 or y.shape != x.shape or a.shape[0] != x.shape[0]:
            raise ValueError(f"need states (n, s), actions (n, d), next_states (n, s); got {x.shape}, {a.shape}, {y.shape}")
        if x.shape[0] == 0:
            raise ValueError("cannot fit a transition model on zero transitions")
        for name, v in (("states", x), ("actions", a), ("next_states", y)):
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{name} contain NaN or inf")
        self.state_dim, self.action_dim = x.shape[1], a.shape[1]
        xa = np.concatenate([x, a], axis=1)
        self.mean, self.scale = xa.mean(axis=0), np.maximum(xa.std(axis=0), 1e-8)
        phi = self._features(x, a)
        reg = self.ridge * np.eye(phi.shape[1])
        reg[-1, -1] = 0.0  # the intercept is not shrunk
        self.weights = np.linalg.solve(phi.T @ phi + reg, phi.T @ (y - x))
        self.bias = np.zeros(self.state_dim)
        resid = self.predict(x, a) - y
        self.metrics = {"n_transitions": float(x.shape[0]), "rmse": float(np.sqrt(np.mean(resid**2))),
                        "rmse_hold_state": float(np.sqrt(np.mean((y - x) ** 2)))}
        return self

    @classmethod
    def from_dataset(cls, dataset: str | Path, tokenizer: "ActionTokenizer | None" = None, ridge: float = 1e-3,
                     state_key: str = "observation.state", action_key: str = "action") -> "TransitionModel":
        """Fit on every (state, decoded action token, next state) transition of a LeRobot dataset.

        Without a tokenizer the raw actions are used. Transitions never cross an episode boundary.
        """
        from action_tokenizers.data import load_episodes

        xs, acts, ys = [], [], []
        for ep in load_episodes(dataset, keys=(action_key, state_key), with_tasks=False):
            s, a = ep.arrays[state_key], ep.arrays[action_key]
            if len(s) < 2:
                continue
            if tokenizer is not None:
                a = quantize_actions(tokenizer, a)
            xs.append(s[:-1])
            acts.append(a[:-1])
            ys.append(s[1:])
        if not xs:
            raise ValueError(f"{dataset} has no episode with 2 or more frames: no transitions to fit on")
        model = cls(ridge).fit(np.concatenate(xs), np.concatenate(acts), np.concatenate(ys))
        actions = "raw" if tokenizer is None else f"decoded tokens of {type(tokenizer).__name__} (chunk {tokenizer.chunk_size})"
        model.source = {"dataset": str(dataset), "actions": actions}
        return model

    # ------------------------------------------------------------------ prediction
    def _require_fitted(self) -> None:
        if self.weights is None:
            raise RuntimeError("TransitionModel is not fitted: call fit(...), from_dataset(...) or load(dir)")

    def predict(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Next states (b, s) for states (b, s) and actions (b, d)."""
        self._require_fitted()
        x, a = np.atleast_2d(np.asarray(states, dtype=np.float64)), np.atleast_2d(np.asarray(actions, dtype=np.float64))
        if x.shape[1] != self.state_dim or a.shape[1] != self.action_dim or x.shape[0] != a.shape[0]:
            raise ValueError(f"model expects states (b, {self.state_dim}) and actions (b, {self.action_dim}), "
                             f"got {x.shape} and {a.shape}")
        return x + self._features(x, a) @ self.weights + self.bias

    def rollout(self, state: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """States (b, h, s) after each action of chunks (b, h, d), starting from state (b, s)."""
        x, out = np.atleast_2d(np.asarray(state, dtype=np.float64)), []
        for j in range(np.shape(actions)[1]):
            x = self.predict(x, np.asarray(actions)[:, j])
            out.append(x)
        return np.stack(out, axis=1)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """``model.safetensors`` (weights, standardization, bias) + ``transition_model.json``, atomically."""
        from safetensors.numpy import save_file

        self._require_fitted()
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            tensors = {"weights": self.weights, "mean": self.mean, "scale": self.scale, "bias": self.bias}
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / MODEL_FILE))
            write_json(tmp / CONFIG_FILE, {"model_class": type(self).__name__, "format_version": 1, "ridge": self.ridge,
                                           "state_dim": self.state_dim, "action_dim": self.action_dim, "metrics": self.metrics,
                                           "source": self.source})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "TransitionModel":
        from safetensors.numpy import load_file

        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"transition model directory {directory} does not exist "
                                    f"(expected {CONFIG_FILE} and {MODEL_FILE} written by TransitionModel.save)")
        cfg = read_json(directory / CONFIG_FILE, what="transition model config")
        if cfg.get("model_class") != cls.__name__:
            raise ValueError(f"{directory} holds a {cfg.get('model_class')!r}, not a {cls.__name__}")
        path = directory / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the model directory is incomplete")
        t = load_file(str(path))
        model = cls(cfg["ridge"])
        model.state_dim, model.action_dim = int(cfg["state_dim"]), int(cfg["action_dim"])
        f = model.state_dim + model.action_dim
        expected = {"weights": (f + 1, model.state_dim), "mean": (f,), "scale": (f,), "bias": (model.state_dim,)}
        for k, shape in expected.items():
            if k not in t or t[k].shape != shape:
                raise ValueError(f"{path}: tensor {k!r} should have shape {shape}, got {None if k not in t else t[k].shape}")
        model.weights, model.mean, model.scale, model.bias = (t[k].astype(np.float64) for k in expected)
        model.metrics, model.source = cfg.get("metrics", {}), cfg.get("source", {})
        return model


class ModelStateEnv:
    """A gymnasium-style env whose observation is the auxiliary state: the augmentation as an env wrapper.

    The real env executes every action and supplies rewards, ``info["success"]``, termination and
    frames; the observation handed back is the model-propagated state (the real initial state at
    reset). Why a wrapper: any loop that queries a policy on observations and executes its chunks
    becomes the augmentation unchanged: the batched ``eval.rollout`` loop, with its action
    clipping, fault records and videos.
    ``info["real_state"]`` holds the real state; ``max_deviation[seed]`` the largest
    ``||aux - real||`` of each episode run since construction.
    """

    def __init__(self, env: Any, model: TransitionModel, resync_every: int = 0,
                 state_of: Callable[[Any], np.ndarray] | None = None) -> None:
        model._require_fitted()
        self.env, self.model, self.resync_every = env, model, int(resync_every)
        self.state_of = state_of or _flat_state
        self.action_space = env.action_space
        self.observation_space = getattr(env, "observation_space", None)
        self.max_deviation: dict[int | None, float] = {}
        self._aux: np.ndarray | None = None
        self._seed: int | None = None
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        real = self.state_of(obs)
        self._aux, self._seed, self._steps = real.copy(), seed, 0
        self.max_deviation[seed] = 0.0
        return self._aux.copy(), {**info, "real_state": real}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._aux is None:
            raise RuntimeError("ModelStateEnv.step before reset")
        obs, reward, terminated, truncated, info = self.env.step(action)
        real = self.state_of(obs)
        self._steps += 1
        if self.resync_every and self._steps % self.resync_every == 0:
            self._aux = real.copy()
        else:
            self._aux = self.model.predict(self._aux[None], np.asarray(action, dtype=np.float64).reshape(1, -1))[0]
        deviation = float(np.linalg.norm(self._aux - real))
        self.max_deviation[self._seed] = max(self.max_deviation[self._seed], deviation)
        return self._aux.copy(), reward, terminated, truncated, {**info, "real_state": real}

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()

    @property
    def unwrapped(self) -> Any:
        return getattr(self.env, "unwrapped", self.env)


def _flat_state(obs: Any) -> np.ndarray:
    return np.asarray(obs, dtype=np.float64).ravel()


# ---------------------------------------------------------------------- the executor: the batched rollout loop
@dataclass
class AugmentedEpisodeRecord(EpisodeRecord):
    """An :class:`eval.rollout.EpisodeRecord` of an augmented episode, with how far the model drifted."""

    model_drift: float | None = None
    """Largest ||model-propagated state - real state|| over the episode (None if its reset failed)."""


class _ModelStatePool:
    """Hands out an ``EnvPool``'s real envs wrapped in :class:`ModelStateEnv` (the rollout loop asks a pool for envs)."""

    def __init__(self, pool: Any, model: TransitionModel) -> None:
        self.pool, self.model = pool, model
        self.wrapped: list[tuple[str, ModelStateEnv]] = []

    def get(self, env_name: str, task: str, n: int, seed: int, kwargs: dict[str, Any] | None = None) -> list[ModelStateEnv]:
        envs = [ModelStateEnv(env, self.model) for env in self.pool.get(env_name, task, n, seed, kwargs)]
        self.wrapped.extend((task, env) for env in envs)
        return envs

    def drift(self) -> dict[tuple[str, int], float]:
        """Largest ||model state - real state|| of every (task, seed) episode run so far."""
        return {(task, seed): d for task, env in self.wrapped for seed, d in env.max_deviation.items()}


def augmented_rollout(policy: Any, model: TransitionModel, env_name: str, tasks: Sequence[str], seeds: Iterable[int],
                      *, pool: EnvPool | None = None, **rollout_kwargs: Any) -> RolloutResult:
    """``eval.rollout.rollout`` with the policy queried on model-propagated states; same records, same seeds.

    Every environment is wrapped in :class:`ModelStateEnv`, so the batched loop plans on the
    auxiliary state and executes each chunk's first ``n_action_steps`` actions open loop in the
    real env. The records are :class:`eval.rollout.EpisodeRecord`s with one more field,
    ``model_drift`` (the episode's largest ``||model state - real state||``; None if its reset failed).
    ``rollout_kwargs`` are ``rollout``'s (``n_action_steps``, ``horizon``, ``n_envs``, ...).
    """
    own_pool = pool is None
    real_pool = EnvPool(rollout_kwargs.pop("env_factory", None)) if own_pool else pool
    wrapped = _ModelStatePool(real_pool, model)
    try:
        result = rollout(policy, env_name, tasks, seeds, pool=wrapped, **rollout_kwargs)
    finally:
        if own_pool:
            real_pool.close()
    drift = wrapped.drift()
    episodes = [AugmentedEpisodeRecord(**{f.name: getattr(e, f.name) for f in fields(e)}, model_drift=drift.get((e.task, e.seed)))
                for e in result.episodes]
    return RolloutResult(episodes=episodes, frames=result.frames)


def mean_model_drift(episodes: Sequence[Any]) -> float | None:
    """Mean over episodes of their largest model-vs-real state distance (None without any measured episode)."""
    values = [e.model_drift for e in episodes if getattr(e, "model_drift", None) is not None]
    return float(np.mean(values)) if values else None


def load_or_fit_model(policy: Any, transition_model: str | Path | None = None, dataset: str | Path | None = None,
                      ridge: float = 1e-3) -> TransitionModel:
    """The saved model in ``transition_model``, else one fitted on ``dataset``'s demos.

    The fit uses the policy's action tokenizer when it has one (``TokenizedPolicy.action_tokenizer``),
    so the model learns E[next state | state, decoded token] -- the actions the policy can emit --
    and raw actions otherwise (the expert, the regression baseline).
    """
    if transition_model is not None:
        return TransitionModel.load(transition_model)
    if dataset is None:
        raise ValueError("augmented execution needs a transition model: pass a saved TransitionModel directory "
                         "or a demo dataset to fit one on")
    return TransitionModel.from_dataset(dataset, tokenizer=getattr(policy, "action_tokenizer", None), ridge=ridge)


def check_model_fits(model: TransitionModel, state_dim: int, action_dim: int, where: str) -> None:
    """Reject a transition model of another state or action space before any rollout."""
    model._require_fitted()
    if (model.state_dim, model.action_dim) != (state_dim, action_dim):
        raise ValueError(f"transition model maps states of dimension {model.state_dim} and actions of dimension "
                         f"{model.action_dim}, but {where} has states of dimension {state_dim} and actions of "
                         f"dimension {action_dim}: fit it on demos of this robot")
