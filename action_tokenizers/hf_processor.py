"""transformers' ``AutoProcessor`` loads our saved tokenizers, through transformers' registration API.

After ``import action_tokenizers``::

    from transformers import AutoProcessor
    tok = AutoProcessor.from_pretrained("runs/fast/tokenizer")   # no trust_remote_code
    ids = tok(chunks); actions = tok.decode(ids)

How: every saved ``config.json`` carries ``"model_type": "action_tokenizer"``. We register a
config class for that model type (``AutoConfig.register``) and a processor class for the config
(``AutoProcessor.register``); ``AutoProcessor`` then calls :meth:`ActionTokenizerProcessor.from_pretrained`,
which returns the family's own tokenizer (``AutoActionTokenizer``), so encode and decode are the
original's by construction. No code is read from the directory. ``AutoTokenizer`` on the same
directory fails with a message naming the two loaders (an action tokenizer is not a text tokenizer).

Cheap import: importing transformers' auto classes takes seconds, so nothing here imports
transformers. :func:`install` registers at once if transformers' auto modules are already loaded,
and otherwise adds an import hook that registers right after they load.
"""

from __future__ import annotations

import importlib
import importlib.abc
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["MODEL_TYPE", "ActionTokenizerProcessor", "install", "register"]

MODEL_TYPE = "action_tokenizer"
"""``model_type`` in every saved ``config.json``: the key transformers' Auto classes dispatch on."""

_CONFIG_MODULE = "transformers.models.auto.configuration_auto"
_PROCESSOR_MODULE = "transformers.models.auto.processing_auto"
_TOKENIZER_MODULE = "transformers.models.auto.tokenization_auto"
_AUTO_MODULES = {_CONFIG_MODULE: "AutoConfig", _PROCESSOR_MODULE: "AutoProcessor", _TOKENIZER_MODULE: "AutoTokenizer"}
"""Module -> the Auto class it defines; a module counts as loaded once that class exists (not mid-import)."""
_registered: set[str] = set()
_HF_CONFIG_CLASS: type | None = None
logger = logging.getLogger(__name__)


class ActionTokenizerProcessor:
    """What ``AutoProcessor`` builds for a saved action tokenizer: the tokenizer itself.

    ``from_pretrained`` returns the family's :class:`~action_tokenizers.base.ActionTokenizer`
    (callable, ``encode``/``decode``/``save_pretrained``), not a wrapper, so nothing can drift.
    """

    def __init__(self) -> None:
        raise TypeError("use AutoProcessor.from_pretrained(dir) or ActionTokenizerProcessor.from_pretrained(dir)")

    @staticmethod
    def from_pretrained(pretrained_model_name_or_path: str | Path, *args: Any, **kwargs: Any):
        from action_tokenizers.auto import AutoActionTokenizer

        path = Path(str(pretrained_model_name_or_path))
        subfolder = kwargs.get("subfolder") or ""
        if path.is_dir():
            return AutoActionTokenizer.from_pretrained(path / subfolder if subfolder else path)
        if subfolder:
            raise ValueError("subfolder= is supported for local directories only; pass the folder itself")
        return AutoActionTokenizer.from_pretrained(str(pretrained_model_name_or_path), revision=kwargs.get("revision"))


class NotATextTokenizer:
    """Registered for ``AutoTokenizer``: says which loader to use instead of failing obscurely."""

    def __init__(self) -> None:
        raise TypeError("an action tokenizer is not a text tokenizer")

    @staticmethod
    def from_pretrained(pretrained_model_name_or_path: str | Path, *args: Any, **kwargs: Any):
        raise ValueError(
            f"{pretrained_model_name_or_path} holds an action tokenizer (action-tokenizers), not a text tokenizer: "
            "load it with transformers.AutoProcessor.from_pretrained(...) after `import action_tokenizers`, "
            "or with action_tokenizers.AutoActionTokenizer.from_pretrained(...)"
        )


def _hf_config_class() -> type:
    """The ``PreTrainedConfig`` for ``model_type == "action_tokenizer"`` (built on first use)."""
    global _HF_CONFIG_CLASS
    if _HF_CONFIG_CLASS is None:
        from transformers.configuration_utils import PreTrainedConfig

        class ActionTokenizerHFConfig(PreTrainedConfig):
            """transformers' view of our config.json: only which family it is (the rest is ours to read)."""

            model_type = MODEL_TYPE

            def __init__(self, family: str | None = None, action_tokenizer_class: str | None = None,
                         **kwargs: Any) -> None:
                super().__init__()
                self.family = family
                self.action_tokenizer_class = action_tokenizer_class

        _HF_CONFIG_CLASS = ActionTokenizerHFConfig
    return _HF_CONFIG_CLASS


_LEROBOT_PIPELINE = "lerobot.processor.pipeline"
"""When LeRobot's pipeline module loads, our processor steps register in its ProcessorStepRegistry, so a
saved pipeline naming them loads after ``import action_tokenizers`` alone."""


def register_lerobot_steps() -> None:
    """Import :mod:`action_tokenizers.lerobot` (its steps register on import) once LeRobot's pipeline is loaded."""
    module = sys.modules.get(_LEROBOT_PIPELINE)
    loaded = module is not None and hasattr(module, "ProcessorStepRegistry")
    if loaded and "action_tokenizers.lerobot" not in sys.modules:
        importlib.import_module("action_tokenizers.lerobot")


def register() -> None:
    """Register with every transformers Auto class already imported (idempotent)."""
    auto = {m: getattr(sys.modules.get(m), cls, None) for m, cls in _AUTO_MODULES.items() if m not in _registered}
    auto = {m: cls for m, cls in auto.items() if cls is not None}
    if not auto or (_CONFIG_MODULE not in _registered and _CONFIG_MODULE not in auto):
        return  # the other two need AutoConfig; it loads first, as part of either
    if _CONFIG_MODULE in auto:
        auto[_CONFIG_MODULE].register(MODEL_TYPE, _hf_config_class(), exist_ok=True)
    if _PROCESSOR_MODULE in auto:
        auto[_PROCESSOR_MODULE].register(_hf_config_class(), ActionTokenizerProcessor, exist_ok=True)
    if _TOKENIZER_MODULE in auto:
        auto[_TOKENIZER_MODULE].register(_hf_config_class(), tokenizer_class=NotATextTokenizer, exist_ok=True)
    _registered.update(auto)


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Import hook: when one of transformers' auto modules (or LeRobot's pipeline module) finishes
    loading, register with it."""

    def find_spec(self, fullname: str, path: Any, target: Any = None):
        if fullname not in _AUTO_MODULES and fullname != _LEROBOT_PIPELINE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module: Any) -> None:
            original(module)
            try:
                register_lerobot_steps() if fullname == _LEROBOT_PIPELINE else register()
            except Exception as e:  # never break the user's import of transformers or LeRobot
                logger.warning("action_tokenizers could not register with %s: %s", fullname.split(".")[0], e)

        loader.exec_module = exec_module  # this loader instance belongs to this one module
        return spec


def install() -> None:
    """Register now where transformers is loaded, and hook the rest (called by ``import action_tokenizers``)."""
    if not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
    try:
        register()
        register_lerobot_steps()
    except Exception as e:
        logger.warning("action_tokenizers could not register with transformers or LeRobot: %s", e)
