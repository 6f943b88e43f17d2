"""LeRobot processor steps: any of our tokenizers inside a LeRobot ``DataProcessorPipeline``.

    from action_tokenizers.lerobot import ActionDetokenizerStep, ActionTokenizerStep
    from lerobot.processor import DataProcessorPipeline

    step = ActionTokenizerStep(tokenizer_path="runs/fast", max_tokens=64)   # a tokenizer dir or a fit --out folder
    pre = DataProcessorPipeline([step], name="tokenize")
    batch = pre({"action": actions})          # (B, H, D) -> batch["action.tokens"] (B, 64), batch["action.token_mask"]
    pre.save_pretrained("runs/pre")           # the tokenizer travels inside the pipeline folder (safetensors)
    DataProcessorPipeline.from_pretrained("runs/pre", config_filename="tokenize.json")   # after import action_tokenizers

:class:`ActionTokenizerStep` writes the ids of ``action`` (LeRobot's ``action.tokens``, padded to
``max_tokens``) and which positions hold ids (``action.token_mask``) into the transition's
complementary data, leaving ``action`` itself in place, as LeRobot's own ``ActionTokenizerProcessorStep``
does. :class:`ActionDetokenizerStep` is the inverse, for a policy's output: ids (``action``, with
``action.token_mask`` if present) -> actions ``(B, H, D)``, and the number of malformed sequences
as ``action.n_malformed`` (counted, never silent). ``ActionTokenizerStep.decode`` does the same
outside a pipeline.

Units: the tokenizer takes the units it was fitted in. A tokenizer owns its normalizer (the
default), so put the step where ``action`` is still in raw units (before LeRobot's normalizer step);
a tokenizer fitted with ``normalization="identity"`` on normalized actions goes after it.

Saving: the step's config (JSON) holds ``tokenizer_path`` and the padding settings; its state
(safetensors) holds the tokenizer's own files as byte tensors, so a saved pipeline folder is
complete on its own (also on the Hub) and reloads even where ``tokenizer_path`` does not exist.
The files are data (JSON, safetensors, tokenizer.json) and are loaded by our loaders, never run.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lerobot.processor.pipeline import ProcessorStep, ProcessorStepRegistry
from lerobot.lerobot_types import TransitionKey
from lerobot.utils.constants import ACTION_TOKEN_MASK, ACTION_TOKENS

from action_tokenizers.base import ActionTokenizer

__all__ = ["ACTION_N_MALFORMED", "ActionDetokenizerStep", "ActionTokenizerStep", "tokenizer_from_state",
           "tokenizer_state"]

TOKENIZER_STEP = "action_tokenizers.tokenize_action"
DETOKENIZER_STEP = "action_tokenizers.detokenize_action"
ACTION_N_MALFORMED = "action.n_malformed"
"""Complementary-data key: how many decoded sequences were malformed (see ``Decoded``)."""
_FILE_PREFIX = "tokenizer_file:"
DEFAULT_MAX_TOKENS = 256
"""Padded length for variable-length tokenizers (LeRobot's ``max_action_tokens`` default)."""
logger = logging.getLogger(__name__)


def tokenizer_state(tok: ActionTokenizer) -> dict[str, torch.Tensor]:
    """The tokenizer's saved files as uint8 tensors, one per file (a step's ``state_dict``)."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = tok.save_pretrained(Path(tmp) / "tokenizer")
        files = sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.endswith(".lock"))
        return {_FILE_PREFIX + p.relative_to(directory).as_posix():
                torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8).clone() for p in files}


def tokenizer_from_state(state: dict[str, torch.Tensor]) -> ActionTokenizer:
    """Rebuild a tokenizer from :func:`tokenizer_state` tensors (written to a temp folder, loaded as data)."""
    from action_tokenizers.auto import AutoActionTokenizer

    files = {k[len(_FILE_PREFIX):]: v for k, v in state.items() if k.startswith(_FILE_PREFIX)}
    if "config.json" not in files:
        raise ValueError(f"the step's saved state holds no tokenizer (keys: {sorted(state)[:5]})")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve()
        for name, tensor in files.items():
            path = (root / name).resolve()
            if root not in path.parents:
                raise ValueError(f"the step's saved state names a file outside its folder: {name!r}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tensor.cpu().numpy().astype(np.uint8).tobytes())
        return AutoActionTokenizer.from_pretrained(root)


class _TokenizerHolder:
    """Shared by both steps: the tokenizer from an object, a path (loaded on first use) or saved state."""

    tokenizer_path: str | None
    tokenizer: ActionTokenizer | None

    def _tok(self) -> ActionTokenizer:
        if self.tokenizer is None:
            if not self.tokenizer_path:
                raise ValueError(f"{type(self).__name__} has no tokenizer: pass tokenizer=... or tokenizer_path=... "
                                 "(a tokenizer directory, a fit --out folder or a Hub id)")
            from action_tokenizers.auto import load_tokenizer

            self.tokenizer = load_tokenizer(self.tokenizer_path)
        return self.tokenizer

    def state_dict(self) -> dict[str, torch.Tensor]:
        return tokenizer_state(self._tok())

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.tokenizer = tokenizer_from_state(state)

    def transform_features(self, features: dict) -> dict:
        return features  # tokens live in complementary data, as with LeRobot's own action tokenizer step


@ProcessorStepRegistry.register(TOKENIZER_STEP)
@dataclass
class ActionTokenizerStep(_TokenizerHolder, ProcessorStep):
    """``action`` (B, H, D) or (H, D) -> ``action.tokens`` (B, max_tokens) int64 and ``action.token_mask`` bool."""

    tokenizer_path: str | None = None
    """A tokenizer directory, a ``fit --out`` folder or a Hub id (loaded on first use); None with ``tokenizer=``."""
    max_tokens: int | None = None
    """Padded length; None: the tokenizer's fixed tokens per chunk, or 256 for variable-length ones."""
    pad_id: int = 0
    """Id written at padded positions (the mask says which positions hold real ids)."""
    tokenizer: ActionTokenizer | None = field(default=None, repr=False)
    """A tokenizer object (not saved in the config; its files go into the step's state)."""

    def __post_init__(self) -> None:
        if self.max_tokens is not None and int(self.max_tokens) < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def length(self) -> int:
        tok = self._tok()
        if self.max_tokens is not None:
            return int(self.max_tokens)
        return tok.tokens_per_chunk if tok.tokens_per_chunk is not None else DEFAULT_MAX_TOKENS

    def get_config(self) -> dict[str, Any]:
        return {"tokenizer_path": self.tokenizer_path, "max_tokens": self.max_tokens, "pad_id": self.pad_id}

    def __call__(self, transition: dict) -> dict:
        new = transition.copy()
        action = new.get(TransitionKey.ACTION)
        if action is None:  # at inference there is no action to tokenize
            return new
        tokens, mask = self.tokenize(action)
        data = dict(new.get(TransitionKey.COMPLEMENTARY_DATA) or {})
        data[ACTION_TOKENS], data[ACTION_TOKEN_MASK] = tokens, mask
        new[TransitionKey.COMPLEMENTARY_DATA] = data
        return new

    def tokenize(self, action: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions (B, H, D) or (H, D) -> padded ids (B, T) int64 and mask (B, T) bool (no batch dim for (H, D))."""
        device = action.device if isinstance(action, torch.Tensor) else None
        x = action.detach().cpu().numpy() if isinstance(action, torch.Tensor) else np.asarray(action)
        single = x.ndim == 2
        ids = self._tok().encode(x[None] if single else x)
        t = self.length
        longest = max((len(s) for s in ids), default=0)
        if longest > t:
            raise ValueError(f"a chunk encodes to {longest} tokens, more than max_tokens={t}: raise max_tokens "
                             "(cutting the sequence would train on a chunk that decodes differently)")
        tokens = torch.full((len(ids), t), int(self.pad_id), dtype=torch.long)
        mask = torch.zeros((len(ids), t), dtype=torch.bool)
        for i, seq in enumerate(ids):
            tokens[i, :len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            mask[i, :len(seq)] = True
        if single:
            tokens, mask = tokens[0], mask[0]
        return (tokens.to(device), mask.to(device)) if device is not None else (tokens, mask)

    def decode(self, tokens: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray | None = None):
        """Ids (B, T) (+ mask) -> the tokenizer's ``Decoded`` (actions (B, H, D), which were malformed)."""
        return decode_tokens(self._tok(), tokens, mask)


@ProcessorStepRegistry.register(DETOKENIZER_STEP)
@dataclass
class ActionDetokenizerStep(_TokenizerHolder, ProcessorStep):
    """Generated ids in ``action`` (B, T) -> actions (B, H, D) float32.

    Which positions hold ids: ``action.token_mask`` in the transition's complementary data where a
    step put it there; otherwise every position before a row's trailing run of ``pad_id`` (LeRobot's
    batch converter does not carry the mask between pipelines, so a policy pads generated ids with it).
    """

    tokenizer_path: str | None = None
    """A tokenizer directory, a ``fit --out`` folder or a Hub id; None with ``tokenizer=``."""
    pad_id: int = -1
    """Id that pads generated sequences at the end (never an action id)."""
    tokenizer: ActionTokenizer | None = field(default=None, repr=False)

    def get_config(self) -> dict[str, Any]:
        return {"tokenizer_path": self.tokenizer_path, "pad_id": self.pad_id}

    def __call__(self, transition: dict) -> dict:
        new = transition.copy()
        tokens = new.get(TransitionKey.ACTION)
        if tokens is None:
            return new
        data = dict(new.get(TransitionKey.COMPLEMENTARY_DATA) or {})
        decoded = decode_tokens(self._tok(), tokens, data.get(ACTION_TOKEN_MASK), pad_id=self.pad_id)
        if decoded.n_malformed:
            logger.warning("%d of %d action token sequences were malformed", decoded.n_malformed, len(decoded.reasons))
        device = tokens.device if isinstance(tokens, torch.Tensor) else None
        new[TransitionKey.ACTION] = torch.as_tensor(decoded.actions, dtype=torch.float32, device=device)
        data[ACTION_N_MALFORMED] = decoded.n_malformed
        new[TransitionKey.COMPLEMENTARY_DATA] = data
        return new


def decode_tokens(tok: ActionTokenizer, tokens: torch.Tensor | np.ndarray,
                  mask: torch.Tensor | np.ndarray | None = None, pad_id: int | None = None):
    """Padded ids (B, T) or (T,) -> ``tok.decode_with_report`` of the unpadded sequences.

    Real ids are where ``mask`` is True; without a mask, the positions before each row's trailing run
    of ``pad_id``; with neither, every position.
    """
    ids = tokens.detach().cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.dtype.kind not in "iu":
        raise TypeError(f"token ids must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if mask is None and pad_id is None:
        return tok.decode_with_report(ids)
    if mask is None:
        real = ids != pad_id
        lengths = np.where(real.any(axis=1), ids.shape[1] - np.argmax(real[:, ::-1], axis=1), 0)
        return tok.decode_with_report([row[:n].tolist() for row, n in zip(ids, lengths)])
    keep = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    keep = keep.reshape(ids.shape).astype(bool)
    return tok.decode_with_report([row[m].tolist() for row, m in zip(ids, keep)])
