"""Camera policies end to end: train on collected frames, roll out (rendering only at re-plans), LeRobot's env."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

KEY = "observation.images.corner2"
TINY = dict(hidden_size=32, n_layers=1, n_heads=2, batch_size=4, warmup_steps=1, eval_chunks=2, progress=False)


@pytest.fixture(scope="module")
def vision_policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from action_tokenizers.binning import BinningTokenizer
    from action_tokenizers.data import load_chunks
    from eval.collect import CollectConfig, run_collect
    from training.train import TrainConfig, run_train

    root = tmp_path_factory.mktemp("vloop")
    demos = root / "demos"
    run_collect(CollectConfig(tasks=("button-press-v3",), episodes=2, out=demos, cameras=("corner2",), image_size=16,
                              steps_after_success=0, progress=False))
    BinningTokenizer(n_bins=16).fit(load_chunks(demos, chunk_size=4).actions).save_pretrained(root / "tok")
    run_train(TrainConfig(dataset=demos, tokenizer=root / "tok", out=root / "policy", image_keys=(KEY,), max_steps=2,
                          eval_fraction=0.5, **TINY))
    return root / "policy"


@pytest.fixture(scope="module")
def vision_policy(vision_policy_dir: Path):
    from training.policy import TokenizedPolicy

    return TokenizedPolicy.from_pretrained(vision_policy_dir, device="cpu")


@pytest.mark.slow  # the module fixture collects camera demos and trains a tiny policy
def test_trained_policy_takes_images_state_and_task(vision_policy) -> None:
    assert vision_policy.image_keys == (KEY,) and vision_policy.state_dim == 4
    assert vision_policy.image_shape == (16, 16, 3) and vision_policy.model.obs.n_tokens == 2
    frames = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    batch = {"observation.state": np.zeros((2, 4)), KEY: frames, "task": "Press a button"}
    chunks = vision_policy.predict_action_chunk(batch)
    assert chunks.shape == (2, 4, 4) and np.isfinite(chunks).all()
    with pytest.raises(KeyError, match=KEY):
        vision_policy.predict_action_chunk({"observation.state": np.zeros((2, 4)), "task": "Press a button"})
    with pytest.raises(ValueError, match=r"\(b, 16, 16, 3\) frames, got \(2, 32, 32, 3\)"):
        vision_policy.predict_action_chunk(dict(batch, **{KEY: np.zeros((2, 32, 32, 3), np.uint8)}))


@pytest.mark.slow
def test_rollout_renders_only_when_replanning(vision_policy, monkeypatch: pytest.MonkeyPatch) -> None:
    from eval import envs
    from eval.rollout import rollout

    renders, queries = [], []
    original = envs.CameraRenderer.__call__

    def counted(self):
        renders.append(1)
        return original(self)

    class Spy:
        chunk_size, action_dim, state_dim = vision_policy.chunk_size, vision_policy.action_dim, vision_policy.state_dim
        image_keys, image_shape, last_stats = vision_policy.image_keys, vision_policy.image_shape, {}

        def predict_action_chunk(self, batch):
            queries.append({k: np.asarray(v).shape for k, v in batch.items() if k.startswith("observation.")})
            return vision_policy.predict_action_chunk(batch)

    monkeypatch.setattr(envs.CameraRenderer, "__call__", counted)
    result = rollout(Spy(), "metaworld", ["button-press-v3"], seeds=[5], n_action_steps=3, horizon=7, n_envs=1)
    assert len(queries) == 3 == len(renders)  # re-plans at steps 0, 3, 6: one render each, none in between
    assert queries[0] == {"observation.state": (1, 4), KEY: (1, 16, 16, 3)}  # agent_pos, not the 39-D state
    assert result.episodes[0].length == 7 and result.episodes[0].error is None


@pytest.mark.slow  # LeRobot's env renders a full 480x480 frame with shadows per step
def test_lerobot_metaworld_env_with_pixels(vision_policy_dir: Path) -> None:
    from eval.lerobot_bridge import ActionTokenizerPolicy
    from lerobot_env_step import one_lerobot_step

    step = one_lerobot_step(vision_policy_dir, "button-press-v3")
    assert isinstance(step.policy, ActionTokenizerPolicy)
    assert step.batch["observation.image"].shape == (1, 3, 480, 480) and step.batch["observation.state"].shape == (1, 4)
    assert tuple(step.action.shape) == (1, 4) and torch.isfinite(step.action).all()
    assert np.isfinite(step.reward).all() and step.obs["pixels"].shape == (1, 480, 480, 3)


@pytest.mark.slow  # LeRobot's env renders 480x480 at default quality
def test_corner2_matches_lerobot_view() -> None:
    """Our corner2 frames show LeRobot's corner2 view (moved and turned as its MetaworldEnv does)."""
    from lerobot.envs.metaworld import MetaworldEnv

    from eval.envs import CameraRenderer, make_env

    theirs_env = MetaworldEnv("button-press-v3", obs_type="pixels_agent_pos")
    obs, _ = theirs_env.reset(seed=3)
    theirs = torch.nn.functional.interpolate(torch.from_numpy(obs["pixels"].copy()).permute(2, 0, 1)[None].float(),
                                             size=(48, 48), mode="area")[0].permute(1, 2, 0).numpy()
    env = make_env("metaworld", "button-press-v3", seed=0)
    env.reset(seed=3)
    camera = CameraRenderer(env, ("corner2",), 48)
    ours = camera()["corner2"].astype(float)
    flipped = ours[::-1, ::-1]
    camera.close(), env.close(), theirs_env.close()
    # same view up to rendering quality; the unturned frame is much further away
    assert np.abs(ours - theirs).mean() < 0.5 * np.abs(flipped - theirs).mean()


