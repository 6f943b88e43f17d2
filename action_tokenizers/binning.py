"""Per-scalar binning (RT-2, OpenVLA): every normalized scalar of a chunk becomes one of N bins.

Tokens are laid out time-major (``t = h * d``: step 0's d values, then step 1's, ...), as OpenVLA
emits one action after another. Uniform edges split [-1, 1] evenly; quantile edges give every bin
equal mass per dimension. Decoding returns the bin centre.

``BinningTokenizer.openvla()`` reproduces OpenVLA exactly: edges ``linspace(-1, 1, 256)``
(255 intervals), id ``digitize(clip(x, -1, 1), edges) - 1`` in 0..255, decode to the centre of
interval ``clip(id, 0, 254)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from action_tokenizers.base import ActionTokenizer, TokenBatch, TokenizerConfig

EDGE_KINDS = ("uniform", "quantile", "openvla")


@dataclass
class BinningConfig(TokenizerConfig):
    n_bins: int = 256
    """Bins per scalar (the vocabulary size)."""
    edges: str = "uniform"
    """uniform (even over [-1, 1]), quantile (equal mass per dimension) or openvla (OpenVLA's exact bins)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.edges not in EDGE_KINDS:
            raise ValueError(f"edges must be one of {EDGE_KINDS}, got {self.edges!r}")
        if not 2 <= self.n_bins <= 1 << 20:
            raise ValueError(f"n_bins must be in [2, 2**20], got {self.n_bins}")
        if self.edges == "openvla" and self.n_bins != 256:
            raise ValueError(f"OpenVLA binning has exactly 256 ids, got n_bins={self.n_bins}")


class BinningTokenizer(ActionTokenizer):
    """N bins per normalized scalar; h * d tokens per chunk; vocabulary ``n_bins``."""

    config_class = BinningConfig
    family = "binning"
    config: BinningConfig

    def __init__(self, config: BinningConfig | None = None, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.edges_: np.ndarray | None = None  # (d, n_edges): bin boundaries in normalized units
        self.centers_: np.ndarray | None = None  # (d, n_centres): decode values per id

    @classmethod
    def openvla(cls, normalization: str = "identity", **kwargs) -> "BinningTokenizer":
        """OpenVLA's 256 bins over [-1, 1] (``identity`` normalization expects pre-normalized inputs)."""
        return cls(BinningConfig(n_bins=256, edges="openvla", normalization=normalization, **kwargs))

    @property
    def vocab_size(self) -> int:
        return self.config.n_bins

    @property
    def tokens_per_chunk(self) -> int | None:
        return None if self.chunk_size is None else self.chunk_size * self.action_dim

    # ------------------------------------------------------------------ fit
    def _fit(self, x: np.ndarray) -> None:
        d, n = x.shape[2], self.config.n_bins
        if self.config.edges == "openvla":
            edges = np.tile(np.linspace(-1.0, 1.0, 256), (d, 1))
        elif self.config.edges == "uniform":
            lo, hi = self._range(x)
            edges = np.linspace(lo, hi, n + 1, axis=1)
        else:
            flat = x.reshape(-1, d)
            qs = np.quantile(flat, np.linspace(0.0, 1.0, n + 1), axis=0).T  # (d, n + 1)
            lo, hi = self._range(x)
            qs[:, 0], qs[:, -1] = lo, hi
            edges = np.maximum.accumulate(qs, axis=1)  # monotone even with repeated values
        self._set_edges(edges)

    def _range(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bin range per dimension: [-1, 1] where the normalizer bounds the data, else the data range."""
        d = x.shape[2]
        flat = x.reshape(-1, d)
        bounded = self.normalizer.clips if self.normalizer.mask is None else self.normalizer.clips & self.normalizer.mask
        lo = np.where(bounded, -1.0, np.minimum(flat.min(axis=0), -1.0))
        hi = np.where(bounded, 1.0, np.maximum(flat.max(axis=0), 1.0))
        return lo, hi

    def _set_edges(self, edges: np.ndarray) -> None:
        self.edges_ = np.asarray(edges, dtype=np.float64)
        self.centers_ = (self.edges_[:, :-1] + self.edges_[:, 1:]) / 2.0

    # ------------------------------------------------------------------ encode / decode
    def _encode(self, x: np.ndarray) -> list[list[int]]:
        return self.encode_array(x).tolist()

    def encode_array(self, x: np.ndarray) -> np.ndarray:
        """Normalized (n, h, d) -> ids (n, h * d) as one int64 array (the vectorized core)."""
        n, h, d = x.shape
        ids = np.empty((n, h, d), dtype=np.int64)
        for j in range(d):  # d is small (<= ~30); each column is vectorized over n * h
            col = x[:, :, j]
            if self.config.edges == "openvla":
                ids[:, :, j] = np.digitize(np.clip(col, -1.0, 1.0), self.edges_[j]) - 1
            else:
                inner = self.edges_[j, 1:-1]
                ids[:, :, j] = np.searchsorted(inner, col, side="right")
        return ids.reshape(n, h * d)

    def decode_array(self, ids: np.ndarray) -> np.ndarray:
        """Ids (n, h * d) in range -> normalized (n, h, d) bin centres (the vectorized core)."""
        n = ids.shape[0]
        h, d = self.chunk_size, self.action_dim
        ids = ids.reshape(n, h, d)
        top = self.centers_.shape[1] - 1
        idx = np.clip(ids, 0, top)
        return self.centers_[np.arange(d)[None, None, :], idx]

    def decode_expected(self, probs: np.ndarray) -> np.ndarray:
        """Distributions over the ids (n, h * d, n_bins), e.g. an LM's softmax -> raw (n, h, d) chunks:
        each value is the expectation of the bin centres. Bins are ordered, so the mean of a spread
        distribution lies between its likely bins, where the most likely bin's centre can sit on a
        neighbour (a classifier read out like a regressor, as in HL-Gauss)."""
        h, d = self.chunk_size, self.action_dim
        p = self._check_distributions(probs, h * d)
        centres = self.centers_[:, np.clip(np.arange(self.vocab_size), 0, self.centers_.shape[1] - 1)]  # (d, n_bins)
        x = np.einsum("nhdk,dk->nhd", p.reshape(len(p), h, d, -1), centres)
        return self.normalizer.unnormalize(x, inplace=True)

    def _decode(self, batch: TokenBatch) -> tuple[np.ndarray, np.ndarray, list[str]]:
        t = self.tokens_per_chunk
        reasons = [""] * len(batch)
        ids = batch.rows(t)
        if ids is None:
            ids = np.empty((len(batch), t), dtype=np.int64)
            for i, s in enumerate(batch.sequences()):
                ids[i] = s if len(s) == t else self._repair_length(s, reasons, i)
        malformed = batch.lengths != t
        ids = np.clip(ids, 0, self.vocab_size - 1)
        return self.decode_array(ids), malformed, reasons

    def _repair_length(self, seq: np.ndarray, reasons: list[str], i: int) -> np.ndarray:
        """Best available chunk for a wrong-length sequence: extras dropped, missing steps hold the last one."""
        t, d = self.tokens_per_chunk, self.action_dim
        if len(seq) > t:
            reasons[i] = f"{len(seq)} tokens, expected {t}: extra tokens dropped"
            return seq[:t]
        reasons[i] = f"{len(seq)} tokens, expected {t}: missing values hold the last decoded step"
        out = np.empty(t, dtype=np.int64)
        out[: len(seq)] = seq
        zero_ids = self.encode_array(np.zeros((1, 1, d)))[0]  # the bins holding 0 (the normalized centre)
        for k in range(len(seq), t):
            out[k] = out[k - d] if k >= d else zero_ids[k]
        return out

    # ------------------------------------------------------------------ persistence
    def _tensors(self) -> dict[str, np.ndarray]:
        return {"binning.edges": self.edges_}

    def _load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        if "binning.edges" not in tensors:
            raise ValueError("tensors.safetensors lacks 'binning.edges': the tokenizer directory is incomplete")
        edges = np.asarray(tensors["binning.edges"], dtype=np.float64)
        expected_cols = 256 if self.config.edges == "openvla" else self.config.n_bins + 1
        if edges.shape != (self.action_dim, expected_cols) or not np.all(np.isfinite(edges)):
            raise ValueError(
                f"binning.edges has shape {edges.shape}, expected ({self.action_dim}, {expected_cols}) finite values"
            )
        self._set_edges(edges)


SWEEP_BINS = (4, 8, 16, 32, 64, 128, 256)


def sweep_settings() -> list[tuple[str, Callable[[], BinningTokenizer]]]:
    """``(label, factory)`` pairs for the rate-distortion sweep: the bin counts in ``SWEEP_BINS``."""
    return [(f"{n} bins", lambda n=n: BinningTokenizer(n_bins=n)) for n in SWEEP_BINS]
