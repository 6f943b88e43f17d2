"""Constrained generation of action ids: one decoding plan, one ``generate`` call.

The :class:`DecodingPlan` is everything the LM's decoding needs from the action tokenizer, built
once (:meth:`DecodingPlan.from_tokenizer`), saved in ``policy_config.json`` and read back on load:

* fixed-length tokenizers (binning, VQ): exactly ``tokens_per_chunk`` action ids and no end marker,
  each position restricted to its ``position_ranges`` (VQ: a level's codebook) when given;
* variable-length tokenizers with ``token_lengths`` (FAST without a pre-tokenizer): each id stands
  for a known number of the chunk's ``units`` values, only ids that fit in what is left are
  allowed and the end marker exactly when nothing is left, so every sequence decodes to exactly
  ``units`` values: malformed output becomes impossible, not just counted;
* other variable-length tokenizers: actions until the end marker (never before the first action
  id) or ``max_new_tokens``; sequences cut at the bound are counted as truncated.

Training-time evaluation (``training.train``) and ``TokenizedPolicy`` both call
:func:`generate_action_ids` with the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import LogitsProcessor

from training.sequences import Prompt, left_pad
from training.vocab import ActionVocab

if TYPE_CHECKING:
    from action_tokenizers.base import ActionTokenizer
    from training.model import PolicyModel

__all__ = ["ActionOnlyLogits", "DecodingPlan", "Generated", "MEAN_SAMPLES", "READOUTS", "check_readout", "generate_action_ids", "read_chunks", "sample_mean"]

READOUTS = ("argmax", "expectation", "mean")
"""How a chunk is read from the LM: argmax (decode the greedy ids), expectation (each position's softmax
averaged in a continuous space: binning's bin centres, VQ's code vectors; tokenizers with
``decode_expected``) or mean
(the mean of ``MEAN_SAMPLES`` chunks decoded from sequences sampled from the LM: any tokenizer)."""
MEAN_SAMPLES = 16
"""Sequences sampled per chunk by the mean readout (a Monte Carlo estimate of the LM's mean chunk)."""


def check_readout(readout: str, tok: "ActionTokenizer", temperature: float = 0.0) -> str:
    """``readout`` if ``tok`` supports it at this temperature; otherwise a one-line error with the fix."""
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    if readout == "expectation" and not hasattr(tok, "decode_expected"):
        raise ValueError(f"the expectation readout needs ids with a continuous meaning (binning's bins, VQ's codes); "
                         f"{tok.family} ids have none: use argmax or mean")
    if readout == "expectation" and temperature > 0:
        raise ValueError("the expectation readout averages the greedy pass's distributions: use temperature 0, or readout argmax to sample")
    if readout == "mean" and temperature > 0:
        raise ValueError("the mean readout samples at the LM's own distribution (temperature 1): use temperature 0, "
                         "or readout argmax to sample one sequence")
    return readout


@dataclass(frozen=True)
class DecodingPlan:
    """What constrained decoding allows at each step, in local action ids."""

    tokens_per_chunk: int | None
    """Fixed number of action ids per chunk, or None (variable length, ended by the end marker)."""
    max_new_tokens: int
    """Variable length without ``token_lengths``: the most action ids generated before the end is forced."""
    units: int = 0
    """Values per chunk (h * d) that ``token_lengths`` must add up to."""
    token_lengths: tuple[int, ...] | None = None
    """Per local id, how many of the ``units`` values it decodes to (-1: an id no well-formed sequence holds)."""
    position_ranges: tuple[tuple[int, int], ...] | None = None
    """Fixed length only: ``[start, stop)`` of the local ids allowed at each position."""

    def __post_init__(self) -> None:
        if self.tokens_per_chunk is not None and self.tokens_per_chunk < 1:
            raise ValueError(f"tokens_per_chunk must be >= 1 or None, got {self.tokens_per_chunk}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.length_aware and self.units < 1:
            raise ValueError(f"token_lengths need units >= 1 (values per chunk), got {self.units}")

    @property
    def fixed(self) -> bool:
        return self.tokens_per_chunk is not None

    @property
    def length_aware(self) -> bool:
        return not self.fixed and self.token_lengths is not None

    @property
    def uses_end_marker(self) -> bool:
        """Variable-length sequences end with the end-of-action marker; fixed-length ones never emit it."""
        return not self.fixed

    @property
    def n_new(self) -> int:
        """Action ids generated at most (a length-aware sequence needs at most one id per value)."""
        if self.fixed:
            return int(self.tokens_per_chunk)
        return self.units if self.length_aware else self.max_new_tokens

    @classmethod
    def from_tokenizer(cls, tok: "ActionTokenizer", max_new_tokens: int) -> "DecodingPlan":
        """The plan for ``tok``'s layout; ``max_new_tokens`` bounds variable-length sequences."""
        ranges = tok.position_id_ranges() if tok.tokens_per_chunk is not None else None
        lengths = tok.token_lengths() if tok.tokens_per_chunk is None else None
        return cls(
            tokens_per_chunk=tok.tokens_per_chunk,
            max_new_tokens=int(max_new_tokens),
            units=int(tok.chunk_size * tok.action_dim),
            token_lengths=None if lengths is None else tuple(int(n) for n in np.asarray(lengths)[: tok.vocab_size]),
            position_ranges=None if ranges is None else tuple((int(a), int(b)) for a, b in ranges),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"tokens_per_chunk": self.tokens_per_chunk, "max_new_tokens": self.max_new_tokens,
                "units": self.units,
                "token_lengths": None if self.token_lengths is None else list(self.token_lengths),
                "position_ranges": None if self.position_ranges is None else [list(r) for r in self.position_ranges]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DecodingPlan":
        try:
            lengths, ranges = data.get("token_lengths"), data.get("position_ranges")
            return cls(tokens_per_chunk=data["tokens_per_chunk"], max_new_tokens=int(data["max_new_tokens"]),
                       units=int(data.get("units", 0)),
                       token_lengths=None if lengths is None else tuple(int(n) for n in lengths),
                       position_ranges=None if ranges is None else tuple((int(a), int(b)) for a, b in ranges))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"bad decoding plan {sorted(data)}: {e}") from e


class ActionOnlyLogits(LogitsProcessor):
    """Masks every logit the plan does not allow at the current step (see the module docstring).

    Step ``k`` counts generated tokens: fixed length allows action ids (or the position's range)
    for ``k < n_new``; variable length allows the end marker from ``k >= 1`` and only it at ``n_new``.
    """

    def __init__(self, vocab: ActionVocab, plan: DecodingPlan) -> None:
        self.plan, self.n_new = plan, plan.n_new
        lo, hi = vocab.action_range
        self.lo, self.hi, self.eoa = lo, hi, vocab.eoa_id
        self.position_lm_ids = None if plan.position_ranges is None else [
            torch.as_tensor(vocab.to_lm(np.arange(a, b))) for a, b in plan.position_ranges]
        self.lens: torch.Tensor | None = None  # (hi - lo + 1,) values per action id, in LM id order
        if plan.length_aware:
            local = vocab.to_local(np.arange(lo, hi + 1))
            self.lens = torch.as_tensor(np.asarray(plan.token_lengths, dtype=np.int64)[local])
        self.start: int | None = None
        self.remaining: torch.Tensor | None = None  # (b,) values still to emit per row

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        k = input_ids.shape[1] - self.start
        if self.lens is not None:
            return self._length_aware(input_ids, scores, k)
        keep = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        if k < self.n_new and self.position_lm_ids is not None and k < len(self.position_lm_ids):
            keep[self.position_lm_ids[k].to(scores.device)] = True
        elif k < self.n_new:
            keep[self.lo: self.hi + 1] = True
        if self.plan.uses_end_marker and k >= 1:
            keep[self.eoa] = True
        return scores.masked_fill(~keep, float("-inf"))

    def _length_aware(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, k: int) -> torch.FloatTensor:
        b, dev = scores.shape[0], scores.device
        lens = self.lens.to(dev)
        if self.remaining is None:
            self.remaining = torch.full((b,), self.plan.units, dtype=torch.long, device=dev)
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


@dataclass
class Generated:
    """Local action ids per sequence, and how many reached the length bound (end marker forced there)."""

    ids: list[list[int]]
    truncated: int
    probs: np.ndarray | None = None
    """Fixed length, ``with_probs``: (b, tokens_per_chunk, n_actions) softmax over the local ids at
    each position, under the plan's constraint (what the expectation readout averages)."""


@torch.no_grad()
def generate_action_ids(model: "PolicyModel", vocab: ActionVocab, plan: DecodingPlan, prompts: list[Prompt],
                        obs: dict[str, torch.Tensor], pad_id: int, temperature: float = 0.0,
                        with_probs: bool = False) -> Generated:
    """Constrained generation (greedy, or sampled at ``temperature``) for a batch of prompts.

    ``with_probs`` (fixed-length plans) also returns each position's distribution over the local
    ids, conditioned on the ids generated before it."""
    from transformers import GenerationConfig, LogitsProcessorList

    if with_probs and not plan.fixed:
        raise ValueError("per-position distributions need a fixed-length plan (one id per position)")
    device = model.lm.get_input_embeddings().weight.device
    ids, mask, starts = left_pad(prompts, pad_id)
    emb = model.embed(ids.to(device), starts.to(device), {k: v.to(device) for k, v in obs.items()})
    sample = temperature > 0
    max_new = plan.n_new + (1 if plan.uses_end_marker else 0)
    gen_cfg = GenerationConfig(
        max_new_tokens=max_new, min_new_tokens=None, do_sample=sample,
        temperature=temperature if sample else None, top_k=None, top_p=None,
        eos_token_id=vocab.eoa_id if plan.uses_end_marker else None, pad_token_id=pad_id, use_cache=True,
        output_scores=with_probs, return_dict_in_generate=with_probs,
    )
    out = model.lm.generate(inputs_embeds=emb, attention_mask=mask.to(device), generation_config=gen_cfg,
                            logits_processor=LogitsProcessorList([ActionOnlyLogits(vocab, plan)]))
    probs = None
    if with_probs:
        lm_ids = torch.as_tensor(vocab.to_lm(np.arange(vocab.n_actions)), device=device)
        probs = torch.stack([torch.softmax(step[:, lm_ids].float(), -1) for step in out.scores], 1).cpu().numpy()
        out = out.sequences
    rows = out[:, -max_new:].cpu().numpy() if out.shape[1] > max_new else out.cpu().numpy()
    seqs = _split_sequences(rows, vocab, plan.uses_end_marker)
    truncated = 0 if plan.fixed or plan.length_aware else sum(len(s) >= plan.n_new for s in seqs)
    return Generated(seqs, truncated, probs)


def read_chunks(tok: "ActionTokenizer", gen: Generated) -> tuple[Any, np.ndarray]:
    """(the decode report of the generated ids, the chunks): with ``gen.probs`` (the expectation
    readout) the chunks are their expectation, otherwise the decoded ids."""
    report = tok.decode_with_report(gen.ids)
    return report, tok.decode_expected(gen.probs) if gen.probs is not None else report.actions


def sample_mean(model: "PolicyModel", tok: "ActionTokenizer", vocab: ActionVocab, plan: DecodingPlan,
                prompts: list[Prompt], obs: dict[str, torch.Tensor], pad_id: int, seed: int,
                samples: int = MEAN_SAMPLES) -> tuple[Any, np.ndarray, Generated]:
    """The mean readout: ``samples`` sequences per prompt drawn at temperature 1 (seeded), each decoded,
    averaged into one chunk per prompt. Returns (the decode report of every sample, the (b, h, d)
    chunks, the samples; sample ``j`` of prompt ``i`` is row ``i * samples + j``).

    Why: greedy decoding returns the LM's most likely token sequence, and where its mass is split
    between "keep moving" and "stop" it picks the mode; the mean of samples estimates the LM's mean
    chunk instead, as a regressor's output is the mean of the demonstrated actions."""
    b = len(prompts)
    many = [p for p in prompts for _ in range(samples)]
    obs_many = {k: v.repeat_interleave(samples, 0) for k, v in obs.items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = generate_action_ids(model, vocab, plan, many, obs_many, pad_id, temperature=1.0)
    report, chunks = read_chunks(tok, gen)
    chunks = np.asarray(chunks, dtype=np.float64)
    return report, chunks.reshape(b, samples, *chunks.shape[1:]).mean(1), gen


def _split_sequences(rows: np.ndarray, vocab: ActionVocab, ends_with_marker: bool) -> list[list[int]]:
    """Cut each generated row at its end marker; any non-action id becomes -1 (flagged by decode)."""
    seqs = []
    for row in rows.tolist():
        if ends_with_marker and vocab.eoa_id in row:
            row = row[: row.index(vocab.eoa_id)]
        arr = np.asarray(row, dtype=np.int64)
        is_action = vocab.is_action(arr)
        local = np.full(arr.shape, -1, dtype=np.int64)
        local[is_action] = vocab.to_local(arr[is_action])
        seqs.append(local.tolist())
    return seqs
