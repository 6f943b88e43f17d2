"""Binning tokenizer: OpenVLA parity, round trip within the quantization error, robust decode, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from action_tokenizers import AutoActionTokenizer, BinningTokenizer, MalformedTokensError


def _chunks(n=64, h=8, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(scale=0.3, size=(n, h, d)), axis=1) + rng.normal(size=(n, 1, d)) * 5


# ---------------------------------------------------------------- OpenVLA parity
def openvla_reference(actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenVLA's ActionTokenizer, written out as in its repository (local ids, 256 bins)."""
    bins = np.linspace(-1, 1, 256)
    bin_centers = (bins[:-1] + bins[1:]) / 2.0
    discretized = np.digitize(np.clip(actions, -1.0, 1.0), bins)  # 1..256
    local = discretized - 1
    decoded = bin_centers[np.clip(discretized - 1, a_min=0, a_max=bin_centers.shape[0] - 1)]
    return local, decoded


def test_openvla_parity_exact():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1.3, 1.3, size=(200, 1, 7))
    x[0, 0, :3] = [-1.0, 1.0, 0.0]  # edges exactly
    tok = BinningTokenizer.openvla().fit(x)
    ids = np.array(tok.encode(x))
    ref_ids, ref_dec = openvla_reference(x[:, 0, :])
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(tok.decode(ids.tolist())[:, 0, :], ref_dec)
    assert tok.vocab_size == 256 and ids.max() == 255  # x == 1.0 lands on id 255, decoded as centre 254


def test_openvla_rejects_other_bin_counts():
    with pytest.raises(ValueError, match="256"):
        BinningTokenizer(n_bins=128, edges="openvla")


# ---------------------------------------------------------------- round trip
@pytest.mark.parametrize("normalization", ["quantile", "minmax", "meanstd", "identity"])
@pytest.mark.parametrize("edges", ["uniform", "quantile"])
def test_roundtrip_error_bounded_by_bin_width(normalization, edges):
    x = _chunks()
    tok = BinningTokenizer(n_bins=64, edges=edges, normalization=normalization).fit(x)
    ids = tok.encode(x)
    assert len(ids) == len(x) and all(len(s) == tok.tokens_per_chunk == 8 * 3 for s in ids)
    y = tok.decode(ids)
    assert y.shape == x.shape
    xn, yn = tok.normalizer.normalize(x), tok.normalizer.normalize(y)
    width = np.diff(tok.edges_, axis=1).max(axis=1)  # (d,)
    inside = (xn >= tok.edges_[:, 0]) & (xn <= tok.edges_[:, -1])
    assert np.all(np.abs(yn - xn)[inside] <= (width / 2 + 1e-9)[np.nonzero(inside)[2]])
    # idempotent on its own outputs
    assert tok.encode(y) == ids


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (5, 4, 2), elements=st.floats(-1e3, 1e3)), st.integers(2, 300))
def test_roundtrip_property(x, n_bins):
    tok = BinningTokenizer(n_bins=n_bins, normalization="minmax").fit(x)
    y = tok.decode(tok.encode(x))
    xn, yn = tok.normalizer.normalize(x), tok.normalizer.normalize(y)
    assert np.all(np.abs(xn - yn) <= 1.0 / n_bins + 1e-9)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.integers(-(2**70), 2**70), max_size=40), max_size=6))
def test_decode_never_crashes(seqs):
    tok = BinningTokenizer(n_bins=16).fit(_chunks(h=4, d=2))
    report = tok.decode_with_report(seqs)
    assert report.actions.shape == (len(seqs), 4, 2)
    assert np.all(np.isfinite(report.actions))
    for seq, bad in zip(seqs, report.malformed):
        well_formed = len(seq) == 8 and all(0 <= i < 16 for i in seq)
        assert bad == (not well_formed)


def test_malformed_decodes_to_best_chunk_not_zeros():
    x = _chunks(n=4, h=5, d=2)
    tok = BinningTokenizer(n_bins=256).fit(x)
    ids = tok.encode(x)
    truncated = [s[:-2] for s in ids]  # last step missing
    report = tok.decode_with_report(truncated)
    assert report.malformed.all() and all("expected 10" in r for r in report.reasons)
    full = tok.decode(ids)
    np.testing.assert_allclose(report.actions[:, :4], full[:, :4])  # complete steps untouched
    np.testing.assert_allclose(report.actions[:, 4], full[:, 3])  # missing step holds the last one
    with pytest.raises(MalformedTokensError, match="malformed"):
        tok.decode(truncated, strict=True)
    out_of_vocab = [s[:-1] + [999] for s in ids]
    with pytest.raises(MalformedTokensError, match="outside"):
        tok.decode(out_of_vocab, strict=True)


