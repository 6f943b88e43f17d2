"""eval.envs: the Meta-World family, seeded resets, scripted experts and the registry."""

from __future__ import annotations

import numpy as np
import pytest

from eval.envs import (
    FAMILIES,
    EnvSpec,
    env_spec,
    expert_policy,
    get_family,
    list_families,
    list_tasks,
    make_env,
    register_family,
    task_description,
)


@pytest.fixture(scope="module")
def push_env():
    env = make_env("metaworld", "push-v3", seed=0)
    yield env
    env.close()


def test_fifty_v3_tasks_with_descriptions() -> None:
    tasks = list_tasks("metaworld")
    assert len(tasks) == 50 and len(set(tasks)) == 50
    assert all(t.endswith("-v3") for t in tasks)
    assert {"push-v3", "pick-place-v3", "reach-v3", "door-open-v3"} <= set(tasks)
    assert task_description("metaworld", "push-v3") == "Push the puck to a goal"
    descriptions = [task_description("metaworld", t) for t in tasks]
    assert all(isinstance(d, str) and len(d) > 5 for d in descriptions)


def test_unknown_names_suggest() -> None:
    with pytest.raises(ValueError, match=r"unknown metaworld task 'psh-v3' \(did you mean 'push-v3'\?\); valid: .*reach-v3"):
        make_env("metaworld", "psh-v3")
    with pytest.raises(ValueError, match=r"did you mean 'pick-place-v3'"):
        expert_policy("metaworld", "pick-place")
    with pytest.raises(ValueError, match=r"unknown env family 'metawrld' \(did you mean 'metaworld'\?\)"):
        list_tasks("metawrld")


def test_spec_measured_from_env() -> None:
    spec = env_spec("metaworld", "push-v3")
    assert isinstance(spec, EnvSpec)
    assert (spec.obs_dim, spec.action_dim, spec.max_steps) == (39, 4, 500)
    assert spec.fps == 80  # 0.0025 s MuJoCo step x frame_skip 5
    assert spec.action_low == (-1.0,) * 4 and spec.action_high == (1.0,) * 4


def test_reset_seed_is_reproducible(push_env) -> None:
    a, _ = push_env.reset(seed=3)
    for _ in range(15):
        push_env.step(push_env.action_space.sample())
    b, _ = push_env.reset(seed=3)
    np.testing.assert_array_equal(a, b)  # same seed after an episode: same layout
    other = make_env("metaworld", "push-v3", seed=123)  # a different construction seed changes nothing
    c, _ = other.reset(seed=3)
    other.close()
    np.testing.assert_array_equal(a, c)
    d, _ = push_env.reset(seed=4)
    assert np.abs(a - d).max() > 1e-3  # another seed moves the puck and/or goal
    layouts = {tuple(np.round(push_env.reset(seed=s)[0][[4, 5, 36, 37]], 5)) for s in range(10)}
    assert len(layouts) == 10
    e, _ = push_env.reset()  # unseeded resets keep drawing new layouts
    f, _ = push_env.reset()
    assert np.abs(e - f).max() > 1e-3


def test_expert_succeeds_and_is_deterministic(push_env) -> None:
    expert = expert_policy("metaworld", "push-v3")

    def rollout(seed: int) -> tuple[np.ndarray, bool]:
        obs, _ = push_env.reset(seed=seed)
        actions = []
        for _ in range(200):
            action = expert(obs)
            assert action.shape == (4,) and action.dtype == np.float32 and np.abs(action).max() <= 1.0
            actions.append(action)
            obs, _, _, _, info = push_env.step(action)
            if info["success"]:
                return np.stack(actions), True
        return np.stack(actions), False

    acts1, ok1 = rollout(0)
    acts2, ok2 = rollout(0)
    assert ok1 and ok2 and len(acts1) < 200
    np.testing.assert_array_equal(acts1, acts2)


def test_registry_takes_new_families() -> None:
    class Toy:
        name = "toy"

        def tasks(self) -> list[str]:
            return ["line"]

        def make(self, task, seed=0, **kwargs):
            return ("env", task, seed)

        def expert(self, task):
            return lambda obs: -obs

        def describe(self, task):
            return "follow the line"

    register_family(Toy())
    try:
        assert "toy" in list_families()
        assert make_env("toy", "line", seed=5) == ("env", "line", 5)
        assert task_description("toy", "line") == "follow the line"
        assert expert_policy("toy", "line")(np.ones(2)).tolist() == [-1.0, -1.0]
        with pytest.raises(ValueError, match="already registered"):
            register_family(Toy())
    finally:
        FAMILIES.pop("toy", None)
    assert get_family("metaworld").name == "metaworld"
