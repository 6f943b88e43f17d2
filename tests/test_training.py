"""Training: loss mask, data order, split, bad input before training, resume, end-to-end train-then-generate."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from training.sequences import IGNORE, build_examples, build_prompt, collate
from training.train import TrainConfig, batch_indices, run_train
from training.vocab import ActionVocab

TINY = dict(hidden_size=32, n_layers=2, n_heads=2, batch_size=8, warmup_steps=1, eval_chunks=4, progress=False)

# Every tokenizer family that exists, with settings small enough to fit in a test.
FAMILY_FACTORIES = {
    "binning": ("action_tokenizers.binning", "BinningTokenizer", dict(n_bins=32)),
    "fast": ("action_tokenizers.fast", "FASTTokenizer", dict(vocab_size=256)),
    "vq": ("action_tokenizers.vq", "VQTokenizer",
           dict(groups=2, levels=1, codebook_size=16, hidden=32, max_steps=60, eval_every=20)),
}


def available_families() -> list[str]:
    out = []
    for name, (module, _, _) in FAMILY_FACTORIES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        out.append(name)
    return out


def fit_tokenizer(family: str, dataset: Path, out: Path, chunk_size: int = 10, action_key: str = "action") -> Path:
    from action_tokenizers.data import load_chunks

    module, cls, kwargs = FAMILY_FACTORIES[family]
    chunks = load_chunks(dataset, chunk_size=chunk_size, pad="last", action_key=action_key)
    tok = getattr(importlib.import_module(module), cls)(**kwargs).fit(chunks.actions)
    return tok.save_pretrained(out)


@pytest.fixture(scope="module")
def so101_tok(so101_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_tokenizer("binning", so101_root, tmp_path_factory.mktemp("tok") / "binning")


# ---------------------------------------------------------------------- sequences
def test_loss_mask_covers_actions_and_end_marker_only() -> None:
    vocab = ActionVocab.add(20, 8)
    prompts = [build_prompt([2, 5, 6], 1, vocab, placeholder_id=0), build_prompt([2, 7], 1, vocab, placeholder_id=0)]
    actions = [[0, 7, 3], [1, 1, 1]]
    ex = build_examples(prompts, actions, np.zeros((2, 3)), vocab)
    for i, (prompt, local) in enumerate(zip(prompts, actions)):
        ids, labels = ex.input_ids[i], ex.labels[i]
        n_prompt = len(prompt.ids)
        assert ids[n_prompt - 1] == vocab.boa_id and prompt.obs_start == n_prompt - 2
        assert np.all(labels[:n_prompt] == IGNORE)  # task text, observation slot, boa
        np.testing.assert_array_equal(labels[n_prompt:], np.append(vocab.to_lm(local), vocab.eoa_id))
        np.testing.assert_array_equal(ids[n_prompt:], labels[n_prompt:])
        np.testing.assert_array_equal(vocab.to_local(labels[n_prompt:-1]), local)  # exact inverse
    batch = collate(ex, np.array([0, 1]), pad_id=0, state_key="observation.state")
    assert batch["input_ids"].shape == (2, 9)  # 3 task + 1 obs + boa + 3 actions + eoa
    assert batch["attention_mask"][1].tolist() == [1] * 8 + [0]
    assert batch["labels"][1, -1].item() == IGNORE  # padding is never a target
    assert (batch["labels"] != IGNORE).sum().item() == 8


def test_batch_order_is_a_pure_function_of_step_and_covers_each_epoch() -> None:
    train = np.arange(100, 137)  # 37 rows, batches of 8 cross epoch boundaries
    seen = np.concatenate([batch_indices(s, train, 8, seed=3) for s in range(37)])  # 296 = 8 epochs
    for epoch in range(8):
        assert sorted(seen[epoch * 37:(epoch + 1) * 37].tolist()) == train.tolist()
    np.testing.assert_array_equal(batch_indices(11, train, 8, seed=3), batch_indices(11, train, 8, seed=3))
    assert not np.array_equal(batch_indices(0, train, 8, seed=3), batch_indices(0, train, 8, seed=4))
    parts = [batch_indices(5, train, 4, seed=3, rank=r, world=2) for r in range(2)]
    np.testing.assert_array_equal(np.concatenate(parts), batch_indices(5, train, 8, seed=3)[:8])


# ---------------------------------------------------------------------- bad input, before training
def test_config_validation_names_the_bad_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"vocab_strategy must be one of \('add', 'tail'\), got 'middle'"):
        TrainConfig(dataset=tmp_path, tokenizer=tmp_path, out=tmp_path, vocab_strategy="middle")
    with pytest.raises(ValueError, match="eval-fraction must be in"):
        TrainConfig(dataset=tmp_path, tokenizer=tmp_path, out=tmp_path, eval_fraction=1.0)
    with pytest.raises(ValueError, match="not divisible by n_heads"):
        TrainConfig(dataset=tmp_path, tokenizer=tmp_path, out=tmp_path, hidden_size=30, n_heads=4)
    with pytest.raises(ValueError, match="'tail' needs a pretrained --model"):
        TrainConfig(dataset=tmp_path, tokenizer=tmp_path, out=tmp_path, vocab_strategy="tail")
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="state_noise must be a finite number >= 0"):
            TrainConfig(dataset=tmp_path, tokenizer=tmp_path, out=tmp_path, state_noise=bad)


def test_state_noise_is_in_standard_deviations_and_a_function_of_the_seed() -> None:
    import torch

    from training.observation import StateProjection
    from training.train import add_state_noise

    enc = StateProjection(state_dim=3, embed_dim=4)
    enc.std.copy_(torch.tensor([1.0, 100.0, 0.01]))
    clean = torch.zeros(20000, 3)

    def noisy(seed: list[int]) -> torch.Tensor:
        obs = {"observation.state": clean.clone()}
        add_state_noise(obs, "observation.state", enc, 0.5, seed)
        return obs["observation.state"]

    a = noisy([0, 7, 0])
    np.testing.assert_allclose(a.std(0).numpy(), [0.5, 50.0, 0.005], rtol=0.05)  # noise x each dimension's std
    assert torch.equal(a, noisy([0, 7, 0]))  # the same (seed, step, process): the same draw (exact resume)
    assert not torch.allclose(a, noisy([0, 8, 0])) and not torch.allclose(a, noisy([0, 7, 1]))
    with pytest.raises(ValueError, match="standardizes the state"):
        add_state_noise({"observation.state": clean}, "observation.state", torch.nn.Identity(), 0.5, [0])


def test_tokenizer_dataset_mismatch_fails_before_training(so101_root: Path, tmp_path: Path) -> None:
    from action_tokenizers.binning import BinningTokenizer

    rng = np.random.default_rng(0)
    BinningTokenizer(n_bins=16).fit(rng.normal(size=(50, 10, 4))).save_pretrained(tmp_path / "tok4d")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="fitted on 4-D actions.*'action' is 6-D"):
        run_train(TrainConfig(dataset=so101_root, tokenizer=tmp_path / "tok4d", out=out, max_steps=1, **TINY))
    BinningTokenizer(n_bins=16).fit(rng.normal(size=(50, 10, 6))).save_pretrained(tmp_path / "tok6d")
    with pytest.raises(ValueError, match="--chunk-size 5 does not match the tokenizer's chunk size 10"):
        run_train(TrainConfig(dataset=so101_root, tokenizer=tmp_path / "tok6d", out=out, chunk_size=5, max_steps=1, **TINY))
    with pytest.raises(ValueError, match=r"no feature\(s\) \['observation.velocity'\].*available"):
        run_train(TrainConfig(dataset=so101_root, tokenizer=tmp_path / "tok6d", out=out,
                              state_key="observation.velocity", max_steps=1, **TINY))
    assert not out.exists()


def test_base_model_vocab_too_small_for_tail_fails_before_training(so101_root: Path, so101_tok: Path, tmp_path: Path) -> None:
    from training.model import LMSpec, build_llama, build_word_tokenizer

    tok = build_word_tokenizer(["pick the orange cube"])  # ~8 ids, far fewer than 32 bins + 2 markers
    lm = build_llama(len(tok), LMSpec(hidden_size=16, n_layers=1, n_heads=2), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    lm.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"vocabulary \(\d+ ids\) cannot take the tail mapping.*32 action ids"):
        run_train(TrainConfig(dataset=so101_root, tokenizer=so101_tok, out=out, model=str(tmp_path / "base"),
                              vocab_strategy="tail", max_steps=1, **TINY))
    assert not out.exists()


@pytest.mark.parametrize("strategy", ["add", "tail"])
def test_any_local_causal_lm_trains_with_either_mapping(strategy: str, so101_root: Path, so101_tok: Path, tmp_path: Path) -> None:
    """``--model PATH`` loads AutoModelForCausalLM + AutoTokenizer; add resizes, tail reuses the last ids."""
    from training import TokenizedPolicy
    from training.model import LMSpec, build_llama, build_word_tokenizer

    words = [f"zz{i:02d}" for i in range(60)]  # sorted last: the tail holds no prompt word
    tok = build_word_tokenizer(["Pick the orange cube and place it in the box", " ".join(words)])
    n_base = len(tok)
    lm = build_llama(n_base, LMSpec(hidden_size=16, n_layers=1, n_heads=2), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    lm.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    out = tmp_path / "out"
    run_train(TrainConfig(dataset=so101_root, tokenizer=so101_tok, out=out, model=str(tmp_path / "base"),
                          vocab_strategy=strategy, max_steps=2, **TINY))
    policy = TokenizedPolicy.from_pretrained(out, device="cpu")
    vocab = policy.vocab
    if strategy == "add":
        assert vocab.first_id == n_base and policy.model.lm.get_input_embeddings().num_embeddings == n_base + 34
    else:  # the last 32 ids of the unchanged vocabulary, counting down
        assert int(vocab.to_lm(0)) == n_base - 1 and int(vocab.to_lm(31)) == n_base - 32
        assert policy.model.lm.get_input_embeddings().num_embeddings == n_base
        prompt_ids = set(policy.lm_tokenizer("Pick the orange cube and place it in the box")["input_ids"])
        assert prompt_ids.isdisjoint(vocab.taken_ids().tolist())
    actions = policy.predict_action_chunk({"observation.state": np.zeros((2, 6)), "task": "Pick the orange cube and place it in the box"})
    assert actions.shape == (2, 10, 6) and policy.last_stats["malformed"] == 0


def test_existing_out_needs_resume_or_overwrite(so101_root: Path, so101_tok: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(FileExistsError, match="did not write.*--overwrite"):  # the output rule: a user's file
        run_train(TrainConfig(dataset=so101_root, tokenizer=so101_tok, out=out, max_steps=1, **TINY))


# ---------------------------------------------------------------------- checkpoints and resume
def _lm_weights(out: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(out / "lm" / "model.safetensors"))


@pytest.mark.parametrize("state_noise", [0.0, 0.5])
def test_resume_continues_exactly(state_noise: float, so101_root: Path, so101_tok: Path, tmp_path: Path) -> None:
    common = dict(dataset=so101_root, tokenizer=so101_tok, max_steps=4, checkpoint_every=2, eval_fraction=0.0,
                  state_noise=state_noise, **TINY)
    straight = run_train(TrainConfig(out=tmp_path / "straight", **common))
    first = run_train(TrainConfig(out=tmp_path / "resumed", stop_after=2, **common))
    assert first.steps == 2 and not (tmp_path / "resumed" / "policy_config.json").exists()
    # a checkpoint write killed midway leaves its staging folder: it must be ignored (and cleaned up)
    junk = tmp_path / "resumed" / "checkpoints" / "step-00000004" / ".action_tokenizers.staging-1-killed"
    junk.mkdir(parents=True)
    (junk / "model.safetensors").write_bytes(b"half a file")
    resumed = run_train(TrainConfig(out=tmp_path / "resumed", resume=True, **common))
    assert resumed.steps == 4
    assert resumed.metrics["loss_curve"] == straight.metrics["loss_curve"]
    if state_noise:  # the noise reaches the model: the same run without it takes other steps
        clean = run_train(TrainConfig(out=tmp_path / "clean", **{**common, "state_noise": 0.0}))
        assert clean.metrics["loss_curve"][1:] != straight.metrics["loss_curve"][1:]
    a, b = _lm_weights(tmp_path / "straight"), _lm_weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    # nothing pickled anywhere in the output
    assert not [p for p in (tmp_path / "resumed").rglob("*") if p.suffix in (".pkl", ".bin", ".pt", ".pth")]


def test_resume_refuses_a_different_config_or_a_corrupted_checkpoint(so101_root: Path, so101_tok: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = dict(dataset=so101_root, tokenizer=so101_tok, out=out, max_steps=4, eval_fraction=0.0, **TINY)
    run_train(TrainConfig(stop_after=1, checkpoint_every=1, **common))
    with pytest.raises(ValueError, match=r"different configuration \(lr: was 0.001, now 0.01\)"):
        run_train(TrainConfig(resume=True, **{**common, "lr": 0.01}))
    ckpt = out / "checkpoints" / "step-00000001"
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="checkpoint .*step-00000001 is corrupted"):
        run_train(TrainConfig(resume=True, **common))
    (ckpt / "trainer_state.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        run_train(TrainConfig(resume=True, **common))
    assert [p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith(".")] == ["step-00000001"]


# ---------------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.parametrize("family", available_families())
def test_train_then_generate_on_metaworld(family: str, metaworld_root: Path, tmp_path: Path) -> None:
    from action_tokenizers.data import load_chunks
    from training import TokenizedPolicy

    tok_dir = fit_tokenizer(family, metaworld_root, tmp_path / "tok")
    cfg = TrainConfig(dataset=metaworld_root, tokenizer=tok_dir, out=tmp_path / "out", max_steps=30, lr=3e-3,
                      eval_fraction=0.3, checkpoint_every=100, **{**TINY, "batch_size": 16})
    result = run_train(cfg)
    curve = [loss for _, loss in result.metrics["loss_curve"]]
    assert np.mean(curve[-5:]) < np.mean(curve[:3]) - 0.3, curve  # nats: from ~ln(vocab) down
    assert result.malformed == 0 and result.eval_accuracy is not None and result.recon_mae is not None
    assert np.isfinite(result.recon_mae) and result.tokens_per_s > 0

    policy = TokenizedPolicy.from_pretrained(cfg.out, device="cpu")
    chunks = load_chunks(metaworld_root, chunk_size=policy.chunk_size, state_key="observation.state", with_tasks=True)
    pick = np.arange(0, len(chunks), len(chunks) // 4)[:4]
    actions = policy.predict_action_chunk({"observation.state": chunks.states[pick], "task": [chunks.tasks[i] for i in pick]})
    assert actions.shape == (4, policy.chunk_size, policy.action_dim) and np.all(np.isfinite(actions))
    assert policy.last_stats["malformed"] == 0 and policy.last_stats["latency_s"] > 0
    for name in ("README.md", "metrics.json", "action_vocab.json", "train_config.json", "observation_encoder.safetensors",
                 "lm/model.safetensors", "lm/tokenizer.json", "action_tokenizer/config.json"):
        assert (cfg.out / name).is_file(), name
    card = (cfg.out / "README.md").read_text()
    assert "begin-of-action marker" in card and f"LM id {policy.vocab.eoa_id}" in card


def test_the_default_presets_training_recipe_trains_and_generates(so101_root: Path, so101_tok: Path, tmp_path: Path) -> None:
    """The main job's default training config as shipped (batch, two threads, the family's loss and
    readout), shrunk to a tiny model and two steps: it trains, leaves torch's threads as it found
    them, and the saved policy generates finite chunks."""
    import dataclasses

    import torch

    from eval.main_job import presets
    from training import TokenizedPolicy

    shipped = presets()["default"].train
    assert shipped.batch_size == 64 and shipped.threads == 2 and shipped.max_steps == 3000
    cfg = dataclasses.replace(shipped, dataset=so101_root, tokenizer=so101_tok, out=tmp_path / "out", max_steps=2,
                              hidden_size=16, n_layers=1, n_heads=2, warmup_steps=1, eval_chunks=2, progress=False)
    before = torch.get_num_threads()
    result = run_train(cfg)
    assert torch.get_num_threads() == before and result.steps == 2 and result.malformed == 0
    policy = TokenizedPolicy.from_pretrained(tmp_path / "out", device="cpu")
    assert policy.readout == "expectation"  # binning's default readout
    states = np.random.default_rng(0).normal(size=(3, 6))
    chunks = policy.predict_action_chunk({"observation.state": states, "task": ["pick"] * 3})
    assert chunks.shape == (3, policy.action_tokenizer.chunk_size, 6) and np.isfinite(chunks).all()
