"""Open-loop evaluation on dataset episodes: metrics by hand, bad input before any prediction, and a
tiny policy trained on the shared SO-101 dataset evaluated on its held-out episode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_hub import hub  # noqa: F401  (the fake Hub fixture: the real huggingface_hub, its HTTP client faked)

from eval.open_loop import (OpenLoopConfig, PolicyRecord, chunk_errors, load_eval_chunks, parse_episodes,
                            run_open_loop, token_agreement)

NAMES = ["a", "b"]


# ---------------------------------------------------------------------- metrics
def test_chunk_errors_match_numpy_overall_per_dim_and_per_step() -> None:
    rng = np.random.default_rng(0)
    truth, pred = rng.normal(size=(5, 4, 2)), rng.normal(size=(5, 4, 2))
    m = chunk_errors(pred, truth, NAMES)
    err = pred - truth
    assert m["mae"] == pytest.approx(np.abs(err).mean())
    assert m["rmse"] == pytest.approx(np.sqrt((err ** 2).mean()))
    assert m["max_abs_err"] == pytest.approx(np.abs(err).max())
    assert m["per_dim"]["b"]["mae"] == pytest.approx(np.abs(err[..., 1]).mean())
    assert m["per_dim"]["a"]["max_abs_err"] == pytest.approx(np.abs(err[..., 0]).max())
    np.testing.assert_allclose(m["per_step_mae"], np.abs(err).mean(axis=(0, 2)))
    assert m["n_chunks"] == 5
    with pytest.raises(ValueError, match="differ in shape"):
        chunk_errors(pred[:, :3], truth, NAMES)


def test_token_agreement_fixed_and_variable_length() -> None:
    fixed = token_agreement([[1, 2, 3], [1, 2, 4]], [[1, 2, 3], [1, 2, 3]])
    assert fixed == {"token_accuracy": pytest.approx(5 / 6), "exact_share": 0.5}
    # variable length: a short or long sequence is charged every missing or extra position
    var = token_agreement([[1, 2], [7, 2, 3, 9], [4]], [[1, 2, 3], [1, 2, 3], [4]])
    assert var["token_accuracy"] == pytest.approx((2 + 2 + 1) / (3 + 4 + 1))
    assert var["exact_share"] == pytest.approx(1 / 3)


def test_episodes_option_accepts_held_out_all_and_lists() -> None:
    assert parse_episodes("held-out") == "held-out" and parse_episodes("all") == "all"
    assert parse_episodes("3,0,3") == [0, 3]
    for bad in ("heldout", "", "1,x", "-1"):
        with pytest.raises(ValueError, match="held-out, all or a comma list"):
            parse_episodes(bad)
    assert OpenLoopConfig(policy="p", dataset="d", episodes=[2, 1]).episodes == "2,1"  # Python API: a list


# ---------------------------------------------------------------------- bad input, before any prediction
def _stub_policy(root: Path, **overrides) -> Path:
    """A policy directory holding only its config: enough for every check made before the model loads."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = {"format_version": 1, "family": "binning", "chunk_size": 10, "action_dim": 6, "state_dim": 6,
           "state_key": "observation.state", "action_key": "action", "heldout_episodes": [1], **overrides}
    (root / "policy_config.json").write_text(json.dumps({k: v for k, v in cfg.items() if v is not None}))
    return root


def _dataset_with(so101_root: Path, root: Path, edit) -> Path:
    """A copy of SO-101's meta/info.json with ``edit`` applied to its features (no frames needed:
    the features are checked before anything is read)."""
    (root / "meta").mkdir(parents=True)
    info = json.loads((so101_root / "meta" / "info.json").read_text())
    edit(info["features"])
    (root / "meta" / "info.json").write_text(json.dumps(info))
    return root


def test_dataset_of_another_shape_or_keys_is_refused_naming_both(so101_root: Path, tmp_path: Path) -> None:
    policy = _stub_policy(tmp_path / "policy")
    wide = _dataset_with(so101_root, tmp_path / "wide", lambda f: f["action"].update(shape=[7]))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=rf"dataset {wide} feature 'action' has shape \[7\], but policy {policy} "
                                         r"was trained on 6-D actions"):
        run_open_loop(OpenLoopConfig(policy=str(policy), dataset=str(wide), out=out, progress=False))
    stateless = _dataset_with(so101_root, tmp_path / "stateless", lambda f: f.pop("observation.state"))
    with pytest.raises(ValueError, match=rf"dataset {stateless} has no feature 'observation.state', from which "
                                         rf"policy {policy} reads its 6-D state"):
        run_open_loop(OpenLoopConfig(policy=str(policy), dataset=str(stateless), out=out, progress=False))
    with pytest.raises(FileNotFoundError, match="neither an existing directory nor a Hub repo id"):
        run_open_loop(OpenLoopConfig(policy=str(policy), dataset=str(tmp_path / "missing"), out=out, progress=False))
    wrist = _stub_policy(tmp_path / "policy_wrist", image_keys=["observation.images.wrist"])
    with pytest.raises(ValueError, match=rf"no camera feature 'observation.images.wrist', whose images policy {wrist} "
                                         r"sees; the dataset's cameras are \['observation.images.front', "
                                         r"'observation.images.top'\]"):
        run_open_loop(OpenLoopConfig(policy=str(wrist), dataset=str(so101_root), out=out, progress=False))
    other_key = _stub_policy(tmp_path / "policy_actions", action_key="actions")
    with pytest.raises(ValueError, match=r"has no feature 'actions'.*features are \[.*'action'"):
        run_open_loop(OpenLoopConfig(policy=str(other_key), dataset=str(so101_root), out=out, progress=False))
    assert not out.exists()


