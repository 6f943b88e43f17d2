"""The one train / held-out split of a dataset, by whole episodes.

Every stage that measures something on "held-out" data (the tokenizer report, the LM's held-out
token accuracy, the regression baseline) must agree on which episodes those are, or a figure can
be measured on episodes a tokenizer or a model was fitted on. So the split is computed here, once,
from one fraction and one seed, and every stage records its ``heldout_episodes`` in its saved config.

    split = split_episodes(chunks.episode_index, heldout_fraction=0.1, seed=0)
    train_rows, heldout_rows = split.rows(chunks.episode_index)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["DataSelection", "EpisodeSplit", "episode_split", "split_episodes"]


@dataclass
class DataSelection:
    """Which chunks of a LeRobot v3 dataset a stage reads, and which of its episodes are held out.

    Declared once: the fit, training and regression configs extend it, so the options are the
    same everywhere (``--dataset``, ``--action-key``, ``--chunk-size``, ``--stride``,
    ``--eval-fraction``, ``--heldout-episodes``, ``--seed``).
    """

    dataset: str = ""
    """LeRobot v3 dataset: a local root or a Hub dataset id 'owner/name' (required)."""
    action_key: str = "action"
    """Feature holding the actions (some datasets use 'actions')."""
    chunk_size: int | None = 10
    """Chunk length h in steps."""
    stride: int = 1
    """Frames between the starts of consecutive chunks."""
    eval_fraction: float = 0.1
    """Share of episodes held out (0: none); used when --heldout-episodes is not given."""
    heldout_episodes: tuple[int, ...] | None = None
    """Held-out episode indices (the main job passes one split to every stage)."""
    seed: int = 0
    """Seed of the episode split (and of the stage's own randomness)."""

    def __post_init__(self) -> None:
        self.dataset = str(self.dataset)
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"--eval-fraction must be in [0, 1), got {self.eval_fraction}")
        if self.stride < 1 or (self.chunk_size is not None and self.chunk_size < 1):
            raise ValueError(f"--stride and --chunk-size must be >= 1, got {self.stride}, {self.chunk_size}")
        if self.heldout_episodes is not None:
            self.heldout_episodes = tuple(int(e) for e in self.heldout_episodes)

    def split(self, episode_index: Sequence[int] | np.ndarray) -> "EpisodeSplit":
        """This selection's split of the episodes in ``episode_index``."""
        return episode_split(episode_index, self.eval_fraction, self.seed, self.heldout_episodes)


@dataclass(frozen=True)
class EpisodeSplit:
    """Which episodes (the dataset's ``episode_index`` values) train and which are held out."""

    train_episodes: list[int]
    heldout_episodes: list[int]

    def rows(self, episode_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the rows (chunks) of ``episode_index`` in (train, held-out) episodes."""
        episode_index = np.asarray(episode_index)
        held = np.isin(episode_index, np.asarray(self.heldout_episodes, dtype=np.int64))
        return np.flatnonzero(~held), np.flatnonzero(held)

    @property
    def note(self) -> str:
        """One line for reports: what the held-out figures were measured on."""
        n = len(self.train_episodes) + len(self.heldout_episodes)
        if not self.heldout_episodes:
            return f"no held-out episodes (of {n}): measured on the training chunks"
        return f"measured on {len(self.heldout_episodes)} held-out episode(s) of {n}: {self.heldout_episodes}"


def split_episodes(episode_indices: Sequence[int] | np.ndarray, heldout_fraction: float, seed: int) -> EpisodeSplit:
    """Hold out ``round(fraction x episodes)`` whole episodes (at least one, never all), seeded.

    ``episode_indices`` may repeat (one entry per chunk); the split is over the distinct values.
    A fraction of 0, or a single episode, holds out nothing.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    episodes = np.unique(np.asarray(episode_indices, dtype=np.int64))
    if heldout_fraction == 0 or len(episodes) < 2:
        return EpisodeSplit([int(e) for e in episodes], [])
    k = min(len(episodes) - 1, max(1, int(round(heldout_fraction * len(episodes)))))
    held = {int(e) for e in np.random.default_rng(seed).choice(episodes, size=k, replace=False)}
    return EpisodeSplit([int(e) for e in episodes if int(e) not in held], sorted(held))


def episode_split(episode_indices: Sequence[int] | np.ndarray, heldout_fraction: float, seed: int,
                  heldout_episodes: Sequence[int] | None = None) -> EpisodeSplit:
    """The split a stage uses: ``heldout_episodes`` when given (the main job passes one split to
    every stage), else :func:`split_episodes`. Given episodes must exist in the data."""
    if heldout_episodes is None:
        return split_episodes(episode_indices, heldout_fraction, seed)
    episodes = [int(e) for e in np.unique(np.asarray(episode_indices, dtype=np.int64))]
    held_set = {int(e) for e in heldout_episodes}
    held = sorted(held_set)
    missing = sorted(set(held) - set(episodes))
    if missing:
        raise ValueError(f"heldout_episodes {missing} are not in the dataset (episodes: {episodes[:20]}"
                         f"{' ...' if len(episodes) > 20 else ''})")
    if held and len(held) == len(episodes):
        raise ValueError("heldout_episodes holds out every episode: nothing is left to train on")
    return EpisodeSplit([e for e in episodes if e not in held_set], held)
