"""The expectation readout: a binning LM's chunk as the mean of the bin centres under its softmax."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from action_tokenizers.binning import BinningTokenizer
from action_tokenizers.fast import FASTTokenizer
from training.generation import check_readout

H, D, BINS = 3, 2, 16


def fitted_binning(seed: int = 0) -> BinningTokenizer:
    rng = np.random.default_rng(seed)
    return BinningTokenizer(n_bins=BINS).fit(rng.uniform(-2, 3, (64, H, D)))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 1000), k=st.integers(0, BINS - 2))
def test_expectation_of_one_hot_is_the_bin_centre_and_of_two_neighbours_their_midpoint(seed: int, k: int) -> None:
    tok = fitted_binning(seed)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, BINS, (2, H * D))
    one_hot = np.eye(BINS)[ids]
    np.testing.assert_allclose(tok.decode_expected(one_hot), tok.decode(ids.tolist()), atol=1e-9)
    half = np.zeros((1, H * D, BINS))
    half[..., k] = half[..., k + 1] = 0.5
    both = tok.decode([[k] * (H * D), [k + 1] * (H * D)])
    np.testing.assert_allclose(tok.decode_expected(half)[0], both.mean(0), atol=1e-9)


def test_bad_distributions_are_refused() -> None:
    tok = fitted_binning()
    with pytest.raises(ValueError, match="shape"):
        tok.decode_expected(np.full((1, H * D, BINS + 1), 1 / (BINS + 1)))
    bad = np.full((1, H * D, BINS), 1 / BINS)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        tok.decode_expected(bad)
    with pytest.raises(ValueError, match="summing to 1"):
        tok.decode_expected(np.full((1, H * D, BINS), 0.5))


def test_readout_checks_name_the_fix() -> None:
    fast = FASTTokenizer()
    with pytest.raises(ValueError, match="continuous meaning"):
        check_readout("expectation", fast)
    with pytest.raises(ValueError, match="temperature 0"):
        check_readout("expectation", fitted_binning(), temperature=0.5)
    with pytest.raises(ValueError, match="one of"):
        check_readout("median", fitted_binning())
    with pytest.raises(ValueError, match="temperature 0"):
        check_readout("mean", fast, temperature=0.7)
    assert check_readout("mean", fast) == "mean"
    assert check_readout("argmax", fast) == "argmax"


def test_a_trained_binning_policy_reads_out_the_expectation(so101_root: Path, tmp_path: Path) -> None:
    """Saved with the policy; the chunk is the softmax-weighted mean of the centres, not the argmax decode."""
    import torch

    from action_tokenizers.data import load_chunks
    from training import TokenizedPolicy
    from training.generation import generate_action_ids
    from training.train import TrainConfig, run_train

    chunks = load_chunks(so101_root, chunk_size=4, pad="last")
    tok_dir = BinningTokenizer(n_bins=BINS).fit(chunks.actions).save_pretrained(tmp_path / "tok")
    run_train(TrainConfig(dataset=so101_root, tokenizer=tok_dir, out=tmp_path / "out", hidden_size=16, n_layers=1,
                          n_heads=2, max_steps=3, batch_size=4, warmup_steps=1, eval_chunks=2, progress=False,
                          readout="expectation"))
    policy = TokenizedPolicy.from_pretrained(tmp_path / "out", device="cpu")
    assert policy.readout == "expectation"
    batch = {"observation.state": np.random.default_rng(0).normal(size=(2, 6)), "task": "pick"}
    expected = policy.predict_action_chunk(batch)
    policy.readout = "argmax"
    argmax = policy.predict_action_chunk(batch)
    tok = policy.action_tokenizer
    gen = generate_action_ids(policy.model, policy.vocab, policy.plan, policy.prompts(["pick", "pick"]),
                              {"observation.state": torch.as_tensor(batch["observation.state"], dtype=torch.float32)},
                              policy.lm_tokenizer.pad_token_id, with_probs=True)
    assert gen.probs.shape == (2, 4 * 6, BINS) and np.allclose(gen.probs.sum(-1), 1)
    np.testing.assert_allclose(expected, tok.decode_expected(gen.probs), atol=1e-9)
    np.testing.assert_allclose(argmax, tok.decode(gen.ids), atol=1e-9)
    assert not np.allclose(expected, argmax)  # a barely trained model's softmax is spread over many bins
    with pytest.raises(ValueError, match="temperature 0"):
        policy.readout = "expectation"
        policy.predict_action_chunk(batch, temperature=1.0)


def test_the_mean_readout_averages_seeded_samples_of_any_tokenizer(so101_root: Path, tmp_path: Path) -> None:
    """FAST (variable length): the chunk is the mean of MEAN_SAMPLES decoded samples, the same on a rerun."""
    import torch

    from action_tokenizers.data import load_chunks
    from training import TokenizedPolicy
    from training.generation import MEAN_SAMPLES, sample_mean
    from training.train import TrainConfig, run_train

    chunks = load_chunks(so101_root, chunk_size=4, pad="last")
    tok_dir = FASTTokenizer(vocab_size=64).fit(chunks.actions).save_pretrained(tmp_path / "tok")
    run_train(TrainConfig(dataset=so101_root, tokenizer=tok_dir, out=tmp_path / "out", hidden_size=16, n_layers=1,
                          n_heads=2, max_steps=3, batch_size=4, warmup_steps=1, eval_chunks=2, progress=False))
    batch = {"observation.state": np.random.default_rng(0).normal(size=(3, 6)), "task": "pick"}
    runs = []
    for _ in range(2):  # a fresh load each time: the same calls give the same chunks
        policy = TokenizedPolicy.from_pretrained(tmp_path / "out", device="cpu")
        policy.readout = "mean"
        runs.append(policy.predict_action_chunk(batch))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert runs[0].shape == (3, 4, 6) and np.isfinite(runs[0]).all()
    assert len(policy.last_stats["malformed_per_row"]) == 3 and len(policy.last_stats["action_ids"]) == 3
    obs = {"observation.state": torch.as_tensor(batch["observation.state"], dtype=torch.float32)}
    report, mean, gen = sample_mean(policy.model, policy.action_tokenizer, policy.vocab, policy.plan,
                                    policy.prompts(["pick"] * 3), obs, policy.lm_tokenizer.pad_token_id, seed=1)
    assert len(gen.ids) == 3 * MEAN_SAMPLES and report.n_malformed == 0
    decoded = policy.action_tokenizer.decode(gen.ids).reshape(3, MEAN_SAMPLES, 4, 6)
    np.testing.assert_allclose(mean, decoded.mean(1), atol=1e-9)
    np.testing.assert_allclose(runs[0], mean, atol=1e-9)  # the first call of a fresh policy is seed 1
    assert len({tuple(s) for s in gen.ids}) > 1  # a barely trained model's samples differ
    policy.readout = "argmax"
    assert not np.allclose(policy.predict_action_chunk(batch), mean)


def test_eval_readout_is_refused_for_policies_without_tokens() -> None:
    from eval.evaluate import set_readout
    from eval.policies import load_policy

    with pytest.raises(ValueError, match="applies to LM policies"):
        set_readout(load_policy("expert"), "expectation")
