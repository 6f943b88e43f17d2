"""eval.collect: scripted Meta-World demos written as a LeRobot v3 dataset that LeRobot reads back."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import eval.collect as collect
from eval.collect import CollectConfig, run_collect


def _frames(root: Path) -> pd.DataFrame:
    df = pd.concat(pd.read_parquet(p) for p in sorted((root / "data").glob("*/*.parquet")))
    return df.sort_values(["episode_index", "frame_index"]).reset_index(drop=True)


def test_lerobot_reads_it_offline(metaworld_root: Path) -> None:
    from lerobot.datasets import LeRobotDataset

    ds = LeRobotDataset("local/metaworld_demos", root=metaworld_root)  # HF_HUB_OFFLINE=1 (conftest)
    assert ds.num_episodes == 6 and ds.fps == 80
    assert ds.features["observation.state"]["shape"] == (39,) and ds.features["action"]["shape"] == (4,)
    assert ds.meta.video_keys == [] and ds.meta.robot_type == "sawyer"
    item = ds[0]
    assert item["observation.state"].shape == (39,) and item["action"].shape == (4,)
    assert item["task"] == "Reach a goal position"
    assert set(ds.meta.tasks.index) == {"Reach a goal position", "Push the puck to a goal"}
    assert len(ds) == sum(ds.meta.episodes["length"])


def test_episodes_end_after_success(metaworld_root: Path) -> None:
    meta = json.loads((metaworld_root / "meta/collect.json").read_text())
    df = _frames(metaworld_root)
    assert len(df) == meta["frames"]
    episodes = [e for task in ("reach-v3", "push-v3") for e in meta["tasks"][task]["episodes"]]
    assert [e["episode_index"] for e in episodes] == list(range(6))
    for e in episodes:
        ep = df[df.episode_index == e["episode_index"]]
        assert len(ep) == e["length"] == e["success_step"] + 1 + meta["steps_after_success"]
        done, success = ep["next.done"].to_numpy(), ep["next.success"].to_numpy()
        assert done[-1] and not done[:-1].any()
        assert not success[: e["success_step"]].any() and success[e["success_step"]]
        assert np.isfinite(np.stack(ep["action"].to_numpy())).all()
        assert np.abs(np.stack(ep["action"].to_numpy())).max() <= 1.0
    # observation.state[t + 1][:18] is what the env returned after action t: the state column is "before"
    first = df[df.episode_index == 0]
    states = np.stack(first["observation.state"].to_numpy())
    np.testing.assert_array_equal(states[1:, 18:36], states[:-1, :18])


def test_collect_json_records_seeds(metaworld_root: Path) -> None:
    meta = json.loads((metaworld_root / "meta/collect.json").read_text())
    assert meta["fps"] == 80 and meta["env"] == "metaworld" and meta["horizon"] == 500
    for task, text in (("reach-v3", "Reach a goal position"), ("push-v3", "Push the puck to a goal")):
        entry = meta["tasks"][task]
        assert entry["description"] == text
        assert entry["kept"] == 3 and entry["seeds"] == [0, 1, 2] and entry["dropped_failures"] == 0


def test_loads_as_chunks(metaworld_root: Path) -> None:
    from action_tokenizers.data import load_chunks

    cs = load_chunks(metaworld_root, chunk_size=8, state_key="observation.state", with_tasks=True)
    assert cs.actions.shape[1:] == (8, 4) and cs.states.shape[1] == 39 and cs.fps == 80
    assert set(cs.tasks) == {"Reach a goal position", "Push the puck to a goal"}
    assert cs.action_names == ["hand_dx", "hand_dy", "hand_dz", "gripper"]


def test_same_seed_same_actions(metaworld_root: Path, tmp_path: Path) -> None:
    r = run_collect(CollectConfig(tasks="reach-v3", episodes=3, out=tmp_path / "again", seed=0, progress=True))
    assert r.seeds == {"reach-v3": [0, 1, 2]} and r.fps == 80 and r.seconds > 0
    again, first = _frames(tmp_path / "again"), _frames(metaworld_root)
    first = first[first.episode_index < 3]
    assert r.frames == len(again) == len(first)
    for key in ("action", "observation.state", "next.reward"):
        np.testing.assert_array_equal(np.stack(again[key].to_numpy()), np.stack(first[key].to_numpy()))
    other = run_collect(CollectConfig(tasks=("reach-v3",), episodes=1, out=tmp_path / "seed5", seed=5, progress=False))
    assert other.seeds == {"reach-v3": [5]}
    moved = np.stack(_frames(tmp_path / "seed5")["observation.state"].to_numpy())[0]
    assert np.abs(moved[36:] - np.stack(first["observation.state"].to_numpy())[0, 36:]).max() > 1e-3  # new goal


def _flaky_expert(monkeypatch: pytest.MonkeyPatch, fail_calls: set[int], raise_on: int | None = None) -> list[int]:
    """Replace the expert: call k (one per episode) acts with zeros if k in fail_calls, raises at raise_on."""
    real, calls = collect.expert_policy, []

    def fake(env: str, task: str):
        calls.append(len(calls))
        k = calls[-1]
        if raise_on is not None and k == raise_on:
            def boom(obs):
                raise KeyboardInterrupt("simulated interrupt")
            return boom
        return (lambda obs: np.zeros(4, np.float32)) if k in fail_calls else real(env, task)

    monkeypatch.setattr(collect, "expert_policy", fake)
    return calls


def test_failures_dropped_counted_and_replaced(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _flaky_expert(monkeypatch, fail_calls={1})
    out = tmp_path / "flaky"
    r = run_collect(CollectConfig(tasks=("reach-v3",), episodes=2, out=out, seed=10, horizon=150, progress=False))
    assert r.kept == {"reach-v3": 2} and r.failures == {"reach-v3": 1}
    assert r.seeds == {"reach-v3": [10, 12]} and r.failed_seeds == {"reach-v3": [11]}
    meta = json.loads((out / "meta/collect.json").read_text())
    assert meta["tasks"]["reach-v3"]["dropped_failures"] == 1 and meta["tasks"]["reach-v3"]["failed_seeds"] == [11]
    assert meta["horizon"] == 150
    assert sorted(_frames(out).episode_index.unique()) == [0, 1]


def test_interrupted_collect_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _flaky_expert(monkeypatch, fail_calls=set(), raise_on=2)  # episodes 0, 1 saved, then interrupted
    out = tmp_path / "parent" / "demos"
    with pytest.raises(KeyboardInterrupt):
        run_collect(CollectConfig(tasks=("reach-v3",), episodes=5, out=out, progress=False))
    assert len(calls) == 3
    gc.collect()  # LeRobot's writers flush on garbage collection: they must not recreate anything
    assert list((tmp_path / "parent").iterdir()) == []


def test_failed_overwrite_keeps_old_dataset(monkeypatch: pytest.MonkeyPatch, metaworld_root: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "demos"
    shutil.copytree(metaworld_root, out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    _flaky_expert(monkeypatch, fail_calls=set(), raise_on=1)
    with pytest.raises(KeyboardInterrupt):
        run_collect(CollectConfig(tasks=("reach-v3",), episodes=2, out=out, overwrite=True, progress=False))
    gc.collect()
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["demos"]
    (out / "notes.txt").write_text("mine")  # a collect output may be replaced; one holding a user's file is refused
    with pytest.raises(FileExistsError, match="did not write"):
        run_collect(CollectConfig(tasks=("reach-v3",), episodes=1, out=out, progress=False))


def test_all_failures_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _flaky_expert(monkeypatch, fail_calls=set(range(100)))
    with pytest.raises(RuntimeError, match=r"reach-v3 failed all 3 episodes within 5 steps"):
        run_collect(CollectConfig(tasks=("reach-v3",), episodes=1, out=tmp_path / "x", horizon=5, progress=False))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("kwargs,match", [
    ({"tasks": ("psh-v3",)}, r"unknown metaworld task 'psh-v3' \(did you mean 'push-v3'\?\)"),
    ({"tasks": ()}, "at least one task"),
    ({"tasks": ("push-v3", "push-v3")}, "duplicates"),
    ({"episodes": 0}, "episodes must be >= 1, got 0"),
    ({"horizon": 0}, "horizon must be >= 1"),
    ({"action_noise": -0.1}, "action_noise must be a finite std >= 0"),
    ({"action_noise": float("nan")}, "action_noise must be a finite std >= 0"),
    ({"env": "mw"}, "unknown env family 'mw'"),
    ({"driven_episodes": 2}, "--driver and --driven-episodes go together"),
    ({"driver": "runs/x"}, "--driver and --driven-episodes go together"),
    ({"driver": "runs/x", "driven_episodes": 1, "driver_steps": 0}, "driver_steps and driven_horizon >= 1"),
    ({"driver": "runs/x", "driven_episodes": 1, "cameras": ("corner2",)}, "state-based collection only"),
    ({"repo_id": "demos"}, "owner/name"),
])
def test_config_errors(kwargs: dict, match: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=match):
        CollectConfig(out=tmp_path / "o", **kwargs)


def test_config_parses_and_checks_limit(tmp_path: Path) -> None:
    cfg = CollectConfig(tasks=("push-v3,reach-v3",), out=str(tmp_path / "o"))
    assert cfg.tasks == ("push-v3", "reach-v3") and isinstance(cfg.out, Path)
    assert CollectConfig().tasks == ("reach-v3", "push-v3", "button-press-v3", "drawer-close-v3")
    with pytest.raises(ValueError, match="horizon=600 exceeds the env's episode limit of 500"):
        run_collect(CollectConfig(tasks=("reach-v3",), episodes=1, out=tmp_path / "o", horizon=600, progress=False))
    assert not (tmp_path / "o").exists()


def test_action_noise_perturbs_the_path_and_records_the_experts_clean_actions() -> None:
    """DART: the executed action is noisy, the recorded one is the expert's at the state it was recorded in."""
    from eval.envs import expert_policy, make_env

    env, expert = make_env("metaworld", "reach-v3", seed=3), expert_policy("metaworld", "reach-v3")
    clean = collect.run_expert_episode(env, expert, 3, horizon=30, steps_after_success=0)
    noisy = collect.run_expert_episode(env, expert, 3, horizon=30, steps_after_success=0, action_noise=0.2)
    again = collect.run_expert_episode(env, expert, 3, horizon=30, steps_after_success=0, action_noise=0.2)
    np.testing.assert_array_equal(noisy.states[0], clean.states[0])  # the same reset
    assert np.abs(noisy.states[1:, :3] - clean.states[1:, :3]).max() > 1e-3  # the hand went elsewhere
    np.testing.assert_array_equal(noisy.states, again.states)  # seeded by the episode seed
    for state, action in zip(noisy.states, noisy.actions):
        np.testing.assert_allclose(action, expert(state), atol=1e-6)  # states are recorded as float32


