"""Order-aware loss (``--bin-smoothing``): soft Gaussian targets over neighbouring bins for binning tokenizers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.train import (
    TrainConfig,
    _check_same_run,
    bin_smoothing_targets,
    build_bin_smoothing,
    DEFAULT_BIN_SMOOTHING,
    resolve_bin_smoothing,
    run_train,
    token_loss,
)
from training.vocab import ActionVocab

torch = pytest.importorskip("torch")
F = torch.nn.functional

TINY = dict(hidden_size=32, n_layers=2, n_heads=2, batch_size=8, warmup_steps=1, eval_chunks=4, progress=False)
N_BINS = 32
VOCABS = {"add": ActionVocab.add(20, N_BINS), "tail": ActionVocab.tail(100, N_BINS, skip=5)}


def random_batch(vocab: ActionVocab, seed: int = 0, b: int = 3, t: int = 12) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Logits over the whole LM vocabulary and labels like a real batch: prompt ignored, actions, then eoa."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, vocab.lm_vocab_size, generator=g) * 3
    labels = torch.full((b, t), -100, dtype=torch.long)
    local = torch.randint(0, vocab.n_actions, (b, t - 5), generator=g)
    labels[:, 4:-1] = torch.as_tensor(vocab.to_lm(local.numpy()))
    labels[:, -1] = vocab.eoa_id
    labels[0, -1] = -100  # a padded row
    return logits, labels


def implied_targets(logits, labels, vocab, smoothing):
    """The full-vocabulary target of each labelled position, read from the gradient (softmax - target)."""
    logits = logits.clone().requires_grad_(True)
    loss, _, _ = token_loss(logits, labels, vocab, smoothing)
    loss.backward()
    shifted = labels[:, 1:]
    keep = shifted != -100
    grad = logits.grad[:, :-1][keep] * int(keep.sum())
    return F.softmax(logits.detach()[:, :-1][keep], -1) - grad, shifted[keep]


@pytest.mark.parametrize("strategy", ["add", "tail"])
def test_zero_smoothing_is_todays_loss_exactly(strategy: str) -> None:
    vocab = VOCABS[strategy]
    logits, labels = random_batch(vocab)
    assert build_bin_smoothing(0.0, vocab) is None
    loss, correct, total = token_loss(logits, labels, vocab, build_bin_smoothing(0.0, vocab))
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, vocab.lm_vocab_size), labels[:, 1:].reshape(-1),
                               ignore_index=-100)
    assert torch.equal(loss, expected)
    # A vanishing std is a hard target too: the soft path agrees with cross-entropy numerically.
    tiny, c2, t2 = token_loss(logits, labels, vocab, build_bin_smoothing(1e-3, vocab))
    torch.testing.assert_close(tiny, expected)
    assert (int(correct), int(total)) == (int(c2), int(t2))  # accuracy is argmax-vs-true-id either way


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 80), std=st.floats(0.05, 50.0))
def test_target_rows_sum_to_one_and_peak_at_the_true_bin(n: int, std: float) -> None:
    t = bin_smoothing_targets(std, n).double()
    torch.testing.assert_close(t.sum(1), torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-6)
    assert (t >= 0).all()
    assert (t <= t.diagonal()[:, None]).all()  # the true bin holds the most mass (a very wide kernel may tie)
    if std < 3:
        assert torch.equal(t.argmax(1), torch.arange(n))


def test_interior_rows_are_symmetric_and_decay_with_distance() -> None:
    t = bin_smoothing_targets(2.0, 64)
    for k in range(10, 54):
        row = t[k]
        torch.testing.assert_close(row[k - 8:k].flip(0), row[k + 1:k + 9])
        assert (row[k:k + 9].diff() < 0).all()
    assert t[0].sum().item() == pytest.approx(1.0) and t[0, 0] > t[32, 32]  # edge rows: cut and renormalized


@pytest.mark.parametrize("strategy", ["add", "tail"])
def test_soft_targets_stay_on_the_action_ids_and_markers_keep_hard_targets(strategy: str) -> None:
    vocab = VOCABS[strategy]
    smoothing = build_bin_smoothing(1.5, vocab)
    logits, labels = random_batch(vocab, seed=1)
    target, lab = implied_targets(logits, labels, vocab, smoothing)
    torch.testing.assert_close(target.sum(1), torch.ones(len(lab)), atol=1e-5, rtol=0)
    lo, hi = vocab.action_range
    act = (lab >= lo) & (lab <= hi)
    assert act.any() and (~act).any()
    outside = torch.ones(vocab.lm_vocab_size, dtype=torch.bool)
    outside[lo:hi + 1] = False
    assert target[act][:, outside].abs().max() < 1e-5  # no mass on markers or prompt ids
    assert torch.equal(target[act].argmax(1), lab[act])  # peak at the true bin
    local = torch.as_tensor(vocab.to_local(lab[act].numpy()))
    lm_cols = torch.as_tensor(vocab.to_lm(np.arange(vocab.n_actions)))
    torch.testing.assert_close(target[act][:, lm_cols], smoothing.targets[local], atol=1e-5, rtol=0)
    hard = F.one_hot(lab[~act], vocab.lm_vocab_size).float()  # the end marker: a hard target
    torch.testing.assert_close(target[~act], hard, atol=1e-5, rtol=0)


@pytest.mark.parametrize("strategy", ["add", "tail"])
def test_a_near_miss_costs_less_than_a_far_miss_only_with_smoothing(strategy: str) -> None:
    vocab = VOCABS[strategy]
    true_local = 10
    labels = torch.tensor([[-100, int(vocab.to_lm(true_local))]])

    def loss_for(predicted_local: int, std: float) -> float:
        logits = torch.zeros(1, 2, vocab.lm_vocab_size)
        logits[0, 0, int(vocab.to_lm(predicted_local))] = 8.0  # confident, wrong bin
        return float(token_loss(logits, labels, vocab, build_bin_smoothing(std, vocab))[0])

    assert loss_for(11, 1.0) < loss_for(20, 1.0) - 1.0
    assert loss_for(11, 0.0) == pytest.approx(loss_for(20, 0.0), abs=1e-6)


def test_families_without_ordered_ids_are_refused(tmp_path: Path) -> None:
    from action_tokenizers.fast import FASTTokenizer
    from action_tokenizers.vq import VQTokenizer

    for tok, name in ((FASTTokenizer(), "fast"), (VQTokenizer(), "vq")):
        cfg = TrainConfig(dataset=tmp_path, tokenizer=tmp_path, out=tmp_path / "out", bin_smoothing=1.0)
        with pytest.raises(ValueError, match=rf"--bin-smoothing 1.0 needs .*ordered bins \(binning\); the {name} tokenizer"):
            resolve_bin_smoothing(cfg, tok)
        default = resolve_bin_smoothing(TrainConfig(dataset=tmp_path, tokenizer=tmp_path, out=tmp_path / "out"), tok)
        assert default.bin_smoothing == 0.0  # None: plain cross-entropy for unordered ids
    with pytest.raises(ValueError, match="bin_smoothing must be a finite number >= 0"):
        TrainConfig(dataset=tmp_path, tokenizer=tmp_path, out=tmp_path, bin_smoothing=-1.0)
    with pytest.raises(ValueError, match="bin_smoothing must be a finite number >= 0"):
        TrainConfig(dataset=tmp_path, tokenizer=tmp_path, out=tmp_path, bin_smoothing=float("nan"))


def test_binning_defaults_to_smoothed_targets() -> None:
    from action_tokenizers.binning import BinningTokenizer

    tok = BinningTokenizer(n_bins=N_BINS)
    assert resolve_bin_smoothing(TrainConfig(dataset="d", tokenizer="t"), tok).bin_smoothing == DEFAULT_BIN_SMOOTHING > 0
    assert resolve_bin_smoothing(TrainConfig(dataset="d", tokenizer="t", bin_smoothing=0.0), tok).bin_smoothing == 0.0


def test_fast_run_with_smoothing_fails_before_training(so101_root: Path, tmp_path: Path) -> None:
    from action_tokenizers.data import load_chunks
    from action_tokenizers.fast import FASTTokenizer

    chunks = load_chunks(so101_root, chunk_size=10, pad="last")
    tok_dir = FASTTokenizer(vocab_size=256).fit(chunks.actions[:200]).save_pretrained(tmp_path / "fast")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="the fast tokenizer's ids have no order"):
        run_train(TrainConfig(dataset=so101_root, tokenizer=tok_dir, out=out, bin_smoothing=1.0, max_steps=1, **TINY))
    assert not out.exists()


def test_cli_flag_and_resume_of_runs_saved_before_the_field() -> None:
    import tyro

    cfg = tyro.cli(TrainConfig, args=["--dataset", "d", "--tokenizer", "t", "--bin-smoothing", "1.5"])
    assert cfg.bin_smoothing == 1.5
    saved = {k: v for k, v in TrainConfig(dataset="d", tokenizer="t").to_dict().items() if k != "bin_smoothing"}
    _check_same_run(saved, TrainConfig(dataset="d", tokenizer="t", bin_smoothing=0.0).to_dict(), Path("o"))  # old: 0
    with pytest.raises(ValueError, match="bin_smoothing: was 0.0, now 1.0"):
        _check_same_run(saved, TrainConfig(dataset="d", tokenizer="t", bin_smoothing=1.0).to_dict(), Path("o"))


@pytest.mark.slow
def test_tiny_run_with_smoothing_trains_and_records_it(so101_root: Path, tmp_path: Path) -> None:
    from action_tokenizers.binning import BinningTokenizer
    from action_tokenizers.data import load_chunks
    from action_tokenizers.io import read_json

    chunks = load_chunks(so101_root, chunk_size=10, pad="last")
    tok_dir = BinningTokenizer(n_bins=N_BINS).fit(chunks.actions).save_pretrained(tmp_path / "tok")
    out = tmp_path / "out"
    cfg = TrainConfig(dataset=so101_root, tokenizer=tok_dir, out=out, bin_smoothing=1.0, max_steps=2, **TINY)
    done = run_train(cfg)
    assert done.steps == 2 and np.isfinite(done.train_loss) and done.eval_accuracy is not None
    assert read_json(out / "train_config.json", what="config")["bin_smoothing"] == 1.0  # the policy's record
    with pytest.raises(ValueError, match="bin_smoothing: was 1.0, now 0.5"):  # --resume checks it
        run_train(TrainConfig(**{**cfg.__dict__, "bin_smoothing": 0.5, "resume": True}))
