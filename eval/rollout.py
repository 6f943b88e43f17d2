"""The rollout loop: batched, receding-horizon closed-loop episodes, one record per episode.

A batch is ``n_envs`` instances of one task stepped in lockstep, one seed each. Every
``n_action_steps`` steps the policy is called once for all still-running instances and returns a
chunk ``(b, h, d)``; each instance executes the first ``n_action_steps`` actions of its row, then
the policy re-plans (receding horizon). Episodes run a fixed ``horizon`` of steps (success is
"succeeded at some step"), so returns are comparable between policies and regret is meaningful.

With ``ensemble_decay=K`` the chunks are temporally ensembled (ACT, Zhao et al. 2023): the
policy is still called every ``n_action_steps`` steps, but the action executed at step t is the
weighted mean of every still-valid prediction for t (a chunk planned at step s predicts s..s+h-1),
weights ``exp(-K * i)`` with i = 0 the oldest prediction; ``n_action_steps=1`` is ACT's scheme.
``temperature`` is passed to ``predict_action_chunk`` of a sampling policy (None: its own setting).

Faults are recorded, not hidden: an environment that raises ends that episode as failed with the
error text while the other instances go on; a non-finite action is replaced by the nearest point
of the action space (NaN -> its center) and counted. Seeds are per episode, so the expert and any
policy rolled out with the same seeds start from the same initial states.

Usage::

    from eval.policies import load_policy
    from eval.rollout import rollout
    result = rollout(load_policy("expert"), "metaworld", ["reach-v3"], seeds=range(10))
    [e.success for e in result.episodes]
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["EnvPool", "EpisodeRecord", "RolloutResult", "check_compatible", "check_decoding", "check_dims",
           "check_ensemble_decay", "check_temperature", "ensemble_weights", "rollout", "sanitize_action", "samples"]

EnvFactory = Callable[..., Any]


@dataclass
class EpisodeRecord:
    """One closed-loop episode. ``rewards`` has one entry per executed step (kept out of JSON)."""

    task: str
    seed: int
    instruction: str = ""  # the text the policy was given (the task description unless replaced)
    success: bool = False
    episode_return: float = 0.0
    length: int = 0
    error: str | None = None
    malformed: int = 0
    nonfinite_actions: int = 0
    first_success_step: int | None = None
    latency_s: list[float] = field(default_factory=list)  # one per policy call that served this episode
    tokens: list[float] = field(default_factory=list)  # mean tokens per chunk of each call, when reported
    wall_s: float = 0.0  # this episode's share of its batch's wall time (simulation + policy)
    rewards: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["rewards"]
        return out


@dataclass
class RolloutResult:
    """Episode records in (task, seed) order, and rendered frames ``(t, H, W, 3)`` per recorded episode."""

    episodes: list[EpisodeRecord]
    frames: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)


def sanitize_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, bool]:
    """Clip an action into ``[low, high]``; NaN becomes the center, +-inf the bound. Says if any was non-finite."""
    a = np.asarray(action, dtype=np.float64)
    bad = not bool(np.all(np.isfinite(a)))
    if bad:
        a = np.where(np.isnan(a), (low + high) / 2.0, a)
    return np.clip(a, low, high), bad


def _default_factory() -> EnvFactory:
    from eval.envs import make_env

    return make_env


def _env_dims(env: Any) -> tuple[int, int | None]:
    """(action dim, state dim) of a Box-spaced environment."""
    obs_space = getattr(env, "observation_space", None)
    shape = getattr(obs_space, "shape", None)
    return int(env.action_space.shape[0]), (int(shape[0]) if shape else None)


def check_compatible(policy: Any, env: Any, n_action_steps: int) -> None:
    """Reject a policy that cannot drive ``env`` before any rollout: action/state dims, chunk length."""
    check_dims(policy, *_env_dims(env), n_action_steps)


def check_dims(policy: Any, action_dim: int, state_dim: int | None, n_action_steps: int) -> None:
    """Reject a policy whose action/state dimension or chunk length does not fit an environment's."""
    if int(policy.action_dim) != action_dim:
        raise ValueError(
            f"policy action dimension {policy.action_dim} does not match the environment's {action_dim}: "
            "this policy was trained on another robot or action space"
        )
    policy_state = getattr(policy, "state_dim", None)
    if policy_state is not None and state_dim is not None and int(policy_state) != state_dim:
        raise ValueError(f"policy expects observation.state of dimension {policy_state}, the environment gives {state_dim}")
    if not 1 <= n_action_steps <= int(policy.chunk_size):
        raise ValueError(f"n_action_steps must be in [1, chunk_size={policy.chunk_size}], got {n_action_steps}")


