"""Simulated tasks by family and name, with their scripted experts and task text.

A family is a small factory object registered in ``FAMILIES``; rollout and collection code only
call ``make_env`` / ``expert_policy`` / ``task_description`` / ``env_spec``, so a family built on
``lerobot.envs.make_env`` (e.g. pusht) can be added later without touching them.

Meta-World (``metaworld`` 3.0, 50 v3 tasks) is the built-in family. Its envs come from
``gymnasium.make("Meta-World/MT1", env_name=task, seed=seed)``, with one change to reset:

* Plain MT1 ignores ``reset(seed=...)``: the sawyer env's reset discards the seed, and the MT1
  wrapper picks one of 50 pre-sampled goal layouts with the env's running RNG before the reset, so
  ``reset(seed=1)`` twice gives two different layouts (measured). ``make_env`` therefore wraps the
  env in ``SeededReset``: task sampling on reset is turned off, the object/goal layout is drawn from
  the env's seeded RNG (``seeded_rand_vec``, the same uniform ranges MT1 samples its 50 layouts
  from), and ``reset(seed=k)`` reseeds that RNG first. The initial state is then a pure function of
  ``(task, k)``, whatever happened before; ``reset()`` without a seed keeps drawing from the RNG
  seeded by ``make_env(..., seed=...)``. This is what ``lerobot.envs.metaworld.MetaworldEnv`` does.
* Control rate: MuJoCo timestep 0.0025 s x ``frame_skip`` 5 = 0.0125 s per ``step`` -> 80 Hz
  (``env.unwrapped.dt``; equals the env's ``metadata["render_fps"]``). Episodes truncate at 500 steps.
* Observations are 39-D float64 (hand xyz, gripper opening, two objects' xyz + quaternion, the same
  18 values from the previous step, goal xyz); actions are 4-D in [-1, 1] (hand dx, dy, dz, gripper).
* Cameras (``CameraRenderer``): the scene's named cameras rendered at ``size x size`` through
  MuJoCo's own ``mujoco.Renderer`` (headless backend from ``MUJOCO_GL``), shadows and
  multisampling off (they multiply the software-rendering cost; docs/vision.md has the figures).
  ``corner2`` is moved and turned the way LeRobot's ``MetaworldEnv`` does it, so a policy trained on
  our frames sees LeRobot's view. The proprioceptive state LeRobot's env gives (``agent_pos``) is
  the first 4 values of the 39 (``proprio_state``).
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol

import numpy as np

if not os.environ.get("DISPLAY"):  # no display: render headless unless the user chose a backend
    os.environ.setdefault("MUJOCO_GL", "egl")

__all__ = [
    "CameraRenderer",
    "PolicyCameras",
    "EnvFamily",
    "EnvSpec",
    "FAMILIES",
    "MetaWorldFamily",
    "SeededReset",
    "env_spec",
    "expert_policy",
    "get_family",
    "list_families",
    "list_tasks",
    "list_cameras",
    "make_env",
    "proprio_state",
    "register_family",
    "task_description",
]

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EnvSpec:
    """What a policy and a dataset writer need to know about one task, measured from a live env."""

    family: str
    task: str
    obs_dim: int
    action_dim: int
    fps: int  # control steps per second of simulated time
    max_steps: int  # the env's own episode limit
    description: str
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]


class EnvFamily(Protocol):
    """The factory every family implements; ``make`` returns a gymnasium env."""

    name: str

    def tasks(self) -> list[str]: ...

    def make(self, task: str, seed: int = 0, **kwargs: Any) -> Any: ...

    def expert(self, task: str) -> Policy: ...

    def describe(self, task: str) -> str: ...


# --------------------------------------------------------------------------- Meta-World
@functools.cache
def _seeded_reset_base() -> type:
    import gymnasium as gym

    class SeededReset(gym.Wrapper):
        """Makes ``reset(seed=k)`` of a Meta-World MT1 env reproducible (see the module docstring)."""

        def __init__(self, env: gym.Env) -> None:
            super().__init__(env)
            inner = env
            while inner is not None and not hasattr(inner, "sample_tasks_on_reset"):
                inner = getattr(inner, "env", None)
            if inner is None or not getattr(inner, "tasks", None):
                raise TypeError(f"expected a Meta-World MT1 env with a task-select wrapper, got {env}")
            inner.sample_tasks_on_reset = False
            self.unwrapped.set_task(inner.tasks[0])  # sets the task's fixed attributes once
            self.unwrapped._freeze_rand_vec = False  # then draw layouts from the seeded RNG ...
            self.unwrapped.seeded_rand_vec = True  # ... rather than replaying the task's fixed one

        def reset(self, *, seed: int | None = None, options: dict | None = None):
            if seed is not None:
                self.unwrapped.seed(int(seed))
            return self.env.reset(seed=seed, options=options)

    return SeededReset


def __getattr__(name: str) -> Any:  # ``from eval.envs import SeededReset`` without importing gymnasium early
    if name == "SeededReset":
        return _seeded_reset_base()
    raise AttributeError(f"module 'eval.envs' has no attribute {name!r}")


class MetaWorldFamily:
    """Meta-World v3 tasks (MT1), their scripted experts and LeRobot's task descriptions."""

    name = "metaworld"
    # The scene's named cameras (the sawyer XML's order); CameraRenderer checks them against the model.
    cameras = ("topview", "corner", "corner2", "corner3", "behindGripper", "gripperPOV")
    proprio_dim = 4  # LeRobot's MetaworldEnv: agent_pos = raw_obs[:4] (hand xyz, gripper opening)

    def tasks(self) -> list[str]:
        return sorted(_metaworld_policies())

    def make(self, task: str, seed: int = 0, **kwargs: Any) -> Any:
        import gymnasium as gym

        self._check(task)
        env = gym.make("Meta-World/MT1", env_name=task, seed=int(seed), disable_env_checker=True, **kwargs)
        return _seeded_reset_base()(env)

    def expert(self, task: str) -> Policy:
        self._check(task)
        return _ScriptedExpert(task, _metaworld_policies()[task]())

    def describe(self, task: str) -> str:
        self._check(task)
        descriptions = _lerobot_metaworld_descriptions()
        if task not in descriptions:
            raise KeyError(f"LeRobot's metaworld_config.json has no description for {task!r}")
        return descriptions[task]

    def _check(self, task: str) -> None:
        check_name(task, self.tasks(), f"{self.name} task")