def test_held_out_from_a_policy_that_recorded_none_suggests_episodes(so101_root: Path, tmp_path: Path) -> None:
    policy = _stub_policy(tmp_path / "policy", heldout_episodes=None)
    with pytest.raises(ValueError, match=r"recorded no held-out episodes.*--episodes all"):
        run_open_loop(OpenLoopConfig(policy=str(policy), dataset=str(so101_root), out=tmp_path / "out", progress=False))
    with pytest.raises(ValueError, match=r"episodes \[9\] are not in .* episode indices \[0, 1, 2, 3\]"):
        run_open_loop(OpenLoopConfig(policy=str(policy), dataset=str(so101_root), episodes="1,9",
                                     out=tmp_path / "out", progress=False))
    assert not (tmp_path / "out").exists()


def test_regression_baseline_of_another_chunk_size_is_refused(so101_root: Path, tmp_path: Path) -> None:
    policy = _stub_policy(tmp_path / "policy")
    reg = tmp_path / "regression"
    reg.mkdir()
    (reg / "regression_config.json").write_text(json.dumps(
        {"policy_type": "regression", "state_dim": 6, "action_dim": 6, "chunk_size": 5, "training": {}}))
    with pytest.raises(ValueError, match=rf"regression baseline {reg} predicts chunks of 5 steps, policy {policy} of 10"):
        run_open_loop(OpenLoopConfig(policy=str(policy), dataset=str(so101_root), regression=str(reg),
                                     out=tmp_path / "out", progress=False))


