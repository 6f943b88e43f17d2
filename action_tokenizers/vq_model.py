"""The torch side of the VQ tokenizer: the chunk autoencoder and its training loop.

Kept apart from :mod:`action_tokenizers.vq` so that importing the tokenizer class (and
``import action_tokenizers``) does not import torch; ``vq.py`` imports this module when it fits,
encodes, decodes or loads weights.

Shapes: ``b`` batch, ``h`` chunk length, ``d`` action dimension, ``g`` latent groups, ``c``
latent dimension, ``L`` levels.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from action_tokenizers.quantizers import FSQ, ResidualVQ

if TYPE_CHECKING:
    from action_tokenizers.vq import VQConfig

_WATCH_TRAIN = 2048
_KMEANS_MAX = 20000


def mlp(n_in: int, n_out: int, hidden: int, layers: int) -> nn.Sequential:
    """``layers`` hidden Linear+GELU layers of width ``hidden``, then a linear output."""
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(n_in if i == 0 else hidden, hidden), nn.GELU()]
    return nn.Sequential(*mods, nn.Linear(hidden, n_out))


class ChunkAutoencoder(nn.Module):
    """Normalized chunk (b, h, d) -> latents (b, g, c) -> quantizer -> chunk (b, h, d).

    An MLP over the flattened chunk: at h*d of a few dozen scalars it is the simplest encoder
    that sees the whole chunk at once (VQ-BeT uses an MLP too).
    """

    def __init__(self, h: int, d: int, cfg: "VQConfig") -> None:
        super().__init__()
        self.h, self.d, self.g, self.c = h, d, cfg.groups, cfg.latent_dim
        self.encoder = mlp(h * d, self.g * self.c, cfg.hidden, cfg.layers)
        self.decoder = mlp(self.g * self.c, h * d, cfg.hidden, cfg.layers)
        if cfg.quantizer == "rvq":
            self.quantizer: nn.Module = ResidualVQ(cfg.codebook_dim, cfg.codebook_size, cfg.levels,
                                                   cfg.ema_decay, cfg.commitment, cfg.dead_code_threshold)
        else:
            self.quantizer = FSQ(cfg.fsq_levels, cfg.levels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.reshape(x.shape[0], -1)).reshape(-1, self.g, self.c)  # (b, g, c)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent.reshape(latent.shape[0], -1)).reshape(-1, self.h, self.d)  # (b, h, d)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """(b, h, d) -> codes (b, g, L), no codebook updates."""
        return self.quantizer.encode(self.encode(x))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """encode -> quantize -> decode without codebook updates (evaluation)."""
        return self.decode(self.quantizer.decode_levels(self.codes(x)).sum(-2))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction (b, h, d) and the quantizer's auxiliary loss (training path)."""
        q = self.quantizer(self.encode(x), generator)
        return self.decode(q.quantized), q.loss


@contextlib.contextmanager
def deterministic_torch(seed: int, threads: int, device: str = "cpu") -> Iterator[None]:
    """Seed torch, force deterministic kernels and a fixed thread count; restore them afterwards.

    Off the CPU, kernels without a deterministic version only warn (CUDA matmuls would otherwise
    need ``CUBLAS_WORKSPACE_CONFIG`` set before start-up).
    """
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=not device.startswith("cpu"))
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def train(model: ChunkAutoencoder, train_x: torch.Tensor, held_x: torch.Tensor | None, cfg: "VQConfig") -> dict[str, Any]:
    """Adam on reconstruction MSE + quantizer loss, early-stopped on held-out MSE; keeps the best weights.

    Without held-out chunks the stopping rule watches the reconstruction of the first 2,048
    training chunks instead. Returns JSON-able training figures for the tokenizer's metrics.
    """
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.quantizer == "rvq":
        init_codebooks(model, train_x, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * s / cfg.max_steps)))
    watch = held_x if held_x is not None else train_x[:_WATCH_TRAIN]
    best_mse, best_state, best_step = math.inf, copy.deepcopy(model.state_dict()), 0
    bad_evals, perm, pos, step = 0, torch.randperm(len(train_x), generator=gen), 0, 0
    bar = tqdm(total=cfg.max_steps, desc=f"fit vq ({cfg.quantizer})", disable=None, leave=False)
    for step in range(1, cfg.max_steps + 1):
        if pos >= len(train_x):
            perm, pos = torch.randperm(len(train_x), generator=gen), 0
        batch = train_x[perm[pos:pos + cfg.batch_size].to(train_x.device)]  # (b, h, d)
        pos += cfg.batch_size
        model.train()
        recon, aux = model(batch, gen)
        loss = F.mse_loss(recon, batch) + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            mse = reconstruction_mse(model, watch)
            bar.set_postfix(watch_mse=f"{mse:.2e}")
            if mse < best_mse * (1 - 1e-4):
                best_mse, best_state, best_step, bad_evals = mse, copy.deepcopy(model.state_dict()), step, 0
            else:
                bad_evals += 1
                if bad_evals >= cfg.patience:
                    break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return {
        "steps": step,
        "best_step": best_step,
        "stopped_early": step < cfg.max_steps,
        "held_out_mse": float(best_mse) if held_x is not None else None,
        "train_mse": reconstruction_mse(model, train_x[:_KMEANS_MAX]),
    }


def init_codebooks(model: ChunkAutoencoder, train_x: torch.Tensor, cfg: "VQConfig") -> None:
    """k-means the untrained encoder's latents of (up to 20,000) training chunks into the RVQ codebooks."""
    with torch.no_grad():
        z = model.encode(train_x[:_KMEANS_MAX]).reshape(-1, cfg.codebook_dim).cpu().double().numpy()
    hits = min(cfg.batch_size, len(train_x)) * cfg.groups / cfg.codebook_size
    model.quantizer.init_from_data(z, cfg.seed, hits)


def reconstruction_mse(model: ChunkAutoencoder, x: torch.Tensor) -> float:
    """Mean squared error of encode -> quantize -> decode in normalized units (no codebook updates)."""
    model.eval()
    with torch.no_grad():
        return float(((model.reconstruct(x) - x) ** 2).mean())
