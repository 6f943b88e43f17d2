"""The README model card written into every saved tokenizer directory.

The front matter is built with huggingface_hub's ``ModelCardData`` (license, library_name,
``pipeline_tag: robotics``, tags, and the fit dataset where it is a Hub id), so the Hub indexes
the card like any other; the body carries the configuration and the measured figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

LICENSE = "apache-2.0"
"""The project's license (pyproject.toml), stated on every card it writes."""
LIBRARY_NAME = "action-tokenizers"
PIPELINE_TAG = "robotics"

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


def card_metadata(tags: list[str], datasets: list[object] = (), base_model: object = None) -> str:
    """The YAML front matter (without the ``---`` fences) through ``ModelCardData``; only Hub ids
    are listed as datasets and base model."""
    from huggingface_hub import ModelCardData

    from action_tokenizers.hub import hub_repo_id

    hub_datasets = [d for d in (hub_repo_id(x) for x in datasets) if d]
    data = ModelCardData(license=LICENSE, library_name=LIBRARY_NAME, pipeline_tag=PIPELINE_TAG, tags=tags,
                         datasets=hub_datasets or None, base_model=hub_repo_id(base_model))
    return data.to_yaml()


def tokenizer_card(tok: "ActionTokenizer") -> str:
    cls = type(tok).__name__
    cfg = "\n".join(f"| `{k}` | `{v}` |" for k, v in tok.config.to_dict().items())
    metrics = [(label, tok.metrics[key]) for key, label in _HEADLINE if key in tok.metrics]
    measured = (
        "\n".join(f"| {label} | {_fmt(v)} |" for label, v in metrics)
        if metrics else "| (not measured yet: run `action-tokenizers inspect`) | |"
    )
    source = getattr(tok, "source", None) or {}
    header = card_metadata(["robotics", "action-tokenizer", "vla", tok.family], [source.get("dataset")])
    return f"""---
{header}
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
