"""Action tokenizers for VLA models: binning, VQ codebooks and FAST-style compression, one API.

Heavy modules (torch, tokenizers, LeRobot) load only when the name that needs them is used.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

# LeRobot logs a page-long traceback when torchcodec's FFmpeg libraries are missing. This toolkit
# reads actions and state only and never decodes video, so that warning is noise here.
logging.getLogger("lerobot.utils.import_utils").setLevel(logging.ERROR)

# transformers' AutoProcessor loads our saved tokenizers: registered when transformers' auto classes
# load (an import hook; transformers itself is not imported here).
from action_tokenizers.hf_processor import install as _install_hf  # noqa: E402

_install_hf()

__all__ = [
    "ActionTokenizer",
    "AutoActionTokenizer",
    "BinningTokenizer",
    "Decoded",
    "FASTTokenizer",
    "MalformedTokensError",
    "Normalizer",
    "VQTokenizer",
    "load_chunks",
]

_LAZY = {
    "ActionTokenizer": "action_tokenizers.base",
    "Decoded": "action_tokenizers.base",
    "MalformedTokensError": "action_tokenizers.base",
    "AutoActionTokenizer": "action_tokenizers.auto",
    "BinningTokenizer": "action_tokenizers.binning",
    "FASTTokenizer": "action_tokenizers.fast",
    "VQTokenizer": "action_tokenizers.vq",
    "Normalizer": "action_tokenizers.normalize",
    "load_chunks": "action_tokenizers.data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'action_tokenizers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