class _ScriptedExpert:
    """Meta-World's hand-written policy for one task: obs (39,) -> action (4,) float32 in [-1, 1]."""

    def __init__(self, task: str, policy: Any) -> None:
        self.task, self.policy = task, policy

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # "Constant(s) may be too high": Meta-World's own note that it clips
            warnings.simplefilter("ignore", UserWarning)
            action = self.policy.get_action(np.asarray(obs, dtype=np.float64))
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)

    def __repr__(self) -> str:
        return f"ScriptedExpert({self.task!r}, {type(self.policy).__name__})"


@functools.cache
def _metaworld_policies() -> dict[str, type]:
    """Meta-World ships ``ENV_POLICY_MAP``: every v3 task name -> its scripted policy class."""
    import metaworld  # noqa: F401  (registers the Meta-World/* gymnasium ids)
    from metaworld.policies import ENV_POLICY_MAP

    return dict(ENV_POLICY_MAP)


@functools.cache
def _lerobot_metaworld_descriptions() -> dict[str, str]:
    """The task strings LeRobot's own Meta-World env reports, read without importing LeRobot."""
    spec = find_spec("lerobot")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("lerobot is not installed; it provides Meta-World task descriptions")
    path = Path(next(iter(spec.submodule_search_locations))) / "envs" / "metaworld_config.json"
    return dict(json.loads(path.read_text())["TASK_DESCRIPTIONS"])


# --------------------------------------------------------------------------- cameras
MESA_PACKAGES = "libosmesa6 libegl1 libgl1-mesa-dri"
# LeRobot's MetaworldEnv moves corner2 (cam_pos[2]) and turns its frames by 180 degrees; we do the same.
_LEROBOT_CORNER2_POS = (0.75, 0.075, 0.7)


def list_cameras(family: str = "metaworld") -> list[str]:
    """Camera names a family's envs can render (``--cameras`` takes some of them)."""
    return list(getattr(get_family(family), "cameras", ()))


