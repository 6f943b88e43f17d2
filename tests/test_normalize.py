"""Normalizers: invertibility, clipping, stats.json, masks, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from action_tokenizers.normalize import MODES, Normalizer


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (20, 3), elements=st.floats(-1e4, 1e4)), st.sampled_from(MODES))
def test_unnormalize_inverts_normalize_within_range(x, mode):
    norm = Normalizer(mode).fit(x)
    y = norm.normalize(x)
    back = norm.unnormalize(y)
    if norm.clips:
        inside = np.abs(y) < 1.0
        np.testing.assert_allclose(back[inside], x[inside], rtol=1e-9, atol=1e-6)
        assert np.all(np.abs(y) <= 1.0)
    else:
        np.testing.assert_allclose(back, x, rtol=1e-9, atol=1e-6)


def test_quantile_maps_q01_q99_to_unit_interval():
    x = np.random.default_rng(0).normal(size=(10_000, 2)) * [1.0, 50.0] + [0.0, 7.0]
    norm = Normalizer("quantile").fit(x)
    q = np.quantile(x, [0.01, 0.99], axis=0)
    np.testing.assert_allclose(norm.normalize(q), [[-1, -1], [1, 1]], atol=1e-9)
    assert not norm.normalize(x).flags.writeable is False  # a new array
    before = x.copy()
    norm.normalize(x)
    np.testing.assert_array_equal(x, before)  # input untouched


def test_from_stats_matches_dataset(so101_root):
    stats = json.loads((so101_root / "meta" / "stats.json").read_text())  # LeRobot's meta/stats.json
    norm = Normalizer("quantile").from_stats(stats, "action")
    q01, q99 = np.asarray(stats["action"]["q01"]), np.asarray(stats["action"]["q99"])
    np.testing.assert_allclose(norm.normalize(q01), -1.0, atol=1e-9)
    np.testing.assert_allclose(norm.normalize(q99), 1.0, atol=1e-9)
    with pytest.raises(KeyError, match="available"):
        Normalizer("quantile").from_stats(stats, "actions")
    with pytest.raises(KeyError, match="lacks"):
        Normalizer("quantile").from_stats({"action": {"mean": [0.0]}}, "action")


def test_persistence_roundtrip_and_validation():
    x = np.random.default_rng(1).normal(size=(100, 4))
    norm = Normalizer("meanstd", skip_dims=(3,)).fit(x)
    loaded = Normalizer.from_saved(json.loads(json.dumps(norm.config())), norm.tensors())
    np.testing.assert_array_equal(loaded.normalize(x), norm.normalize(x))
    np.testing.assert_array_equal(loaded.normalize(x)[:, 3], x[:, 3])
    bad = norm.tensors()
    bad["normalizer.scale"] = -bad["normalizer.scale"]
    with pytest.raises(ValueError, match="non-positive"):
        Normalizer.from_saved(norm.config(), bad)
    with pytest.raises(ValueError, match="skip_dims"):
        Normalizer("quantile", skip_dims=(9,)).fit(x)
    with pytest.raises(ValueError, match="must be one of"):
        Normalizer("robust")
    with pytest.raises(ValueError, match="fitted for action dimension 4"):
        norm.normalize(np.zeros((2, 5)))


@pytest.mark.parametrize("mode", MODES)
def test_unnormalize_inplace_matches_copy(mode):
    rng = np.random.default_rng(1)
    norm = Normalizer(mode, skip_dims=(1,)).fit(rng.normal(2.0, 3.0, (50, 4)))
    y = rng.uniform(-1, 1, (6, 5, 4))
    expected = norm.unnormalize(y)
    assert expected is not y
    out = norm.unnormalize(y, inplace=True)
    assert out is y  # overwritten, not copied
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    ints = np.zeros((2, 4), dtype=np.int64)  # not float64: never overwritten
    assert norm.unnormalize(ints, inplace=True) is not ints
