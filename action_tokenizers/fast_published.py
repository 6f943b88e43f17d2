"""Loading a published FAST processor directory (``physical-intelligence/fast`` layout).

``processor_config.json`` plus ``tokenizer.json`` at the root or in ``bpe_tokenizer/``. Such a
directory loads with identity normalization (FAST expects inputs already in [-1, 1]) and keeps its
exact behaviour: the same ids and, on well-formed ids, the same decoded chunks as the published
processor; only malformed sequences differ (best chunk + flag instead of zeros, see
:mod:`action_tokenizers.fast_repair`). ``chunk_size``/``action_dim`` fill in a config whose
``time_horizon``/``action_dim`` are null (the universal FAST+ tokenizer).
"""

from __future__ import annotations

from pathlib import Path

from action_tokenizers.fast import (_MAX_CHAR, PUBLISHED_CONFIG_FILE, PUBLISHED_SUBFOLDER, TOKENIZER_FILE,
                                    FASTConfig, FASTTokenizer, _load_bpe)
from action_tokenizers.io import read_json
from action_tokenizers.normalize import Normalizer

__all__ = ["load_published"]


def load_published(directory: Path, chunk_size: int | None, action_dim: int | None) -> FASTTokenizer:
    """A published FAST processor directory: processor_config.json + tokenizer.json (root or bpe_tokenizer/)."""
    path = directory / PUBLISHED_CONFIG_FILE
    cfg = read_json(path, what="FAST processor config")
    scale = _field(cfg, "scale", path, (int, float), positive=True)
    vocab = _field(cfg, "vocab_size", path, int, positive=True)
    min_token = _field(cfg, "min_token", path, int)
    h = _shape_field(cfg, "time_horizon", chunk_size, "chunk_size", path)
    d = _shape_field(cfg, "action_dim", action_dim, "action_dim", path)
    tok_path = directory / TOKENIZER_FILE
    if not tok_path.is_file():
        tok_path = directory / PUBLISHED_SUBFOLDER / TOKENIZER_FILE
    if not tok_path.is_file():
        raise FileNotFoundError(
            f"{directory} has {PUBLISHED_CONFIG_FILE} but no {TOKENIZER_FILE} at its root or in "
            f"{PUBLISHED_SUBFOLDER}/: the published FAST directory is incomplete"
        )
    tok = FASTTokenizer(FASTConfig(scale=float(scale), vocab_size=vocab, normalization="identity", pretokenizer="byte_level"))
    tok.normalizer = Normalizer(mode="identity")
    tok.bpe = _load_bpe(tok_path)
    if tok.bpe.get_vocab_size() > vocab:
        raise ValueError(
            f"{tok_path} holds {tok.bpe.get_vocab_size()} tokens but {path} field 'vocab_size' is {vocab}: "
            "the files are inconsistent"
        )
    # max_char: the fitted alphabet's last character, written by our export (fast_export); else chr()'s limit
    max_char = cfg.get("max_char")
    if isinstance(max_char, bool) or not isinstance(max_char, int) or not 0 <= max_char <= _MAX_CHAR:
        max_char = _MAX_CHAR
    tok.min_token, tok.max_char, tok.published = min_token, max_char, True
    tok.chunk_size, tok.action_dim = h, d
    tok._set_bpe(tok.bpe)
    return tok


def _field(cfg: dict, name: str, path: Path, kind: type | tuple, positive: bool = False):
    if name not in cfg:
        raise ValueError(f"{path} lacks the field '{name}' (needed fields: scale, vocab_size, min_token, "
                         "time_horizon, action_dim)")
    value = cfg[name]
    if isinstance(value, bool) or not isinstance(value, kind) or (positive and not value > 0):
        want = "a positive number" if positive else "an integer"
        raise ValueError(f"{path} field '{name}' must be {want}, got {value!r}")
    return value


def _shape_field(cfg: dict, name: str, given: int | None, arg: str, path: Path) -> int:
    value = cfg.get(name)
    if value is None and given is None:
        raise ValueError(
            f"{path} field '{name}' is null or missing; pass {arg}=... to FASTTokenizer.from_pretrained "
            "to say which chunk shape this tokenizer decodes"
        )
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"{path} field '{name}' must be a positive integer or null, got {value!r}")
    if value is not None and given is not None and value != given:
        raise ValueError(f"{path} field '{name}' is {value} but {arg}={given} was passed")
    return int(given if given is not None else value)
