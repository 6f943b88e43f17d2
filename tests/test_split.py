"""The one episode split: whole episodes, seeded, shared by every stage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from action_tokenizers.split import EpisodeSplit, episode_split, split_episodes


def test_split_holds_out_whole_episodes() -> None:
    episode_index = np.repeat(np.arange(10), 5)
    split = split_episodes(episode_index, 0.2, seed=0)
    train, held = split.rows(episode_index)
    held_eps = set(episode_index[held].tolist())
    assert held_eps == set(split.heldout_episodes) and len(held_eps) == 2
    assert held_eps.isdisjoint(episode_index[train].tolist())
    assert len(train) + len(held) == 50
    assert split_episodes(episode_index, 0.0, seed=0).heldout_episodes == []
    assert split_episodes([7, 7, 7], 0.5, seed=0) == EpisodeSplit([7], [])  # one episode: nothing held out


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 500), min_size=2, max_size=60, unique=True), st.floats(0.01, 0.99), st.integers(0, 9))
def test_split_partitions_the_episodes(episodes: list[int], fraction: float, seed: int) -> None:
    split = split_episodes(episodes, fraction, seed)
    assert sorted(split.train_episodes + split.heldout_episodes) == sorted(episodes)
    assert 1 <= len(split.heldout_episodes) < len(episodes)
    assert split == split_episodes(list(reversed(episodes)), fraction, seed)  # order of the input does not matter


def test_given_episodes_override_and_are_checked() -> None:
    idx = np.repeat([3, 5, 8], 4)
    assert episode_split(idx, 0.5, 0, heldout_episodes=(8,)) == EpisodeSplit([3, 5], [8])
    with pytest.raises(ValueError, match=r"heldout_episodes \[9\] are not in the dataset"):
        episode_split(idx, 0.5, 0, heldout_episodes=(9,))
    with pytest.raises(ValueError, match="nothing is left to train on"):
        episode_split(idx, 0.5, 0, heldout_episodes=(3, 5, 8))
    with pytest.raises(ValueError, match="heldout_fraction must be in"):
        split_episodes(idx, 1.0, 0)


def test_training_defaults_to_the_tokenizers_heldout_episodes() -> None:
    """Training without a given split holds out what the tokenizer was not fitted on, when the data has it."""
    from types import SimpleNamespace

    from training.train import TrainConfig, data_split

    chunks = SimpleNamespace(episode_index=np.repeat(np.arange(10), 3))
    cfg = TrainConfig(dataset="d", tokenizer="t", eval_fraction=0.2)
    assert data_split(cfg, SimpleNamespace(heldout_episodes=[3]), chunks).heldout_episodes == [3]
    fresh = split_episodes(chunks.episode_index, 0.2, 0).heldout_episodes
    assert data_split(cfg, SimpleNamespace(heldout_episodes=[42]), chunks).heldout_episodes == fresh  # not in the data
    assert data_split(cfg, SimpleNamespace(heldout_episodes=None), chunks).heldout_episodes == fresh
    given = TrainConfig(dataset="d", tokenizer="t", heldout_episodes=(7, 8))
    assert data_split(given, SimpleNamespace(heldout_episodes=[3]), chunks).heldout_episodes == [7, 8]