def proprio_state(family: str, obs: np.ndarray) -> np.ndarray:
    """The proprioceptive part of a raw observation, as LeRobot's env exposes it (``agent_pos``)."""
    dim = getattr(get_family(family), "proprio_dim", None)
    if dim is None:
        raise ValueError(f"env family {family!r} declares no proprioceptive state (proprio_dim)")
    return np.asarray(obs, dtype=np.float64)[..., :dim]


class CameraRenderer:
    """Renders named cameras of one MuJoCo env as ``{name: (size, size, 3) uint8}``, lowest quality.

    Why not ``env.render()``: gymnasium's renderer draws one fixed camera at the env's size with
    shadows and 4x multisampling; ``mujoco.Renderer`` draws any camera at any size, and the
    quality settings below (read when its GL context is made) cut the cost of a software frame.
    """

    def __init__(self, env: Any, cameras: tuple[str, ...] | list[str], size: int, family: str = "metaworld") -> None:
        import mujoco

        valid = list_cameras(family)
        if not cameras:
            raise ValueError(f"name at least one camera; valid: {', '.join(valid)}")
        for name in cameras:
            check_name(name, valid, f"{family} camera")
        if size < 8:
            raise ValueError(f"image size must be >= 8 pixels, got {size}")
        self.env, self.cameras, self.size = env, tuple(cameras), int(size)
        model = env.unwrapped.model
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        model.light_castshadow[:] = 0
        if "corner2" in self.cameras:
            model.cam_pos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "corner2")] = _LEROBOT_CORNER2_POS
            mujoco.mj_camlight(model, env.unwrapped.data)  # camera poses follow now, not only after the next step
        try:
            self._renderer = mujoco.Renderer(model, self.size, self.size)
        except Exception as e:  # noqa: BLE001 - any GL failure gets the same, actionable message
            raise RuntimeError(rendering_help(e)) from e

    def __call__(self) -> dict[str, np.ndarray]:
        data = self.env.unwrapped.data
        frames = {}
        for name in self.cameras:
            self._renderer.update_scene(data, camera=name)
            image = self._renderer.render()  # (size, size, 3) uint8, a fresh array
            frames[name] = np.ascontiguousarray(image[::-1, ::-1]) if name == "corner2" else image
        return frames

    def close(self) -> None:
        renderer, self._renderer = getattr(self, "_renderer", None), None
        if renderer is not None:
            renderer.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - a GL context torn down at interpreter exit
            pass


class PolicyCameras:
    """What a camera policy sees of raw envs: its cameras at its image size, and ``agent_pos`` as the state.

    Built from a policy with ``image_keys`` (``observation.images.<camera>``), ``image_shape``
    ``(H, W, 3)`` and ``state_dim``; a state of the family's proprioceptive size (LeRobot's
    convention) is cut from the raw observation, any other size is passed through. Renderers are
    made once per env instance and reused; ``close()`` releases them.
    """

    def __init__(self, policy: Any, family: str = "metaworld") -> None:
        prefix = "observation.images."
        self.keys = tuple(getattr(policy, "image_keys", ()))
        bad = [k for k in self.keys if not k.startswith(prefix)]
        if bad:
            raise ValueError(f"image keys {bad} are not observation.images.<camera>; cannot render them")
        self.cameras = tuple(k[len(prefix):] for k in self.keys)
        h, w, c = (int(x) for x in policy.image_shape) if self.keys else (0, 0, 3)
        if h != w or c != 3:
            raise ValueError(f"the policy's frames are {h}x{w}x{c}; simulated cameras render square RGB frames")
        self.size, self.family = h, family
        self.proprio = int(policy.state_dim) == getattr(get_family(family), "proprio_dim", -1)
        self._renderers: dict[int, CameraRenderer] = {}

    @classmethod
    def for_policy(cls, policy: Any, family: str) -> "PolicyCameras | None":
        """An observer for a policy with cameras or one trained on ``agent_pos`` alone; None for raw-state policies."""
        proprio = getattr(get_family(family), "proprio_dim", None)
        state_dim = getattr(policy, "state_dim", None)
        if getattr(policy, "image_keys", ()) or (proprio is not None and state_dim == proprio):
            return cls(policy, family)
        return None

    def state_dim(self, env_state_dim: int | None) -> int | None:
        """The state size the policy gets from an env whose raw observation has ``env_state_dim`` values."""
        return getattr(get_family(self.family), "proprio_dim") if self.proprio else env_state_dim

    def __call__(self, envs: list[Any], observations: list[np.ndarray]) -> dict[str, np.ndarray]:
        """``{image key: (b, H, W, 3) uint8, "observation.state": (b, s)}`` for the envs' current states."""
        frames = []
        for env in envs if self.cameras else ():
            if id(env) not in self._renderers:
                self._renderers[id(env)] = CameraRenderer(env, self.cameras, self.size, self.family)
            frames.append(self._renderers[id(env)]())
        out = {key: np.stack([f[cam] for f in frames]) for key, cam in zip(self.keys, self.cameras)}
        states = np.stack([np.asarray(o, dtype=np.float64) for o in observations])
        out["observation.state"] = proprio_state(self.family, states) if self.proprio else states
        return out

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()


