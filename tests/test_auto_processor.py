"""transformers' AutoProcessor loads our plain saved tokenizers (no remote code); AutoTokenizer says why not;
old folders (class under ``tokenizer_class``) still load through our own loaders; tokenizers are callable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import action_tokenizers  # noqa: E402,F401  (registers with transformers)
from action_tokenizers import AutoActionTokenizer, BinningTokenizer, FASTTokenizer, VQTokenizer  # noqa: E402
from action_tokenizers.auto import load_tokenizer, resolve_tokenizer_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chunks() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.cumsum(rng.normal(scale=0.1, size=(96, 4, 3)), axis=1)


@pytest.fixture(scope="module")
def saved(chunks, tmp_path_factory) -> dict[str, tuple]:
    """One fitted tokenizer per family, saved with plain ``save_pretrained``."""
    root = tmp_path_factory.mktemp("tok")
    toks = {
        "binning": BinningTokenizer(n_bins=32),
        "fast": FASTTokenizer(vocab_size=128),
        "vq": VQTokenizer(codebook_size=16, codebook_dim=4, hidden=32, max_steps=20, eval_every=10, batch_size=32),
    }
    return {name: (tok.fit(chunks), tok.save_pretrained(root / name)) for name, tok in toks.items()}


def test_tokenizers_are_callable(saved, chunks):
    for tok, _ in saved.values():
        assert tok(chunks) == tok.encode(chunks)
        assert tok(chunks[0]) == tok.encode(chunks[0])


def test_config_uses_our_key_not_transformers_reserved_one(saved):
    for tok, directory in saved.values():
        cfg = json.loads((directory / "config.json").read_text())
        assert cfg["action_tokenizer_class"] == type(tok).__name__ and cfg["model_type"] == "action_tokenizer"
        assert "tokenizer_class" not in cfg


def test_folders_of_earlier_versions_still_load(saved, chunks, tmp_path):
    import shutil

    for name, (tok, directory) in saved.items():
        old = shutil.copytree(directory, tmp_path / name)
        cfg = json.loads((old / "config.json").read_text())
        cfg["tokenizer_class"] = cfg.pop("action_tokenizer_class")
        del cfg["model_type"]
        (old / "config.json").write_text(json.dumps(cfg))
        (old / ".action_tokenizers.json").unlink(missing_ok=True)  # earlier versions wrote no manifest
        for loaded in (AutoActionTokenizer.from_pretrained(old), type(tok).from_pretrained(old)):
            assert loaded.encode(chunks) == tok.encode(chunks)


def test_fit_out_folder_resolves_to_its_tokenizer(saved, tmp_path, chunks):
    import shutil

    tok, directory = saved["binning"]
    fit_out = tmp_path / "fit"
    shutil.copytree(directory, fit_out / "tokenizer")
    assert resolve_tokenizer_path(fit_out) == fit_out / "tokenizer"
    assert resolve_tokenizer_path(directory) == directory
    assert resolve_tokenizer_path("owner/name") == "owner/name"
    assert load_tokenizer(fit_out).encode(chunks) == tok.encode(chunks)


def test_import_stays_light():
    """``import action_tokenizers`` registers through an import hook; it never imports transformers."""
    code = "import sys, action_tokenizers; assert 'transformers' not in sys.modules, 'transformers imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.slow
def test_auto_processor_loads_every_family_without_remote_code(saved, chunks):
    from transformers import AutoProcessor

    for name, (tok, directory) in saved.items():
        loaded = AutoProcessor.from_pretrained(str(directory))
        assert type(loaded) is type(tok), name
        ids = tok.encode(chunks)
        assert loaded.encode(chunks) == ids and loaded(chunks) == ids
        np.testing.assert_array_equal(loaded.decode(ids), tok.decode(ids))


@pytest.mark.slow
def test_auto_tokenizer_fails_with_a_message(saved):
    from transformers import AutoTokenizer

    for _, directory in saved.values():
        with pytest.raises(ValueError, match="AutoProcessor"):
            AutoTokenizer.from_pretrained(str(directory))


@pytest.mark.slow
def test_registration_when_transformers_was_imported_first(saved, tmp_path):
    """The other import order, in a fresh interpreter: transformers' auto classes first, then ours."""
    _, directory = saved["binning"]
    code = ("from transformers import AutoProcessor\nimport action_tokenizers\n"
            f"tok = AutoProcessor.from_pretrained({str(directory)!r})\n"
            "assert type(tok).__name__ == 'BinningTokenizer', type(tok)\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
