"""``AutoActionTokenizer``: load any saved tokenizer by the class named in its config."""

from __future__ import annotations

from pathlib import Path

from action_tokenizers.base import CONFIG_FILE, ActionTokenizer
from action_tokenizers.io import read_json
from action_tokenizers.registry import FAMILIES, tokenizer_class

__all__ = ["AutoActionTokenizer", "FAMILIES", "tokenizer_class"]

PUBLISHED_FAST_CONFIG = "processor_config.json"


class AutoActionTokenizer:
    """``AutoActionTokenizer.from_pretrained(dir_or_repo_id)`` returns the right family."""

    def __init__(self) -> None:
        raise TypeError("use AutoActionTokenizer.from_pretrained(dir_or_repo_id)")

    @staticmethod
    def from_pretrained(path_or_repo_id: str | Path, revision: str | None = None) -> ActionTokenizer:
        from action_tokenizers.hub import resolve_directory

        directory = resolve_directory(path_or_repo_id, revision=revision)
        if not (directory / CONFIG_FILE).is_file() and (directory / PUBLISHED_FAST_CONFIG).is_file():
            return tokenizer_class("fast")._from_directory(directory)
        name = read_json(directory / CONFIG_FILE, what="tokenizer config").get("tokenizer_class")
        if name is None:
            raise ValueError(f"{directory / CONFIG_FILE} has no 'tokenizer_class'; "
                             f"valid: {sorted(f.class_name for f in FAMILIES.values())}")
        return tokenizer_class(name)._from_directory(directory)
