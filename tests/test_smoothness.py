"""The smoothness diagnostic on constructed quantizers whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from action_tokenizers.binning import BinningTokenizer
from action_tokenizers.io import write_json
from action_tokenizers.smoothness import (
    SmoothnessConfig,
    chunk_distance,
    code_usage,
    nearby_pairs,
    perturb,
    position_groups,
    quantization_error,
    smoothness_report,
    violation_share,
    vocabulary_usage,
)


class ScrambledBinning(BinningTokenizer):
    """Binning whose ids decode to the centre of a *permuted* bin: accurate ids, non-monotone decoder.

    A chunk that crosses a bin edge jumps to an unrelated bin, the failure mode the theory warns
    about for learned quantizers.
    """

    def decode_array(self, ids: np.ndarray) -> np.ndarray:
        perm = np.random.default_rng(0).permutation(self.centers_.shape[1])
        return super().decode_array(perm[ids])


def uniform_chunks(n: int, h: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, h, d))


def test_binning_has_no_violations_and_a_scrambled_quantizer_has_many():
    x = uniform_chunks(3000, 2, 1)  # dense enough in 2-D for many data pairs within delta
    cfg = SmoothnessConfig(delta=0.05, eps=0.2)
    binning = BinningTokenizer(n_bins=16, normalization="identity").fit(x)  # w = 0.125 <= eps - delta
    scrambled = ScrambledBinning(n_bins=16, normalization="identity").fit(x)
    good, bad = smoothness_report(binning, x, cfg), smoothness_report(scrambled, x, cfg)
    assert good.n_data_pairs > 200 and good.n_perturbed_pairs > 1000
    assert good.violation_rate == 0.0
    assert bad.violation_rate > 0.05 and bad.data_violation_rate > 0 and bad.perturbed_violation_rate > 0
    assert bad.mean_output_distance > 3 * good.mean_output_distance
    assert bad.error.worst_to_mean > good.error.worst_to_mean


def test_two_bin_step_violates_exactly_when_a_pair_straddles_zero():
    """Q(x) = +-0.5 by the sign of x: a pair violates iff it straddles 0. For x ~ U(-1, 1) and a
    perturbation of radius r ~ U(0, delta) in a random direction, that happens with probability
    E[r] / 2 = delta / 4."""
    x = uniform_chunks(8000, 1, 1, seed=1)
    tok = BinningTokenizer(n_bins=2, normalization="identity").fit(x)
    delta = 0.1
    rep = smoothness_report(tok, x, SmoothnessConfig(delta=delta, eps=0.5, n_pairs=8000))
    se = np.sqrt(delta / 4 * (1 - delta / 4) / rep.n_perturbed_pairs)
    assert abs(rep.perturbed_violation_rate - delta / 4) < 4 * se
    rng = np.random.default_rng(0)
    i, j = nearby_pairs(x, delta, 8000, rng=rng)
    straddle = np.mean(np.sign(x[i, 0, 0]) != np.sign(x[j, 0, 0]))
    assert straddle > 0
    out = tok.decode(tok.encode(x))
    assert violation_share(out[i], out[j], 0.5) == pytest.approx(straddle)


def test_error_tail_of_uniform_binning_matches_theory():
    """1-D uniform data, bins of width w: per-chunk error is at most w/2 with mean w/4."""
    x = uniform_chunks(20000, 1, 1, seed=2)
    tok = BinningTokenizer(n_bins=8, normalization="identity").fit(x)
    w = 2.0 / 8
    tail = quantization_error(tok, x)
    assert tail.worst_error <= w / 2 + 1e-12
    assert tail.mean_error == pytest.approx(w / 4, rel=0.03)
    assert tail.worst_to_mean == pytest.approx(2.0, rel=0.05)


def test_pairs_and_perturbations_stay_within_delta():
    x = uniform_chunks(500, 3, 2)
    rng = np.random.default_rng(0)
    i, j = nearby_pairs(x, 0.3, 200, rng=rng)
    dist = chunk_distance(x[i], x[j])
    assert len(i) > 0 and np.all(dist > 0) and np.all(dist < 0.3) and len(i) <= 200
    moved = perturb(x, 0.05, rng)
    assert np.all(chunk_distance(moved, x) < 0.05)
    assert nearby_pairs(x[:1], 0.3, 10)[0].size == 0


def test_code_usage_counts_and_perplexity():
    u = code_usage(np.array([0, 0, 1, 1]), 4)
    assert (u.used, u.share_used) == (2, 0.5) and u.perplexity == pytest.approx(2.0)
    assert code_usage(np.array([], dtype=np.int64), 4).used == 0


def test_usage_groups_default_to_all_positions_and_report_is_json(tmp_path):
    x = uniform_chunks(400, 2, 2)
    tok = BinningTokenizer(n_bins=4, normalization="identity").fit(x)
    (group,) = position_groups(tok)
    assert group.positions == (0, 1, 2, 3) and group.n_ids == 4
    (usage,) = vocabulary_usage(tok, x)
    assert usage.usage.used == 4 and usage.usage.perplexity == pytest.approx(4.0, rel=0.02)
    rep = smoothness_report(tok, x, seed=3)
    write_json(tmp_path / "s.json", rep.to_dict())
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["usage"][0]["usage"]["used"] == 4 and 0.0 <= saved["violation_rate"] <= 1.0


def test_bad_arguments_are_rejected():
    x = uniform_chunks(50, 2, 2)
    tok = BinningTokenizer(n_bins=4, normalization="identity").fit(x)
    with pytest.raises(ValueError, match="delta"):
        SmoothnessConfig(delta=0.0)
    with pytest.raises(ValueError, match="eps"):
        SmoothnessConfig(eps=float("nan"))
    with pytest.raises(ValueError, match="at least one chunk"):
        smoothness_report(tok, np.zeros((0, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        smoothness_report(tok, np.full((3, 2, 2), np.nan))
    with pytest.raises(RuntimeError, match="not fitted"):
        smoothness_report(BinningTokenizer(), x)
