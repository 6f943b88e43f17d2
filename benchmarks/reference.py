"""Faithful baselines, implemented here from the published algorithms, for the tokenizer benchmark.

``ReferenceFAST`` follows ``processing_action_tokenizer.py`` of ``physical-intelligence/fast``
(``UniversalActionProcessor``) step by step: DCT-II (orthonormal) over time, ``np.around(c * scale)``,
row-major flatten of the (h, d) coefficient matrix, ``chr(c - min_token)`` (negatives clipped to 0),
byte-level BPE trained with the full fitted range as initial alphabet, ``min_frequency=2``,
``max_token_length=10000``; encode and decode loop over chunks one at a time; any malformed sequence
decodes to an all-zero chunk. The one deliberate difference: the BPE model is driven through
``tokenizers.Tokenizer`` instead of ``transformers.PreTrainedTokenizerFast`` (a thin wrapper over
the same object; ``tests/test_fast.py`` checks they give the same ids and strings), so the baseline
runs without ``trust_remote_code`` and under transformers >= 5.1.

``openvla_encode``/``openvla_decode`` are OpenVLA's ``ActionTokenizer`` binning: 256 edges
``linspace(-1, 1, 256)``, ``digitize(clip(x, -1, 1)) `` and bin centres, one chunk at a time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.fft import dct, idct


class ReferenceFAST:
    """The published FAST processor's algorithm (per-chunk loop, byte-level BPE, zeros on failure)."""

    def __init__(self, bpe, scale: float = 10, vocab_size: int = 1024, min_token: int = 0,
                 time_horizon: int | None = None, action_dim: int | None = None) -> None:
        self.bpe = bpe  # tokenizers.Tokenizer
        self.scale = scale
        self.vocab_size = vocab_size
        self.min_token = min_token
        self.time_horizon = time_horizon
        self.action_dim = action_dim

    @classmethod
    def fit(cls, action_data: list[np.ndarray], scale: float = 10, vocab_size: int = 1024,
            time_horizon: int | None = None, action_dim: int | None = None) -> "ReferenceFAST":
        from tokenizers import ByteLevelBPETokenizer
        from tokenizers.trainers import BpeTrainer

        dct_tokens = [dct(a, axis=0, norm="ortho").flatten() for a in action_data]
        max_token = int(np.around(np.concatenate(dct_tokens) * scale).max())
        min_token = int(np.around(np.concatenate(dct_tokens) * scale).min())
        if max_token - min_token > vocab_size:
            raise ValueError(f"Vocab size {vocab_size} is too small for the range of tokens {max_token - min_token}")

        def _token_iter():
            for tokens in dct_tokens:
                rounded = (np.around(tokens * scale) - min_token).astype(int)
                yield "".join(map(chr, rounded))

        bpe = ByteLevelBPETokenizer()
        alphabet = [chr(i) for i in range(max_token - min_token + 1)]
        trainer = BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False, special_tokens=[],
                             initial_alphabet=alphabet, max_token_length=10000)
        bpe._tokenizer.train_from_iterator(_token_iter(), trainer=trainer)
        return cls(bpe._tokenizer, scale=scale, vocab_size=vocab_size, min_token=min_token,
                   time_horizon=time_horizon, action_dim=action_dim)

    def __call__(self, action_chunk: np.ndarray) -> list[list[int]]:
        """Encode (n, h, d) chunks, one Python iteration per chunk (as published)."""
        if action_chunk.ndim == 2:
            action_chunk = action_chunk[None, ...]
        dct_coeff = dct(action_chunk, axis=1, norm="ortho")
        dct_coeff = np.around(dct_coeff * self.scale)
        tokens = []
        for elem in dct_coeff:
            token_str = "".join(map(chr, np.maximum(elem.flatten() - self.min_token, 0).astype(int)))
            tokens.append(self.bpe.encode(token_str).ids)
        return tokens

    def decode(self, tokens: list[list[int]]) -> np.ndarray:
        """Decode id lists; a sequence that does not give exactly h * d coefficients -> all zeros."""
        h, d = self.time_horizon, self.action_dim
        decoded_actions = []
        for token in tokens:
            try:
                decoded_tokens = self.bpe.decode(token)
                coeff = np.array(list(map(ord, decoded_tokens))) + self.min_token
                coeff = coeff.reshape(-1, d)
                assert coeff.shape == (h, d), f"Decoded DCT coefficients have shape {coeff.shape}, expected ({h}, {d})"
            except Exception:
                coeff = np.zeros((h, d))
            decoded_actions.append(idct(coeff / self.scale, axis=0, norm="ortho"))
        return np.stack(decoded_actions)

    def save_pretrained(self, directory: str | Path, layout: str = "root") -> Path:
        """Write the published layout: processor_config.json + tokenizer.json at the root or in bpe_tokenizer/."""
        if layout not in ("root", "bpe_tokenizer"):
            raise ValueError(f"layout must be 'root' or 'bpe_tokenizer', got {layout!r}")
        directory = Path(directory)
        tok_dir = directory if layout == "root" else directory / "bpe_tokenizer"
        tok_dir.mkdir(parents=True, exist_ok=True)
        self.bpe.save(str(tok_dir / "tokenizer.json"))
        (tok_dir / "tokenizer_config.json").write_text(json.dumps(
            {"clean_up_tokenization_spaces": False, "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2))
        config = {
            "action_dim": self.action_dim,
            "auto_map": {"AutoProcessor": "processing_action_tokenizer.UniversalActionProcessor"},
            "min_token": self.min_token,
            "processor_class": "UniversalActionProcessor",
            "scale": self.scale,
            "time_horizon": self.time_horizon,
            "vocab_size": self.vocab_size,
        }
        (directory / "processor_config.json").write_text(json.dumps(config, indent=2))
        return directory

    @classmethod
    def from_directory(cls, directory: str | Path) -> "ReferenceFAST":
        from tokenizers import Tokenizer

        directory = Path(directory)
        cfg = json.loads((directory / "processor_config.json").read_text())
        path = directory / "tokenizer.json"
        if not path.is_file():
            path = directory / "bpe_tokenizer" / "tokenizer.json"
        return cls(Tokenizer.from_file(str(path)), scale=cfg["scale"], vocab_size=cfg["vocab_size"],
                   min_token=cfg["min_token"], time_horizon=cfg["time_horizon"], action_dim=cfg["action_dim"])


# ---------------------------------------------------------------------- OpenVLA binning
OPENVLA_BINS = np.linspace(-1.0, 1.0, 256)
OPENVLA_CENTERS = (OPENVLA_BINS[:-1] + OPENVLA_BINS[1:]) / 2.0


def openvla_encode(chunks: np.ndarray) -> list[list[int]]:
    """OpenVLA: per chunk, ``digitize(clip(a, -1, 1), bins)``; local ids ``0..255`` (time-major)."""
    out = []
    for chunk in chunks:
        a = np.clip(chunk.reshape(-1), -1.0, 1.0)
        out.append((np.digitize(a, OPENVLA_BINS) - 1).tolist())
    return out


def openvla_decode(tokens: list[list[int]], h: int, d: int) -> np.ndarray:
    """OpenVLA: ``bin_centers[clip(id, 0, 254)]`` per chunk; a wrong-length sequence -> zeros."""
    out = []
    for seq in tokens:
        ids = np.clip(np.asarray(seq, dtype=np.int64), 0, OPENVLA_CENTERS.shape[0] - 1)
        out.append(OPENVLA_CENTERS[ids].reshape(h, d) if ids.size == h * d else np.zeros((h, d)))
    return np.stack(out)


def smooth_chunks(n: int, h: int, d: int, seed: int = 0) -> np.ndarray:
    """Smooth synthetic chunks in [-1, 1]: three low-frequency sinusoids per dimension plus 1% noise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, h)[None, :, None]
    x = np.zeros((n, h, d))
    for k in range(3):
        amp = rng.normal(0.0, 0.5 / (k + 1), (n, 1, d))
        phase = rng.uniform(0.0, 2 * np.pi, (n, 1, d))
        x += amp * np.sin(2 * np.pi * (0.5 * k + 0.25) * t + phase)
    return np.clip(x + rng.normal(0.0, 0.01, x.shape), -1.0, 1.0)
