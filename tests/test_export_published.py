"""FAST export to the published layout: read by transformers' AutoProcessor (remote code), by LeRobot's
``ActionTokenizerProcessorStep`` and pi0-FAST's decoding, and by our own loader as data.

The transformers/LeRobot tests are slow (importing them takes tens of seconds here); the layout,
refusal and own-loader tests are not.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from action_tokenizers import FASTTokenizer  # noqa: E402
from action_tokenizers.fast_export import NotExportableError, PROCESSOR_CODE_FILE, describe  # noqa: E402
from benchmarks.reference import smooth_chunks  # noqa: E402

H, D = 8, 3
PRETOKENIZERS = ["none", "byte_level"]


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return smooth_chunks(300, H, D)


@pytest.fixture(scope="module")
def tokenizers(data) -> dict[str, FASTTokenizer]:
    """Identity-normalized FAST tokenizers (inputs already in [-1, 1], as FAST expects), both pre-tokenizers."""
    return {p: FASTTokenizer(vocab_size=256, normalization="identity", pretokenizer=p).fit(data[:200])
            for p in PRETOKENIZERS}


@pytest.fixture(scope="module")
def exported(tokenizers, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("published")
    return {p: tok.save_pretrained(root / p, layout="published") for p, tok in tokenizers.items()}


def test_layout_files_and_config(exported, tokenizers):
    for p, directory in exported.items():
        names = {f.name for f in directory.iterdir()}
        assert {"processor_config.json", "tokenizer.json", "tokenizer_config.json", PROCESSOR_CODE_FILE,
                "README.md", "bpe_tokenizer"} <= names
        assert (directory / "bpe_tokenizer" / "tokenizer.json").is_file()
        cfg = describe(directory)
        tok = tokenizers[p]
        assert cfg["auto_map"] == {"AutoProcessor": "processing_action_tokenizer.UniversalActionProcessor"}
        assert (cfg["time_horizon"], cfg["action_dim"], cfg["min_token"]) == (H, D, tok.min_token)
        assert cfg["scale"] == tok.config.scale and cfg["vocab_size"] == tok.vocab_size


@pytest.mark.parametrize("pretokenizer", PRETOKENIZERS)
def test_own_loader_reads_export_as_data(exported, tokenizers, data, pretokenizer, tmp_path):
    """Same ids and decodes through our loader, and the code file is never run: replaced by code that
    would abort the interpreter, the folder still loads."""
    import shutil

    directory = shutil.copytree(exported[pretokenizer], tmp_path / "copy")
    (directory / PROCESSOR_CODE_FILE).write_text("raise SystemExit('executed')\n")
    tok, loaded = tokenizers[pretokenizer], FASTTokenizer.from_pretrained(directory)
    ids = tok.encode(data[200:])
    assert loaded.encode(data[200:]) == ids
    np.testing.assert_array_equal(loaded.decode(ids), tok.decode(ids))


def test_none_pretokenizer_needs_the_fused_decoder(tokenizers, data):
    """Why the export adds a decoder: without one, tokenizers joins pieces with spaces and the published
    decoding reads extra coefficients; the exported BPE decodes to exactly h * d characters."""
    from action_tokenizers.fast_export import exported_bpe

    tok = tokenizers["none"]
    ids = tok.encode(data[200:250])
    plain = [len(tok.bpe.decode(s)) for s in ids]
    fused = [len(exported_bpe(tok).decode(s)) for s in ids]
    assert any(n != H * D for n in plain)
    assert fused == [H * D] * len(ids)


@pytest.mark.parametrize("normalization", ["quantile", "minmax", "meanstd"])
def test_refuses_a_normalizer_the_layout_lacks(data, tmp_path, normalization):
    tok = FASTTokenizer(vocab_size=256, normalization=normalization).fit(data[:200])
    with pytest.raises(NotExportableError, match="normalization='identity'") as info:
        tok.save_pretrained(tmp_path / "out", layout="published")
    assert normalization in str(info.value)
    assert not (tmp_path / "out" / "processor_config.json").exists()


def test_unknown_layout_is_named(tokenizers, tmp_path):
    with pytest.raises(ValueError, match="published"):
        tokenizers["none"].save_pretrained(tmp_path / "x", layout="publish")


# ---------------------------------------------------------------------- transformers and LeRobot (slow)
@pytest.mark.slow
@pytest.mark.parametrize("pretokenizer", PRETOKENIZERS)
def test_auto_processor_remote_code_same_ids_and_decodes(exported, tokenizers, data, pretokenizer):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(exported[pretokenizer]), trust_remote_code=True)
    tok, test = tokenizers[pretokenizer], data[200:]
    ids = tok.encode(test)
    assert processor(test) == ids
    assert processor(test.astype(np.float32)) == tok.encode(test.astype(np.float32))
    np.testing.assert_array_equal(processor.decode(ids), tok.decode(ids))
    # pi0-FAST's own decoding (LeRobot's code, driven by the loaded processor's attributes)
    from lerobot.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy

    policy = SimpleNamespace(action_tokenizer=processor)
    pi0 = PI0FastPolicy.decode_actions_with_fast(policy, ids, time_horizon=H, action_dim=D)
    np.testing.assert_allclose(pi0, tok.decode(ids), rtol=0, atol=1e-12)


def _stand_in_text_tokenizer(directory: Path) -> Path:
    """A tiny local stand-in for the PaliGemma text tokenizer LeRobot's step loads (no download):
    word-level, with <bos>/<eos>, "Action:" and "|", and a vocabulary larger than skip + action ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<bos>", "<eos>", "<unk>", "Action", ":", "|"] + [f"w{i}" for i in range(600)]
    bpe = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    text = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")
    text.save_pretrained(str(directory))
    return directory


