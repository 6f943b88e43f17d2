"""``action_softmax``: the training softmax over what constrained decoding can emit (actions + end marker)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.vocab import ActionVocab

torch = pytest.importorskip("torch")
F = torch.nn.functional


def tiny_policy_model(vocab_size: int, seed: int, tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.model import PolicyModel
    from training.observation import StateProjection

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, tie_word_embeddings=tied)
    return PolicyModel(LlamaForCausalLM(cfg).eval(), StateProjection(3, 16)).eval()


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n_actions=st.integers(2, 12), tied=st.booleans())
def test_restricted_logits_are_the_full_heads_columns_and_minus_inf_elsewhere(seed: int, n_actions: int, tied: bool) -> None:
    vocab = ActionVocab.add(20, n_actions)
    model = tiny_policy_model(vocab.lm_vocab_size, seed, tied)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab.lm_vocab_size, (2, 7), generator=g)
    args = (ids, torch.ones_like(ids), torch.tensor([1, 2]), {"observation.state": torch.randn(2, 3, generator=g)})
    with torch.no_grad():
        full = model(*args)
        model.logit_ids = torch.as_tensor(vocab.allowed_ids())
        some = model(*args)
    allowed = torch.zeros(vocab.lm_vocab_size, dtype=torch.bool)
    allowed[model.logit_ids] = True
    torch.testing.assert_close(some[..., allowed], full[..., allowed], rtol=1e-5, atol=1e-5)
    assert torch.isneginf(some[..., ~allowed]).all()
    # the loss is the cross-entropy of the allowed columns alone, finite, with finite gradients
    from training.train import token_loss

    labels = torch.full((2, 7), -100)
    labels[:, 3:-1] = torch.as_tensor(vocab.to_lm(np.arange(3) % n_actions))
    labels[:, -1] = vocab.eoa_id
    logits = some.clone().requires_grad_(True)
    loss, _, _ = token_loss(logits, labels, vocab)
    columns = model.logit_ids
    lookup = torch.full((vocab.lm_vocab_size,), -100)
    lookup[columns] = torch.arange(len(columns))
    shifted = labels[:, 1:]
    expected = F.cross_entropy(full[:, :-1][..., columns].reshape(-1, len(columns)),
                               torch.where(shifted == -100, shifted, lookup[shifted.clamp(min=0)]).reshape(-1),
                               ignore_index=-100)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_training_with_action_softmax_records_it_and_the_policy_generates(so101_root, tmp_path) -> None:
    """The choice is saved with the policy, whose (unrestricted) generation still decodes every chunk."""
    import json

    from action_tokenizers.binning import BinningTokenizer
    from action_tokenizers.data import load_chunks
    from training import TokenizedPolicy
    from training.train import TrainConfig, run_train

    chunks = load_chunks(so101_root, chunk_size=10, pad="last")
    tok_dir = BinningTokenizer(n_bins=16).fit(chunks.actions).save_pretrained(tmp_path / "tok")
    cfg = TrainConfig(dataset=so101_root, tokenizer=tok_dir, out=tmp_path / "out", hidden_size=16, n_layers=1,
                      n_heads=2, max_steps=2, batch_size=4, warmup_steps=1, eval_chunks=2, progress=False,
                      action_softmax=True)
    result = run_train(cfg)
    assert np.isfinite(result.train_loss)
    assert json.loads((tmp_path / "out" / "train_config.json").read_text())["action_softmax"] is True
    policy = TokenizedPolicy.from_pretrained(tmp_path / "out", device="cpu")
    actions = policy.predict_action_chunk({"observation.state": np.zeros((1, 6)), "task": "pick up the cube"})
    assert actions.shape == (1, 10, 6) and policy.last_stats["malformed"] == 0
