"""The tokenizer families, listed once: adding a family is one entry in ``FAMILIES``.

Everything that enumerates families reads this table: the Auto loader (class by saved name), the
``fit`` command (family options), the report's rate-distortion sweep and the main job. Modules
are imported only when a family is used, so listing the families stays cheap.

Each family module defines its tokenizer class, its config class and ``sweep_settings()``: the
``(label, factory)`` pairs the rate-distortion plot sweeps.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from action_tokenizers.base import ActionTokenizer, TokenizerConfig

__all__ = ["FAMILIES", "Family", "family", "family_names", "tokenizer_class"]


@dataclass(frozen=True)
class Family:
    """One tokenizer family: its CLI name and where its classes live."""

    name: str
    """Family name (``--tokenizer``, the main job's ``--tokenizers``, saved ``family``)."""
    module: str
    class_name: str
    config_name: str

    def tokenizer_class(self) -> type["ActionTokenizer"]:
        return getattr(importlib.import_module(self.module), self.class_name)

    def config_class(self) -> type["TokenizerConfig"]:
        return getattr(importlib.import_module(self.module), self.config_name)

    def sweep_settings(self) -> list[tuple[str, Callable[[], "ActionTokenizer"]]]:
        """The family's rate-distortion settings, ``(label, factory)`` pairs."""
        return importlib.import_module(self.module).sweep_settings()


FAMILIES: dict[str, Family] = {
    "binning": Family("binning", "action_tokenizers.binning", "BinningTokenizer", "BinningConfig"),
    "fast": Family("fast", "action_tokenizers.fast", "FASTTokenizer", "FASTConfig"),
    "vq": Family("vq", "action_tokenizers.vq", "VQTokenizer", "VQConfig"),
}


def family_names() -> tuple[str, ...]:
    return tuple(FAMILIES)


def family(name: str) -> Family:
    """A family by family name (``"fast"``) or class name (``"FASTTokenizer"``), valid names in the error."""
    if name in FAMILIES:
        return FAMILIES[name]
    for fam in FAMILIES.values():
        if fam.class_name == name:
            return fam
    raise ValueError(f"unknown tokenizer {name!r}; valid: {sorted(FAMILIES)} "
                     f"(or {sorted(f.class_name for f in FAMILIES.values())})")


def tokenizer_class(name: str) -> type["ActionTokenizer"]:
    """The tokenizer class of a family name or class name."""
    return family(name).tokenizer_class()
