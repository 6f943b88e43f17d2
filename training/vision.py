"""Image encoders behind the observation-encoder interface: camera frames + proprioception -> LM embeddings.

``ImageStateEncoder`` maps a batch holding ``observation.images.<camera>`` (``(b, C, H, W)`` float in
[0, 1], LeRobot's batch convention, or ``(b, H, W, C)`` uint8, the dataset convention) and
``observation.state`` to ``(b, k, e)`` input embeddings: ``image_tokens`` positions per camera,
then the state projection's positions. The task text stays in the prompt as tokens, so images,
proprioception and the task reach the LM together (``training.model.PolicyModel.embed``).

Backbones (``vision_encoder``):

* ``"cnn"`` (default): a small convolutional network trained from scratch, with DrQ-style random
  shifts while training (pad by ``shift`` pixels with edge values, crop back at a random offset per
  image), the augmentation LeRobot's image policies use in place of large pretrained encoders on
  small demo sets;
* any transformers vision model by Hub name or local path (``ViTModel``, ``ResNetModel``,
  ``Dinov2Model``, ...): loaded with ``AutoModel``, frames resized to its ``image_size`` and
  normalized with its image processor's mean/std, features from ``pooler_output`` (or the mean of
  ``last_hidden_state``). The backbone's config is saved inside the encoder's config, so a policy
  directory rebuilds it offline with ``AutoModel.from_config`` and loads its fine-tuned weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.observation import ENCODERS, ObservationEncoder, StateProjection

__all__ = ["CNN", "ImageRegressionNet", "ImageStateEncoder", "build_backbone", "check_image_shape", "image_tensor", "random_shift"]

CNN_NAME = "cnn"
MIN_SIDE = 16  # the CNN halves the side three times; smaller frames leave nothing to pool
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def check_image_shape(shape: tuple[int, ...], key: str, expected: tuple[int, int, int] | None = None) -> None:
    """Reject frames a policy cannot take, before any training: ``(H, W, 3)``, sides >= 16, or ``expected``."""
    shape = tuple(int(x) for x in shape)
    if expected is not None and shape != tuple(expected):
        raise ValueError(f"{key} frames have shape {shape} (H, W, C) but the image encoder was built for "
                         f"{tuple(expected)}; render or collect at that size")
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"{key} frames have shape {shape}; expected (height, width, 3) RGB frames")
    if min(shape[:2]) < MIN_SIDE:
        raise ValueError(f"{key} frames are {shape[0]}x{shape[1]}; the image encoder needs sides >= {MIN_SIDE}")


def image_tensor(x: Any, key: str, hwc: tuple[int, int, int]) -> torch.Tensor:
    """Frames as ``(b, C, H, W)`` float32 in [0, 1] from uint8 ``(b, H, W, C)`` or float ``(b, C, H, W)``."""
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if t.ndim == 3:
        t = t[None]
    h, w, c = hwc
    if t.dtype == torch.uint8:
        if t.ndim != 4 or tuple(t.shape[1:]) != (h, w, c):
            raise ValueError(f"{key} must be uint8 (b, {h}, {w}, {c}) frames, got {tuple(t.shape)}")
        return t.permute(0, 3, 1, 2).float().div_(255.0)
    if t.ndim != 4 or tuple(t.shape[1:]) != (c, h, w):
        raise ValueError(f"{key} must be float (b, {c}, {h}, {w}) in [0, 1] or uint8 (b, {h}, {w}, {c}); "
                         f"got {tuple(t.shape)} {t.dtype}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{key} holds non-finite pixel values")
    return t.float()


def random_shift(x: torch.Tensor, pad: int) -> torch.Tensor:
    """DrQ augmentation: pad ``(b, c, h, w)`` by ``pad`` with edge values, crop back at a random offset per image."""
    if pad <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]  # (b, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]  # (b, 1, 1, w)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]  # (b, c, h, w)


class CNN(nn.Module):
    """Three stride-2 convolutions, 4x4 average pooling, one linear layer: ``(b, 3, H, W)`` -> ``(b, features)``."""

    def __init__(self, features: int = 256, width: int = 32) -> None:
        super().__init__()
        self.features = features
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(2 * width * 16, features), nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0)  # [0, 1] -> [-1, 1]


class _HFBackbone(nn.Module):
    """A transformers vision model as ``(b, 3, H, W)`` in [0, 1] -> ``(b, features)``."""

    def __init__(self, model: nn.Module, image_size: int | None, mean: tuple, std: tuple) -> None:
        super().__init__()
        self.model, self.image_size = model, image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        cfg = model.config
        self.features = int(getattr(cfg, "hidden_size", 0) or (getattr(cfg, "hidden_sizes", None) or [0])[-1])
        if self.features < 1:
            raise ValueError(f"cannot tell the feature size of {type(model).__name__} (no hidden_size/hidden_sizes)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.image_size and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        out = self.model(pixel_values=(x - self.mean) / self.std)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state.mean(1)
        return pooled.reshape(x.shape[0], -1)


def build_backbone(name: str, backbone_config: dict[str, Any] | None = None,
                   features: int = 256) -> tuple[nn.Module, dict[str, Any] | None]:
    """``"cnn"`` or a transformers vision model (name/path, or its saved config): (module, config to save)."""
    if name == CNN_NAME:
        return CNN(features), None
    from transformers import AutoConfig, AutoModel

    if backbone_config is not None:  # rebuilding a saved policy: architecture from the config, weights follow
        cfg = dict(backbone_config)
        arch = {k: v for k, v in cfg.pop("config").items() if k != "model_type"}
        hf_config = AutoConfig.for_model(cfg.pop("model_type"), **arch)
        model, norm = AutoModel.from_config(hf_config), cfg
    else:
        try:
            model = AutoModel.from_pretrained(name)
        except (OSError, ValueError) as e:
            raise ValueError(f"--vision-encoder {name!r} is neither 'cnn' nor a transformers vision model "
                             f"that loads offline ({type(e).__name__}: {e})") from e
        norm = _normalization(name)
        hf_config = model.config
    size = getattr(hf_config, "image_size", None)
    size = int(size[0] if isinstance(size, (list, tuple)) else size) if size else None
    saved = {"model_type": hf_config.model_type, "config": hf_config.to_diff_dict(), **norm}
    return _HFBackbone(model, size, tuple(norm["mean"]), tuple(norm["std"])), saved


def _normalization(name: str) -> dict[str, list[float]]:
    """The backbone's image processor mean/std (ImageNet's when it ships none)."""
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(name)
        mean, std = list(proc.image_mean), list(proc.image_std)
    except (OSError, ValueError, AttributeError, TypeError):
        mean, std = list(_IMAGENET_MEAN), list(_IMAGENET_STD)
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


class ImageStateEncoder(ObservationEncoder):
    """Cameras (shared backbone, ``image_tokens`` positions each) + optional state -> ``(b, k, e)``."""

    name = "image_state"

    def __init__(self, image_keys: list[str] | tuple[str, ...], image_shape: list[int] | tuple[int, int, int],
                 embed_dim: int, state_dim: int = 0, state_key: str = "observation.state", image_tokens: int = 1,
                 state_tokens: int = 1, vision_encoder: str = CNN_NAME, shift: int = 4, features: int = 256,
                 backbone_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        if not image_keys:
            raise ValueError("image_keys must name at least one camera, e.g. ('observation.images.corner2',)")
        if embed_dim < 1 or image_tokens < 1 or state_tokens < 1 or shift < 0 or state_dim < 0:
            raise ValueError(f"embed_dim, image_tokens, state_tokens must be >= 1 and shift, state_dim >= 0; got "
                             f"{embed_dim}, {image_tokens}, {state_tokens}, {shift}, {state_dim}")
        self.image_keys, self.image_shape = tuple(image_keys), tuple(int(x) for x in image_shape)
        for key in self.image_keys:
            check_image_shape(self.image_shape, key)
        self.embed_dim, self.image_tokens, self.state_tokens = embed_dim, image_tokens, state_tokens
        self.vision_encoder, self.shift, self.state_dim, self.state_key = vision_encoder, shift, state_dim, state_key
        self.backbone, self.backbone_config = build_backbone(vision_encoder, backbone_config, features)
        self.features = features
        self.image_proj = nn.Linear(self.backbone.features, image_tokens * embed_dim)
        nn.init.normal_(self.image_proj.weight, std=0.02)
        nn.init.zeros_(self.image_proj.bias)
        self.state = StateProjection(state_dim, embed_dim, state_tokens, state_key) if state_dim else None
        self.keys = (*self.image_keys, state_key) if state_dim else self.image_keys
        self.n_tokens = len(self.image_keys) * image_tokens + (state_tokens if state_dim else 0)

    def fit(self, states: np.ndarray | None) -> "ImageStateEncoder":
        """State standardization from training states (the image path needs no statistics)."""
        if self.state is not None:
            self.state.fit(states)
        return self

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        device = self.image_proj.weight.device
        missing = [k for k in self.keys if k not in batch]
        if missing:
            raise KeyError(f"the observation batch lacks {missing}; it has {sorted(batch)}")
        tokens = []
        for key in self.image_keys:
            x = image_tensor(batch[key], key, self.image_shape).to(device)  # (b, 3, H, W)
            if self.training and self.vision_encoder == CNN_NAME:
                x = random_shift(x, self.shift)
            z = self.image_proj(self.backbone(x))  # (b, image_tokens * e)
            tokens.append(z.view(x.shape[0], self.image_tokens, self.embed_dim))
        if self.state is not None:
            tokens.append(self.state(batch))
        return torch.cat(tokens, dim=1)  # (b, k, e)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "image_keys": list(self.image_keys), "image_shape": list(self.image_shape),
                "embed_dim": self.embed_dim, "state_dim": self.state_dim, "state_key": self.state_key,
                "image_tokens": self.image_tokens, "state_tokens": self.state_tokens,
                "vision_encoder": self.vision_encoder, "shift": self.shift, "features": self.features,
                "backbone_config": self.backbone_config}


ENCODERS[ImageStateEncoder.name] = ImageStateEncoder


class ImageRegressionNet(nn.Module):
    """The regression baseline's network with cameras: the same image encoder feeds its MLP.

    ``x`` is what the state-only baseline takes (standardized state + task one-hot); the frames go
    through an ``ImageStateEncoder`` without a state part, and its ``(b, k, e)`` output, flattened,
    is concatenated to ``x`` before the MLP.
    """

    def __init__(self, encoder: ImageStateEncoder, mlp: nn.Module) -> None:
        super().__init__()
        if encoder.state is not None:
            raise ValueError("the regression baseline standardizes the state itself; build the encoder with state_dim=0")
        self.encoder, self.mlp = encoder, mlp
        self.image_keys, self.image_shape = encoder.image_keys, encoder.image_shape

    @property
    def width(self) -> int:
        """Image features added to the MLP's input."""
        return self.encoder.n_tokens * self.encoder.embed_dim

    def forward(self, x: torch.Tensor, images: dict[str, Any]) -> torch.Tensor:
        z = self.encoder({k: images[k] for k in self.image_keys}).flatten(1)  # (b, k * e)
        return self.mlp(torch.cat([x, z.to(x.dtype)], dim=1))