def samples(policy: Any) -> bool:
    """Whether ``policy`` decodes by sampling, i.e. its ``predict_action_chunk`` takes a ``temperature``."""
    try:
        return "temperature" in inspect.signature(policy.predict_action_chunk).parameters
    except (TypeError, ValueError):  # no introspectable signature: treat as deterministic
        return False


def check_temperature(temperature: float | None) -> None:
    """Refuse a sampling temperature that is non-finite or negative (None = the policy's own setting)."""
    if temperature is not None and not (math.isfinite(float(temperature)) and float(temperature) >= 0):
        raise ValueError(f"--temperature must be finite and >= 0 (0 = greedy), got {temperature}")


def check_decoding(policy: Any, temperature: float | None) -> None:
    """Refuse a temperature that is non-finite or negative, or given to a policy that does not sample."""
    if temperature is None:
        return
    check_temperature(temperature)
    if not samples(policy):
        raise ValueError(f"--temperature applies only to tokenized (LM) policies that sample; "
                         f"{type(policy).__name__} predicts deterministically: drop --temperature")


def check_ensemble_decay(decay: float | None) -> None:
    """Refuse a temporal-ensembling decay that is non-finite or negative (None = ensembling off)."""
    if decay is not None and not (math.isfinite(float(decay)) and float(decay) >= 0):
        raise ValueError(f"--ensemble-decay must be finite and >= 0 (0 = plain mean of overlapping chunks), got {decay}")


def ensemble_weights(n: int, decay: float) -> np.ndarray:
    """ACT's normalized weights ``exp(-decay * i)`` over ``n`` predictions, i = 0 the oldest."""
    w = np.exp(-float(decay) * np.arange(n, dtype=np.float64))
    return w / w.sum()


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


class _Batch:
    """Lockstep state of ``b`` environment instances of one task."""

    def __init__(self, envs: list[Any], task: str, seeds: list[int], render: list[bool], instructions: list[str]) -> None:
        self.envs, self.task = envs, task
        self.records = [EpisodeRecord(task=task, seed=int(s), instruction=text) for s, text in zip(seeds, instructions)]
        self.obs: list[np.ndarray | None] = [None] * len(seeds)
        self.active = [True] * len(seeds)
        self.plan: list[np.ndarray | None] = [None] * len(seeds)
        self.history: list[list[tuple[int, np.ndarray]]] = [[] for _ in seeds]  # (planned at, chunk), ensembling only
        self.frames: list[list[np.ndarray] | None] = [[] if r else None for r in render]

    def fail(self, i: int, e: BaseException) -> None:
        self.records[i].error = _error_text(e)
        self.active[i] = False

    def render(self, i: int) -> None:
        """Keep a frame of instance i if it is being recorded (a render failure fails the episode)."""
        if self.frames[i] is not None:
            self.frames[i].append(np.asarray(self.envs[i].render()))

    def reset(self) -> None:
        for i, (env, rec) in enumerate(zip(self.envs, self.records)):
            try:
                self.obs[i], _ = env.reset(seed=rec.seed)
                self.render(i)
            except Exception as e:  # noqa: BLE001 - any simulator failure is recorded, not raised
                self.fail(i, e)

    def running(self) -> list[int]:
        return [i for i, a in enumerate(self.active) if a]


