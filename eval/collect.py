"""Collect scripted-expert demonstrations into a LeRobot v3 dataset.

Usage::

    action-tokenizers collect --env metaworld --tasks push-v3,pick-place-v3 --episodes 50 --out runs/demos

Each task's expert runs from seeds ``seed, seed + 1, ...`` (``reset(seed=k)`` fixes the object and
goal layout, see ``eval.envs``) until ``episodes`` successes are kept; an episode that does not
succeed within ``horizon`` is dropped, counted and replaced by the next seed. After success the
expert keeps acting for ``steps_after_success`` more steps, so demos show holding still at the
goal. The dataset is written with ``LeRobotDataset.create(..., use_videos=False)`` + ``add_frame`` /
``save_episode`` / ``finalize``, so LeRobot reads it back as is; ``meta/collect.json`` beside
LeRobot's files records every episode's seed and the dropped failures. The whole directory is
written atomically: an interrupted run leaves nothing at ``--out``.

Frames hold the observation *before* the action (``observation.state``, 39-D), the expert's
``action`` (4-D), and what the step returned (``next.reward``, ``next.success``, ``next.done``).

With cameras (``--cameras corner2 --image-size 64``) the frames follow LeRobot's Meta-World env
instead: ``observation.images.<camera>`` (HWC uint8, rendered before the action) and
``observation.state`` = ``agent_pos`` (4-D: hand xyz, gripper), what a policy gets at evaluation;
the privileged 39-D state (object and goal positions) moves to ``observation.environment_state``,
kept for analysis and for the expert, not as a policy input. Images are LeRobot ``image`` features
(PNG inside the parquet files) by default, or ``video`` features with ``--video`` (docs/vision.md
compares both).

DAgger (``--driver POLICY --driven-episodes N``): after the expert's demos, N more episodes per task
from the same seeds in which a trained policy acts first (re-planning every ``--driver-steps``) for
a seeded random number of steps, then the expert takes over; what the expert does from the state the
policy left is recorded (``run_driven_episode`` says why), whether or not it succeeds, and
``meta/collect.json`` gives each such episode its ``driven_steps``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from action_tokenizers.io import atomic_directory, check_output, write_json
from eval.envs import (
    CameraRenderer,
    check_name,
    env_spec,
    expert_policy,
    list_cameras,
    list_families,
    list_tasks,
    make_env,
    proprio_state,
)
from training.threads import check_threads, cpu_threads

__all__ = ["CollectConfig", "CollectResult", "DEFAULT_TASKS", "EpisodeRecord", "run_collect", "run_expert_episode"]

DEFAULT_TASKS = ("reach-v3", "push-v3", "button-press-v3", "drawer-close-v3")
MIN_VIDEO_SIZE = 32  # smallest frame side LeRobot's default video codec (SVT-AV1) encodes here
MAX_ATTEMPTS_FACTOR = 3  # give up on a task after this many times `episodes` attempts

# Meta-World's 39-D observation, in order (two objects; unused object slots are zeros).
_OBS_18 = ["hand_x", "hand_y", "hand_z", "gripper_open"] + [
    f"obj{i}_{c}" for i in (1, 2) for c in ("x", "y", "z", "qw", "qx", "qy", "qz")
]
METAWORLD_STATE_NAMES = _OBS_18 + [f"prev_{n}" for n in _OBS_18] + ["goal_x", "goal_y", "goal_z"]
METAWORLD_ACTION_NAMES = ["hand_dx", "hand_dy", "hand_dz", "gripper"]
ENV_STATE_KEY = "observation.environment_state"  # LeRobot's key for privileged simulator state
IMAGE_PREFIX = "observation.images."


@dataclass
class CollectConfig:
    """Run scripted experts in simulation and save their successful episodes as a LeRobot dataset."""

    out: Path = Path("runs/demos")
    """Directory to write the LeRobot v3 dataset into (created atomically)."""
    env: str = "metaworld"
    """Env family (see eval.envs.list_families())."""
    tasks: tuple[str, ...] = DEFAULT_TASKS
    """Task names within the family, e.g. push-v3,pick-place-v3."""
    episodes: int = 50
    """Successful episodes to keep per task (failures are replaced by fresh seeds)."""
    seed: int = 0
    """First episode seed; episode j of a task resets with seed + j (+ replacements)."""
    horizon: int | None = None
    """Steps before an episode counts as failed (None: the env's limit, 500 for Meta-World)."""
    steps_after_success: int = 10
    """Steps to keep recording after the first success (0: stop at success)."""
    action_noise: float = 0.0
    """DART noise injection: std of Gaussian noise added to the expert's action before it is executed (clipped to the action bounds); the clean expert action is what is recorded, so the demos show how the expert corrects small deviations a learned policy will make (0: none)."""
    driver: str | None = None
    """DAgger: a trained policy (a directory or Hub id) that starts --driven-episodes more episodes per
    task after the expert's. It acts for a random number of steps (up to half of --driven-horizon,
    seeded; the first --driver-steps actions of each chunk it plans, not recorded), then the expert
    takes over and is recorded: demos that start where the policy goes, showing how to recover."""
    driven_episodes: int = 0
    """Episodes per task driven by --driver, from seeds seed, seed+1, ... (the expert demos' layouts)."""
    driver_steps: int = 5
    """Actions the driver executes from each chunk before it re-plans (eval's --n-action-steps)."""
    driven_horizon: int = 150
    """Steps the expert records after taking over, unless it ends steps_after_success after a success."""
    threads: int | None = 1
    """Torch CPU threads for the --driver policy (None = torch's default), as in eval."""
    repo_id: str = "local/metaworld_demos"
    """Repo id written into the dataset (used by LeRobotDataset(repo_id, root=out) and push)."""
    cameras: tuple[str, ...] = ()
    """Cameras to record as observation.images.<camera> (e.g. corner2); empty: state only."""
    image_size: int = 64
    """Side of the square camera images in pixels."""
    video: bool = False
    """Store camera frames as LeRobot video features (mp4) instead of image features (PNG in parquet)."""
    overwrite: bool = False
    """Write into an --out that holds other files (they are kept; only this project's files are replaced)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        from eval.cli import comma_list

        self.tasks = comma_list(self.tasks)
        if not self.tasks:
            raise ValueError("tasks must name at least one task, e.g. --tasks push-v3,reach-v3")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks has duplicates: {list(self.tasks)}")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.horizon is not None and self.horizon < 1:
            raise ValueError(f"horizon must be >= 1 or None, got {self.horizon}")
        if self.steps_after_success < 0:
            raise ValueError(f"steps_after_success must be >= 0, got {self.steps_after_success}")
        if not (self.action_noise >= 0 and math.isfinite(self.action_noise)):
            raise ValueError(f"action_noise must be a finite std >= 0, got {self.action_noise}")
        _check_driver(self)
        if "/" not in self.repo_id:
            raise ValueError(f"repo_id must look like 'owner/name', got {self.repo_id!r}")
        check_name(self.env, list_families(), "env family")
        valid = list_tasks(self.env)
        for task in self.tasks:
            check_name(task, valid, f"{self.env} task")
        if isinstance(self.cameras, str):
            self.cameras = (self.cameras,)
        self.cameras = tuple(c.strip() for part in self.cameras for c in str(part).split(",") if c.strip())
        for camera in self.cameras:
            check_name(camera, list_cameras(self.env), f"{self.env} camera")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras has duplicates: {list(self.cameras)}")
        if not 8 <= self.image_size <= 480:
            raise ValueError(f"image_size must be in [8, 480] pixels, got {self.image_size}")
        if self.video and self.image_size < MIN_VIDEO_SIZE:  # LeRobot's AV1 encoder crashes the process below it
            raise ValueError(f"--video needs image_size >= {MIN_VIDEO_SIZE} (got {self.image_size}); "
                             "smaller frames can be stored as image features (drop --video)")


@dataclass
class EpisodeRecord:
    """One expert episode: per-step arrays plus whether and when it succeeded."""

    seed: int
    states: np.ndarray  # (t, s) float32, observation before each action
    actions: np.ndarray  # (t, d) float32
    rewards: np.ndarray  # (t,) float32
    successes: np.ndarray  # (t,) bool, info["success"] after each step
    success_step: int | None  # index of the first successful step, None if it never succeeded
    images: dict[str, np.ndarray] | None = None  # camera -> (t, size, size, 3) uint8, before each action
    driven_steps: int | None = None  # DAgger: steps a policy drove before the expert took over (not recorded)

    @property
    def success(self) -> bool:
        return self.success_step is not None


@dataclass
class CollectResult:
    """Where the dataset went and what it holds."""

    path: Path
    kept: dict[str, int]  # successful episodes saved, per task
    failures: dict[str, int]  # failed episodes dropped, per task
    seeds: dict[str, list[int]]  # seeds of the saved episodes, per task, in episode order
    failed_seeds: dict[str, list[int]]
    frames: int
    fps: int
    seconds: float


def run_collect(cfg: CollectConfig) -> CollectResult:
    """Collect ``cfg.episodes`` successful expert episodes per task into ``cfg.out``."""
    check_output(cfg.out, "collect", cfg.overwrite)  # refuse now, not after the rollouts
    specs = {task: env_spec(cfg.env, task) for task in cfg.tasks}
    fps, obs_dim, act_dim = _common_dims(specs)
    horizon = _horizon(cfg, specs)
    from lerobot.utils.utils import SuppressProgressBars  # hides LeRobot's per-episode "Map" bars

    start = time.perf_counter()
    with atomic_directory(cfg.out, kind="collect", overwrite=cfg.overwrite) as tmp:
        dataset = _create_dataset(cfg, tmp, fps, obs_dim, act_dim)
        try:
            with SuppressProgressBars(), cpu_threads(cfg.threads):
                log = _collect_tasks(cfg, dataset, specs, horizon)
        finally:
            dataset.finalize()  # close LeRobot's writers now, so nothing writes into tmp after cleanup
        seconds = time.perf_counter() - start
        result = CollectResult(
            path=cfg.out,
            kept={t: len(v["seeds"]) for t, v in log.items()},
            failures={t: len(v["failed_seeds"]) for t, v in log.items()},
            seeds={t: v["seeds"] for t, v in log.items()},
            failed_seeds={t: v["failed_seeds"] for t, v in log.items()},
            frames=sum(v["frames"] for v in log.values()),
            fps=fps,
            seconds=seconds,
        )
        write_json(tmp / "meta" / "collect.json", _collect_json(cfg, result, log, specs, horizon))
    return result


def _check_driver(cfg: CollectConfig) -> None:
    check_threads(cfg.threads)
    if cfg.driven_episodes < 0 or cfg.driver_steps < 1 or cfg.driven_horizon < 1:
        raise ValueError(f"driven_episodes must be >= 0, driver_steps and driven_horizon >= 1; got "
                         f"{cfg.driven_episodes}, {cfg.driver_steps}, {cfg.driven_horizon}")
    if (cfg.driver is None) != (cfg.driven_episodes == 0):
        raise ValueError("--driver and --driven-episodes go together: a policy to drive, and how many episodes per task")
    if cfg.driver is not None and cfg.cameras:
        raise ValueError("--driver drives state-based collection only; drop --cameras or --driver")


# --------------------------------------------------------------------------- the loop
def _collect_tasks(cfg: CollectConfig, dataset: Any, specs: dict, horizon: int) -> dict[str, dict]:
    """Every task in turn; episode indices run on across tasks, as LeRobot numbers them."""
    from tqdm.auto import tqdm

    log: dict[str, dict] = {}
    driver = _load_driver(cfg, specs)
    total = len(cfg.tasks) * (cfg.episodes + cfg.driven_episodes)
    with tqdm(total=total, desc="collect", unit="ep", disable=not cfg.progress) as bar:
        for task in cfg.tasks:
            first_index = sum(len(entry["episodes"]) for entry in log.values())
            log[task] = _collect_task(cfg, dataset, task, specs[task].description, horizon, first_index, bar, driver)
    return log


def _load_driver(cfg: CollectConfig, specs: dict) -> Any:
    """The --driver policy, checked against every task's dimensions before any episode."""
    if cfg.driver is None:
        return None
    from eval.policies import load_policy
    from eval.rollout import check_dims

    driver = load_policy(cfg.driver, cfg.env)
    for spec in specs.values():
        check_dims(driver, spec.action_dim, spec.obs_dim, cfg.driver_steps)
    return driver


def _collect_task(
    cfg: CollectConfig, dataset: Any, task: str, text: str, horizon: int, first_index: int, bar: Any,
    driver: Any = None,
) -> dict[str, Any]:
    """Run seeds ``cfg.seed, cfg.seed + 1, ...`` until ``cfg.episodes`` successes; save each success.
    Then, with a driver, its ``cfg.driven_episodes`` (kept whether or not the expert succeeds from there)."""
    entry: dict[str, Any] = {"seeds": [], "failed_seeds": [], "episodes": [], "frames": 0, "driven_seeds": []}
    attempts = cfg.episodes * MAX_ATTEMPTS_FACTOR
    env = make_env(cfg.env, task, seed=cfg.seed)
    camera = CameraRenderer(env, cfg.cameras, cfg.image_size, cfg.env) if cfg.cameras else None
    try:
        for seed in range(cfg.seed, cfg.seed + attempts):
            if len(entry["seeds"]) == cfg.episodes:
                break
            expert = expert_policy(cfg.env, task)  # fresh per episode: scripted policies hold no state
            record = run_expert_episode(env, expert, seed, horizon, cfg.steps_after_success, camera, cfg.action_noise)
            if not record.success:
                entry["failed_seeds"].append(seed)
                bar.set_postfix(task=task, dropped=len(entry["failed_seeds"]))
                continue
            _keep(dataset, record, text, cfg.env, entry, first_index, bar)
            entry["seeds"].append(seed)
        for seed in range(cfg.seed, cfg.seed + cfg.driven_episodes):
            expert = expert_policy(cfg.env, task)
            record = run_driven_episode(env, expert, driver, text, seed, cfg.driven_horizon, cfg.steps_after_success,
                                        cfg.driver_steps)
            _keep(dataset, record, text, cfg.env, entry, first_index, bar)
            entry["driven_seeds"].append(seed)
    finally:
        if camera is not None:
            camera.close()
        env.close()
    if not entry["seeds"]:
        raise RuntimeError(
            f"the {cfg.env} expert for {task} failed all {attempts} episodes within {horizon} steps "
            f"(seeds {cfg.seed}..{cfg.seed + attempts - 1}); raise --max-steps or drop the task"
        )
    if len(entry["seeds"]) < cfg.episodes:
        warnings.warn(
            f"{task}: only {len(entry['seeds'])} of {cfg.episodes} episodes succeeded in {attempts} attempts; "
            "keeping those",
            stacklevel=3,
        )
    return entry


def _keep(dataset: Any, record: EpisodeRecord, text: str, family: str, entry: dict[str, Any], first_index: int,
          bar: Any) -> None:
    """Save one episode and log it in ``entry`` (its index, seed, length, first success, who drove it)."""
    _save_episode(dataset, record, text, family)
    entry["episodes"].append({"episode_index": first_index + len(entry["episodes"]), "seed": record.seed,
                              "length": len(record.actions), "success_step": record.success_step,
                              **({} if record.driven_steps is None else {"driven_steps": record.driven_steps})})
    entry["frames"] += len(record.actions)
    bar.update(1)


def run_expert_episode(
    env: Any, expert: Any, seed: int, horizon: int, steps_after_success: int, camera: Any = None,
    action_noise: float = 0.0,
) -> EpisodeRecord:
    """Roll the expert out from ``reset(seed=seed)``; stop ``steps_after_success`` steps after success.

    ``camera`` (a ``CameraRenderer``) renders its cameras before every action. ``action_noise``
    perturbs the executed action only (seeded by ``seed``); the recorded action is the expert's.
    """
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high

    def execute(obs: np.ndarray, label: np.ndarray) -> np.ndarray:
        return np.clip(label + rng.normal(0.0, action_noise, label.shape), low, high) if action_noise else label

    return _labelled_episode(env, expert, seed, horizon, steps_after_success, execute, camera)


def run_driven_episode(env: Any, expert: Any, driver: Any, text: str, seed: int, horizon: int,
                       steps_after_success: int, driver_steps: int) -> EpisodeRecord:
    """DAgger for chunked policies: ``driver`` acts from ``reset(seed=seed)`` for a seeded random number
    of steps in ``[0, horizon // 2]`` (its chunks' first ``driver_steps`` actions, re-planning in
    between; not recorded), then the expert takes over and its episode from there is recorded.

    Why a takeover rather than labelling the driver's own path: a chunk label is the expert's next
    ``h`` actions, and along a path the driver keeps steering those are not the chunk the expert would
    execute from the chunk's first state; after the takeover every recorded chunk is one. The states
    the episode starts from are the driver's (where it stalls or drifts). A non-finite driver action
    is refused."""
    takeover = int(np.random.default_rng(seed).integers(0, horizon // 2 + 1))
    low, high = env.action_space.low, env.action_space.high
    obs, _ = env.reset(seed=seed)
    plan: list[np.ndarray] = []
    for _ in range(takeover):
        if not plan:
            chunk = np.asarray(driver.predict_action_chunk(
                {"observation.state": np.asarray(obs, dtype=np.float64)[None], "task": [text]}))
            plan.extend(chunk[0, :driver_steps])
        action = np.asarray(plan.pop(0), dtype=np.float64)
        if not np.isfinite(action).all():
            raise ValueError(f"the driver returned a non-finite action {action.tolist()} (seed {seed})")
        obs, _, terminated, truncated, _ = env.step(np.clip(action, low, high).astype(np.float32))
        if terminated or truncated:
            break
    record = _labelled_episode(env, expert, seed, horizon, steps_after_success, lambda _, label: label, obs=obs)
    record.driven_steps = takeover
    return record


def _labelled_episode(env: Any, expert: Any, seed: int, horizon: int, steps_after_success: int,
                      execute: Callable[[np.ndarray, np.ndarray], np.ndarray], camera: Any = None,
                      obs: np.ndarray | None = None) -> EpisodeRecord:
    """From ``obs`` (default: ``reset(seed=seed)``): record each state and the expert's action there, step
    with ``execute(state, expert_action)``; stop ``steps_after_success`` steps after success or after ``horizon``."""
    if obs is None:
        obs, _ = env.reset(seed=seed)
    states, actions, rewards, successes = [], [], [], []
    frames: list[dict[str, np.ndarray]] = []
    success_step = None
    for step in range(horizon):
        if camera is not None:
            frames.append(camera())
        action = np.asarray(expert(obs), dtype=np.float32)
        states.append(np.asarray(obs, dtype=np.float32))
        actions.append(action)
        obs, reward, terminated, truncated, info = env.step(np.asarray(execute(obs, action), dtype=np.float32))
        rewards.append(float(reward))
        successes.append(bool(info.get("success", False)))
        if success_step is None and successes[-1]:
            success_step = step
        if terminated or truncated:
            break
        if success_step is not None and step - success_step >= steps_after_success:
            break
    return EpisodeRecord(
        seed=seed,
        states=np.stack(states),
        actions=np.stack(actions),
        rewards=np.asarray(rewards, dtype=np.float32),
        successes=np.asarray(successes, dtype=bool),
        success_step=success_step,
        images={name: np.stack([f[name] for f in frames]) for name in camera.cameras} if camera is not None else None,
    )


def _save_episode(dataset: Any, record: EpisodeRecord, task_text: str, family: str) -> None:
    n = len(record.actions)
    for i in range(n):
        frame = {
            "observation.state": record.states[i],
            "action": record.actions[i],
            "next.reward": np.array([record.rewards[i]], dtype=np.float32),
            "next.success": np.array([record.successes[i]], dtype=bool),
            "next.done": np.array([i == n - 1], dtype=bool),
            "task": task_text,
        }
        if record.images is not None:  # LeRobot's env convention: proprioception as the state
            frame["observation.state"] = proprio_state(family, record.states[i]).astype(np.float32)
            frame[ENV_STATE_KEY] = record.states[i]
            frame.update({IMAGE_PREFIX + name: images[i] for name, images in record.images.items()})
        dataset.add_frame(frame)
    dataset.save_episode()


# --------------------------------------------------------------------------- set-up helpers
def _common_dims(specs: dict) -> tuple[int, int, int]:
    """One dataset needs one fps and one state/action size across its tasks."""
    first = next(iter(specs.values()))
    for spec in specs.values():
        if (spec.fps, spec.obs_dim, spec.action_dim) != (first.fps, first.obs_dim, first.action_dim):
            mine = (spec.fps, spec.obs_dim, spec.action_dim)
            raise ValueError(
                f"tasks {first.task} and {spec.task} differ in (fps, obs size, action size): "
                f"{(first.fps, first.obs_dim, first.action_dim)} vs {mine}; collect them into separate datasets"
            )
    return first.fps, first.obs_dim, first.action_dim


def _horizon(cfg: CollectConfig, specs: dict) -> int:
    limit = min(spec.max_steps for spec in specs.values())
    if cfg.horizon is None:
        return limit
    if cfg.horizon > limit:
        raise ValueError(f"horizon={cfg.horizon} exceeds the env's episode limit of {limit} steps")
    return cfg.horizon


def _create_dataset(cfg: CollectConfig, root: Path, fps: int, obs_dim: int, act_dim: int) -> Any:
    from lerobot.datasets import LeRobotDataset

    metaworld = cfg.env == "metaworld"
    state_names = METAWORLD_STATE_NAMES if metaworld else None
    features = {
        "observation.state": {"dtype": "float32", "shape": (obs_dim,), "names": state_names},
        "action": {
            "dtype": "float32",
            "shape": (act_dim,),
            "names": METAWORLD_ACTION_NAMES if metaworld else None,
        },
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.success": {"dtype": "bool", "shape": (1,), "names": None},
        "next.done": {"dtype": "bool", "shape": (1,), "names": None},
    }
    if cfg.cameras:
        features[ENV_STATE_KEY] = features.pop("observation.state")
        dim = len(proprio_state(cfg.env, np.zeros(obs_dim)))
        features["observation.state"] = {"dtype": "float32", "shape": (dim,),
                                         "names": state_names[:dim] if state_names else None}
        for name in cfg.cameras:
            features[IMAGE_PREFIX + name] = {"dtype": "video" if cfg.video else "image",
                                             "shape": (cfg.image_size, cfg.image_size, 3),
                                             "names": ["height", "width", "channels"]}
    root.rmdir()  # LeRobot creates the root itself and refuses an existing one
    robot_type = "sawyer" if metaworld else None
    return LeRobotDataset.create(
        cfg.repo_id, fps, root=root, features=features, robot_type=robot_type, use_videos=cfg.video
    )


def _collect_json(cfg: CollectConfig, result: CollectResult, log: dict, specs: dict, horizon: int) -> dict:
    from importlib.metadata import version

    return {
        "env": cfg.env,
        "fps": result.fps,
        "seed": cfg.seed,
        "seed_rule": "episode attempts of each task reset with seeds seed, seed+1, ...; failures are replaced",
        "horizon": horizon,
        "steps_after_success": cfg.steps_after_success,
        "cameras": list(cfg.cameras),
        "image_size": cfg.image_size if cfg.cameras else None,
        "episodes_per_task": cfg.episodes,
        "driver": cfg.driver,
        "driven_episodes_per_task": cfg.driven_episodes,
        "driver_steps": cfg.driver_steps if cfg.driver else None,
        "frames": result.frames,
        "seconds": round(result.seconds, 3),
        "versions": {pkg: version(pkg) for pkg in ("lerobot", "metaworld", "mujoco")},
        "tasks": {
            task: {
                "description": specs[task].description,
                "kept": result.kept[task],
                "dropped_failures": result.failures[task],
                "seeds": entry["seeds"],
                "failed_seeds": entry["failed_seeds"],
                "episodes": entry["episodes"],
                "driven_seeds": entry["driven_seeds"],
            }
            for task, entry in log.items()
        },
    }
