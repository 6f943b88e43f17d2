"""Learned codebook tokenizer (VQ-BeT, MiniVLA, VQ-VLA, QueST): a chunk becomes a few code ids.

A small MLP encoder maps the normalized chunk ``(h, d)`` to ``groups`` latent vectors; a quantizer
(residual VQ or FSQ, see :mod:`action_tokenizers.quantizers`) snaps each to ``levels`` codes; an
MLP decoder maps the summed codes back to ``(h, d)``. Tokens per chunk are ``groups * levels``,
laid out group-major (``[g0 l0, g0 l1, ..., g1 l0, ...]``). Level ``l``'s ids are offset by
``l * codes_per_level`` so ids of different levels never collide and ``vocab_size`` is exact:
``levels * codes_per_level``.

Training (``fit``) is seeded and deterministic on CPU: ``torch.manual_seed``, deterministic
algorithms and ``threads`` intra-op threads (1 by default) for its duration. Early stopping on
the reconstruction error of held-out chunks, taken as random *blocks* of 32 consecutive chunks
(stride-1 chunks overlap, so single held-out chunks would leak their neighbours); with too few
blocks (< 2) early stopping watches the training reconstruction instead. The best weights are
kept. Too little data for the codebook (RVQ needs at least ``codebook_size`` training latents
to initialise by k-means) is a ``ValueError`` that names the largest size that fits.

Decoding, non-strict: an id outside its position's level range is clipped into that range and
flagged; a sequence of the wrong length keeps what it has (extra ids dropped; a missing deeper
level adds nothing, a missing group takes the normalized-centre chunk's code) and is flagged.

Saved files: the base's ``config.json``/``tensors.safetensors`` plus ``model.safetensors`` (the
torch state dict via ``safetensors.torch``; never pickled).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from action_tokenizers.base import ActionTokenizer, TokenBatch, TokenizerConfig
from action_tokenizers.smoothness import PositionGroup, code_usage

if TYPE_CHECKING:
    import torch

    from action_tokenizers.vq_model import ChunkAutoencoder

QUANTIZERS = ("rvq", "fsq")
MODEL_FILE = "model.safetensors"
_HELD_OUT_BLOCK = 32
_BATCH_INFER = 4096


@dataclass
class VQConfig(TokenizerConfig):
    quantizer: str = "rvq"
    """rvq (residual VQ with learned codebooks) or fsq (finite scalar quantization)."""
    groups: int = 2
    """Latent vectors per chunk; tokens per chunk = groups * levels."""
    levels: int = 2
    """Residual depth: codes per latent vector (each refines the one before)."""
    codebook_size: int = 256
    """RVQ: codes per level (K). Ignored by FSQ, whose size is prod(fsq_levels)."""
    codebook_dim: int = 8
    """RVQ: dimension of each latent vector. FSQ uses len(fsq_levels)."""
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)
    """FSQ: values per latent dimension; codes per level = their product (1000 by default)."""
    hidden: int = 256
    """Width of the encoder and decoder MLPs."""
    layers: int = 2
    """Hidden layers in each of the encoder and decoder."""
    max_steps: int = 3000
    """Most optimizer steps (each on one batch)."""
    batch_size: int = 256
    """Chunks per optimizer step."""
    lr: float = 3e-3
    """Adam learning rate (cosine-decayed to a tenth over max_steps)."""
    eval_every: int = 100
    """Steps between held-out evaluations (early stopping)."""
    patience: int = 8
    """Evaluations without a held-out improvement before training stops."""
    held_out_fraction: float = 0.1
    """Share of chunks (in blocks of 32 consecutive chunks) held out for early stopping."""
    commitment: float = 0.25
    """RVQ: weight of the commitment loss that keeps encoder outputs near their codes."""
    ema_decay: float = 0.99
    """RVQ: decay of the exponential moving averages that update the codebooks."""
    dead_code_threshold: float = 0.05
    """RVQ: a code is restarted when its running hit count falls below this share of the mean."""
    seed: int = 0
    """Seed for initialisation, k-means, batches and restarts: same seed, same weights and ids."""
    threads: int = 1
    """Torch intra-op threads while fitting (results are reproducible for a fixed value)."""
    device: str = "cpu"
    """Torch device for fitting and inference (determinism is guaranteed on cpu only)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.fsq_levels = tuple(int(v) for v in self.fsq_levels)
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        _check_range("groups", self.groups, 1, 64)
        _check_range("levels", self.levels, 1, 16)
        _check_range("codebook_size", self.codebook_size, 2, 1 << 16)
        _check_range("codebook_dim", self.codebook_dim, 1, 1024)
        _check_range("hidden", self.hidden, 4, 1 << 14)
        _check_range("layers", self.layers, 1, 16)
        _check_range("max_steps", self.max_steps, 1, 10**7)
        _check_range("batch_size", self.batch_size, 1, 1 << 20)
        _check_range("eval_every", self.eval_every, 1, 10**7)
        _check_range("patience", self.patience, 1, 10**6)
        _check_range("threads", self.threads, 1, 1024)
        if not self.fsq_levels or any(v < 2 for v in self.fsq_levels) or math.prod(self.fsq_levels) > 1 << 16:
            raise ValueError(f"fsq_levels must be non-empty values >= 2 with product <= 65536, got {self.fsq_levels}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not 0.0 <= self.held_out_fraction <= 0.5:
            raise ValueError(f"held_out_fraction must be in [0, 0.5], got {self.held_out_fraction}")
        if not self.commitment >= 0:
            raise ValueError(f"commitment must be >= 0, got {self.commitment}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if not 0.0 <= self.dead_code_threshold < 1.0:
            raise ValueError(f"dead_code_threshold must be in [0, 1), got {self.dead_code_threshold}")
        if self.device.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device must be cpu, cuda[:i] or mps, got {self.device!r}")

    @property
    def codes_per_level(self) -> int:
        return self.codebook_size if self.quantizer == "rvq" else math.prod(self.fsq_levels)

    @property
    def latent_dim(self) -> int:
        return self.codebook_dim if self.quantizer == "rvq" else len(self.fsq_levels)


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


class VQTokenizer(ActionTokenizer):
    """Encoder -> residual VQ or FSQ -> decoder; ``groups * levels`` tokens per chunk."""

    config_class = VQConfig
    family = "vq"
    config: VQConfig

    def __init__(self, config: VQConfig | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.model: "ChunkAutoencoder | None" = None

    # ------------------------------------------------------------------ sizes
    @property
    def vocab_size(self) -> int:
        return self.config.levels * self.config.codes_per_level

    @property
    def tokens_per_chunk(self) -> int:
        return self.config.groups * self.config.levels

    def level_offsets(self) -> np.ndarray:
        """(t,) id offset of each token position: ``level * codes_per_level``."""
        levels = np.tile(np.arange(self.config.levels), self.config.groups)
        return levels * self.config.codes_per_level

    def position_id_ranges(self) -> list[tuple[int, int]]:
        """Position p may only hold a code of its own level: ``[offset_p, offset_p + codes_per_level)``."""
        k = self.config.codes_per_level
        return [(int(o), int(o) + k) for o in self.level_offsets()]

    def usage_groups(self) -> list[PositionGroup]:
        """One group per level (its positions across latent groups and its id range), for usage reports."""
        cfg, k = self.config, self.config.codes_per_level
        return [
            PositionGroup(f"level {lv}", tuple(g * cfg.levels + lv for g in range(cfg.groups)), lv * k, k)
            for lv in range(cfg.levels)
        ]

    # ------------------------------------------------------------------ fit
    def _fit(self, x: np.ndarray) -> None:
        import torch

        from action_tokenizers.vq_model import deterministic_torch, train

        cfg = self.config
        train_idx, held_idx = split_held_out(x.shape[0], cfg.held_out_fraction, cfg.seed)
        self._check_data_size(len(train_idx))
        start = time.perf_counter()
        with deterministic_torch(cfg.seed, cfg.threads, cfg.device):
            model = self._build_model().to(cfg.device)
            data = torch.as_tensor(x, dtype=torch.float32, device=cfg.device)
            held = data[torch.as_tensor(held_idx)] if len(held_idx) else None
            result = train(model, data[torch.as_tensor(train_idx)], held, cfg)
        self.model = model
        codes = self._codes(x)
        usage = [code_usage(codes[:, :, lv].ravel(), cfg.codes_per_level) for lv in range(cfg.levels)]
        self.metrics.update({
            **result,
            "train_chunks": int(len(train_idx)),
            "held_out_chunks": int(len(held_idx)),
            "fit_seconds": round(time.perf_counter() - start, 3),
            "codebook_usage": [u.share_used for u in usage],
            "codebook_perplexity": [u.perplexity for u in usage],
        })

    def _check_data_size(self, n_train: int) -> None:
        cfg = self.config
        if cfg.quantizer != "rvq":
            return
        n_vectors = n_train * cfg.groups
        if n_vectors < cfg.codebook_size:
            raise ValueError(
                f"too little data for the codebook: residual VQ with codebook_size={cfg.codebook_size} needs at "
                f"least that many training latents to initialise by k-means, got {n_train} training chunks x "
                f"{cfg.groups} groups = {n_vectors}; use codebook_size <= {max(n_vectors, 2)} or more chunks"
            )

    def _build_model(self) -> "ChunkAutoencoder":
        from action_tokenizers.vq_model import ChunkAutoencoder

        return ChunkAutoencoder(self.chunk_size, self.action_dim, self.config)

    # ------------------------------------------------------------------ encode / decode
    def _codes(self, x: np.ndarray) -> np.ndarray:
        """Normalized (n, h, d) -> level-local codes (n, groups, levels) int64."""
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, x.shape[0], _BATCH_INFER):
                xb = torch.as_tensor(x[i:i + _BATCH_INFER], dtype=torch.float32, device=self.config.device)
                out.append(self.model.codes(xb).cpu().numpy())
        if not out:
            return np.zeros((0, self.config.groups, self.config.levels), dtype=np.int64)
        return np.concatenate(out).astype(np.int64)

    def encode_array(self, x: np.ndarray) -> np.ndarray:
        """Normalized (n, h, d) -> ids (n, groups * levels) int64, level offsets applied (vectorized core)."""
        codes = self._codes(x)
        return codes.reshape(codes.shape[0], -1) + self.level_offsets()[None, :]

    def _encode(self, x: np.ndarray) -> list[list[int]]:
        return self.encode_array(x).tolist()

    def decode_array(self, ids: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
        """In-range ids (n, t) -> normalized chunks (n, h, d); ``present`` (n, t) masks missing positions."""
        import torch

        cfg = self.config
        n = ids.shape[0]
        codes = (ids - self.level_offsets()[None, :]).reshape(n, cfg.groups, cfg.levels)
        mask = np.ones((n, cfg.groups, cfg.levels), bool) if present is None else present.reshape(codes.shape)
        out = []
        with torch.no_grad():
            for i in range(0, n, _BATCH_INFER):
                cb = torch.as_tensor(codes[i:i + _BATCH_INFER], device=cfg.device)
                mb = torch.as_tensor(mask[i:i + _BATCH_INFER], device=cfg.device)
                parts = self.model.quantizer.decode_levels(cb)  # (b, g, L, c)
                latent = (parts * mb[..., None]).sum(-2)
                empty = ~mb.any(-1)  # groups with no id at all take the centre chunk's latent
                if bool(empty.any()):
                    latent[empty] = self._centre_latent().to(latent.dtype)[empty.nonzero()[:, 1]]
                out.append(self.model.decode(latent).cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, self.chunk_size, self.action_dim))

    def decode_expected(self, probs: np.ndarray) -> np.ndarray:
        """Distributions over the ids (n, groups * levels, vocab_size), e.g. an LM's softmax -> raw
        (n, h, d) chunks decoded from each group's *expected* latent: at each position, the code
        vectors of its level weighted by their probability, summed over levels.

        Why: a code id is a class, so the argmax readout jumps between code vectors where the LM
        hesitates; the latent space is continuous, so its expectation moves smoothly with the LM's
        belief (the codebook counterpart of binning's expectation readout). Mass outside a position's
        level range (impossible under constrained decoding) is ignored and the rest renormalized."""
        import torch

        cfg, t, k = self.config, self.tokens_per_chunk, self.config.codes_per_level
        p = self._check_distributions(probs, t)
        n = len(p)
        levels = np.arange(t) % cfg.levels  # group-major layout: position i holds level i % levels
        local = np.stack([p[:, i, lv * k:(lv + 1) * k] for i, lv in enumerate(levels)], 1)  # (n, t, K)
        mass = local.sum(-1, keepdims=True)
        if (mass <= 0).any():
            raise ValueError("a position has no probability on its level's codes")
        local = (local / mass).reshape(n, cfg.groups, cfg.levels, k)
        with torch.no_grad():
            codes = torch.arange(k, device=cfg.device)[:, None, None].expand(k, 1, cfg.levels)
            table = self.model.quantizer.decode_levels(codes)[:, 0].transpose(0, 1)  # (L, K, c)
            w = torch.as_tensor(local, dtype=table.dtype, device=cfg.device)
            latent = torch.einsum("nglk,lkc->ngc", w, table)
            x = self.model.decode(latent).cpu().numpy().astype(np.float64)
        return self.normalizer.unnormalize(x, inplace=True)

    def _centre_latent(self) -> "torch.Tensor":
        """(groups, c) quantized latent of the all-zero normalized chunk (the normalized centre)."""
        import torch

        with torch.no_grad():
            codes = self.model.codes(torch.zeros(1, self.chunk_size, self.action_dim, device=self.config.device))
            return self.model.quantizer.decode_levels(codes).sum(-2)[0]

    def _decode(self, batch: TokenBatch) -> tuple[np.ndarray, np.ndarray, list[str]]:
        t = self.tokens_per_chunk
        reasons = [""] * len(batch)
        ids, present = batch.padded(t)
        malformed = batch.lengths != t
        for i in np.flatnonzero(malformed).tolist():
            m = int(batch.lengths[i])
            what = "extra ids dropped" if m > t else "missing levels add nothing, missing groups take the centre code"
            reasons[i] = f"{m} tokens, expected {t}: {what}"
        k, offsets = self.config.codes_per_level, self.level_offsets()[None, :]
        local = ids - offsets
        wrong = present & ((local < 0) | (local >= k))
        for i in np.flatnonzero(wrong.any(1)):
            pos = np.flatnonzero(wrong[i])
            msg = f"{pos.size} id(s) outside their level's range (first at position {int(pos[0])}): clipped into it"
            reasons[i] = "; ".join(r for r in (reasons[i], msg) if r)
        malformed |= wrong.any(1)
        ids = np.clip(local, 0, k - 1) + offsets
        return self.decode_array(ids, present), malformed, reasons

    # ------------------------------------------------------------------ persistence
    def _save_files(self, directory: Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(directory / MODEL_FILE), metadata={"format": "pt"})

    def _load_files(self, directory: Path) -> None:
        from action_tokenizers.io import load_safetensors

        path = directory / MODEL_FILE
        state = load_safetensors(path, what="VQ tokenizer directory (no weights)", framework="torch")
        model = self._build_model()
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{path} does not match the saved config (h={self.chunk_size}, d={self.action_dim}, "
                             f"{self.config.quantizer}): {e}") from e
        bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
        if bad:
            raise ValueError(f"{path} holds non-finite values in {bad}: the weights are corrupted")
        self.config.device = _available_device(self.config.device, path)
        self.model = model.to(self.config.device).eval()


def _available_device(device: str, path: Path) -> str:
    """A saved device is a preference: without it on this machine, load on the CPU with a warning."""
    import warnings

    import torch

    kind = device.split(":")[0]
    missing = (kind == "cuda" and not torch.cuda.is_available()) or (kind == "mps" and not torch.backends.mps.is_available())
    if not missing:
        return device
    warnings.warn(f"{path} was saved for device {device!r}, which this machine lacks; loading on the CPU",
                  RuntimeWarning, stacklevel=3)
    return "cpu"


# (groups, levels, codebook_size) swept for the rate-distortion plot: codebook size, depth and
# groups each varied around the default (2, 2, 256); tokens per chunk 1..8.
SWEEP = ((1, 1, 64), (2, 1, 256), (2, 2, 16), (2, 2, 64), (2, 2, 256), (2, 3, 256), (4, 2, 256))


def sweep_settings(max_steps: int = 1500, **overrides: Any) -> list[tuple[str, Callable[[], VQTokenizer]]]:
    """``(label, factory)`` pairs for the rate-distortion sweep (see ``SWEEP``); shorter training than the default.

    Each setting needs at least ``codebook_size / groups`` training chunks (256 for the largest).
    """
    def make(g: int, lv: int, k: int) -> Callable[[], VQTokenizer]:
        return lambda: VQTokenizer(groups=g, levels=lv, codebook_size=k, max_steps=max_steps, **overrides)

    return [(f"rvq g{g} L{lv} K{k}", make(g, lv, k)) for g, lv, k in SWEEP]


def split_held_out(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held_out): random blocks of 32 consecutive chunks held out; none if < 2 blocks."""
    blocks = np.arange(n) // _HELD_OUT_BLOCK
    n_blocks = int(blocks[-1]) + 1 if n else 0
    n_held = int(round(fraction * n_blocks))
    if n_blocks < 2 or n_held == 0:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    held_blocks = np.random.default_rng(seed).choice(n_blocks, size=min(n_held, n_blocks - 1), replace=False)
    held = np.isin(blocks, held_blocks)
    return np.flatnonzero(~held), np.flatnonzero(held)
