"""``AutoActionTokenizer``: load any saved tokenizer by the class named in its config."""

from __future__ import annotations

import importlib
from pathlib import Path

from action_tokenizers.base import CONFIG_FILE, ActionTokenizer
from action_tokenizers.io import read_json

# class name -> module; modules are imported only when a directory needs them.
TOKENIZER_CLASSES = {
    "BinningTokenizer": "action_tokenizers.binning",
    "FASTTokenizer": "action_tokenizers.fast",
    "VQTokenizer": "action_tokenizers.vq",
}
# family name (CLI ``--tokenizer``) -> class name
FAMILIES = {"binning": "BinningTokenizer", "fast": "FASTTokenizer", "vq": "VQTokenizer"}
PUBLISHED_FAST_CONFIG = "processor_config.json"


def tokenizer_class(name: str) -> type[ActionTokenizer]:
    """Class by class name or family name, with the valid names in the error."""
    cls_name = FAMILIES.get(name, name)
    if cls_name not in TOKENIZER_CLASSES:
        raise ValueError(f"unknown tokenizer {name!r}; valid: {sorted(FAMILIES)} (or {sorted(TOKENIZER_CLASSES)})")
    return getattr(importlib.import_module(TOKENIZER_CLASSES[cls_name]), cls_name)


class AutoActionTokenizer:
    """``AutoActionTokenizer.from_pretrained(dir_or_repo_id)`` returns the right family."""

    def __init__(self) -> None:
        raise TypeError("use AutoActionTokenizer.from_pretrained(dir_or_repo_id)")

    @staticmethod
    def from_pretrained(path_or_repo_id: str | Path, revision: str | None = None) -> ActionTokenizer:
        from action_tokenizers.hub import resolve_directory

        directory = resolve_directory(path_or_repo_id, revision=revision)
        if not (directory / CONFIG_FILE).is_file() and (directory / PUBLISHED_FAST_CONFIG).is_file():
            return tokenizer_class("FASTTokenizer")._from_directory(directory)
        name = read_json(directory / CONFIG_FILE, what="tokenizer config").get("tokenizer_class")
        if name is None:
            raise ValueError(f"{directory / CONFIG_FILE} has no 'tokenizer_class'; valid: {sorted(TOKENIZER_CLASSES)}")
        return tokenizer_class(name)._from_directory(directory)
