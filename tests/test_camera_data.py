"""Camera observations: collection with --cameras, reading image and video features back, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from action_tokenizers.data import load_chunks
from eval.collect import CollectConfig, run_collect

CAMERA = "observation.images.corner2"


def _collect(out: Path, video: bool) -> Path:
    run_collect(CollectConfig(tasks=("button-press-v3",), episodes=2, out=out, seed=0, cameras=("corner2",),
                              image_size=32 if video else 16, video=video, steps_after_success=0, progress=False))
    return out


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _collect(tmp_path_factory.mktemp("cam") / "image", video=False)


@pytest.fixture(scope="module")
def video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _collect(tmp_path_factory.mktemp("cam") / "video", video=True)


def test_collect_records_lerobot_metaworld_observations(image_root: Path) -> None:
    features = json.loads((image_root / "meta/info.json").read_text())["features"]
    assert features[CAMERA]["dtype"] == "image" and tuple(features[CAMERA]["shape"]) == (16, 16, 3)
    assert tuple(features["observation.state"]["shape"]) == (4,)  # LeRobot's agent_pos
    assert tuple(features["observation.environment_state"]["shape"]) == (39,)
    cs = load_chunks(image_root, chunk_size=4, state_key="observation.state")
    env = load_chunks(image_root, chunk_size=4, state_key="observation.environment_state")
    np.testing.assert_array_equal(cs.states, env.states[:, :4])  # agent_pos = the first 4 of the 39


def test_image_frames_at_chunk_starts(image_root: Path) -> None:
    cs = load_chunks(image_root, chunk_size=4, stride=3, image_keys=(CAMERA,))
    frames = cs.images[CAMERA]
    assert frames.shape == (len(cs), 16, 16, 3) and frames.dtype == np.uint8
    assert frames.std() > 0 and not np.array_equal(frames[0], frames[-1])  # a real scene, and it changes
    # the same frames through LeRobot's own reader
    from lerobot.datasets import LeRobotDataset

    ds = LeRobotDataset("local/metaworld_demos", root=image_root)
    starts = np.asarray(ds.meta.episodes["dataset_from_index"])
    for i in (0, len(cs) - 1):
        index = int(starts[cs.episode_index[i]] + cs.frame_index[i])
        theirs = (ds[index][CAMERA].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(frames[i], theirs)


@pytest.mark.slow  # encodes two short AV1 videos
def test_video_frames_match_lerobot(video_root: Path) -> None:
    info = json.loads((video_root / "meta/info.json").read_text())
    assert info["features"][CAMERA]["dtype"] == "video"
    assert tuple(info["features"][CAMERA]["shape"]) == (32, 32, 3)
    cs = load_chunks(video_root, chunk_size=4, stride=5, image_keys=(CAMERA,))
    videos = cs.images[CAMERA]
    assert videos.shape == (len(cs), 32, 32, 3) and videos.dtype == np.uint8
    # the same frames through LeRobot's own reader (same decoder, same timestamps)
    from lerobot.datasets import LeRobotDataset

    ds = LeRobotDataset("local/metaworld_demos", root=video_root, video_backend="pyav")
    starts = np.asarray(ds.meta.episodes["dataset_from_index"])
    for i in (0, len(cs) - 1):
        index = int(starts[cs.episode_index[i]] + cs.frame_index[i])
        theirs = (ds[index][CAMERA].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert np.abs(videos[i].astype(int) - theirs.astype(int)).max() <= 1


@pytest.mark.slow
def test_no_video_decoding_without_image_keys(video_root: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "novideo"
    shutil.copytree(video_root, root)
    shutil.rmtree(root / "videos")
    assert len(load_chunks(root, chunk_size=4)) > 0  # actions only: the missing mp4 is never opened
    with pytest.raises(ValueError, match=r"video feature but .*mp4 is missing"):
        load_chunks(root, chunk_size=4, image_keys=(CAMERA,))


def test_missing_image_key_names_camera_keys(image_root: Path, so101_root: Path) -> None:
    with pytest.raises(ValueError, match=r"'observation.images.top' is not an image or video feature .*"
                                         r"\['observation.images.corner2'\]"):
        load_chunks(image_root, image_keys=("observation.images.top",))
    with pytest.raises(ValueError, match=r"'observation.state' is not an image .*observation.images.front"):
        load_chunks(so101_root, image_keys=("observation.state",))


def test_unknown_camera_lists_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown metaworld camera 'corner9'.*valid: .*corner2.*gripperPOV"):
        CollectConfig(out=tmp_path / "x", cameras=("corner9",))
    with pytest.raises(ValueError, match=r"image_size must be in \[8, 480\]"):
        CollectConfig(out=tmp_path / "x", cameras=("corner2",), image_size=4)
    with pytest.raises(ValueError, match=r"--video needs image_size >= 32"):
        CollectConfig(out=tmp_path / "x", cameras=("corner2",), image_size=16, video=True)


def test_rendering_failure_names_backend_and_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    import mujoco

    from eval.envs import CameraRenderer, make_env

    def broken(*args, **kwargs):
        raise mujoco.FatalError("an OpenGL platform library has not been loaded into this process")

    monkeypatch.setattr(mujoco, "Renderer", broken)
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    env = make_env("metaworld", "button-press-v3", seed=0)
    try:
        with pytest.raises(RuntimeError, match=r"MUJOCO_GL=osmesa .*apt-get install -y libosmesa6 libegl1 "
                                               r"libgl1-mesa-dri"):
            CameraRenderer(env, ("corner2",), 16)
        with pytest.raises(ValueError, match=r"unknown metaworld camera 'top'.*valid: topview"):
            CameraRenderer(env, ("top",), 16)
    finally:
        env.close()
