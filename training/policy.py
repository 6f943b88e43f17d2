"""``TokenizedPolicy``: a trained output directory -> action chunks ``(B, H, D)`` in raw units.

Generation uses the LM's ``generate`` (KV cache) with a logits processor that allows only action
ids and the end-of-action marker: fixed-length tokenizers (binning, VQ) get exactly
``tokens_per_chunk`` action ids and no marker; variable-length ones (FAST) stop at the marker
(never before the first action id) or at ``max_new_tokens``. Decoding is non-strict and the
malformed sequences are counted, never silently zeroed.

    from training import TokenizedPolicy
    policy = TokenizedPolicy.from_pretrained("runs/train-binning")
    chunks = policy.predict_action_chunk({"observation.state": states, "task": ["push the puck"] * len(states)})
    policy.last_stats  # {"malformed": 0, "latency_s": 0.05, ...}
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import LogitsProcessor

from action_tokenizers.io import read_json
from training.sequences import Prompt, build_prompt, left_pad
from training.vocab import ActionVocab

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from action_tokenizers.base import ActionTokenizer
    from training.model import PolicyModel

POLICY_FILE = "policy_config.json"
ACTION_TOKENIZER_DIR = "action_tokenizer"
FORMAT_VERSION = 1


class ActionOnlyLogits(LogitsProcessor):
    """Masks every logit except the action ids (and, between min and max length, the end marker).

    Step ``k`` counts generated tokens. ``k < min_tokens``: actions only; ``k >= max_tokens``:
    the end marker only; otherwise actions or the end marker (``allow_end``).

    Length-aware mode (``unit_lengths``, FAST without a pre-tokenizer): each action id stands for a
    known number of the chunk's ``units`` values (DCT coefficients). Per row, only ids that fit in
    what is left are allowed, and the end marker exactly when nothing is left, so every sequence
    decodes to exactly ``units`` values: malformed outputs become impossible, not just counted.
    """

    def __init__(self, vocab: ActionVocab, min_tokens: int, max_tokens: int, allow_end: bool,
                 unit_lengths: np.ndarray | None = None, units: int = 0,
                 position_ranges: list[tuple[int, int]] | None = None) -> None:
        # Per-position local id ranges (VQ: each position belongs to one codebook level): the LM ids
        # allowed at generated position k; None allows every action id everywhere.
        self.position_lm_ids = None if position_ranges is None else [
            torch.as_tensor(vocab.to_lm(np.arange(a, b))) for a, b in position_ranges]
        lo, hi = vocab.action_range
        self.lo, self.hi, self.eoa = lo, hi, vocab.eoa_id
        self.min_tokens, self.max_tokens, self.allow_end = min_tokens, max_tokens, allow_end
        self.start: int | None = None
        self.units = units
        self.lens: torch.Tensor | None = None  # (hi - lo + 1,) units per action id, in LM id order
        if unit_lengths is not None:
            local = (np.arange(lo, hi + 1) - vocab.first_id) * vocab.step
            self.lens = torch.as_tensor(np.asarray(unit_lengths, dtype=np.int64)[local])
        self.remaining: torch.Tensor | None = None  # (b,) units still to emit per row

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        k = input_ids.shape[1] - self.start
        if self.lens is not None:
            return self._length_aware(input_ids, scores, k)
        keep = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        if k < self.max_tokens and self.position_lm_ids is not None and k < len(self.position_lm_ids):
            keep[self.position_lm_ids[k].to(scores.device)] = True
        elif k < self.max_tokens:
            keep[self.lo: self.hi + 1] = True
        if self.allow_end and k >= self.min_tokens:
            keep[self.eoa] = True
        return scores.masked_fill(~keep, float("-inf"))

    def _length_aware(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, k: int) -> torch.FloatTensor:
        b, dev = scores.shape[0], scores.device
        lens = self.lens.to(dev)
        if self.remaining is None:
            self.remaining = torch.full((b,), self.units, dtype=torch.long, device=dev)
        if k > 0:
            last = input_ids[:, -1]
            is_act = (last >= self.lo) & (last <= self.hi)
            used = torch.where(is_act, lens[(last - self.lo).clamp(0, lens.numel() - 1)].clamp(min=0), 0)
            self.remaining = self.remaining - used
        fits = (lens[None, :] > 0) & (lens[None, :] <= self.remaining[:, None])  # (b, n_actions)
        keep = torch.zeros_like(scores, dtype=torch.bool)
        keep[:, self.lo: self.hi + 1] = fits
        keep[:, self.eoa] = (self.remaining <= 0) | ~fits.any(1)  # a dead end ends (and is flagged by decode)
        return scores.masked_fill(~keep, float("-inf"))


def length_plan(tok: "ActionTokenizer") -> np.ndarray | None:
    """Per-id value counts for length-aware decoding, when a variable-length tokenizer offers them."""
    fn = getattr(tok, "token_lengths", None)
    if tok.tokens_per_chunk is not None or not callable(fn):
        return None
    lengths = fn()
    return None if lengths is None else np.asarray(lengths, dtype=np.int64)[: tok.vocab_size]


@dataclass
class Generated:
    """Local action ids per sequence, and how many reached the length bound (end marker forced there)."""

    ids: list[list[int]]
    truncated: int


@torch.no_grad()
def generate_action_ids(model: "PolicyModel", vocab: ActionVocab, prompts: list[Prompt],
                        obs: dict[str, torch.Tensor], pad_id: int, tokens_per_chunk: int | None,
                        max_new_tokens: int, temperature: float = 0.0, unit_lengths: np.ndarray | None = None,
                        units: int = 0, position_ranges: list[tuple[int, int]] | None = None) -> Generated:
    """Constrained generation for a batch of prompts; returns local action ids (ints in range).

    ``unit_lengths``/``units`` (variable length only) switch on length-aware decoding: sequences
    then always hold exactly ``units`` values, and the bound becomes ``units`` tokens.
    ``position_ranges`` (fixed length only): the local ids allowed at each position
    (``ActionTokenizer.position_id_ranges()``), so e.g. a VQ level never receives another level's code.
    """
    from transformers import GenerationConfig, LogitsProcessorList

    device = model.lm.get_input_embeddings().weight.device
    ids, mask, starts = left_pad(prompts, pad_id)
    emb = model.embed(ids.to(device), starts.to(device), {k: v.to(device) for k, v in obs.items()})
    fixed = tokens_per_chunk is not None
    aware = unit_lengths is not None and not fixed
    n_new = tokens_per_chunk if fixed else (units if aware else max_new_tokens)
    proc = ActionOnlyLogits(vocab, min_tokens=n_new if fixed else 1, max_tokens=n_new, allow_end=not fixed,
                            unit_lengths=unit_lengths if aware else None, units=units,
                            position_ranges=position_ranges if fixed else None)
    sample = temperature > 0
    gen_cfg = GenerationConfig(
        max_new_tokens=n_new + (0 if fixed else 1), min_new_tokens=None, do_sample=sample,
        temperature=temperature if sample else None, top_k=None, top_p=None,
        eos_token_id=None if fixed else vocab.eoa_id, pad_token_id=pad_id, use_cache=True,
    )
    out = model.lm.generate(inputs_embeds=emb, attention_mask=mask.to(device), generation_config=gen_cfg,
                            logits_processor=LogitsProcessorList([proc]))
    rows = out[:, -gen_cfg.max_new_tokens:].cpu().numpy() if out.shape[1] > gen_cfg.max_new_tokens else out.cpu().numpy()
    seqs = _split_sequences(rows, vocab, fixed)
    return Generated(seqs, 0 if fixed or aware else sum(len(s) >= n_new for s in seqs))


def _split_sequences(rows: np.ndarray, vocab: ActionVocab, fixed: bool) -> list[list[int]]:
    """Cut each generated row at its end marker; any non-action id becomes -1 (flagged by decode)."""
    seqs = []
    for row in rows.tolist():
        if not fixed and vocab.eoa_id in row:
            row = row[: row.index(vocab.eoa_id)]
        arr = np.asarray(row, dtype=np.int64)
        seqs.append(np.where(vocab.is_action(arr), (arr - vocab.first_id) * vocab.step, -1).tolist())
    return seqs


class TokenizedPolicy:
    """Loads a ``training.train`` output directory; ``predict_action_chunk`` returns raw-unit chunks."""

    def __init__(self, model: "PolicyModel", lm_tokenizer: "PreTrainedTokenizerBase", action_tokenizer: "ActionTokenizer",
                 vocab: ActionVocab, meta: dict[str, Any], device: torch.device | str = "cpu") -> None:
        self.model = model.eval()
        self.lm_tokenizer, self.action_tokenizer, self.vocab, self.meta = lm_tokenizer, action_tokenizer, vocab, meta
        self.device = torch.device(device)
        self.model.to(self.device)
        self.chunk_size: int = int(action_tokenizer.chunk_size)
        self.action_dim: int = int(action_tokenizer.action_dim)
        self.state_dim: int = int(meta["state_dim"])
        self.state_key: str = meta.get("state_key", "observation.state")
        self.tokens_per_chunk: int | None = action_tokenizer.tokens_per_chunk
        self.max_new_tokens: int = int(meta["max_new_tokens"])
        self.temperature: float = float(meta.get("temperature", 0.0))
        self.unit_lengths: np.ndarray | None = length_plan(action_tokenizer)
        self.last_stats: dict[str, Any] = {}
        self._task_ids: dict[str, list[int]] = {}

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device | None = None) -> "TokenizedPolicy":
        """Load model, LM tokenizer, action tokenizer, vocabulary and observation encoder from ``directory``."""
        from action_tokenizers.auto import AutoActionTokenizer
        from training.model import LM_DIR, PolicyModel, load_lm
        from training.observation import load_encoder

        directory = Path(directory)
        if not (directory / POLICY_FILE).is_file():
            hint = " (training has not finished: rerun with --resume)" if (directory / "checkpoints").is_dir() else ""
            raise FileNotFoundError(f"{directory / POLICY_FILE} is missing: not a trained policy directory{hint}")
        meta = read_json(directory / POLICY_FILE, what="policy config")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{directory} was written by a newer version (format {meta['format_version']})")
        lm, lm_tok = load_lm(directory / LM_DIR)
        model = PolicyModel(lm, load_encoder(directory))
        tok = AutoActionTokenizer.from_pretrained(directory / ACTION_TOKENIZER_DIR)
        vocab = ActionVocab.load(directory)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model, lm_tok, tok, vocab, meta, device)

    def prompts(self, tasks: list[str]) -> list[Prompt]:
        """Prompt per task string (tokenized once, then cached)."""
        out = []
        for task in tasks:
            if task not in self._task_ids:
                self._task_ids[task] = self.lm_tokenizer(task)["input_ids"]
            out.append(build_prompt(self._task_ids[task], self.model.obs.n_tokens, self.vocab, self.lm_tokenizer.pad_token_id))
        return out

    def predict_action_chunk(self, batch: dict[str, Any], temperature: float | None = None) -> np.ndarray:
        """``{"observation.state": (B, S), "task": [str] * B}`` -> chunks (B, H, D) float64 in raw units."""
        t0 = time.perf_counter()
        states, tasks = self._check_batch(batch)
        temp = self.temperature if temperature is None else float(temperature)
        if temp < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temp}")
        gen = generate_action_ids(self.model, self.vocab, self.prompts(tasks), {self.state_key: states},
                                  self.lm_tokenizer.pad_token_id, self.tokens_per_chunk, self.max_new_tokens, temp,
                                  self.unit_lengths, self.chunk_size * self.action_dim,
                                  self.action_tokenizer.position_id_ranges())
        report = self.action_tokenizer.decode_with_report(gen.ids)
        self.last_stats = {
            "malformed": report.n_malformed,
            "latency_s": time.perf_counter() - t0,
            "batch_size": len(tasks),
            "tokens_per_chunk": float(np.mean([len(s) for s in gen.ids])),
            "truncated": gen.truncated,
            "reasons": [r for r in report.reasons if r][:5],
        }
        return report.actions

    def _check_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, list[str]]:
        if self.state_key not in batch or "task" not in batch:
            raise KeyError(f"batch needs keys {self.state_key!r} and 'task', got {sorted(batch)}")
        states = torch.as_tensor(np.asarray(batch[self.state_key], dtype=np.float32))
        if states.ndim == 1:
            states = states[None]
        if states.ndim != 2 or states.shape[1] != self.state_dim:
            raise ValueError(f"{self.state_key} must have shape (B, {self.state_dim}), got {tuple(states.shape)}")
        tasks = batch["task"]
        tasks = [tasks] * states.shape[0] if isinstance(tasks, str) else list(tasks)
        if len(tasks) != states.shape[0]:
            raise ValueError(f"got {len(tasks)} task strings for a batch of {states.shape[0]} states")
        return states, tasks

    def __repr__(self) -> str:
        return (f"TokenizedPolicy({type(self.action_tokenizer).__name__}, h={self.chunk_size}, d={self.action_dim}, "
                f"s={self.state_dim}, vocab={self.vocab.strategy}, device={self.device})")