def rendering_help(error: BaseException) -> str:
    """Why rendering failed, which backend was tried, and what to install."""
    backend = os.environ.get("MUJOCO_GL", "<unset: glfw, needs a display>")
    return (f"MuJoCo could not render with MUJOCO_GL={backend} ({type(error).__name__}: {error}). Headless "
            f"rendering needs Mesa: `apt-get install -y {MESA_PACKAGES}` (`make test` or `make demo` installs them "
            "as root), then MUJOCO_GL=egl or MUJOCO_GL=osmesa, set before mujoco is first imported")


# --------------------------------------------------------------------------- registry
FAMILIES: dict[str, EnvFamily] = {"metaworld": MetaWorldFamily()}


def register_family(family: EnvFamily, overwrite: bool = False) -> None:
    """Add an env family (an object with ``name``, ``tasks``, ``make``, ``expert``, ``describe``)."""
    if family.name in FAMILIES and not overwrite:
        raise ValueError(f"env family {family.name!r} is already registered; pass overwrite=True")
    FAMILIES[family.name] = family


def list_families() -> list[str]:
    return sorted(FAMILIES)


def get_family(family: str) -> EnvFamily:
    check_name(family, list_families(), "env family")
    return FAMILIES[family]


def list_tasks(family: str = "metaworld") -> list[str]:
    return get_family(family).tasks()


def make_env(family: str, task: str, seed: int = 0, **kwargs: Any) -> Any:
    """A gymnasium env whose ``reset(seed=k)`` is reproducible; kwargs go to the family's factory."""
    return get_family(family).make(task, seed=seed, **kwargs)


def expert_policy(family: str, task: str) -> Policy:
    """The family's scripted expert for ``task``: a callable obs -> action."""
    return get_family(family).expert(task)


def task_description(family: str, task: str) -> str:
    """The natural-language instruction for ``task`` (the string written into datasets and prompts)."""
    return get_family(family).describe(task)


@functools.cache
def env_spec(family: str, task: str) -> EnvSpec:
    """Dimensions, control rate and limits measured from one live env (cached per task)."""
    env = make_env(family, task, seed=0)
    try:
        dt = float(env.unwrapped.dt)
        limit = env.spec.max_episode_steps if env.spec and env.spec.max_episode_steps else None
        limit = limit or int(getattr(env.unwrapped, "max_path_length", 0)) or None
        if limit is None:
            raise ValueError(f"{family}/{task} declares no episode limit")
        return EnvSpec(
            family=family,
            task=task,
            obs_dim=int(np.prod(env.observation_space.shape)),
            action_dim=int(np.prod(env.action_space.shape)),
            fps=int(round(1.0 / dt)),
            max_steps=int(limit),
            description=task_description(family, task),
            action_low=tuple(float(x) for x in env.action_space.low),
            action_high=tuple(float(x) for x in env.action_space.high),
        )
    finally:
        env.close()


def check_name(name: str, valid: list[str], what: str) -> str:
    """Raise ValueError naming the valid choices (and the closest one) when ``name`` is unknown."""
    if name in valid:
        return name
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown {what} {name!r}{hint}; valid: {', '.join(valid)}")
