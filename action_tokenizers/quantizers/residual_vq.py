"""Residual vector quantization (RVQ): L codebooks of K codes, each quantizing what the last left.

Zeghidour et al. 2021 (SoundStream) introduced it for audio codecs; VQ-BeT, MiniVLA and VQ-VLA use
it for action chunks. Level 0 snaps a latent vector to its nearest code, level 1 snaps the
remainder, and so on; the decoded latent is the sum of the chosen codes.

Training choices, and why:

- **k-means initialisation** from data (``scipy.cluster.vq.kmeans2``, k-means++ seeding): codes
  start where the latents are, so few codes are born dead.
- **EMA codebook updates** (van den Oord et al. 2017, appendix): codes move to the running mean
  of the vectors assigned to them; the encoder gets a straight-through gradient plus a
  commitment loss that keeps it near its codes.
- **dead-code restart**: a code whose running hit count falls below a fraction of the mean is
  moved onto a random vector of the current batch, so usage stays high.

Shapes: ``b`` batch, ``g`` latent groups, ``c`` code dimension, ``L`` levels, ``K`` codes per level.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_LAPLACE_EPS = 1e-5


@dataclass
class QuantizerOutput:
    """What one quantizer forward pass produced."""

    quantized: torch.Tensor
    """(b, g, c) quantized latents, with a straight-through gradient to the input."""
    codes: torch.Tensor
    """(b, g, L) int64 code index per group and level, each in ``range(codes_per_level)``."""
    loss: torch.Tensor
    """Scalar auxiliary loss (commitment for RVQ, zero for FSQ)."""


def nearest_code(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code (squared Euclidean) for each row of ``x`` (m, c) -> (m,)."""
    dist = (x * x).sum(-1, keepdim=True) - 2.0 * x @ codebook.T + (codebook * codebook).sum(-1)[None, :]
    return dist.argmin(-1)


class ResidualVQ(nn.Module):
    """``levels`` codebooks of ``codebook_size`` codes of dimension ``dim``, EMA-updated.

    Buffers (all saved): ``codebooks`` (L, K, c), ``cluster_size`` (L, K) running hit counts per
    batch, ``embed_sum`` (L, K, c) running sums of assigned vectors.
    """

    def __init__(self, dim: int, codebook_size: int, levels: int, decay: float = 0.99,
                 commitment: float = 0.25, dead_code_threshold: float = 0.05) -> None:
        super().__init__()
        self.dim, self.codebook_size, self.levels = dim, codebook_size, levels
        self.decay, self.commitment, self.dead_code_threshold = decay, commitment, dead_code_threshold
        self.register_buffer("codebooks", torch.randn(levels, codebook_size, dim) * 0.1)
        self.register_buffer("cluster_size", torch.ones(levels, codebook_size))
        self.register_buffer("embed_sum", self.codebooks.clone())

    @property
    def codes_per_level(self) -> int:
        return self.codebook_size

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def init_from_data(self, z: np.ndarray, seed: int, hits_per_batch: float) -> None:
        """k-means each level on the residuals of ``z`` (m, c) left by the levels before it.

        ``hits_per_batch`` (mean vectors per code in one training batch) seeds the running
        counts, so the EMA starts at the scale it will see.
        """
        rng = np.random.default_rng(seed)
        residual = np.asarray(z, dtype=np.float64)
        for level in range(self.levels):
            with warnings.catch_warnings():  # empty clusters are expected on tiny sets; restarts fix them
                warnings.simplefilter("ignore")
                centroids, labels = _kmeans(residual, self.codebook_size, rng)
            cb = torch.as_tensor(centroids, dtype=self.codebooks.dtype)
            self.codebooks[level] = cb
            self.cluster_size[level] = hits_per_batch
            self.embed_sum[level] = cb * hits_per_batch
            residual = residual - centroids[labels]

    # ------------------------------------------------------------------ forward
    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> QuantizerOutput:
        """Quantize (b, g, c); in training mode also update the codebooks (EMA) and restart dead codes."""
        b, g, c = z.shape
        residual = z.reshape(b * g, c)
        total = torch.zeros_like(residual)
        codes, loss = [], z.new_zeros(())
        for level in range(self.levels):
            idx = nearest_code(residual.detach(), self.codebooks[level])  # (b*g,)
            q = self.codebooks[level][idx]
            loss = loss + self.commitment * F.mse_loss(residual, q.detach())
            if self.training:
                self._ema_update(level, residual.detach(), idx, generator)
            total = total + q
            residual = residual - q.detach()
            codes.append(idx)
        flat = z.reshape(b * g, c)
        quantized = flat + (total - flat).detach()  # straight-through estimator
        return QuantizerOutput(quantized.reshape(b, g, c), torch.stack(codes, -1).reshape(b, g, self.levels), loss)

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """(b, g, c) -> codes (b, g, L), without touching the codebooks."""
        b, g, c = z.shape
        residual = z.reshape(b * g, c)
        codes = []
        for level in range(self.levels):
            idx = nearest_code(residual, self.codebooks[level])
            residual = residual - self.codebooks[level][idx]
            codes.append(idx)
        return torch.stack(codes, -1).reshape(b, g, self.levels)

    @torch.no_grad()
    def decode_levels(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (b, g, L), each in range -> each level's contribution (b, g, L, c); the latent is their sum."""
        return torch.stack([self.codebooks[level][codes[..., level]] for level in range(self.levels)], -2)

    # ------------------------------------------------------------------ codebook updates
    @torch.no_grad()
    def _ema_update(self, level: int, x: torch.Tensor, idx: torch.Tensor, generator: torch.Generator | None) -> None:
        k = self.codebook_size
        onehot = F.one_hot(idx, k).to(x.dtype)  # (m, K)
        counts, sums = onehot.sum(0), onehot.T @ x
        size, embed = self.cluster_size[level], self.embed_sum[level]
        size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        embed.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = size.sum()
        smoothed = (size + _LAPLACE_EPS) / (n + k * _LAPLACE_EPS) * n
        self.codebooks[level] = embed / smoothed[:, None]
        self._restart_dead(level, x, generator)

    @torch.no_grad()
    def _restart_dead(self, level: int, x: torch.Tensor, generator: torch.Generator | None) -> None:
        mean_hits = x.shape[0] / self.codebook_size
        dead = self.cluster_size[level] < self.dead_code_threshold * mean_hits
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        pick = torch.randint(0, x.shape[0], (n_dead,), generator=generator)
        self.codebooks[level][dead] = x[pick]
        self.cluster_size[level][dead] = mean_hits
        self.embed_sum[level][dead] = x[pick] * mean_hits


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding then 20 Lloyd iterations (scipy); empty clusters keep their seed point."""
    from scipy.cluster.vq import kmeans2

    centroids, labels = kmeans2(x, k, iter=20, minit="++", missing="warn", rng=rng)
    return centroids, labels
