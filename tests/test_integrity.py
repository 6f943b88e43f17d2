"""Integrity (issue 12): saved tokenizers and policies record a sha256 of their data files, and a
file that does not match (a bit flip, a hand edit) is refused with the file named, instead of
loading and giving different ids."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from action_tokenizers import AutoActionTokenizer
from action_tokenizers.binning import BinningTokenizer
from action_tokenizers.io import MANIFEST, ChecksumError, file_sha256


def _chunks(n: int = 300, seed: int = 0) -> np.ndarray:
    t = np.linspace(0, 1, 8)
    rng = np.random.default_rng(seed)
    return np.sin(2 * np.pi * (t[None, :, None] + rng.uniform(0, 1, (n, 1, 2)))) + 0.05 * rng.normal(size=(n, 8, 2))


def _flip_bit(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) - 3 if offset is None else offset  # near the end: inside the tensor data, past the header
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def _fast():
    from action_tokenizers.fast import FASTTokenizer

    return FASTTokenizer(vocab_size=256).fit(_chunks())


def _vq():
    from action_tokenizers.vq import VQConfig, VQTokenizer

    return VQTokenizer(VQConfig(max_steps=2, codebook_size=16)).fit(_chunks())


@pytest.mark.parametrize("make,name", [(lambda: BinningTokenizer(n_bins=32).fit(_chunks()), "tensors.safetensors"),
                                       (_fast, "tokenizer.json"), (_vq, "model.safetensors")],
                         ids=["binning", "fast", "vq"])
def test_a_flipped_bit_is_refused_naming_the_file(tmp_path: Path, make, name: str) -> None:
    folder = make().save_pretrained(tmp_path / "tok")
    config = json.loads((folder / "config.json").read_text())
    assert config["checksums"][name] == file_sha256(folder / name)
    if name.endswith(".json"):  # a hand edit that still parses
        (folder / name).write_text((folder / name).read_text() + " ")
    else:
        _flip_bit(folder / name)
    with pytest.raises(ChecksumError, match=rf"{folder / name} does not match the sha256"):
        AutoActionTokenizer.from_pretrained(folder)


def test_a_hand_edited_config_is_refused(tmp_path: Path) -> None:
    folder = BinningTokenizer(n_bins=32).fit(_chunks()).save_pretrained(tmp_path / "tok")
    config = json.loads((folder / "config.json").read_text())
    config["metrics"] = {"edited": True}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ChecksumError, match=rf"{folder / 'config.json'} does not match .*{MANIFEST}"):
        AutoActionTokenizer.from_pretrained(folder)


def test_a_model_card_edit_is_allowed(tmp_path: Path) -> None:
    tok = BinningTokenizer(n_bins=32).fit(_chunks())
    folder = tok.save_pretrained(tmp_path / "tok")
    (folder / "README.md").write_text("# my notes on this tokenizer\n")
    x = _chunks(5, seed=1)
    assert AutoActionTokenizer.from_pretrained(folder).encode(x) == tok.encode(x)


def test_folders_saved_before_checksums_still_load(tmp_path: Path) -> None:
    tok = BinningTokenizer(n_bins=32).fit(_chunks())
    folder = tok.save_pretrained(tmp_path / "tok")
    (folder / MANIFEST).unlink()
    config = json.loads((folder / "config.json").read_text())
    del config["checksums"]
    (folder / "config.json").write_text(json.dumps(config))
    x = _chunks(5, seed=1)
    assert AutoActionTokenizer.from_pretrained(folder).encode(x) == tok.encode(x)


@pytest.fixture(scope="module")
def trained(so101_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from action_tokenizers.data import load_chunks
    from training.train import TrainConfig, run_train

    root = tmp_path_factory.mktemp("integrity-policy")
    BinningTokenizer(n_bins=16).fit(load_chunks(so101_root, chunk_size=4, pad="last").actions).save_pretrained(root / "tok")
    run_train(TrainConfig(dataset=so101_root, tokenizer=root / "tok", out=root / "out", hidden_size=32, n_layers=1,
                          n_heads=2, max_steps=2, batch_size=4, eval_chunks=2, progress=False))
    return root / "out"


@pytest.mark.parametrize("name", ["lm/model.safetensors", "observation_encoder.safetensors", "action_vocab.json",
                                  "action_tokenizer/tensors.safetensors"])
def test_a_policy_file_that_changed_is_refused(trained: Path, tmp_path: Path, name: str) -> None:
    from training import TokenizedPolicy

    copy = tmp_path / "policy"
    shutil.copytree(trained, copy)
    meta = json.loads((copy / "policy_config.json").read_text())
    assert name in meta["checksums"]
    if name.endswith(".json"):
        (copy / name).write_text((copy / name).read_text() + "\n")
    else:
        _flip_bit(copy / name)
    with pytest.raises(ChecksumError, match=rf"{copy / name} does not match the sha256"):
        TokenizedPolicy.from_pretrained(copy, device="cpu")
    TokenizedPolicy.from_pretrained(trained, device="cpu")  # the untouched one loads
