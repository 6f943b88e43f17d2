"""The README model card written into every trained policy directory.

Front matter through huggingface_hub's ``ModelCardData`` (``action_tokenizers.card.card_metadata``):
license, library_name, ``pipeline_tag: robotics``, tags, the training dataset and the base LM where
they are Hub ids; the body carries the measured figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from action_tokenizers.base import ActionTokenizer
    from training.train import TrainConfig
    from training.vocab import ActionVocab

_MEASURED = [
    ("eval_loss", "held-out loss"),
    ("eval_action_accuracy", "held-out action-token accuracy"),
    ("recon_mae", "held-out error of generated chunks (MAE, raw units)"),
    ("tokenizer_mae", "tokenizer floor: decode(encode(chunk)) MAE"),
    ("malformed", "malformed generated sequences"),
    ("generated_tokens_per_chunk", "generated tokens per chunk"),
]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def policy_card(tok: "ActionTokenizer", vocab: "ActionVocab", cfg: "TrainConfig", meta: dict[str, Any],
                metrics: dict[str, Any]) -> str:
    final = metrics.get("final", {})
    from training.generation import DecodingPlan

    plan = DecodingPlan.from_dict(meta["decoding"])
    if plan.fixed:
        decoding = f"exactly {plan.tokens_per_chunk} action ids per chunk"
    elif plan.length_aware:
        decoding = f"length-aware: every sequence decodes to exactly {plan.units} values, then the end marker"
    else:
        decoding = f"until the end marker, at most {plan.max_new_tokens} ids"
    measured = [(label, final[k]) for k, label in _MEASURED if k in final]
    measured += [("training throughput (tokens/s)", metrics["tokens_per_s"]),
                 ("training time (s)", metrics["train_seconds"]), ("final train loss", metrics["train_loss"])]
    rows = "\n".join(f"| {a} | {_fmt(b)} |" for a, b in measured)
    config = "\n".join(f"| `{k}` | `{v}` |" for k, v in cfg.to_dict().items() if k not in ("dataset", "tokenizer", "out"))
    from action_tokenizers.card import card_metadata

    header = card_metadata(["robotics", "vla", "action-tokenizer", tok.family, "tokenized-action-policy"],
                           [cfg.dataset], base_model=cfg.model)
    return f"""---
{header}
---

# Tokenized-action policy ({tok.family})

A causal LM (`{meta["base_model"]}`, {meta["n_params"]:,} parameters) fine-tuned with next-token
cross-entropy on action tokens from a `{type(tok).__name__}` (chunks of {tok.chunk_size} steps x
{tok.action_dim} dimensions, {tok.tokens_per_chunk or "variable"} tokens per chunk), conditioned on the
task text and `{meta["state_key"]}` ({meta["state_dim"]}-D, a learned projection into the embedding space).

## Action ids in the LM vocabulary

Local action id `i` (the action tokenizer's output) is LM id:

{vocab.describe()}

Sequence: `task text` + observation embedding + `begin-of-action` + action ids + `end-of-action`;
the loss covers the action ids and the end marker only. The mapping is saved in `action_vocab.json`.

Decoding is constrained: only action ids and the end marker can be generated
({decoding}).

## Measured (held-out episodes of the training dataset)

| metric | value |
|---|---|
{rows}

## Usage

```python
from training import TokenizedPolicy

policy = TokenizedPolicy.from_pretrained("path/to/this/dir")
chunks = policy.predict_action_chunk({{"{meta["state_key"]}": states, "task": ["..."] * len(states)}})  # (B, {tok.chunk_size}, {tok.action_dim})
policy.last_stats  # malformed sequences and latency of that call
```

## Training configuration

| field | value |
|---|---|
{config}
"""
