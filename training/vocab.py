"""Where action ids live in a language model's vocabulary: ``ActionVocab``.

An action tokenizer emits *local* ids ``0..n_actions-1``; a causal LM predicts ids of its own
vocabulary. This object is the one exact, saved, printed map between the two, because users keep
getting it wrong (openvla#226, #246; openpi#627, #708). Two strategies:

``add``   append ``n_actions`` new ids after the base vocabulary, then the two markers
          (``lm = base + local``; the model's embeddings are resized). Nothing is overwritten.
``tail``  reuse the end of the existing vocabulary, counting down from the last id:
          ``lm = vocab_size - 1 - skip - local``. ``skip=0`` with 256 ids is OpenVLA (the last
          256 ids); ``skip=128`` is openpi / LeRobot pi0-FAST (it keeps the last 128 special ids).
          The begin/end-of-action markers take the two ids just below the action block.

Begin-of-action (``boa``) ends the prompt; end-of-action (``eoa``) ends every target, so
variable-length tokenizers (FAST) know where to stop. ``allowed_ids`` (the actions and ``eoa``)
is what constrained decoding may emit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from action_tokenizers.io import read_json, write_json

STRATEGIES = ("add", "tail")
VOCAB_FILE = "action_vocab.json"
ACTION_TOKEN = "<|act_{}|>"
BOA_TOKEN = "<|begin_of_action|>"
EOA_TOKEN = "<|end_of_action|>"


@dataclass(frozen=True)
class ActionVocab:
    """Exact, invertible map between local action ids and LM ids, plus the two markers."""

    strategy: str
    """add (new ids after the base vocabulary) or tail (the end of the existing vocabulary)."""
    n_actions: int
    """Local action vocabulary size (the action tokenizer's ``vocab_size``)."""
    first_id: int
    """LM id of local id 0."""
    step: int
    """+1 (add: ids count up) or -1 (tail: ids count down from ``first_id``)."""
    boa_id: int
    """LM id of the begin-of-action marker (ends the prompt; never predicted)."""
    eoa_id: int
    """LM id of the end-of-action marker (ends every target)."""
    lm_vocab_size: int
    """Number of rows the LM's embedding needs (after resizing, for add)."""
    skip: int = 0
    """tail only: ids at the very end left alone (128 for pi0-FAST, 0 for OpenVLA)."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"vocab strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.step not in (1, -1):
            raise ValueError(f"step must be +1 or -1, got {self.step}")
        if self.n_actions < 1:
            raise ValueError(f"n_actions must be >= 1, got {self.n_actions}")
        lo, hi = self.action_range
        ids = [lo, hi, self.boa_id, self.eoa_id]
        if min(ids) < 0 or max(ids) >= self.lm_vocab_size:
            raise ValueError(f"ids {ids} do not fit an LM vocabulary of {self.lm_vocab_size}")
        if self.boa_id == self.eoa_id or any(lo <= m <= hi for m in (self.boa_id, self.eoa_id)):
            raise ValueError(f"markers {self.boa_id}, {self.eoa_id} overlap each other or the action ids [{lo}, {hi}]")

    # ------------------------------------------------------------------ construction
    @classmethod
    def add(cls, base_vocab_size: int, n_actions: int) -> "ActionVocab":
        """New ids ``base..base+n_actions-1`` for actions, then ``boa``, ``eoa``."""
        if base_vocab_size < 0:
            raise ValueError(f"base_vocab_size must be >= 0, got {base_vocab_size}")
        b = int(base_vocab_size)
        return cls("add", int(n_actions), first_id=b, step=1, boa_id=b + n_actions, eoa_id=b + n_actions + 1,
                   lm_vocab_size=b + n_actions + 2)

    @classmethod
    def tail(cls, lm_vocab_size: int, n_actions: int, skip: int = 0,
             reserved_ids: Iterable[int] = ()) -> "ActionVocab":
        """Reuse the vocabulary's end: ``lm = lm_vocab_size - 1 - skip - local``; markers just below.

        ``reserved_ids`` (the LM tokenizer's special tokens, the ids the prompts use) must not be
        overwritten; a vocabulary too small for ``n_actions + 2 + skip`` ids is an error.
        """
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        need = n_actions + 2 + skip
        if need > lm_vocab_size:
            raise ValueError(
                f"the LM vocabulary ({lm_vocab_size} ids) cannot take the tail mapping: it needs "
                f"{n_actions} action ids + 2 markers + skip {skip} = {need}; use strategy 'add' "
                "(new tokens, resized embeddings) or a model with a larger vocabulary"
            )
        first = lm_vocab_size - 1 - skip
        vocab = cls("tail", int(n_actions), first_id=first, step=-1, boa_id=first - n_actions,
                    eoa_id=first - n_actions - 1, lm_vocab_size=int(lm_vocab_size), skip=int(skip))
        clash = sorted(set(int(i) for i in reserved_ids) & set(vocab.taken_ids().tolist()))
        if clash:
            raise ValueError(
                f"the tail mapping would overwrite reserved LM ids {clash[:10]} (special tokens or ids "
                f"the prompts use) in [{vocab.eoa_id}, {first}]; raise skip, or use strategy 'add'"
            )
        return vocab

    # ------------------------------------------------------------------ the map
    @property
    def action_range(self) -> tuple[int, int]:
        """(lowest, highest) LM id used by actions."""
        last = self.first_id + self.step * (self.n_actions - 1)
        return min(self.first_id, last), max(self.first_id, last)

    def to_lm(self, local: np.ndarray | list[int]) -> np.ndarray:
        """Local action ids -> LM ids (any shape); out-of-range local ids are an error."""
        x = np.asarray(local, dtype=np.int64)
        if x.size and (x.min() < 0 or x.max() >= self.n_actions):
            raise ValueError(f"local action ids must be in [0, {self.n_actions}), got range [{x.min()}, {x.max()}]")
        return self.first_id + self.step * x

    def to_local(self, lm_ids: np.ndarray | list[int]) -> np.ndarray:
        """LM ids -> local action ids (exact inverse of ``to_lm``); non-action ids are an error."""
        x = np.asarray(lm_ids, dtype=np.int64)
        local = (x - self.first_id) * self.step
        bad = (local < 0) | (local >= self.n_actions)
        if bad.any():
            raise ValueError(f"LM ids {x[bad][:5].tolist()} are not action ids (range {self.action_range})")
        return local

    def is_action(self, lm_ids: np.ndarray) -> np.ndarray:
        """Boolean mask of LM ids that are action ids."""
        lo, hi = self.action_range
        x = np.asarray(lm_ids)
        return (x >= lo) & (x <= hi)

    def allowed_ids(self) -> np.ndarray:
        """What constrained decoding may emit: every action id and the end-of-action marker."""
        lo, hi = self.action_range
        return np.append(np.arange(lo, hi + 1, dtype=np.int64), self.eoa_id)

    def taken_ids(self) -> np.ndarray:
        """Every LM id this mapping owns (actions and both markers)."""
        return np.append(self.allowed_ids(), self.boa_id)

    # ------------------------------------------------------------------ HF tokenizer side
    def token_strings(self) -> list[str]:
        """For add: the strings of the new tokens, in id order (actions, boa, eoa)."""
        return [ACTION_TOKEN.format(i) for i in range(self.n_actions)] + [BOA_TOKEN, EOA_TOKEN]

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ActionVocab":
        names = set(cls.__dataclass_fields__)
        unknown, missing = sorted(set(data) - names), sorted(names - set(data) - {"skip"})
        if unknown or missing:
            raise ValueError(f"action vocab JSON: unknown fields {unknown}, missing fields {missing}")
        return cls(**data)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / VOCAB_FILE
        write_json(path, {**self.to_dict(), "formula": self.formula()})
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "ActionVocab":
        data = read_json(Path(directory) / VOCAB_FILE, what="action vocabulary")
        data.pop("formula", None)
        return cls.from_dict(data)

    def formula(self) -> str:
        if self.strategy == "add":
            return f"lm_id = {self.first_id} + local_id"
        return f"lm_id = {self.lm_vocab_size} - 1 - {self.skip} - local_id"

    def describe(self) -> str:
        """Markdown table for the model card: the formula and the ids at both ends."""
        rows = [
            ("strategy", self.strategy),
            ("formula", f"`{self.formula()}`"),
            ("local id 0", f"LM id {int(self.to_lm(0))}"),
            (f"local id {self.n_actions - 1}", f"LM id {int(self.to_lm(self.n_actions - 1))}"),
            ("begin-of-action marker", f"LM id {self.boa_id}"),
            ("end-of-action marker", f"LM id {self.eoa_id}"),
            ("LM vocabulary size", str(self.lm_vocab_size)),
        ]
        if self.strategy == "tail":
            rows.insert(2, ("skip (ids left at the end)", str(self.skip)))
        return "| | |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def check_vocab_fits(vocab: ActionVocab, embedding_rows: int) -> None:
    """Fail before training when the model's embedding cannot hold the mapping."""
    if vocab.lm_vocab_size > embedding_rows:
        raise ValueError(
            f"the model's embedding has {embedding_rows} rows but the action vocabulary needs "
            f"{vocab.lm_vocab_size}; resize the embeddings (strategy 'add' does this) first"
        )