def _plan(policy: Any, batch: _Batch, rows: list[int], n_action_steps: int, cameras: Any = None,
          temperature: float | None = None) -> None:
    """One policy call for every running instance; stores each row's chunk and the call's stats.

    ``cameras`` (``eval.envs.PolicyCameras``, camera policies only) renders the policy's cameras
    now, once per re-plan, and gives it the proprioceptive state it was trained on.
    """
    states = np.stack([np.asarray(batch.obs[i], dtype=np.float64) for i in rows])  # (b, s)
    texts = [batch.records[i].instruction for i in rows]
    query = {"observation.state": states, "task": texts, "task_name": [batch.task] * len(rows)}
    if cameras is not None:
        query.update(cameras([batch.envs[i] for i in rows], [batch.obs[i] for i in rows]))
    chunks = np.asarray(policy.predict_action_chunk(query) if temperature is None
                        else policy.predict_action_chunk(query, temperature=temperature))
    expected = (len(rows), n_action_steps, int(policy.action_dim))
    if chunks.ndim != 3 or chunks.shape[0] != len(rows) or chunks.shape[1] < n_action_steps or chunks.shape[2] != expected[2]:
        raise ValueError(f"policy returned chunks of shape {chunks.shape}; expected (b={len(rows)}, h>={n_action_steps}, d={expected[2]})")
    stats = getattr(policy, "last_stats", None) or {}
    per_row = stats.get("malformed_per_row")
    total = int(stats.get("malformed", 0) or 0)
    tokens = stats.get("tokens_per_chunk")
    latency = stats.get("latency_s")  # timed once, by the policy around its own work
    for j, i in enumerate(rows):
        batch.plan[i] = chunks[j]
        if latency is not None:
            batch.records[i].latency_s.append(float(latency))
        if tokens is not None:
            batch.records[i].tokens.append(float(tokens))
        if per_row is not None:
            batch.records[i].malformed += int(per_row[j])
        elif j == 0:  # without per-row counts the batch total goes to its first row; totals stay exact
            batch.records[i].malformed += total


def _step(batch: _Batch, i: int, action: np.ndarray, t: int, stop_on_success: bool) -> None:
    env, rec = batch.envs[i], batch.records[i]
    space = env.action_space
    action, bad = sanitize_action(action, np.asarray(space.low, np.float64), np.asarray(space.high, np.float64))
    rec.nonfinite_actions += int(bad)
    try:
        obs, reward, terminated, truncated, info = env.step(action.astype(space.dtype))
        batch.obs[i] = obs
        rec.rewards.append(float(reward))
        rec.episode_return += float(reward)
        rec.length += 1
        batch.render(i)
    except Exception as e:  # noqa: BLE001 - recorded as a failed episode; the others go on
        batch.fail(i, e)
        return
    if bool(info.get("success", False)) and not rec.success:
        rec.success, rec.first_success_step = True, t + 1
    if terminated or truncated or (stop_on_success and rec.success):
        batch.active[i] = False


def _ensembled(history: list[tuple[int, np.ndarray]], t: int, decay: float) -> np.ndarray:
    """The weighted mean of every chunk's prediction for step ``t`` (oldest first); drops expired chunks."""
    history[:] = [(s, c) for s, c in history if t < s + len(c)]
    preds = np.stack([c[t - s] for s, c in history])  # (n, d), oldest first
    return ensemble_weights(len(preds), decay) @ preds


def _run_batch(
    policy: Any, batch: _Batch, n_action_steps: int, horizon: int, stop_on_success: bool, cameras: Any = None,
    temperature: float | None = None, ensemble_decay: float | None = None,
) -> None:
    start = time.perf_counter()
    if hasattr(policy, "reset"):
        policy.reset()
    batch.reset()
    for t in range(horizon):
        rows = batch.running()
        if not rows:
            break
        if t % n_action_steps == 0:
            _plan(policy, batch, rows, n_action_steps, cameras, temperature)
            if ensemble_decay is not None:
                for i in rows:
                    batch.history[i].append((t, np.asarray(batch.plan[i], dtype=np.float64)))
        for i in rows:
            if ensemble_decay is None:
                action = batch.plan[i][t % n_action_steps]
            else:
                action = _ensembled(batch.history[i], t, ensemble_decay)
            _step(batch, i, action, t, stop_on_success)
    share = (time.perf_counter() - start) / len(batch.records)
    for rec in batch.records:
        rec.wall_s = share


