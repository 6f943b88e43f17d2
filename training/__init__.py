"""Causal-LM fine-tuning on tokenized actions, and the policy that generates and decodes chunks.

Heavy modules (torch, transformers) load only when a name that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ActionVocab", "TokenizedPolicy", "TrainConfig", "TrainResult", "run_train"]

_LAZY = {
    "ActionVocab": "training.vocab",
    "TokenizedPolicy": "training.policy",
    "TrainConfig": "training.train",
    "TrainResult": "training.train",
    "run_train": "training.train",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
