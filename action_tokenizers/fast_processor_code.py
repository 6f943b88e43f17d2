"""FAST action processor in the published layout (``AutoProcessor`` with ``trust_remote_code``).

This file is copied, as ``processing_action_tokenizer.py``, into the folder that
``FASTTokenizer.save_pretrained(dir, layout="published")`` writes; it is the one piece of code the
project ever puts into a folder, for the tools that load that layout (transformers'
``AutoProcessor``, LeRobot's pi0-FAST and ``ActionTokenizerProcessorStep``). The project itself
never imports it from a folder: its own loaders read ``processor_config.json`` and
``tokenizer.json`` as data. It depends only on numpy, scipy and transformers.

It keeps the published processor's interface: a ``ProcessorMixin`` with a ``bpe_tokenizer`` and the
attributes ``scale``, ``vocab_size``, ``min_token``, ``time_horizon``, ``action_dim``.

Input units: actions already normalized the way the tokenizer was fitted (FAST expects values in
[-1, 1]; in LeRobot the normalizer step of the policy's pipeline produces them). Shape (B, H, D)
or (H, D). Steps: orthonormal DCT-II over time, times ``scale``, rounded; each coefficient ``c``
becomes the character ``chr(c - min_token)`` (clipped to ``[0, max_char]``, the fitted alphabet),
row-major over (H, D); the string of a chunk is BPE-encoded. ``decode`` inverts the steps.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np
from scipy.fft import dct, idct
from transformers.processing_utils import ProcessorMixin

logger = logging.getLogger(__name__)

# chr() refuses the UTF-16 surrogates; no coefficient character may reach them.
_LAST_SAFE_CHAR = 0xD7FF


class UniversalActionProcessor(ProcessorMixin):
    """DCT + BPE action tokenizer: ``processor(actions)`` -> ids, ``processor.decode(ids)`` -> actions."""

    attributes: ClassVar[list[str]] = ["bpe_tokenizer"]
    bpe_tokenizer_class: str = "AutoTokenizer"

    # No keyword-only parameters: transformers 5 passes a processor_config.json field to __init__ only
    # when it is a positional-or-keyword parameter.
    def __init__(self, bpe_tokenizer, scale: float = 10.0, vocab_size: int = 1024, min_token: int = 0,
                 max_char: int | None = None, action_dim: int | None = None,
                 time_horizon: int | None = None) -> None:
        self.scale = scale
        self.vocab_size = vocab_size
        self.min_token = min_token
        self.max_char = _LAST_SAFE_CHAR if max_char is None else int(max_char)
        self.time_horizon = time_horizon
        self.action_dim = action_dim
        super().__init__(bpe_tokenizer)

    def __call__(self, action_chunk) -> list[list[int]]:
        """Normalized actions (B, H, D) or (H, D) -> one list of ids per chunk."""
        x = np.asarray(action_chunk, dtype=np.float64)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3:
            raise ValueError(f"actions must have shape (B, H, D) or (H, D), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("actions contain NaN or inf")
        if self.time_horizon is not None and self.action_dim is not None and x.shape[1:] != (
                self.time_horizon, self.action_dim):
            raise ValueError(f"this tokenizer encodes chunks of (H, D) = ({self.time_horizon}, {self.action_dim}), "
                             f"got {x.shape[1:]}")
        coefficients = np.around(dct(x, type=2, axis=1, norm="ortho") * self.scale).reshape(x.shape[0], -1)
        chars = np.clip(coefficients - self.min_token, 0, self.max_char).astype(np.int64)
        texts = ["".join(map(chr, row)) for row in chars.tolist()]
        if not texts:
            return []
        return [list(ids) for ids in self.bpe_tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def decode(self, tokens, *, time_horizon: int | None = None, action_dim: int | None = None) -> np.ndarray:
        """One id list per chunk -> normalized actions (B, H, D).

        A sequence that does not hold exactly H * D coefficients is read as pi0-FAST reads it
        (extras cut, missing trailing coefficients set to 0) and logged as malformed.
        """
        h = time_horizon or self.time_horizon
        d = action_dim or self.action_dim
        if h is None or d is None:
            raise ValueError("pass time_horizon and action_dim: this processor was exported without a chunk shape")
        size, out, malformed = h * d, [], 0
        for seq in tokens:
            ids = [int(i) for i in (seq.tolist() if hasattr(seq, "tolist") else seq)]
            text = self.bpe_tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            c = np.fromiter(map(ord, text), dtype=np.float64, count=len(text)) + self.min_token
            if c.size != size:
                malformed += 1
                c = np.pad(c[:size], (0, max(0, size - c.size)))
            out.append(idct(c.reshape(h, d) / self.scale, type=2, axis=0, norm="ortho"))
        if malformed:
            logger.warning("%d of %d action token sequences were malformed (wrong coefficient count)",
                           malformed, len(out))
        return np.stack(out) if out else np.zeros((0, h, d))
