"""TokenizedPolicy: constrained decoding (even with random weights), batching, stats and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.model import LMSpec, PolicyModel, build_default
from training.observation import StateProjection
from training.generation import DecodingPlan, generate_action_ids
from training.policy import TokenizedPolicy
from training.sequences import build_prompt, left_pad

TASKS = ["push the puck to the goal", "open the door", "reach", "press the red button down firmly now"]


def random_policy_model(n_actions: int, seed: int) -> tuple[PolicyModel, object]:
    """Untrained tiny model whose vocabulary is mostly words: unconstrained, it rarely picks an action id."""
    words = [f"w{i}" for i in range(60)]
    base = build_default(TASKS + [" ".join(words)], n_actions, LMSpec(hidden_size=32, n_layers=2, n_heads=2), seed=seed)
    torch.manual_seed(seed)
    obs = StateProjection(state_dim=5, embed_dim=32)
    return PolicyModel(base.lm, obs).eval(), base


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tokens_per_chunk", [7, None])  # fixed length (binning, VQ) and variable (FAST)
def test_constrained_decoding_never_emits_a_non_action_id(seed: int, tokens_per_chunk: int | None) -> None:
    model, base = random_policy_model(n_actions=6, seed=seed)
    vocab, pad = base.vocab, base.tokenizer.pad_token_id
    prompts = [build_prompt(base.tokenizer(t)["input_ids"], 1, vocab, pad) for t in TASKS]
    states = torch.from_numpy(np.random.default_rng(seed).normal(size=(4, 5)).astype(np.float32))
    plan = DecodingPlan(tokens_per_chunk=tokens_per_chunk, max_new_tokens=9)
    gen = generate_action_ids(model, vocab, plan, prompts, {"observation.state": states}, pad)
    for seq in gen.ids:
        assert all(0 <= i < vocab.n_actions for i in seq), seq  # a non-action id would map to -1
        if tokens_per_chunk is None:
            assert 1 <= len(seq) <= 9
        else:
            assert len(seq) == tokens_per_chunk
    if tokens_per_chunk is None:
        assert gen.truncated == sum(len(s) == 9 for s in gen.ids)
    # the same model without the processor does emit other ids: the constraint is doing the work
    ids, mask, starts = left_pad(prompts, pad)
    emb = model.embed(ids, starts, {"observation.state": states})
    free = model.lm.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=9, do_sample=False, pad_token_id=pad)
    assert not vocab.is_action(free[:, -9:].numpy()).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_length_aware_decoding_makes_fast_output_well_formed(seed: int) -> None:
    """FAST ids stand for runs of DCT coefficients: the processor keeps every sequence at exactly h * d."""
    fast = pytest.importorskip("action_tokenizers.fast")
    rng = np.random.default_rng(seed)
    chunks = np.cumsum(rng.normal(size=(300, 10, 3)) * 0.1, axis=1)
    tok = fast.FASTTokenizer(vocab_size=128).fit(chunks)
    plan = DecodingPlan.from_tokenizer(tok, max_new_tokens=12)
    assert plan.length_aware and plan.units == 30 and DecodingPlan.from_dict(plan.to_dict()) == plan
    lengths = np.asarray(plan.token_lengths)
    assert lengths.shape == (tok.vocab_size,) and lengths.max() > 1
    model, base = random_policy_model(n_actions=tok.vocab_size, seed=seed)
    vocab, pad = base.vocab, base.tokenizer.pad_token_id
    prompts = [build_prompt(base.tokenizer(t)["input_ids"], 1, vocab, pad) for t in TASKS]
    obs = {"observation.state": torch.from_numpy(rng.normal(size=(4, 5)).astype(np.float32))}
    aware = generate_action_ids(model, vocab, plan, prompts, obs, pad)
    assert tok.decode_with_report(aware.ids).n_malformed == 0
    assert all(lengths[s].sum() == 30 for s in map(np.asarray, aware.ids))
    torch.manual_seed(seed)  # sampled, so the unconstrained-length run explores: it does go wrong
    free = generate_action_ids(model, vocab, DecodingPlan(None, 12), prompts * 4,
                               {k: v.repeat(4, 1) for k, v in obs.items()}, pad, temperature=1.0)
    assert tok.decode_with_report(free.ids).n_malformed > 0


def test_sampling_stays_constrained() -> None:
    model, base = random_policy_model(n_actions=6, seed=5)
    vocab, pad = base.vocab, base.tokenizer.pad_token_id
    prompts = [build_prompt(base.tokenizer(TASKS[0])["input_ids"], 1, vocab, pad)] * 8
    states = torch.zeros(8, 5)
    torch.manual_seed(0)
    gen = generate_action_ids(model, vocab, DecodingPlan(12, 12), prompts, {"observation.state": states}, pad,
                              temperature=2.0)
    assert all(len(s) == 12 and min(s) >= 0 for s in gen.ids)
    assert len({tuple(s) for s in gen.ids}) > 1  # sampling, not greedy


# ---------------------------------------------------------------------- a trained directory
@pytest.fixture(scope="module")
def trained(so101_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from action_tokenizers.binning import BinningTokenizer
    from action_tokenizers.data import load_chunks
    from training.train import TrainConfig, run_train

    root = tmp_path_factory.mktemp("policy")
    chunks = load_chunks(so101_root, chunk_size=8, pad="last")
    BinningTokenizer(n_bins=16).fit(chunks.actions).save_pretrained(root / "tok")
    run_train(TrainConfig(dataset=so101_root, tokenizer=root / "tok", out=root / "out", hidden_size=32, n_layers=2,
                          n_heads=2, max_steps=3, batch_size=8, eval_chunks=2, progress=False))
    return root / "out"


def test_predict_action_chunk_shapes_and_stats(trained: Path, so101_root: Path) -> None:
    from action_tokenizers.data import load_chunks

    policy = TokenizedPolicy.from_pretrained(trained, device="cpu")
    assert (policy.chunk_size, policy.action_dim, policy.state_dim) == (8, 6, 6)
    assert policy.device == torch.device("cpu")
    chunks = load_chunks(so101_root, chunk_size=8, state_key="observation.state", with_tasks=True)
    states = chunks.states[[0, 100, 200]]
    out = policy.predict_action_chunk({"observation.state": states, "task": chunks.tasks[:3]})
    assert out.shape == (3, 8, 6) and out.dtype == np.float64 and np.all(np.isfinite(out))
    tok = policy.action_tokenizer
    lo, hi = tok.normalizer.unnormalize(-np.ones(6)), tok.normalizer.unnormalize(np.ones(6))
    assert np.all(out >= lo - 1e-6) and np.all(out <= hi + 1e-6)  # raw units, inside the binned range
    stats = policy.last_stats
    assert stats["malformed"] == 0 and stats["latency_s"] > 0 and stats["tokens_per_chunk"] == 48
    assert stats["malformed_per_row"] == [0, 0, 0]
    saved = DecodingPlan.from_dict(json.loads((trained / "policy_config.json").read_text())["decoding"])
    assert policy.plan == saved == DecodingPlan.from_tokenizer(tok, saved.max_new_tokens)


def test_batched_prediction_equals_one_at_a_time(trained: Path) -> None:
    policy = TokenizedPolicy.from_pretrained(trained, device="cpu")
    rng = np.random.default_rng(0)
    states = rng.normal(size=(3, 6)) * 20
    tasks = ["Pick the orange cube and place it in the box", "pick", "an unseen longer instruction for the arm"]
    batched = policy.predict_action_chunk({"observation.state": states, "task": tasks})  # left-padded prompts
    single = np.stack([policy.predict_action_chunk({"observation.state": states[i:i + 1], "task": [tasks[i]]})[0]
                       for i in range(3)])
    np.testing.assert_allclose(batched, single)


def test_bad_batches_and_directories_fail_clearly(trained: Path, tmp_path: Path) -> None:
    policy = TokenizedPolicy.from_pretrained(trained, device="cpu")
    with pytest.raises(ValueError, match=r"observation.state must have shape \(B, 6\), got \(2, 4\)"):
        policy.predict_action_chunk({"observation.state": np.zeros((2, 4)), "task": ["a", "b"]})
    with pytest.raises(ValueError, match="got 1 task strings for a batch of 2 states"):
        policy.predict_action_chunk({"observation.state": np.zeros((2, 6)), "task": ["a"]})
    with pytest.raises(KeyError, match="needs keys 'observation.state' and 'task'"):
        policy.predict_action_chunk({"observation.state": np.zeros((2, 6))})
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        policy.predict_action_chunk({"observation.state": np.zeros((1, 6)), "task": "a"}, temperature=-1)
    with pytest.raises(FileNotFoundError, match="policy_config.json is missing"):
        TokenizedPolicy.from_pretrained(tmp_path)


def test_public_import_is_lazy() -> None:
    import training

    assert training.TokenizedPolicy is TokenizedPolicy
    with pytest.raises(AttributeError):
        training.NotAThing  # noqa: B018


@pytest.mark.parametrize("seed", [0, 1])
def test_position_ranges_keep_each_level_in_its_codebook(seed: int) -> None:
    """VQ-style layout: position p may only hold ids of its level; a random model must still comply."""
    model, base = random_policy_model(n_actions=8, seed=seed)
    vocab, pad = base.vocab, base.tokenizer.pad_token_id
    prompts = [build_prompt(base.tokenizer(t)["input_ids"], 1, vocab, pad) for t in TASKS]
    states = torch.from_numpy(np.random.default_rng(seed).normal(size=(4, 5)).astype(np.float32))
    ranges = [(0, 4), (4, 8), (0, 4), (4, 8)]  # 2 groups x 2 levels of 4 codes
    gen = generate_action_ids(model, vocab, DecodingPlan(4, 4, position_ranges=tuple(ranges)), prompts,
                              {"observation.state": states}, pad)
    for seq in gen.ids:
        assert len(seq) == 4 and all(a <= i < b for i, (a, b) in zip(seq, ranges)), seq
    free = generate_action_ids(model, vocab, DecodingPlan(4, 4), prompts * 8, {"observation.state": states.repeat(8, 1)},
                               pad)
    assert any(not (a <= i < b) for seq in free.ids for i, (a, b) in zip(seq, ranges))  # the ranges do the work


def test_vq_position_ranges_match_its_offsets() -> None:
    from action_tokenizers import VQTokenizer

    tok = VQTokenizer(groups=2, levels=3, codebook_size=16)
    assert tok.position_id_ranges() == [(0, 16), (16, 32), (32, 48)] * 2
