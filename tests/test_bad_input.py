"""Inputs are checked where they enter (issue 12): nothing is silently wrong.

Each test reproduces a "silently wrong" or "unreadable traceback" case of the reliability probe:
a NaN state that became a confident action chunk, an empty decode that was not flagged, clipping
that was not counted, a chunk longer than every episode, hand-edited configs, a local typo taken
for a Hub id, a CUDA-only saved device.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from action_tokenizers import AutoActionTokenizer
from action_tokenizers.base import MalformedTokensError
from action_tokenizers.binning import BinningTokenizer


def _chunks(n: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4, 2))


@pytest.fixture(scope="module")
def tok() -> BinningTokenizer:
    return BinningTokenizer(n_bins=16).fit(_chunks())


# ---------------------------------------------------------------------- the policy's observations
@pytest.fixture(scope="module")
def policy(so101_root: Path, tmp_path_factory: pytest.TempPathFactory):
    from action_tokenizers.data import load_chunks
    from training import TokenizedPolicy
    from training.train import TrainConfig, run_train

    root = tmp_path_factory.mktemp("bad-input-policy")
    chunks = load_chunks(so101_root, chunk_size=4, pad="last")
    BinningTokenizer(n_bins=16).fit(chunks.actions).save_pretrained(root / "tok")
    run_train(TrainConfig(dataset=so101_root, tokenizer=root / "tok", out=root / "out", hidden_size=32, n_layers=1,
                          n_heads=2, max_steps=2, batch_size=4, eval_chunks=2, progress=False))
    return TokenizedPolicy.from_pretrained(root / "out", device="cpu")


@pytest.mark.parametrize("where", ["one", "all", "inf"])
def test_non_finite_state_is_refused_naming_key_and_row(policy, where: str) -> None:
    states = np.zeros((3, policy.state_dim))
    if where == "one":
        states[2, 1] = np.nan
    elif where == "all":
        states[:] = np.nan
    else:
        states[1, 0] = np.inf
    row = {"one": 2, "all": 0, "inf": 1}[where]
    with pytest.raises(ValueError, match=rf"observation.state row {row} holds (nan|inf)"):
        policy.predict_action_chunk({"observation.state": states, "task": "pick"})


def test_nan_temperature_and_empty_batch_are_refused(policy) -> None:
    ok = {"observation.state": np.zeros((1, policy.state_dim)), "task": "pick"}
    with pytest.raises(ValueError, match="temperature must be >= 0 and finite.*nan"):
        policy.predict_action_chunk(ok, temperature=float("nan"))
    with pytest.raises(ValueError, match="observation.state is an empty batch"):
        policy.predict_action_chunk({"observation.state": np.zeros((0, policy.state_dim)), "task": []})
    with pytest.raises(TypeError, match="observation.state must be numbers"):
        policy.predict_action_chunk({"observation.state": [["a"] * policy.state_dim], "task": "pick"})
    assert policy.predict_action_chunk(ok).shape == (1, policy.chunk_size, policy.action_dim)


def test_regression_policy_refuses_nan_state() -> None:
    from action_tokenizers.normalize import Normalizer
    from training.regression import RegressionPolicy, _mlp, _state_normalizer

    rng = np.random.default_rng(0)
    reg = RegressionPolicy(_mlp(4 + 1, 3 * 2, hidden=8, layers=1), ["reach"],
                           Normalizer("quantile").fit(rng.uniform(-1, 1, (100, 2))),
                           _state_normalizer(rng.normal(size=(100, 4))), 3, 2)
    states = np.zeros((2, 4))
    states[1, 3] = np.nan
    with pytest.raises(ValueError, match="observation.state row 1 holds nan at index 3"):
        reg.predict_action_chunk({"observation.state": states, "task": ["reach"] * 2})


# ---------------------------------------------------------------------- tokenizer edges
def test_empty_decode_is_flagged_whatever_the_container(tok) -> None:
    for empty in ([], np.array([]), np.array([], dtype=np.int64), ()):
        report_shape = tok.decode(empty).shape
        assert report_shape == (tok.chunk_size, tok.action_dim)
        with pytest.raises(MalformedTokensError):
            tok.decode(empty, strict=True)
    assert tok.decode_with_report([]).actions.shape == (0, tok.chunk_size, tok.action_dim)  # an empty batch


def test_decode_takes_torch_tensors(tok) -> None:
    import torch

    ids = tok.encode(_chunks(3, seed=1))
    np.testing.assert_array_equal(tok.decode(torch.tensor(ids[0])), tok.decode(ids[0]))
    np.testing.assert_array_equal(tok.decode(torch.tensor(ids)), tok.decode(ids))
    np.testing.assert_array_equal(tok.decode([torch.tensor(s) for s in ids]), tok.decode(ids))


def test_zero_action_dims_and_zero_length_are_refused() -> None:
    with pytest.raises(ValueError, match="no action dimensions"):
        BinningTokenizer().fit(np.zeros((5, 4, 0)))
    with pytest.raises(ValueError, match="no time steps"):
        BinningTokenizer().fit(np.zeros((5, 0, 2)))


def test_empty_batch_encodes_to_nothing_for_every_family() -> None:
    from action_tokenizers.vq import VQConfig, VQTokenizer

    vq = VQTokenizer(VQConfig(max_steps=2, codebook_size=16)).fit(_chunks())
    for t in (BinningTokenizer().fit(_chunks()), vq):
        assert t.encode(np.zeros((0, 4, 2))) == []
        assert t.last_encode_stats.chunks == 0


def test_clipping_is_counted_in_the_result_and_the_report(tok, tmp_path: Path) -> None:
    from action_tokenizers.report import write_report

    inside = _chunks(8, seed=2) * 0.01
    assert tok.encode_with_report(inside).stats.clipped_values == 0
    far = inside.copy()
    far[3, 1, 0] = 1e6
    far[5, :, 1] = -1e6
    result = tok.encode_with_report(far)
    assert result.ids == tok.encode(far)
    assert (result.stats.clipped_values, result.stats.clipped_chunks) == (1 + 4, 2)
    assert result.stats.clipped_per_dim == [1, 4] and tok.last_encode_stats == result.stats
    report = write_report(tmp_path / "r", [("binning", tok)], far, progress=False)
    assert "clipped values (chunks)" in report.table() and "| 5 (2) |" in report.table()


def test_chunk_longer_than_every_episode_warns_with_the_numbers(so101_root: Path) -> None:
    from action_tokenizers.data import load_chunks

    with pytest.warns(UserWarning, match=r"chunk size 5000 is longer than every episode .*longest: \d+ frames, 4 episodes"):
        load_chunks(so101_root, chunk_size=5000, pad="last")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_chunks(so101_root, chunk_size=10, pad="last")


# ---------------------------------------------------------------------- saved configs and paths
@pytest.mark.parametrize("key,value,message", [("format_version", "1", "'format_version' must be an integer"),
                                               ("chunk_size", "ten", "'chunk_size' must be a positive integer"),
                                               ("action_dim", 0, "'action_dim' must be a positive integer")])
def test_bad_config_values_name_the_file(tok, tmp_path: Path, key: str, value, message: str) -> None:
    folder = tok.save_pretrained(tmp_path / "tok")
    config = json.loads((folder / "config.json").read_text())
    config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{folder / 'config.json'}: {message}"):
        AutoActionTokenizer.from_pretrained(folder)


def test_local_typo_is_a_missing_path_not_a_hub_error(tok, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    tok.save_pretrained(tmp_path / "tr" / "tok")
    for typo in ("tr/nope", "./tr/nope", str(tmp_path / "tr" / "nope")):
        with pytest.raises(FileNotFoundError, match="does not exist; check the path"):
            AutoActionTokenizer.from_pretrained(typo)


def test_saved_cuda_device_loads_on_cpu_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from action_tokenizers.vq import VQConfig, VQTokenizer

    vq = VQTokenizer(VQConfig(max_steps=2, codebook_size=16)).fit(_chunks())
    vq.config.device = "cuda"  # as saved on a GPU machine
    folder = vq.save_pretrained(tmp_path / "vq")
    vq.config.device = "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="saved for device 'cuda'.*loading on the CPU"):
        loaded = AutoActionTokenizer.from_pretrained(folder)
    assert loaded.config.device == "cpu"
    x = _chunks(5, seed=3)
    assert loaded.encode(x) == vq.encode(x)
