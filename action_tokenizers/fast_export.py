"""Export a FAST tokenizer to the published processor layout (``save_pretrained(dir, layout="published")``).

The published layout (``physical-intelligence/fast`` on the Hub) is what transformers'
``AutoProcessor.from_pretrained(dir, trust_remote_code=True)`` and LeRobot's pi0-FAST load::

    processor_config.json           scale, vocab_size, min_token, time_horizon, action_dim, auto_map
    bpe_tokenizer/tokenizer.json    the BPE (Hugging Face tokenizers), where transformers 5 looks for
                                    the processor's ``bpe_tokenizer``; also at the root (transformers 4)
    bpe_tokenizer/tokenizer_config.json  how transformers wraps it (no clean-up of spaces: they are coefficients)
    processing_action_tokenizer.py  the processor class (``fast_processor_code.py``, copied)
    README.md                       model card

It is the one place the project writes code into a folder. The project's own loaders read such a
folder as data (``FASTTokenizer.from_pretrained``) and never import the code file.

Exactness. pi0-FAST decodes ids with ``bpe_tokenizer.decode``, ``ord(char) + min_token``, a
division by ``scale`` and an inverse DCT. The export guarantees that this, the exported processor
and this tokenizer agree on ids and on decoded clean sequences:

- pre-tokenizer ``none``: Hugging Face ``tokenizers`` joins the pieces of a decode with spaces when
  a tokenizer has no decoder, and a space is the coefficient ``32 + min_token`` (how the published
  decoding read 96 coefficients where 60 were encoded). The exported ``tokenizer.json`` gets a
  ``Fuse`` decoder (pieces concatenated), which is the same BPE model decoded without separators:
  the exported form is equivalent, not a different tokenizer.
- ``byte_level``: exported as is (its byte-level decoder already concatenates).
- normalization: the published layout has no normalizer (LeRobot normalizes in its own processor
  step), so only ``identity`` tokenizers, fitted on already-normalized actions, can be exported;
  others are refused with the fix. Input units of the exported processor: normalized actions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from action_tokenizers.io import atomic_directory, write_json

if TYPE_CHECKING:
    from action_tokenizers.fast import FASTTokenizer

__all__ = ["PROCESSOR_CLASS", "PROCESSOR_CODE_FILE", "NotExportableError", "check_exportable", "save_published"]

PROCESSOR_CODE_FILE = "processing_action_tokenizer.py"
PROCESSOR_CLASS = "UniversalActionProcessor"
PROCESSOR_CONFIG_FILE = "processor_config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
BPE_SUBFOLDER = "bpe_tokenizer"
LAYOUTS = ("native", "published")


class NotExportableError(ValueError):
    """The tokenizer cannot be written in the published layout without behaving differently there."""


def check_exportable(tok: "FASTTokenizer") -> None:
    """Raise :class:`NotExportableError`, naming what to change, unless the published decoding is exact."""
    if not tok.is_fitted or tok.bpe is None:
        raise NotExportableError("the tokenizer is not fitted: fit it (or load one) before exporting")
    if tok.normalizer.mode != "identity":
        raise NotExportableError(
            f"the published FAST layout has no normalizer, but this tokenizer normalizes with "
            f"'{tok.normalizer.mode}' (its decode would differ from the published one). Normalize the actions "
            "the way your pipeline will (LeRobot: the policy's normalizer step), fit "
            "FASTTokenizer(normalization='identity', ...) on those normalized actions and export that one; "
            "or keep the native layout (save_pretrained(dir)), which saves the normalizer with the tokenizer"
        )
    if tok.config.pretokenizer not in ("none", "byte_level"):
        raise NotExportableError(f"unknown pre-tokenizer {tok.config.pretokenizer!r}: cannot export")


def published_config(tok: "FASTTokenizer") -> dict[str, Any]:
    """``processor_config.json``: the published fields plus ``max_char`` (the last character of the alphabet)."""
    return {
        "processor_class": PROCESSOR_CLASS,
        "auto_map": {"AutoProcessor": f"{Path(PROCESSOR_CODE_FILE).stem}.{PROCESSOR_CLASS}"},
        "scale": tok.config.scale,
        "vocab_size": int(tok.vocab_size),
        "min_token": int(tok.min_token),
        "max_char": int(tok.max_char),
        "time_horizon": int(tok.chunk_size),
        "action_dim": int(tok.action_dim),
    }


def exported_bpe(tok: "FASTTokenizer"):
    """The tokenizer's BPE with a decoder that concatenates pieces (see the module docstring)."""
    from tokenizers import Tokenizer, decoders

    bpe = Tokenizer.from_str(tok.bpe.to_str())  # a copy: the tokenizer itself stays as it is
    if tok.config.pretokenizer == "none" and not tok.published:
        bpe.decoder = decoders.Fuse()
    return bpe


def save_published(tok: "FASTTokenizer", directory: str | Path, overwrite: bool = False) -> Path:
    """Write ``tok`` in the published layout at ``directory`` (see the module docstring); returns it."""
    check_exportable(tok)
    directory = Path(directory)
    with atomic_directory(directory, kind="tokenizer-published", overwrite=overwrite) as tmp:
        bpe = exported_bpe(tok)
        for folder in (tmp, tmp / BPE_SUBFOLDER):
            folder.mkdir(exist_ok=True)
            bpe.save(str(folder / TOKENIZER_FILE))
            write_json(folder / TOKENIZER_CONFIG_FILE, {
                "tokenizer_class": "PreTrainedTokenizerFast",  # transformers' own key, in transformers' own file
                "processor_class": PROCESSOR_CLASS,
                "clean_up_tokenization_spaces": False,
                "added_tokens_decoder": {},
                "model_max_length": 1_000_000,
            })
        write_json(tmp / PROCESSOR_CONFIG_FILE, published_config(tok))
        (tmp / PROCESSOR_CODE_FILE).write_text(_processor_code())
        (tmp / "README.md").write_text(_published_card(tok))
    return directory


def _processor_code() -> str:
    return (Path(__file__).parent / "fast_processor_code.py").read_text()


def _published_card(tok: "FASTTokenizer") -> str:
    from action_tokenizers.card import tokenizer_card

    usage = f"""
## Published layout (transformers / LeRobot)

This folder is in the layout of `physical-intelligence/fast`. Inputs are normalized actions
(the tokenizer was fitted with identity normalization), shape `(B, {tok.chunk_size}, {tok.action_dim})`:

```python
from transformers import AutoProcessor

processor = AutoProcessor.from_pretrained("path/or/repo-id", trust_remote_code=True)
ids = processor(normalized_actions)   # one id list per chunk
actions = processor.decode(ids)       # (B, {tok.chunk_size}, {tok.action_dim}), normalized units
```

LeRobot's pi0-FAST takes it as `action_tokenizer_name`. `action_tokenizers.FASTTokenizer.from_pretrained`
reads it as data, without running the code file.
"""
    return tokenizer_card(tok) + usage


def describe(directory: str | Path) -> dict[str, Any]:
    """The exported processor config (for reports and tests)."""
    return json.loads((Path(directory) / PROCESSOR_CONFIG_FILE).read_text())