def test_agent_pos_policy_without_cameras_gets_agent_pos() -> None:
    """A policy trained on LeRobot's 4-D agent_pos alone (the vision preset's regression baseline) is
    given the first 4 state values in rollouts, and nothing is rendered for it."""
    from eval.rollout import rollout

    seen = []

    class AgentPos:
        chunk_size, action_dim, state_dim, last_stats = 2, 4, 4, {}

        def predict_action_chunk(self, batch):
            seen.append(np.asarray(batch["observation.state"]).shape)
            return np.zeros((len(batch["task"]), 2, 4))

    result = rollout(AgentPos(), "metaworld", ["button-press-v3"], seeds=[0], horizon=4, n_envs=1)
    assert seen == [(1, 4), (1, 4)] and result.episodes[0].error is None


@pytest.mark.slow  # uses the camera-demo fixture
def test_regression_baseline_uses_the_image_encoder(vision_policy_dir: Path, tmp_path: Path) -> None:
    from eval.rollout import rollout
    from training.regression import RegressionConfig, RegressionPolicy, run_train_regression
    from training.vision import ImageRegressionNet

    demos = vision_policy_dir.parent / "demos"
    run_train_regression(RegressionConfig(dataset=str(demos), out=tmp_path / "reg", chunk_size=4, hidden=16, layers=1,
                                          steps=3, batch_size=4, image_keys=(KEY,), progress=False))
    policy = RegressionPolicy.from_pretrained(tmp_path / "reg")
    assert isinstance(policy.model, ImageRegressionNet) and policy.image_keys == (KEY,) and policy.state_dim == 4
    rng = np.random.default_rng(0)
    batch = {"observation.state": np.zeros((2, 4)), "task": ["Press a button"] * 2,
             KEY: rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)}
    a = policy.predict_action_chunk(batch)
    b = policy.predict_action_chunk(dict(batch, **{KEY: rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)}))
    assert a.shape == (2, 4, 4) and not np.allclose(a, b)  # the frames reach the output
    with pytest.raises(KeyError, match="sees cameras"):
        policy.predict_action_chunk({"observation.state": np.zeros((2, 4)), "task": ["Press a button"] * 2})
    result = rollout(policy, "metaworld", ["button-press-v3"], seeds=[1], horizon=4, n_envs=1)
    assert result.episodes[0].error is None and result.episodes[0].length == 4
