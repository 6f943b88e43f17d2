"""The observation encoder: turns ``observation.*`` into LM input embeddings (replaceable).

Default: a learned projection of the normalized ``observation.state`` into ``n_tokens`` vectors of
the LM's embedding space, fed through ``inputs_embeds`` (as the prefix of a VLM takes image
features). Why this and not pi0-FAST's 256-bin state tokens:

* it loses nothing: no quantization of the state, and the action tokens stay the only discrete
  targets, so the state never competes with actions for vocabulary;
* it is short: one position for the whole state instead of one (or, through a pretrained text
  tokenizer, three or four) per dimension; Meta-World's state has 39 dimensions, which would
  double the sequence length of a 40-token binning chunk on a 2-core CPU budget;
* it is the same interface images need: an image encoder is another module that maps
  ``batch -> (b, k, e)`` embeddings; discretized state tokens do not extend to pixels.

The cost is a few new parameters (``s * e * n_tokens``) trained from scratch, saved beside the LM.

Interface (what a future image encoder implements): ``n_tokens``, ``forward(batch) -> (b, k, e)``
where ``batch`` maps LeRobot keys to tensors, ``config()``, and a state dict saved as
safetensors. The encoder is built by name from ``ENCODERS``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from action_tokenizers.io import read_json, write_json

CONFIG_FILE = "observation_encoder.json"
WEIGHTS_FILE = "observation_encoder.safetensors"
MIN_STD = 1e-3
"""Floor on a state dimension's std: a dimension constant in the demos must not explode at test time."""
CLAMP = 5.0
"""Standardized states are clamped to [-CLAMP, CLAMP]: states far outside the demos stay bounded."""


def state_standardization(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension (mean, std) of training states (n, s), std floored at ``MIN_STD``.

    The one standardization of ``observation.state``: the LM's encoder and the regression
    baseline both use it, so the two policies see the state the same way.
    """
    x = np.asarray(states, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"states must have shape (n, s) with n >= 1, got {x.shape}")
    return x.mean(0), np.maximum(x.std(0), MIN_STD)


def standardize(states: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``clip((states - mean) / std, -CLAMP, CLAMP)`` in float64 (NumPy twin of the encoder's forward)."""
    return np.clip((np.asarray(states, dtype=np.float64) - mean) / std, -CLAMP, CLAMP)


class ObservationEncoder(nn.Module):
    """Base: maps a batch of observations to ``(b, n_tokens, e)`` LM input embeddings."""

    name = "base"
    n_tokens: int
    keys: tuple[str, ...]

    def config(self) -> dict[str, Any]:
        raise NotImplementedError


class StateProjection(ObservationEncoder):
    """``observation.state`` (b, s) -> standardized -> Linear -> (b, n_tokens, e)."""

    name = "state_projection"

    def __init__(self, state_dim: int, embed_dim: int, n_tokens: int = 1, state_key: str = "observation.state",
                 hidden: int = 0) -> None:
        super().__init__()
        if state_dim < 1 or embed_dim < 1 or n_tokens < 1 or hidden < 0:
            raise ValueError(f"state_dim, embed_dim, n_tokens must be >= 1 and hidden >= 0, "
                             f"got {state_dim}, {embed_dim}, {n_tokens}, {hidden}")
        self.state_dim, self.embed_dim, self.n_tokens, self.hidden = state_dim, embed_dim, n_tokens, hidden
        self.state_key = state_key
        self.keys = (state_key,)
        self.register_buffer("mean", torch.zeros(state_dim))
        self.register_buffer("std", torch.ones(state_dim))
        out = nn.Linear(hidden or state_dim, n_tokens * embed_dim)
        nn.init.normal_(out.weight, std=0.02)
        nn.init.zeros_(out.bias)
        # hidden > 0: one GELU layer first, so the state enters the LM through a small MLP (as a VLM's
        # projector does) rather than a single linear map.
        self.proj = nn.Sequential(nn.Linear(state_dim, hidden), nn.GELU(), out) if hidden else out

    def fit(self, states: np.ndarray) -> "StateProjection":
        """Standardization from training states (n, s); constant dimensions get a floor std."""
        x = np.asarray(states, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.state_dim:
            raise ValueError(f"states must have shape (n, {self.state_dim}), got {x.shape}")
        mean, std = state_standardization(x)
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype))
        return self

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        s = batch[self.state_key]  # (b, s)
        if s.ndim != 2 or s.shape[1] != self.state_dim:
            raise ValueError(f"{self.state_key} must have shape (b, {self.state_dim}), got {tuple(s.shape)}")
        z = ((s.to(self.mean.dtype) - self.mean) / self.std).clamp(-CLAMP, CLAMP)
        z = z.to(next(self.proj.parameters()).dtype)
        return self.proj(z).view(s.shape[0], self.n_tokens, self.embed_dim)  # (b, k, e)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "state_dim": self.state_dim, "embed_dim": self.embed_dim,
                "n_tokens": self.n_tokens, "state_key": self.state_key, "hidden": self.hidden}


ENCODERS: dict[str, type[ObservationEncoder]] = {StateProjection.name: StateProjection}
LAZY_ENCODERS = {"image_state": "training.vision"}
"""Encoders in other modules, imported when a saved config names them (camera images: training.vision)."""


def build_encoder(config: dict[str, Any]) -> ObservationEncoder:
    """Encoder from its saved config (``name`` picks the class)."""
    cfg = dict(config)
    name = cfg.pop("name", None)
    if name not in ENCODERS and name in LAZY_ENCODERS:  # registers itself on import
        importlib.import_module(LAZY_ENCODERS[name])
    if name not in ENCODERS:
        raise ValueError(f"unknown observation encoder {name!r}; valid: {sorted(ENCODERS)}")
    try:
        return ENCODERS[name](**cfg)
    except TypeError as e:
        raise ValueError(f"bad observation encoder config {config}: {e}") from e


def save_encoder(encoder: ObservationEncoder, directory: str | Path) -> None:
    from safetensors.torch import save_file

    directory = Path(directory)
    write_json(directory / CONFIG_FILE, encoder.config())
    save_file({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()},
              str(directory / WEIGHTS_FILE))


def load_encoder(directory: str | Path) -> ObservationEncoder:
    from action_tokenizers.io import load_safetensors

    directory = Path(directory)
    encoder = build_encoder(read_json(directory / CONFIG_FILE, what="observation encoder config"))
    state = load_safetensors(directory / WEIGHTS_FILE, what="policy directory", framework="torch")
    encoder.load_state_dict(state)
    return encoder