# ---------------------------------------------------------------- bad input
def test_bad_inputs_have_clear_errors():
    x = _chunks(h=6, d=3)
    with pytest.raises(ValueError, match="zero chunks"):
        BinningTokenizer().fit(np.zeros((0, 6, 3)))
    bad = x.copy()
    bad[2, 1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf.*\\(2, 1, 0\\)"):
        BinningTokenizer().fit(bad)
    tok = BinningTokenizer().fit(x)
    with pytest.raises(ValueError, match=r"\(h, d\) = \(6, 3\).*action dimension 4"):
        tok.encode(np.zeros((2, 6, 4)))
    with pytest.raises(ValueError, match="chunk length 5"):
        tok.encode(np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match="shape"):
        tok.encode(np.zeros(5))
    with pytest.raises(TypeError, match="ints"):
        tok.decode([[1.5, 2]])
    with pytest.raises(RuntimeError, match="not fitted"):
        BinningTokenizer().encode(x)
    with pytest.raises(ValueError, match="normalization must be one of"):
        BinningTokenizer(normalization="zscore")
    with pytest.raises(ValueError, match="edges must be one of"):
        BinningTokenizer(edges="log")


def test_single_chunk_gives_single_list():
    x = _chunks(h=4, d=2)
    tok = BinningTokenizer(n_bins=32).fit(x)
    ids = tok.encode(x[0])
    assert isinstance(ids, list) and isinstance(ids[0], int) and len(ids) == 8
    assert tok.decode(ids).shape == (4, 2)


def test_skip_dims_leave_dimension_untouched():
    x = _chunks(h=4, d=3)
    tok = BinningTokenizer(n_bins=16, normalization="quantile", skip_dims=(2,)).fit(x)
    xn = tok.normalizer.normalize(x)
    np.testing.assert_array_equal(xn[..., 2], x[..., 2])
    assert np.abs(xn[..., :2]).max() <= 1.0


# ---------------------------------------------------------------- save / load
@pytest.mark.parametrize("kwargs", [dict(), dict(edges="quantile", n_bins=32), dict(normalization="meanstd")])
def test_save_load_identical_ids_and_no_pickle(tmp_path, kwargs):
    x = _chunks()
    tok = BinningTokenizer(**kwargs).fit(x)
    path = tok.save_pretrained(tmp_path / "tok")
    files = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))  # hidden: the output manifest
    assert files == ["README.md", "config.json", "tensors.safetensors"]
    for p in path.iterdir():
        assert b"\x80\x04" not in p.read_bytes()[:2]  # no pickle protocol header
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["action_tokenizer_class"] == "BinningTokenizer" and "tokenizer_class" not in cfg and cfg["vocab_size"] == tok.vocab_size
    for loaded in (BinningTokenizer.from_pretrained(path), AutoActionTokenizer.from_pretrained(path)):
        assert isinstance(loaded, BinningTokenizer)
        assert loaded.encode(x) == tok.encode(x)
        np.testing.assert_array_equal(loaded.decode(tok.encode(x)), tok.decode(tok.encode(x)))
    assert "BinningTokenizer" in (path / "README.md").read_text()


def test_corrupted_or_partial_directory(tmp_path):
    tok = BinningTokenizer().fit(_chunks())
    path = tok.save_pretrained(tmp_path / "tok")
    (path / "tensors.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="tensors.safetensors.*corrupted"):
        AutoActionTokenizer.from_pretrained(path)
    path = tok.save_pretrained(tmp_path / "tok2")
    (path / "tensors.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="tensors.safetensors"):
        AutoActionTokenizer.from_pretrained(path)
    path = tok.save_pretrained(tmp_path / "tok3")
    (path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        AutoActionTokenizer.from_pretrained(path)
    cfg = json.loads((tok.save_pretrained(tmp_path / "tok4") / "config.json").read_text())
    cfg["action_tokenizer_class"] = "NopeTokenizer"
    (tmp_path / "tok4" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown tokenizer 'NopeTokenizer'"):
        AutoActionTokenizer.from_pretrained(tmp_path / "tok4")
    with pytest.raises(FileNotFoundError):
        AutoActionTokenizer.from_pretrained(tmp_path / "missing" / "dir")


def test_failed_save_leaves_no_directory(tmp_path, monkeypatch):
    tok = BinningTokenizer().fit(_chunks())

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(type(tok), "model_card", boom)
    with pytest.raises(OSError):
        tok.save_pretrained(tmp_path / "tok")
    assert list(tmp_path.iterdir()) == []
