"""action_tokenizers.data on the real SO-101 dataset (no video files) and on bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from action_tokenizers.data import ChunkSet, EpisodeData, load_chunks, load_episodes


def _episode_lengths(root: Path) -> dict[int, int]:
    """Lengths straight from meta/episodes parquet, independent of the code under test."""
    paths = sorted((root / "meta/episodes").glob("*/*.parquet"))
    df = pd.concat(pd.read_parquet(p, columns=["episode_index", "length"]) for p in paths)
    return dict(zip(df["episode_index"].astype(int), df["length"].astype(int), strict=True))


def _frames(root: Path) -> pd.DataFrame:
    return pd.concat(pd.read_parquet(p) for p in sorted((root / "data").glob("*/*.parquet")))


@pytest.fixture(scope="module")
def so101_episodes(so101_root: Path) -> list[EpisodeData]:
    return load_episodes(so101_root)


def test_videos_really_absent(so101_root: Path) -> None:
    info = json.loads((so101_root / "meta/info.json").read_text())
    assert any(ft["dtype"] == "video" for ft in info["features"].values())
    assert not (so101_root / "videos").exists()


def test_episodes_match_parquet(so101_root: Path, so101_episodes: list[EpisodeData]) -> None:
    lengths = _episode_lengths(so101_root)
    assert [e.index for e in so101_episodes] == sorted(lengths)
    assert sum(len(e) for e in so101_episodes) == 1492
    frames = _frames(so101_root)
    for ep in so101_episodes:
        assert len(ep) == lengths[ep.index]
        rows = frames[frames.episode_index == ep.index].sort_values("frame_index")
        np.testing.assert_array_equal(ep.arrays["action"], np.stack(rows["action"].to_numpy()).astype(np.float64))
        np.testing.assert_array_equal(ep.arrays["observation.state"], np.stack(rows["observation.state"].to_numpy()))
        assert ep.arrays["action"].dtype == np.float64 and ep.arrays["action"].shape[1] == 6
        assert ep.task == "Pick the orange cube and place it in the box"


@pytest.mark.parametrize("chunk_size,stride", [(1, 1), (10, 1), (16, 5), (50, 7), (373, 1)])
def test_drop_counts_and_contents(
    so101_root: Path, so101_episodes: list[EpisodeData], chunk_size: int, stride: int
) -> None:
    cs = load_chunks(so101_root, chunk_size=chunk_size, stride=stride)
    lengths = {e.index: len(e) for e in so101_episodes}
    expected = sum(len(range(0, t - chunk_size + 1, stride)) for t in lengths.values())
    assert len(cs) == expected
    assert cs.actions.shape == (expected, chunk_size, 6) and cs.actions.dtype == np.float64
    assert cs.mask.all()
    # every chunk is the next chunk_size actions of its own episode: never crosses a boundary
    by_index = {e.index: e.arrays["action"] for e in so101_episodes}
    assert (cs.frame_index + chunk_size <= np.array([lengths[i] for i in cs.episode_index])).all()
    for i in range(0, len(cs), max(1, len(cs) // 50)):
        ep, f = int(cs.episode_index[i]), int(cs.frame_index[i])
        np.testing.assert_array_equal(cs.actions[i], by_index[ep][f : f + chunk_size])
    for ep, t in lengths.items():
        np.testing.assert_array_equal(cs.frame_index[cs.episode_index == ep], np.arange(0, t - chunk_size + 1, stride))


def test_pad_last_mask(so101_root: Path, so101_episodes: list[EpisodeData]) -> None:
    h, stride = 40, 3
    cs = load_chunks(so101_root, chunk_size=h, stride=stride, pad="last")
    lengths = {e.index: len(e) for e in so101_episodes}
    assert len(cs) == sum(len(range(0, t, stride)) for t in lengths.values())
    for ep in so101_episodes:
        sel = cs.episode_index == ep.index
        starts, mask, acts = cs.frame_index[sel], cs.mask[sel], cs.actions[sel]
        np.testing.assert_array_equal(starts, np.arange(0, len(ep), stride))
        real = np.minimum(len(ep) - starts, h)  # real steps per chunk
        np.testing.assert_array_equal(mask.sum(axis=1), real)
        assert (mask[:, :1]).all() and not (np.diff(mask.astype(int), axis=1) > 0).any()  # True then False
        last = ep.arrays["action"][-1]
        for k in np.flatnonzero(real < h)[:5]:
            np.testing.assert_array_equal(acts[k, ~mask[k]], np.broadcast_to(last, (h - real[k], 6)))
            np.testing.assert_array_equal(acts[k, mask[k]], ep.arrays["action"][starts[k] :])


def test_state_alignment_tasks_and_metadata(so101_root: Path, so101_episodes: list[EpisodeData]) -> None:
    cs = load_chunks(so101_root, chunk_size=8, stride=4, state_key="observation.state", with_tasks=True)
    states = {e.index: e.arrays["observation.state"] for e in so101_episodes}
    expected = np.stack([states[int(e)][int(f)] for e, f in zip(cs.episode_index, cs.frame_index, strict=True)])
    np.testing.assert_array_equal(cs.states, expected)
    assert cs.states.shape == (len(cs), 6) and cs.states.dtype == np.float64
    assert cs.tasks == ["Pick the orange cube and place it in the box"] * len(cs)
    assert cs.fps == 30
    assert cs.action_names is not None and cs.action_names[-1] == "gripper.pos" and len(cs.action_names) == 6
    stats = json.loads((so101_root / "meta/stats.json").read_text())
    assert cs.stats == stats and "action" in cs.stats
    plain = load_chunks(so101_root, chunk_size=8)
    assert plain.states is None and plain.tasks is None


def test_episode_selection(so101_root: Path, so101_episodes: list[EpisodeData]) -> None:
    cs = load_chunks(so101_root, chunk_size=10, episodes=[3, 1])
    assert set(cs.episode_index.tolist()) == {1, 3}
    lengths = {e.index: len(e) for e in so101_episodes}
    assert len(cs) == lengths[1] - 9 + lengths[3] - 9
    with pytest.raises(ValueError, match=r"episodes \[7\] not in .*0\.\.3"):
        load_chunks(so101_root, episodes=[0, 7])


def test_chunkset_is_consistent() -> None:
    with pytest.raises(ValueError, match="mask"):
        ChunkSet(actions=np.zeros((2, 3, 1)), mask=np.ones((2, 4), bool), episode_index=np.zeros(2, np.int64),
                 frame_index=np.zeros(2, np.int64), fps=10.0)


# --------------------------------------------------------------------------- errors
@pytest.fixture
def so101_copy(so101_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "so101"
    shutil.copytree(so101_root, root)
    return root


def test_missing_key_lists_available(so101_root: Path) -> None:
    with pytest.raises(ValueError, match=r"'actions' not in .*available numeric features: \['action'"):
        load_chunks(so101_root, action_key="actions")
    with pytest.raises(ValueError, match=r"'observation.images.front' .* video"):
        load_chunks(so101_root, state_key="observation.images.front")


def test_renamed_key_hints_action_key(so101_copy: Path) -> None:
    info_path = so101_copy / "meta/info.json"
    info = json.loads(info_path.read_text())
    info["features"]["actions"] = info["features"].pop("action")
    info_path.write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"feature 'action' not in .*--action-key actions"):
        load_chunks(so101_copy)


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"not a LeRobot v3 dataset: .*meta/info.json is missing"):
        load_chunks(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither an existing directory nor a Hub id"):
        load_chunks(tmp_path / "nope" / "deeper")


def test_v21_dataset_named(so101_copy: Path) -> None:
    info_path = so101_copy / "meta/info.json"
    info = json.loads(info_path.read_text())
    info["codebase_version"] = "v2.1"
    info_path.write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"codebase_version 'v2.1', expected v3.x.*convert_dataset_v21_to_v30"):
        load_chunks(so101_copy)


def test_chunk_longer_than_every_episode(so101_root: Path) -> None:
    with pytest.raises(ValueError, match=r"no chunk of 400 actions fits .*longest episode: 374 frames"):
        load_chunks(so101_root, chunk_size=400)
    cs = load_chunks(so101_root, chunk_size=400, stride=100, pad="last")  # padding still works
    assert len(cs) == 16 and not cs.mask[:, -1].any()


@pytest.mark.parametrize("kwargs,match", [
    ({"chunk_size": 0}, "chunk_size=0"),
    ({"stride": 0}, "stride=0"),
    ({"pad": "zero"}, r"pad must be one of \('drop', 'last'\)"),
])
def test_bad_arguments(so101_root: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_chunks(so101_root, **kwargs)


def test_nan_named_by_episode_and_frame(so101_copy: Path) -> None:
    path = next((so101_copy / "data").glob("*/*.parquet"))
    df = pd.read_parquet(path)
    row = int(np.flatnonzero((df.episode_index == 2) & (df.frame_index == 17))[0])
    action = df.at[row, "action"].copy()
    action[4] = np.nan
    df.at[row, "action"] = action
    df.to_parquet(path)
    with pytest.raises(ValueError, match=r"'action' of .* is nan at episode 2, frame 17, dimension 4"):
        load_chunks(so101_copy)
    assert len(load_chunks(so101_copy, episodes=[0, 1, 3])) > 0  # other episodes still load


def test_empty_dataset(so101_copy: Path) -> None:
    info_path = so101_copy / "meta/info.json"
    info = json.loads(info_path.read_text())
    info.update(total_episodes=0, total_frames=0)
    info_path.write_text(json.dumps(info))
    with pytest.raises(ValueError, match="empty dataset"):
        load_chunks(so101_copy)


def test_hub_id_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # so the id cannot resolve to a local folder
    with pytest.raises(FileNotFoundError, match=r"'someone/missing-dataset' is not a local directory and could not"):
        load_chunks("someone/missing-dataset")


@settings(max_examples=60, deadline=None)
@given(
    t=st.integers(1, 40), h=st.integers(1, 12), stride=st.integers(1, 6), pad=st.sampled_from(["drop", "last"])
)
def test_chunking_property(t: int, h: int, stride: int, pad: str) -> None:
    """Any episode length, chunk size and stride: right starts, real steps match the episode, tail padded."""
    from action_tokenizers.data import _chunk_episode

    actions = np.arange(t * 2, dtype=np.float64).reshape(t, 2)
    ep = EpisodeData(index=7, arrays={"action": actions, "s": -actions})
    out = _chunk_episode(ep, "action", "s", h, stride, pad)
    starts = list(range(0, t - h + 1 if pad == "drop" else t, stride))
    if not starts:
        assert out is None
        return
    assert out["frame_index"].tolist() == starts and (out["episode_index"] == 7).all()
    np.testing.assert_array_equal(out["states"], -actions[starts])
    for k, s in enumerate(starts):
        real = min(h, t - s)
        assert out["mask"][k].tolist() == [True] * real + [False] * (h - real)
        np.testing.assert_array_equal(out["actions"][k, :real], actions[s : s + real])
        np.testing.assert_array_equal(out["actions"][k, real:], np.broadcast_to(actions[-1], (h - real, 2)))
