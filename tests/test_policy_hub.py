"""Policies and fitted tokenizers on the (fake) Hub, and one way in for datasets and tokenizers.

``fit --push-to-hub``, ``train`` with a ``fit --out`` folder and a Hub dataset id, ``train
--push-to-hub``, ``TokenizedPolicy.from_pretrained(repo_id, revision=...)``: all through the real
``huggingface_hub`` with only its HTTP client faked (``tests/fake_hub.py``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_hub import FakeHub  # noqa: E402
from test_hub import hub  # noqa: E402,F401  (the fake Hub fixture)

DATASET_ID = "robot-lab/so101-demos"


def _files(root: Path, *folders: str) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for folder in folders for p in sorted((root / folder).rglob("*")) if p.is_file()}


@pytest.fixture
def fit_out(so101_root: Path, tmp_path: Path) -> Path:
    """A ``fit --out`` folder (binning on SO-101, no sweep)."""
    from action_tokenizers.cli import FitConfig, run_fit

    return run_fit(FitConfig(dataset=str(so101_root), tokenizer="binning", chunk_size=8, out=tmp_path / "fit",
                             sweep=False, progress=False))


def test_fit_pushes_the_tokenizer_with_card_metadata(hub: FakeHub, so101_root: Path, tmp_path: Path):
    from action_tokenizers import AutoActionTokenizer
    from action_tokenizers.cli import FitConfig, run_fit

    out = run_fit(FitConfig(dataset=str(so101_root), tokenizer="binning", chunk_size=8, out=tmp_path / "fit",
                            sweep=False, progress=False, push_to_hub="robot-lab/so101-binning"))
    (commit,) = hub.commits
    assert {"config.json", "tensors.safetensors", "README.md"} <= set(commit.added)
    meta = hub.card_metadata[-1]
    assert meta["pipeline_tag"] == "robotics" and meta["license"] == "apache-2.0"
    assert meta["library_name"] == "action-tokenizers" and "binning" in meta["tags"]
    assert "datasets" not in meta  # a local folder is not a Hub dataset
    local = AutoActionTokenizer.from_pretrained(out / "tokenizer")
    remote = AutoActionTokenizer.from_pretrained("robot-lab/so101-binning")
    x = np.random.default_rng(0).normal(size=(5, 8, local.action_dim))
    assert remote.encode(x) == local.encode(x)


def test_dataset_hub_id_resolves_to_a_snapshot_without_videos(hub: FakeHub, so101_root: Path):
    from action_tokenizers.data import load_chunks
    from action_tokenizers.hub import resolve_dataset

    video = "videos/observation.images.front/chunk-000/file-000.mp4"
    hub.add_repo(DATASET_ID, {**_files(so101_root, "meta", "data"), video: b"not fetched"})
    root = resolve_dataset(DATASET_ID)
    assert not (root / video).exists()
    assert (root / "meta" / "info.json").is_file()
    local = load_chunks(so101_root, chunk_size=8)
    for remote in (load_chunks(root, chunk_size=8), load_chunks(DATASET_ID, chunk_size=8)):  # the id itself too
        np.testing.assert_array_equal(remote.actions, local.actions)
    fetched = [r.url.path for r in hub.requests if r.url.path.startswith(f"/datasets/{DATASET_ID}/resolve/")]
    assert any(p.endswith("meta/info.json") for p in fetched) and not any("/videos/" in p for p in fetched)
    assert resolve_dataset(so101_root) == so101_root


@pytest.mark.slow
def test_train_from_fit_folder_and_hub_dataset_then_push_and_load(hub: FakeHub, so101_root: Path, fit_out: Path,
                                                                  tmp_path: Path):
    """The acceptance path: ``train --dataset owner/name --tokenizer FIT_OUT --push-to-hub REPO``, then
    ``TokenizedPolicy.from_pretrained(REPO)`` predicts what the local folder predicts."""
    from training.policy import TokenizedPolicy
    from training.train import TrainConfig, run_train

    hub.add_repo(DATASET_ID, _files(so101_root, "meta", "data"))
    repo = "robot-lab/so101-policy"
    result = run_train(TrainConfig(dataset=DATASET_ID, tokenizer=str(fit_out), out=tmp_path / "policy",
                                   hidden_size=32, n_layers=1, n_heads=2, max_steps=2, batch_size=8, eval_chunks=2,
                                   progress=False, push_to_hub=repo))
    assert result.hub_url and repo in result.hub_url
    pushed = hub.commits[-1].added
    assert {"policy_config.json", "README.md", "action_vocab.json", "action_tokenizer/config.json"} <= set(pushed)
    assert not any(p.startswith("checkpoints/") or "/.action_tokenizers" in p or p.startswith(".action")
                   for p in pushed)
    meta = hub.card_metadata[-1]
    assert meta["pipeline_tag"] == "robotics" and meta["license"] == "apache-2.0"
    assert meta["datasets"] == [DATASET_ID] and "base_model" not in meta  # the default LM is built from scratch
    saved = json.loads((tmp_path / "policy" / "train_config.json").read_text())
    assert saved["dataset"] == DATASET_ID and saved["tokenizer"] == str(fit_out.resolve())

    local = TokenizedPolicy.from_pretrained(tmp_path / "policy", device="cpu")
    remote = TokenizedPolicy.from_pretrained(repo, device="cpu", revision=hub.repos[repo].head)
    states = np.random.default_rng(0).normal(size=(3, local.state_dim)).astype(np.float32)
    batch = {local.state_key: states, "task": ["pick"] * 3}
    np.testing.assert_array_equal(remote.predict_action_chunk(batch), local.predict_action_chunk(batch))
    with pytest.raises(FileNotFoundError, match="revision"):
        TokenizedPolicy.from_pretrained(repo, device="cpu", revision="no-such-branch")
    from eval.policies import load_policy  # what `eval --policy owner/name` calls

    assert isinstance(load_policy(repo), TokenizedPolicy)

    # and the loaded policy pushes itself again (the folder it came from)
    url = remote.push_to_hub("robot-lab/so101-policy-copy")
    assert "so101-policy-copy" in url and "policy_config.json" in hub.commits[-1].added


def test_policy_without_a_folder_cannot_push():
    from training.policy import TokenizedPolicy

    policy = TokenizedPolicy.__new__(TokenizedPolicy)
    policy.directory = None
    with pytest.raises(ValueError, match="train --out"):
        policy.push_to_hub("robot-lab/x")


@pytest.mark.slow
def test_auto_processor_loads_a_pushed_tokenizer(hub: FakeHub):
    """transformers' own Hub path (processor, config and tokenizer look-ups) ends in our loader."""
    import action_tokenizers  # noqa: F401  (registers with transformers)
    from action_tokenizers import BinningTokenizer
    from transformers import AutoProcessor

    x = np.cumsum(np.random.default_rng(0).normal(scale=0.1, size=(40, 4, 2)), axis=1)
    tok = BinningTokenizer(n_bins=16).fit(x)
    tok.push_to_hub("robot-lab/binning-auto")
    loaded = AutoProcessor.from_pretrained("robot-lab/binning-auto")
    assert type(loaded) is BinningTokenizer and loaded(x) == tok(x)
