"""Shared fixtures: the real SO-101 dataset from ../shared/data and freshly collected Meta-World demos."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SO101 = REPO.parent / "shared" / "data" / "so101_record_test"


@pytest.fixture(scope="session")
def so101_root() -> Path:
    """A real LeRobot v3 dataset (SO-101, 4 episodes, 6-D actions) without its video files."""
    if not (SO101 / "meta" / "info.json").is_file():
        pytest.fail(f"shared dataset missing at {SO101}: the repo must sit beside shared/")
    return SO101


@pytest.fixture(scope="session")
def metaworld_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Meta-World demo set collected now by the scripted experts (2 tasks x 3 episodes)."""
    from eval.collect import CollectConfig, run_collect

    out = tmp_path_factory.mktemp("mw") / "demos"
    run_collect(CollectConfig(tasks=("reach-v3", "push-v3"), episodes=3, out=out, seed=0, progress=False))
    return out