@pytest.mark.slow
@pytest.mark.parametrize("pretokenizer", PRETOKENIZERS)
def test_lerobot_action_tokenizer_step_gives_our_ids(exported, tokenizers, data, pretokenizer, tmp_path):
    import torch
    from lerobot.processor.tokenizer_processor import ActionTokenizerProcessorStep
    from lerobot.lerobot_types import TransitionKey
    from lerobot.utils.constants import ACTION_TOKEN_MASK, ACTION_TOKENS

    text_dir = _stand_in_text_tokenizer(tmp_path / "text")
    step = ActionTokenizerProcessorStep(action_tokenizer_name=str(exported[pretokenizer]),
                                        paligemma_tokenizer_name=str(text_dir), max_action_tokens=64)
    test = data[200:210]
    out = step({TransitionKey.ACTION: torch.as_tensor(test, dtype=torch.float32)})
    comp = out[TransitionKey.COMPLEMENTARY_DATA]
    tokens, mask = comp[ACTION_TOKENS], comp[ACTION_TOKEN_MASK]
    text = step._paligemma_tokenizer
    prefix = 1 + len(text.encode("Action: ", add_special_tokens=False))
    suffix = len(text.encode("|"))
    tok = tokenizers[pretokenizer]
    want = tok.encode(test.astype(np.float32))
    for row, m, ids in zip(tokens.tolist(), mask.tolist(), want):
        body = np.asarray(row[:sum(m)][prefix:-suffix])
        assert (text.vocab_size - 1 - step.fast_skip_tokens - body).tolist() == ids


@pytest.mark.slow
def test_lerobot_step_takes_a_plain_saved_tokenizer_of_any_family(data, tmp_path):
    """Without the published layout: LeRobot's step loads a plain save_pretrained folder through the
    AutoProcessor registration (no code in the folder) and gets the tokenizer's own ids."""
    import torch
    from lerobot.lerobot_types import TransitionKey
    from lerobot.processor.tokenizer_processor import ActionTokenizerProcessorStep
    from lerobot.utils.constants import ACTION_TOKEN_MASK, ACTION_TOKENS

    from action_tokenizers import BinningTokenizer

    tok = BinningTokenizer(n_bins=32).fit(data[:200])
    step = ActionTokenizerProcessorStep(action_tokenizer_name=str(tok.save_pretrained(tmp_path / "binning")),
                                        paligemma_tokenizer_name=str(_stand_in_text_tokenizer(tmp_path / "text")),
                                        max_action_tokens=64)
    assert type(step.action_tokenizer) is BinningTokenizer
    out = step({TransitionKey.ACTION: torch.as_tensor(data[200:204], dtype=torch.float32)})
    comp = out[TransitionKey.COMPLEMENTARY_DATA]
    text = step._paligemma_tokenizer
    prefix, suffix = 1 + len(text.encode("Action: ", add_special_tokens=False)), len(text.encode("|"))
    want = tok.encode(data[200:204].astype(np.float32))
    for row, m, ids in zip(comp[ACTION_TOKENS].tolist(), comp[ACTION_TOKEN_MASK].tolist(), want):
        body = np.asarray(row[:sum(m)][prefix:-suffix])
        assert (text.vocab_size - 1 - step.fast_skip_tokens - body).tolist() == ids
