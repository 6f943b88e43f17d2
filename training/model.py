"""The causal LM with its observation encoder: ``PolicyModel``, and how to build or load one.

Default: a small Llama-architecture model built from a ``LlamaConfig`` (nothing downloaded) with a
word-level LM tokenizer built from the dataset's task strings. ``--model NAME_OR_PATH`` loads any
``AutoModelForCausalLM`` + ``AutoTokenizer`` instead (SmolLM, Qwen, ...; offline, ``smollm2-135m``
from the ``pretrained`` extra, see :mod:`training.pretrained`), and the action ids are mapped into
its vocabulary by :class:`training.vocab.ActionVocab`.

Sequence layout (one example)::

    [task text ids] [obs x k] [boa] [action ids ...] [eoa]
                     ^ embeddings from the observation encoder replace these positions
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import torch
from torch import nn

from training.observation import ObservationEncoder
from training.vocab import ActionVocab, check_vocab_fits

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

LM_DIR = "lm"
SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}


@dataclass
class LMSpec:
    """Size of the default from-scratch Llama model."""

    hidden_size: int = 128
    """Embedding width."""
    n_layers: int = 4
    """Transformer blocks."""
    n_heads: int = 4
    """Attention heads (hidden_size must divide evenly)."""
    intermediate_size: int | None = None
    """MLP width; None = 4 x hidden_size."""
    max_positions: int = 1024
    """Longest sequence the rotary embedding is configured for."""

    def __post_init__(self) -> None:
        if self.hidden_size < 1 or self.n_layers < 1 or self.n_heads < 1:
            raise ValueError(f"hidden_size, n_layers, n_heads must be >= 1, got {self.hidden_size}, {self.n_layers}, {self.n_heads}")
        if self.hidden_size % self.n_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by n_heads {self.n_heads}")


class PolicyModel(nn.Module):
    """A causal LM plus an observation encoder whose embeddings are spliced into the prompt."""

    def __init__(self, lm: "PreTrainedModel", obs: ObservationEncoder) -> None:
        super().__init__()
        self.lm, self.obs = lm, obs
        self.logit_ids: torch.Tensor | None = None
        """LM ids whose logits :meth:`forward` computes (None: all). Training sets it with
        ``action_softmax``: the softmax then spans what constrained decoding can emit, and a
        pretrained LM's large text head is neither computed nor trained against."""

    def embed(self, input_ids: torch.Tensor, obs_start: torch.Tensor, obs_batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token embeddings with the observation embeddings written at ``obs_start .. +k``."""
        emb = self.lm.get_input_embeddings()(input_ids)  # (b, t, e)
        obs = self.obs(obs_batch).to(emb.dtype)  # (b, k, e)
        b, k = obs.shape[:2]
        rows = torch.arange(b, device=emb.device)[:, None]
        cols = obs_start.to(emb.device)[:, None] + torch.arange(k, device=emb.device)[None, :]
        emb = emb.clone()
        emb[rows, cols] = obs
        return emb

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, obs_start: torch.Tensor,
                obs_batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (b, t, V) for a right-padded batch; outside ``logit_ids`` (when set) they are -inf."""
        emb = self.embed(input_ids, obs_start, obs_batch)
        if self.logit_ids is None:
            return self.lm(inputs_embeds=emb, attention_mask=attention_mask, use_cache=False).logits
        hidden = self.lm.get_decoder()(inputs_embeds=emb, attention_mask=attention_mask, use_cache=False).last_hidden_state
        head = self.lm.get_output_embeddings()
        ids = self.logit_ids.to(hidden.device)
        some = nn.functional.linear(hidden, head.weight[ids], None if head.bias is None else head.bias[ids])
        logits = some.new_full((*some.shape[:-1], head.weight.shape[0]), float("-inf"))
        return logits.index_copy(-1, ids, some)


# ---------------------------------------------------------------------- LM tokenizers
def build_word_tokenizer(texts: Iterable[str]) -> "PreTrainedTokenizerBase":
    """A tiny word-level tokenizer over ``texts`` (lower-cased, punctuation split), with <s> prepended.

    Words never seen map to ``<unk>``. Enough for task strings; a pretrained tokenizer comes
    with ``--model``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    norm = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    pre = pre_tokenizers.Whitespace()
    words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(norm.normalize_str(t))})
    specials = [SPECIAL_TOKENS[k] for k in ("pad_token", "unk_token", "bos_token", "eos_token")]
    vocab = {w: i for i, w in enumerate(specials + [w for w in words if w not in specials])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.normalizer, tok.pre_tokenizer = norm, pre
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def build_llama(vocab_size: int, spec: LMSpec, pad_token_id: int, bos_token_id: int, eos_token_id: int,
                seed: int = 0) -> "PreTrainedModel":
    """A freshly initialized Llama-architecture causal LM (tied embeddings, no dropout)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=spec.hidden_size, num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads, num_key_value_heads=spec.n_heads,
        intermediate_size=spec.intermediate_size or 4 * spec.hidden_size,
        max_position_embeddings=spec.max_positions, tie_word_embeddings=True,
        pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
        attention_dropout=0.0,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


@dataclass
class BaseLM:
    """An LM, its tokenizer and the action-id mapping, ready to train."""

    lm: "PreTrainedModel"
    tokenizer: "PreTrainedTokenizerBase"
    vocab: ActionVocab


def build_default(texts: Iterable[str], n_actions: int, spec: LMSpec, seed: int = 0) -> BaseLM:
    """Default model: word tokenizer over ``texts`` + action tokens added ("add"), Llama from a config."""
    tokenizer = build_word_tokenizer(texts)
    vocab = add_action_tokens(tokenizer, n_actions)
    lm = build_llama(vocab.lm_vocab_size, spec, tokenizer.pad_token_id, tokenizer.bos_token_id,
                     tokenizer.eos_token_id, seed=seed)
    return BaseLM(lm, tokenizer, vocab)


def load_pretrained(name_or_path: str, n_actions: int, strategy: str = "add", skip: int = 0,
                    reserved_ids: Iterable[int] = (), reserved_texts: Iterable[str] = ()) -> BaseLM:
    """Any ``AutoModelForCausalLM`` + ``AutoTokenizer``, with the action ids mapped in.

    ``name_or_path``: a Hub id, a local folder, a ``.gguf`` file or a known offline model name
    (``smollm2-135m``; see :mod:`training.pretrained`, which converts it to a local cache once).
    For ``tail``, the ids of ``reserved_texts`` (the task prompts) join ``reserved_ids`` and the
    special tokens as ids the action block must not overwrite.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.pretrained import resolve_model

    source = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        lm = AutoModelForCausalLM.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise ValueError(f"could not load --model {name_or_path!r} as AutoModelForCausalLM + AutoTokenizer: {e}") from e
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = lm.get_input_embeddings().num_embeddings
    if strategy == "add":
        vocab = add_action_tokens(tokenizer, n_actions)
        if vocab.lm_vocab_size > rows:
            lm.resize_token_embeddings(vocab.lm_vocab_size)
    elif strategy == "tail":
        prompt_ids = {i for t in set(reserved_texts) for i in tokenizer(t)["input_ids"]}
        reserved = set(reserved_ids) | prompt_ids | set(tokenizer.all_special_ids)
        vocab = ActionVocab.tail(min(rows, len(tokenizer)), n_actions, skip=skip, reserved_ids=reserved)
    else:
        raise ValueError(f"vocab strategy must be 'add' or 'tail', got {strategy!r}")
    check_vocab_fits(vocab, lm.get_input_embeddings().num_embeddings)
    return BaseLM(lm, tokenizer, vocab)


def add_action_tokens(tokenizer: "PreTrainedTokenizerBase", n_actions: int) -> ActionVocab:
    """Append the action tokens and markers to an HF tokenizer; their ids are the "add" mapping."""
    vocab = ActionVocab.add(len(tokenizer), n_actions)
    strings = vocab.token_strings()
    tokenizer.add_tokens(strings, special_tokens=True)
    got = tokenizer.convert_tokens_to_ids([strings[0], strings[-1]])
    if got != [vocab.first_id, vocab.eoa_id] or len(tokenizer) != vocab.lm_vocab_size:
        raise ValueError(
            f"adding {len(strings)} action tokens gave ids {got} and size {len(tokenizer)}, expected "
            f"[{vocab.first_id}, {vocab.eoa_id}] and {vocab.lm_vocab_size}: the tokenizer already holds some of {strings[:2]}..."
        )
    return vocab


def save_lm(base: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", directory: Path) -> None:
    """LM weights (safetensors) and its tokenizer into ``directory``."""
    base.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def load_lm(directory: Path, dtype: Any = None) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} holds no saved LM (config.json missing): the policy directory is incomplete")
    kwargs = {"dtype": dtype} if dtype is not None else {}
    lm = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    return lm, AutoTokenizer.from_pretrained(directory)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
