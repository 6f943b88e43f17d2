"""Finite scalar quantization (FSQ, Mentzer et al. 2023), optionally residual.

Each latent dimension i is squashed by ``tanh`` into ``levels[i]`` values and rounded, so the
implicit codebook is the grid of ``prod(levels)`` points. No codebook is learned, so there is
nothing to collapse: every grid point stays reachable. QueST and the FAST paper's baseline use it
for action chunks.

With ``depth > 1`` (residual FSQ), level ``l`` quantizes the remainder of the levels before it,
scaled up by ``(levels - 1) ** l`` so it fills the grid again (as in vector-quantize-pytorch's
``ResidualFSQ``).

Shapes: ``b`` batch, ``g`` latent groups, ``c = len(levels)``, ``L`` depth.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from action_tokenizers.quantizers.residual_vq import QuantizerOutput

_BOUND_EPS = 1e-3


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round with a straight-through (identity) gradient."""
    return x + (torch.round(x) - x).detach()


class FSQ(nn.Module):
    """Residual FSQ over ``len(levels)``-dimensional latents; ``prod(levels)`` codes per level.

    Holds no learned parameters; its buffers (``levels``, ``basis``, ``scales``) are saved so a
    loaded file can be checked against the config.
    """

    def __init__(self, levels: tuple[int, ...], depth: int = 1) -> None:
        super().__init__()
        lv = torch.tensor(levels, dtype=torch.int64)
        self.depth = depth
        self.register_buffer("levels", lv)
        self.register_buffer("basis", torch.cumprod(torch.cat([torch.ones(1, dtype=torch.int64), lv[:-1]]), 0))
        steps = (lv - 1).to(torch.float32)
        self.register_buffer("scales", torch.stack([steps ** -float(l) for l in range(depth)]))  # (L, c)

    @property
    def dim(self) -> int:
        return int(self.levels.shape[0])

    @property
    def codes_per_level(self) -> int:
        return int(math.prod(self.levels.tolist()))

    # ------------------------------------------------------------------ the scalar grid
    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash each dimension into (-L/2, L/2) so rounding gives exactly L values."""
        lv = self.levels.to(z.dtype)
        half = (lv - 1) * (1 + _BOUND_EPS) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0).to(z.dtype)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def _quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> grid points scaled into [-1, 1] (straight-through gradient)."""
        return round_ste(self._bound(z)) / (self.levels // 2).to(z.dtype)

    def _to_index(self, q: torch.Tensor) -> torch.Tensor:
        half = self.levels // 2
        digits = torch.round(q * half.to(q.dtype)).to(torch.int64) + half
        return (digits * self.basis).sum(-1)

    def _from_index(self, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        digits = (idx[..., None] // self.basis) % self.levels
        half = self.levels // 2
        return (digits - half).to(dtype) / half.to(dtype)

    # ------------------------------------------------------------------ forward
    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> QuantizerOutput:
        """Quantize (b, g, c); ``generator`` is unused (FSQ has no randomness)."""
        residual, total, codes = z, torch.zeros_like(z), []
        for level in range(self.depth):
            scale = self.scales[level].to(z.dtype)
            q = self._quantize(residual / scale)
            codes.append(self._to_index(q.detach()))
            q = q * scale
            total = total + q
            residual = residual - q.detach()
        return QuantizerOutput(total, torch.stack(codes, -1), z.new_zeros(()))

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """(b, g, c) -> codes (b, g, L)."""
        return self.forward(z).codes

    @torch.no_grad()
    def decode_levels(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (b, g, L), each in range -> each level's contribution (b, g, L, c); the latent is their sum."""
        grid = self._from_index(codes, self.scales.dtype)  # (b, g, L, c)
        return grid * self.scales