class _Still:
    """A driver that never moves the hand (a stalled policy), counting its calls."""

    chunk_size, action_dim = 10, 4

    def __init__(self, value: float = 0.0) -> None:
        self.calls, self.value, self.texts = 0, value, set()

    def predict_action_chunk(self, batch: dict) -> np.ndarray:
        self.calls += 1
        assert batch["observation.state"].shape == (1, 39)
        self.texts.update(batch["task"])
        return np.full((1, self.chunk_size, self.action_dim), self.value)


def test_a_driven_episode_hands_over_to_the_expert_and_records_only_the_expert() -> None:
    """DAgger with a takeover: the driver (here: stalled) acts unrecorded, then the expert's own episode
    from that state is recorded, so every recorded chunk is one the expert executes."""
    from eval.envs import expert_policy, make_env

    env, expert = make_env("metaworld", "reach-v3", seed=3), expert_policy("metaworld", "reach-v3")
    seed = next(s for s in range(100) if np.random.default_rng(s).integers(0, 60 // 2 + 1) >= 11)
    takeover = int(np.random.default_rng(seed).integers(0, 60 // 2 + 1))
    driver = _Still(0.5)  # pushes the hand away from where the expert would take it
    record = collect.run_driven_episode(env, expert, driver, "reach the goal", seed, horizon=60,
                                        steps_after_success=0, driver_steps=5)
    assert record.driven_steps == takeover and driver.calls == -(-takeover // 5)  # re-planned every 5 steps
    assert driver.texts == {"reach the goal"}
    reset = make_env("metaworld", "reach-v3", seed=seed).reset(seed=seed)[0]
    assert np.abs(record.states[0, :3] - reset[:3]).max() > 0.02  # recording starts where the driver left the hand
    for state, action in zip(record.states, record.actions):
        np.testing.assert_allclose(action, expert(state), atol=1e-6)
    with pytest.raises(ValueError, match="non-finite action"):
        collect.run_driven_episode(env, expert, _Still(float("nan")), "reach the goal", seed, 60, 0, 5)


def test_driven_episodes_are_kept_after_the_experts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Driven episodes follow the expert's, numbered on, seeds reused, kept even when the expert does not finish."""
    import eval.policies

    from eval.envs import env_spec

    driver = _Still()
    monkeypatch.setattr(eval.policies, "load_policy", lambda spec, env="metaworld": driver)
    out = tmp_path / "dagger"
    result = run_collect(CollectConfig(tasks=("reach-v3",), episodes=2, driver="a-policy", driven_episodes=2,
                                       driven_horizon=12, out=out, progress=False))
    meta = json.loads((out / "meta" / "collect.json").read_text())
    entry = meta["tasks"]["reach-v3"]
    assert meta["driver"] == "a-policy" and entry["seeds"] == [0, 1] and entry["driven_seeds"] == [0, 1]
    assert driver.texts == {env_spec("metaworld", "reach-v3").description}  # the instruction training sees
    assert [e["episode_index"] for e in entry["episodes"]] == [0, 1, 2, 3]
    takeovers = [int(np.random.default_rng(s).integers(0, 12 // 2 + 1)) for s in (0, 1)]
    assert [e.get("driven_steps") for e in entry["episodes"]] == [None, None, *takeovers]
    assert [e["success_step"] for e in entry["episodes"][2:]] == [None, None]  # 12 steps are too few to reach
    df = _frames(out)
    assert (df.groupby("episode_index").size()[[2, 3]] == 12).all() and len(df) == result.frames
