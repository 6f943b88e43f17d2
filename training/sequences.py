"""Training sequences: ``task text + observation + boa + action tokens + eoa``, loss on actions only.

Labels are -100 (ignored by cross-entropy) on the task text, the observation slots and the
begin-of-action marker; the action ids and the end-of-action marker are the targets, so the
model learns the actions and when they end, never to reproduce the prompt. Batches are
right-padded (pad label -100); the prompt alone (for generation) is left-padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from training.vocab import ActionVocab

IGNORE = -100


@dataclass
class Prompt:
    """One prompt's ids and where its observation slots start."""

    ids: list[int]
    obs_start: int


def build_prompt(task_ids: list[int], n_obs_tokens: int, vocab: ActionVocab, placeholder_id: int) -> Prompt:
    """``task ids + [placeholder] * k + [boa]``; the placeholders are replaced by observation embeddings."""
    return Prompt(list(task_ids) + [placeholder_id] * n_obs_tokens + [vocab.boa_id], len(task_ids))


@dataclass
class Examples:
    """Tokenized training examples (variable length), aligned with the chunk set rows they came from."""

    input_ids: list[np.ndarray]
    """One int64 (t_i,) array per example."""
    labels: list[np.ndarray]
    """Same shapes: the target id at action and eoa positions, -100 elsewhere."""
    obs_start: np.ndarray
    """(n,) first observation slot of each example."""
    states: np.ndarray
    """(n, s) float32 observation.state at the chunk start."""

    def __len__(self) -> int:
        return len(self.input_ids)


def build_examples(prompts: list[Prompt], action_ids: list[list[int]], states: np.ndarray, vocab: ActionVocab) -> Examples:
    """One example per chunk from its prompt and its local action ids."""
    if not len(prompts) == len(action_ids) == len(states):
        raise ValueError(f"prompts ({len(prompts)}), action id lists ({len(action_ids)}) and states ({len(states)}) differ in number")
    inputs, labels = [], []
    for prompt, local in zip(prompts, action_ids):
        target = np.append(vocab.to_lm(local), vocab.eoa_id)
        ids = np.concatenate([np.asarray(prompt.ids, dtype=np.int64), target])
        lab = np.full(ids.shape, IGNORE, dtype=np.int64)
        lab[len(prompt.ids):] = target
        inputs.append(ids)
        labels.append(lab)
    obs_start = np.asarray([p.obs_start for p in prompts], dtype=np.int64)
    return Examples(inputs, labels, obs_start, np.asarray(states, dtype=np.float32))


def collate(ex: Examples, idx: np.ndarray, pad_id: int, state_key: str) -> dict[str, torch.Tensor | dict[str, torch.Tensor]]:
    """Right-padded batch of rows ``idx``: input_ids, attention_mask, labels (b, t), obs_start (b,), obs."""
    t = max(len(ex.input_ids[i]) for i in idx)
    b = len(idx)
    input_ids = np.full((b, t), pad_id, dtype=np.int64)
    labels = np.full((b, t), IGNORE, dtype=np.int64)
    mask = np.zeros((b, t), dtype=np.int64)
    for row, i in enumerate(idx):
        n = len(ex.input_ids[i])
        input_ids[row, :n], labels[row, :n], mask[row, :n] = ex.input_ids[i], ex.labels[i], 1
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(labels),
        "obs_start": torch.from_numpy(ex.obs_start[idx]),
        "obs": {state_key: torch.from_numpy(ex.states[idx])},
    }


def left_pad(prompts: list[Prompt], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded prompt batch for generation: (input_ids (b, t), attention_mask (b, t), obs_start (b,))."""
    t = max(len(p.ids) for p in prompts)
    ids = torch.full((len(prompts), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), t), dtype=torch.long)
    starts = torch.empty(len(prompts), dtype=torch.long)
    for row, p in enumerate(prompts):
        off = t - len(p.ids)
        ids[row, off:] = torch.tensor(p.ids, dtype=torch.long)
        mask[row, off:] = 1
        starts[row] = off + p.obs_start
    return ids, mask, starts
