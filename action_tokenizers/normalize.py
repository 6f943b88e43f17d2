"""Per-dimension action normalizers: raw action units <-> roughly [-1, 1].

Every tokenizer owns one of these, fitted with it (or read from a LeRobot dataset's
``meta/stats.json``) and saved beside it, so a tokenizer directory alone turns raw actions
into ids and back.

Modes
-----
``quantile``  q01/q99 -> [-1, 1], clipped (the default; OpenVLA and openpi do this).
``minmax``    min/max -> [-1, 1], clipped.
``meanstd``   (x - mean) / std, not clipped.
``identity``  x unchanged (FAST's published tokenizers expect pre-normalized inputs).

A per-dimension ``mask`` leaves chosen dimensions untouched (e.g. a binary gripper).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MODES = ("quantile", "minmax", "meanstd", "identity")
_EPS = 1e-6  # scale floor, relative to the value's magnitude: a constant dimension stays invertible in float64


def _floor(scale: np.ndarray, center: np.ndarray) -> np.ndarray:
    return np.maximum(scale, _EPS * np.maximum(1.0, np.abs(center)))


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"normalization must be one of {MODES}, got {mode!r}")
    return mode


@dataclass
class Normalizer:
    """Affine per-dimension map ``y = (x - center) / scale`` (clipped to [-1, 1] for bounded modes).

    Fields are stored as float64 arrays of shape ``(d,)``; ``mask[i] = False`` leaves dimension i
    as it is. ``Normalizer(mode)`` is unfitted until ``fit`` or ``from_stats`` sets the arrays.
    """

    mode: str = "quantile"
    center: np.ndarray | None = None
    scale: np.ndarray | None = None
    mask: np.ndarray | None = None
    # Dimensions the caller wants left alone, by index; turned into ``mask`` at fit time.
    skip_dims: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        check_mode(self.mode)

    # ------------------------------------------------------------------ fitting
    @property
    def is_fitted(self) -> bool:
        return self.mode == "identity" or self.center is not None

    @property
    def clips(self) -> bool:
        """Bounded modes clip to [-1, 1]: values beyond the fitted range are saturated, not errors."""
        return self.mode in ("quantile", "minmax")

    @property
    def dim(self) -> int | None:
        return None if self.center is None else int(self.center.shape[0])

    def fit(self, actions: np.ndarray) -> "Normalizer":
        """Fit from raw actions of shape ``(..., d)`` (chunks are flattened over all leading axes)."""
        x = np.asarray(actions, dtype=np.float64).reshape(-1, np.shape(actions)[-1])
        if x.shape[0] == 0:
            raise ValueError("cannot fit a normalizer on zero actions")
        d = x.shape[1]
        if self.mode == "quantile":
            lo, hi = np.quantile(x, 0.01, axis=0), np.quantile(x, 0.99, axis=0)
            self._set_range(lo, hi)
        elif self.mode == "minmax":
            self._set_range(x.min(axis=0), x.max(axis=0))
        elif self.mode == "meanstd":
            self.center = x.mean(axis=0)
            self.scale = _floor(x.std(axis=0), self.center)
        else:  # identity
            self.center, self.scale = np.zeros(d), np.ones(d)
        self._set_mask(d)
        return self

    def from_stats(self, stats: dict, key: str = "action") -> "Normalizer":
        """Fit from a LeRobot ``meta/stats.json`` entry (``q01``/``q99``, ``min``/``max``, ``mean``/``std``)."""
        if key not in stats:
            raise KeyError(f"stats have no entry {key!r}; available: {sorted(stats)}")
        entry = stats[key]
        need = {"quantile": ("q01", "q99"), "minmax": ("min", "max"), "meanstd": ("mean", "std")}.get(self.mode)
        if need is None:
            d = len(np.ravel(entry.get("mean", entry.get("min"))))
            self.center, self.scale = np.zeros(d), np.ones(d)
        else:
            missing = [k for k in need if k not in entry]
            if missing:
                raise KeyError(
                    f"stats[{key!r}] lacks {missing} needed for {self.mode!r} normalization; has {sorted(entry)}"
                )
            a, b = (np.asarray(entry[k], dtype=np.float64).ravel() for k in need)
            if self.mode == "meanstd":
                self.center, self.scale = a, _floor(b, a)
            else:
                self._set_range(a, b)
        self._set_mask(self.center.shape[0])
        return self

    def _set_range(self, lo: np.ndarray, hi: np.ndarray) -> None:
        self.center = (hi + lo) / 2.0
        self.scale = _floor((hi - lo) / 2.0, self.center)

    def _set_mask(self, d: int) -> None:
        bad = [i for i in self.skip_dims if not -d <= i < d]
        if bad:
            raise ValueError(f"skip_dims {bad} out of range for action dimension {d}")
        mask = np.ones(d, dtype=bool)
        mask[list(self.skip_dims)] = False
        self.mask = mask

    # ------------------------------------------------------------------ applying
    def _arrays(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        if self.mode == "identity" and self.center is None:
            return np.zeros(d), np.ones(d)
        if self.center is None or self.scale is None:
            raise RuntimeError("normalizer is not fitted: call fit(actions) or from_stats(stats) first")
        if self.center.shape[0] != d:
            raise ValueError(f"normalizer was fitted for action dimension {self.center.shape[0]}, got {d}")
        center = np.where(self.mask, self.center, 0.0) if self.mask is not None else self.center
        scale = np.where(self.mask, self.scale, 1.0) if self.mask is not None else self.scale
        return center, scale

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        """Raw ``(..., d)`` -> normalized ``(..., d)``; a new array, the input is not modified."""
        x = np.asarray(actions, dtype=np.float64)
        center, scale = self._arrays(x.shape[-1])
        y = (x - center) / scale
        if self.clips:
            clipped = np.clip(y, -1.0, 1.0)
            y = np.where(self.mask, clipped, y) if self.mask is not None else clipped
        return y

    def unnormalize(self, normed: np.ndarray, inplace: bool = False) -> np.ndarray:
        """Normalized ``(..., d)`` -> raw ``(..., d)``; ``inplace`` overwrites a float64 input (and
        returns it as is for identity), saving a pass over large decoded batches."""
        y = np.asarray(normed, dtype=np.float64)
        center, scale = self._arrays(y.shape[-1])
        if not inplace or y is not normed:
            return y * scale + center
        if self.mode != "identity":
            y *= scale
            y += center
        return y

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict:
        return {"mode": self.mode, "skip_dims": list(self.skip_dims)}

    def tensors(self) -> dict[str, np.ndarray]:
        if self.center is None:
            return {}
        return {
            "normalizer.center": self.center.astype(np.float64),
            "normalizer.scale": self.scale.astype(np.float64),
            "normalizer.mask": self.mask.astype(np.uint8),
        }

    @classmethod
    def from_saved(cls, config: dict, tensors: dict[str, np.ndarray]) -> "Normalizer":
        norm = cls(mode=config.get("mode", "quantile"), skip_dims=tuple(config.get("skip_dims", ())))
        if "normalizer.center" in tensors:
            norm.center = np.asarray(tensors["normalizer.center"], dtype=np.float64)
            norm.scale = np.asarray(tensors["normalizer.scale"], dtype=np.float64)
            norm.mask = np.asarray(tensors["normalizer.mask"]).astype(bool)
            shapes = {norm.center.shape, norm.scale.shape, norm.mask.shape}
            if len(shapes) != 1 or len(norm.center.shape) != 1:
                raise ValueError(f"normalizer arrays have inconsistent shapes {sorted(shapes)}")
            if not (np.all(np.isfinite(norm.center)) and np.all(np.isfinite(norm.scale)) and np.all(norm.scale > 0)):
                raise ValueError("normalizer arrays contain non-finite values or non-positive scales")
        elif norm.mode != "identity":
            raise ValueError(f"saved {norm.mode!r} normalizer has no fitted arrays (normalizer.center missing)")
        return norm
