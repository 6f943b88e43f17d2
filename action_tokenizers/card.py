"""The README model card written into every saved tokenizer directory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from action_tokenizers.base import ActionTokenizer

_HEADLINE = [
    ("tokens_per_chunk_mean", "tokens per chunk (mean)"),
    ("compression_ratio", "compression ratio (h*d / tokens)"),
    ("bits_per_chunk", "bits per chunk"),
    ("mae_raw", "reconstruction MAE (raw units)"),
    ("max_err_raw", "max error (raw units)"),
    ("roundtrip_rate", "clean chunks that round-trip"),
]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def tokenizer_card(tok: "ActionTokenizer") -> str:
    cls = type(tok).__name__
    cfg = "\n".join(f"| `{k}` | `{v}` |" for k, v in tok.config.to_dict().items())
    metrics = [(label, tok.metrics[key]) for key, label in _HEADLINE if key in tok.metrics]
    measured = (
        "\n".join(f"| {label} | {_fmt(v)} |" for label, v in metrics)
        if metrics else "| (not measured yet: run `action-tokenizers inspect`) | |"
    )
    return f"""---
library_name: action-tokenizers
tags: [robotics, action-tokenizer, vla, {tok.family}]
---

# {cls}

An action tokenizer ({tok.family}) for vision-language-action models: it maps chunks of
{tok.chunk_size} steps x {tok.action_dim} action dimensions to local token ids
0..{tok.vocab_size - 1} (vocabulary {tok.vocab_size}; tokens per chunk:
{tok.tokens_per_chunk if tok.tokens_per_chunk is not None else "variable"}).
Normalization: `{tok.normalizer.mode}` (saved with the tokenizer).

## Configuration

| field | value |
|---|---|
{cfg}

## Measured

| metric | value |
|---|---|
{measured}

## Usage

```python
from action_tokenizers import AutoActionTokenizer

tok = AutoActionTokenizer.from_pretrained("path/or/repo-id")
ids = tok.encode(chunks)        # chunks: float array (n, {tok.chunk_size}, {tok.action_dim}) in raw units
actions = tok.decode(ids)       # (n, {tok.chunk_size}, {tok.action_dim}); malformed sequences are flagged, never zeros
```

Files are JSON and safetensors only: loading never unpickles or runs code.
"""