def test_an_out_folder_holding_user_files_is_refused_before_any_prediction(so101_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        run_open_loop(OpenLoopConfig(policy=str(_stub_policy(tmp_path / "policy")), dataset=str(so101_root), out=out,
                                     progress=False))
    assert (out / "notes.txt").read_text() == "mine"


def _record(path: Path, chunk_size: int, heldout: list[int] | None = None) -> PolicyRecord:
    return PolicyRecord(path=path, action_key="action", state_key="observation.state", action_dim=6, state_dim=6,
                        chunk_size=chunk_size, heldout_episodes=heldout, train_dataset=None)


def test_episodes_shorter_than_the_chunk_are_skipped_and_counted(so101_root: Path, tmp_path: Path) -> None:
    # SO-101's episodes have 373, 374, 372 and 373 frames: a 373-step chunk fits in all but episode 2.
    cfg = OpenLoopConfig(policy=str(tmp_path), dataset=str(so101_root), episodes="all", progress=False)
    chunks = load_eval_chunks(cfg, _record(tmp_path, 373))
    assert chunks.skipped_episodes == [2] and chunks.episodes == [0, 1, 3]
    assert sorted(chunks.episode_index.tolist()) == [0, 1, 1, 3]  # every full chunk, no padded one
    assert chunks.actions.shape == (4, 373, 6)
    with pytest.raises(ValueError, match=r"shorter than the policy's chunk of 375 steps: nothing to score"):
        load_eval_chunks(cfg, _record(tmp_path, 375))


def test_a_hub_dataset_is_read_from_its_snapshot(hub, so101_root: Path, tmp_path: Path) -> None:
    files = {p.relative_to(so101_root).as_posix(): p.read_bytes()
             for folder in ("meta", "data") for p in sorted((so101_root / folder).rglob("*")) if p.is_file()}
    hub.add_repo("robot-lab/so101-demos", files)
    remote = load_eval_chunks(OpenLoopConfig(policy=str(tmp_path), dataset="robot-lab/so101-demos", episodes="all"),
                              _record(tmp_path, 373))
    local = load_eval_chunks(OpenLoopConfig(policy=str(tmp_path), dataset=str(so101_root), episodes="all"),
                             _record(tmp_path, 373))
    np.testing.assert_array_equal(remote.actions, local.actions)
    assert remote.skipped_episodes == [2] and remote.root != so101_root


# ---------------------------------------------------------------------- a tiny trained policy, end to end
@pytest.fixture(scope="module")
def trained(so101_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny binning policy trained a few steps on SO-101 (one held-out episode)."""
    from test_training import TINY, fit_tokenizer
    from training.train import TrainConfig, run_train

    from training.regression import RegressionConfig, run_train_regression

    root = tmp_path_factory.mktemp("open_loop")
    tok = fit_tokenizer("binning", so101_root, root / "tok")
    run_train(TrainConfig(dataset=so101_root, tokenizer=tok, out=root / "policy", max_steps=4, **TINY))
    run_train_regression(RegressionConfig(dataset=str(so101_root), out=root / "regression", chunk_size=10, hidden=16,
                                          layers=1, steps=5, progress=False))
    return root / "policy"


@pytest.fixture(scope="module")
def evaluated(trained: Path, so101_root: Path) -> tuple[dict, Path]:
    out = trained.parent / "eval"
    cfg = OpenLoopConfig(policy=str(trained), dataset=str(so101_root), regression=str(trained.parent / "regression"),
                         out=out, progress=False)
    return run_open_loop(cfg), out


def _numbers(x) -> list[float]:
    if isinstance(x, dict):
        return [v for value in x.values() for v in _numbers(value)]
    if isinstance(x, list):
        return [v for value in x for v in _numbers(value)]
    return [float(x)] if isinstance(x, (int, float)) and not isinstance(x, bool) else []


@pytest.mark.slow
def test_open_loop_on_the_held_out_episode(evaluated: tuple[dict, Path], trained: Path, so101_root: Path) -> None:
    results, out = evaluated
    held = json.loads((trained / "policy_config.json").read_text())["heldout_episodes"]
    assert len(held) == 1 and results["meta"]["episodes"] == held and results["meta"]["skipped_episodes"] == []
    entry = results[trained.name]["open_loop"]
    tok_only, const, reg = entry["tokenizer_only"], results["constant"]["open_loop"], results["regression"]["open_loop"]
    for row in (entry, tok_only, const, reg):
        assert all(np.isfinite(_numbers(row))), row
        assert set(row["per_dim"]) == {"shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos", "wrist_flex.pos",
                                       "wrist_roll.pos", "gripper.pos"}
        assert len(row["per_step_mae"]) == 10
    assert tok_only["mae"] < entry["mae"] and tok_only["max_abs_err"] < entry["max_abs_err"]
    assert 0.0 <= entry["token_accuracy"] <= 1.0 and 0.0 <= entry["exact_share"] <= 1.0
    assert entry["malformed"] == 0 and entry["latency_s_per_chunk"] > 0 and entry["tokens_per_chunk"] == 60.0
    assert entry["n_chunks"] == 373 - 10 + 1  # every full chunk of the held-out episode, stride 1
    assert entry["trained_on_episodes"] == [] and reg["trained_on_episodes"] == [] and const["trained_on_episodes"] == []

    # the constant baseline, directly: mean action over the training episodes, against every full chunk
    import pandas as pd

    frames = pd.concat(pd.read_parquet(p) for p in sorted((so101_root / "data").rglob("*.parquet")))
    actions = np.stack(frames["action"].to_numpy()).astype(np.float64)
    episode = frames["episode_index"].to_numpy()
    mean = actions[~np.isin(episode, held)].mean(0)
    demo = actions[episode == held[0]]
    windows = np.stack([demo[t:t + 10] for t in range(len(demo) - 10 + 1)])  # (n, h, d)
    assert const["mae"] == pytest.approx(np.abs(windows - mean).mean(), rel=1e-6)
    assert const["rmse"] == pytest.approx(np.sqrt(((windows - mean) ** 2).mean()), rel=1e-6)
    assert const["episodes"] == sorted(set(range(4)) - set(held))

    for name in ("results.json", "results.md", "error_by_step.png", f"trajectories_episode_{held[0]}.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text())[trained.name]["open_loop"]["mae"] == pytest.approx(entry["mae"])
    md = (out / "results.md").read_text()
    assert f"| {trained.name} (tokenizer only) |" in md and "| constant |" in md and "| regression |" in md
    assert "gripper.pos" in md and reg["malformed"] == 0 and reg["n_chunks"] == entry["n_chunks"]


@pytest.mark.slow
def test_cli_eval_with_a_dataset_runs_open_loop(trained: Path, so101_root: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    from eval.cli import _is_open_loop, main

    assert _is_open_loop(["--policy", "p", "--dataset=d"])
    assert not _is_open_loop(["--policy", "p", "--execution", "augmented", "--dataset", "d"])
    assert not _is_open_loop(["--policy", "p", "--episodes", "3"])
    out = tmp_path / "ol"
    argv = ["eval", "--policy", str(trained), "--dataset", str(so101_root), "--episodes", "0,3", "--stride", "50",
            "--plot-episodes", "1", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["episodes"] == [0, 3] and results["meta"]["n_chunks"] == 2 * 8  # starts 0, 50, ..., 350
    assert sorted(p.name for p in out.glob("trajectories_*.png")) == ["trajectories_episode_0.png"]
    held = json.loads((trained / "policy_config.json").read_text())["heldout_episodes"]
    seen = sorted({0, 3} - set(held))  # scored episodes the policy trained on: flagged as in-sample
    assert results[trained.name]["open_loop"]["trained_on_episodes"] == seen
    assert f"was trained (or, for the constant, averaged) on scored episodes {seen}" in (out / "results.md").read_text()
    bad = ["eval", "--policy", str(trained), "--dataset", str(so101_root), "--episodes", "7", "--out", str(tmp_path / "x")]
    assert main(bad) == 1
    assert "episodes [7] are not in" in capsys.readouterr().err