class EnvPool:
    """Environment instances kept across rollouts, keyed by (family, task, creation kwargs).

    Why: building a Meta-World env costs seconds (MT1 samples 50 layouts), far more than an
    episode, and ``reset(seed=k)`` gives the same initial state whatever the instance did before,
    so the expert and every policy of a run can share instances. Use as a context manager, or call
    ``close()``.
    """

    def __init__(self, factory: EnvFactory | None = None) -> None:
        self.factory = factory
        self._envs: dict[tuple[str, str, tuple], list[Any]] = {}

    def get(self, env_name: str, task: str, n: int, seed: int, kwargs: dict[str, Any] | None = None) -> list[Any]:
        """``n`` instances of ``task`` (created on first use with ``make_env(env_name, task, seed=seed, **kwargs)``)."""
        factory = self.factory or _default_factory()
        key = (env_name, task, tuple(sorted((kwargs or {}).items())))
        envs = self._envs.setdefault(key, [])
        while len(envs) < n:
            envs.append(factory(env_name, task, seed=seed, **(kwargs or {})))
        return envs[:n]

    def close(self) -> None:
        for envs in self._envs.values():
            for env in envs:
                _close(env)
        self._envs.clear()

    def __enter__(self) -> "EnvPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rollout(
    policy: Any,
    env_name: str,
    tasks: Sequence[str],
    seeds: Iterable[int],
    *,
    n_action_steps: int | None = None,
    horizon: int = 200,
    n_envs: int = 4,
    stop_on_success: bool = False,
    render_episodes: int = 0,
    render_kwargs: dict[str, Any] | None = None,
    progress: bool = False,
    env_factory: EnvFactory | None = None,
    pool: EnvPool | None = None,
    instructions: Callable[[str, int], str] | None = None,
    temperature: float | None = None,
    ensemble_decay: float | None = None,
) -> RolloutResult:
    """Roll ``policy`` out on every task for every seed; returns one record per (task, seed).

    ``instructions(task, j)`` gives the text of the ``j``-th episode of ``task`` (default: the
    task's description, what the demos recorded); e.g. an unseen paraphrase (``eval.paraphrases``).

    ``n_action_steps`` defaults to the policy's chunk size; ``render_episodes`` keeps frames of the
    first that many seeds per task, creating the envs with ``render_kwargs`` (default
    ``render_mode="rgb_array"``; needs a renderer: ``MUJOCO_GL=egl`` on a headless machine).
    Environments come from ``pool`` when given (and stay open), else from a pool of this call.

    ``temperature`` (sampling policies only; None = the policy's own) is passed to every policy
    call; the caller seeds torch's RNG for reproducible sampling (``eval.evaluate`` does, from its
    seed). ``ensemble_decay`` turns on temporal ensembling of overlapping chunks (module docstring).
    """
    from tqdm import tqdm

    from eval import envs as env_registry

    seeds = [int(s) for s in seeds]
    n_steps = int(n_action_steps or policy.chunk_size)
    if horizon < 1 or n_envs < 1 or not seeds:
        raise ValueError(f"need horizon >= 1, n_envs >= 1 and at least one seed; got {horizon}, {n_envs}, {len(seeds)} seeds")
    check_decoding(policy, temperature)
    check_ensemble_decay(ensemble_decay)
    own_pool = pool is None
    pool = EnvPool(env_factory) if own_pool else pool
    render = (render_kwargs or {"render_mode": "rgb_array"}) if render_episodes > 0 else None
    result = RolloutResult(episodes=[])
    cameras = env_registry.PolicyCameras.for_policy(policy, env_name)  # None: the raw observation is the state
    bar = tqdm(total=len(tasks) * len(seeds), desc="rollout", disable=not progress)
    try:
        for task in tasks:
            envs = pool.get(env_name, task, min(n_envs, len(seeds)), seeds[0], render)
            if cameras is None:
                check_compatible(policy, envs[0], n_steps)
            else:  # a camera policy gets the state it was trained on (LeRobot's agent_pos) beside its frames
                action_dim, state_dim = _env_dims(envs[0])
                check_dims(policy, action_dim, cameras.state_dim(state_dim), n_steps)
            description = env_registry.task_description(env_name, task)
            for lo in range(0, len(seeds), n_envs):
                batch_seeds = seeds[lo : lo + n_envs]
                filmed = [lo + j < render_episodes for j in range(len(batch_seeds))]
                texts = [description if instructions is None else instructions(task, lo + j) for j in range(len(batch_seeds))]
                batch = _Batch(envs[: len(batch_seeds)], task, batch_seeds, filmed, texts)
                _run_batch(policy, batch, n_steps, horizon, stop_on_success, cameras, temperature, ensemble_decay)
                _collect(result, batch)
                bar.update(len(batch_seeds))
                bar.set_postfix(task=task, success=f"{np.mean([e.success for e in batch.records]):.2f}")
    finally:
        bar.close()
        if cameras is not None:
            cameras.close()
        if own_pool:
            pool.close()
    return result


def _collect(result: RolloutResult, batch: _Batch) -> None:
    result.episodes.extend(batch.records)
    for rec, frames in zip(batch.records, batch.frames):
        if frames:
            result.frames[(batch.task, rec.seed)] = np.stack(frames)


def _close(env: Any) -> None:
    try:
        env.close()
    except Exception:  # noqa: BLE001 - closing a broken simulator must not fail the report
        pass

