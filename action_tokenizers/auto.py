"""``AutoActionTokenizer``: load any saved tokenizer by the class named in its config."""

from __future__ import annotations

from pathlib import Path

from action_tokenizers.base import CLASS_KEY, CONFIG_FILE, ActionTokenizer, saved_class_name
from action_tokenizers.io import read_json
from action_tokenizers.registry import FAMILIES, tokenizer_class

__all__ = ["AutoActionTokenizer", "FAMILIES", "load_tokenizer", "resolve_tokenizer_path", "tokenizer_class"]

PUBLISHED_FAST_CONFIG = "processor_config.json"
FIT_TOKENIZER_SUBFOLDER = "tokenizer"
"""Where ``fit --out OUT`` puts the tokenizer: ``OUT/tokenizer``."""


def resolve_tokenizer_path(path_or_repo_id: str | Path) -> str | Path:
    """Where a tokenizer is expected, a ``fit --out`` folder means its ``tokenizer/`` subfolder.

    A tokenizer directory (ours or the published FAST layout) and a Hub id are returned unchanged;
    every command and loader that takes a tokenizer goes through this one rule.
    """
    path = Path(path_or_repo_id)
    if (path.is_dir() and not (path / CONFIG_FILE).is_file() and not (path / PUBLISHED_FAST_CONFIG).is_file()
            and (path / FIT_TOKENIZER_SUBFOLDER / CONFIG_FILE).is_file()):
        return path / FIT_TOKENIZER_SUBFOLDER
    return path_or_repo_id


def load_tokenizer(path_or_repo_id: str | Path, revision: str | None = None) -> ActionTokenizer:
    """Any saved tokenizer: a tokenizer directory, a ``fit --out`` folder or a Hub repo id."""
    return AutoActionTokenizer.from_pretrained(resolve_tokenizer_path(path_or_repo_id), revision=revision)


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
        name = saved_class_name(read_json(directory / CONFIG_FILE, what="tokenizer config"))
        if name is None:
            raise ValueError(f"{directory / CONFIG_FILE} has no '{CLASS_KEY}'; "
                             f"valid: {sorted(f.class_name for f in FAMILIES.values())}")
        return tokenizer_class(name)._from_directory(directory)
