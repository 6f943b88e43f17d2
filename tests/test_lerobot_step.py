"""Our LeRobot processor steps inside LeRobot's own ``DataProcessorPipeline``: tokenize, save, reload, detokenize."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

torch = pytest.importorskip("torch")
from lerobot.processor.pipeline import DataProcessorPipeline, ProcessorStepRegistry  # noqa: E402
from lerobot.utils.constants import ACTION, ACTION_TOKEN_MASK, ACTION_TOKENS  # noqa: E402

from action_tokenizers import BinningTokenizer, FASTTokenizer  # noqa: E402
from action_tokenizers.lerobot import (ACTION_N_MALFORMED, DETOKENIZER_STEP, TOKENIZER_STEP,  # noqa: E402
                                       ActionDetokenizerStep, ActionTokenizerStep)


@pytest.fixture(scope="module")
def chunks() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.cumsum(rng.normal(scale=0.1, size=(80, 6, 2)), axis=1)


@pytest.fixture(scope="module", params=["binning", "fast"])
def tok(request, chunks):
    if request.param == "binning":
        return BinningTokenizer(n_bins=32).fit(chunks)
    return FASTTokenizer(vocab_size=128).fit(chunks)


def test_steps_are_registered():
    assert ProcessorStepRegistry.get(TOKENIZER_STEP) is ActionTokenizerStep
    assert ProcessorStepRegistry.get(DETOKENIZER_STEP) is ActionDetokenizerStep


def test_tokens_and_mask_match_encode(tok, chunks):
    pipe = DataProcessorPipeline([ActionTokenizerStep(tokenizer=tok, max_tokens=40)], name="tokenize")
    batch = pipe({ACTION: torch.as_tensor(chunks[:8])})
    tokens, mask = batch[ACTION_TOKENS], batch[ACTION_TOKEN_MASK]
    assert tokens.shape == mask.shape == (8, 40) and tokens.dtype == torch.long and mask.dtype == torch.bool
    for row, m, ids in zip(tokens.tolist(), mask.tolist(), tok.encode(chunks[:8])):
        assert row[:sum(m)] == ids and all(m[:len(ids)]) and not any(m[len(ids):])
    assert torch.equal(batch[ACTION], torch.as_tensor(chunks[:8]))  # the action itself stays


def test_too_long_is_refused_not_cut(chunks):
    tok = BinningTokenizer(n_bins=32).fit(chunks)  # 12 tokens per chunk
    step = ActionTokenizerStep(tokenizer=tok, max_tokens=5)
    with pytest.raises(ValueError, match="max_tokens"):
        step.tokenize(torch.as_tensor(chunks[:2]))


def test_saved_and_reloaded_pipeline_is_self_contained(tok, chunks, tmp_path):
    """Saved with LeRobot's save_pretrained, the tokenizer's files travel as safetensors state; the
    pipeline reloads after the tokenizer's own folder is gone and gives the same tokens."""
    source = tok.save_pretrained(tmp_path / "tok")
    step = ActionTokenizerStep(tokenizer_path=str(source), max_tokens=40)
    pipe = DataProcessorPipeline([step], name="tokenize")
    before = pipe({ACTION: torch.as_tensor(chunks)})
    pipe.save_pretrained(tmp_path / "pipe")
    assert {p.suffix for p in (tmp_path / "pipe").iterdir()} <= {".json", ".safetensors", ".md"}
    shutil.rmtree(source)
    loaded = DataProcessorPipeline.from_pretrained(tmp_path / "pipe", config_filename="tokenize.json")
    after = loaded({ACTION: torch.as_tensor(chunks)})
    assert torch.equal(after[ACTION_TOKENS], before[ACTION_TOKENS])
    assert torch.equal(after[ACTION_TOKEN_MASK], before[ACTION_TOKEN_MASK])
    assert loaded.steps[0].get_config()["tokenizer_path"] == str(source)


def test_detokenizer_inverts_and_counts_malformed(tok, chunks, tmp_path):
    """Generated ids padded with -1 (a saved and reloaded post-processing pipeline) -> the tokenizer's decode."""
    step = ActionTokenizerStep(tokenizer=tok, max_tokens=40, pad_id=-1)
    tokens, mask = step.tokenize(torch.as_tensor(chunks[:6]))
    back = DataProcessorPipeline([ActionDetokenizerStep(tokenizer=tok)], name="detokenize")
    back.save_pretrained(tmp_path / "post")
    back = DataProcessorPipeline.from_pretrained(tmp_path / "post", config_filename="detokenize.json")
    out = back({ACTION: tokens})
    np.testing.assert_allclose(out[ACTION].numpy(), tok.decode(tok.encode(chunks[:6])), rtol=1e-6, atol=1e-6)
    assert out[ACTION_N_MALFORMED] == 0
    tokens[0, 1:] = -1  # a cut sequence: decoded anyway, and counted
    out = back({ACTION: tokens})
    assert out[ACTION].shape == (6, tok.chunk_size, tok.action_dim) and out[ACTION_N_MALFORMED] == 1


def test_detokenizer_reads_the_mask_of_a_transition(tok, chunks):
    from lerobot.lerobot_types import TransitionKey

    tokens, mask = ActionTokenizerStep(tokenizer=tok, max_tokens=40).tokenize(torch.as_tensor(chunks[:4]))
    out = ActionDetokenizerStep(tokenizer=tok)({TransitionKey.ACTION: tokens,
                                                TransitionKey.COMPLEMENTARY_DATA: {ACTION_TOKEN_MASK: mask}})
    np.testing.assert_allclose(out[TransitionKey.ACTION].numpy(), tok.decode(tok.encode(chunks[:4])), atol=1e-6)
    assert out[TransitionKey.COMPLEMENTARY_DATA][ACTION_N_MALFORMED] == 0


def test_step_without_tokenizer_says_what_to_pass():
    with pytest.raises(ValueError, match="tokenizer_path"):
        ActionTokenizerStep().tokenize(torch.zeros(1, 6, 2))


@pytest.mark.slow
def test_saved_pipeline_loads_after_import_action_tokenizers_alone(chunks, tmp_path):
    """A fresh interpreter that never imports action_tokenizers.lerobot: the steps register when
    LeRobot's pipeline module loads (import hook), so the saved pipeline loads."""
    import subprocess

    tok = BinningTokenizer(n_bins=32).fit(chunks)
    pipe = DataProcessorPipeline([ActionTokenizerStep(tokenizer=tok, max_tokens=12)], name="tokenize")
    pipe.save_pretrained(tmp_path / "pipe")
    np.save(tmp_path / "x.npy", chunks[:3])
    code = ("import sys, numpy as np, torch, action_tokenizers\n"
            "from lerobot.processor import DataProcessorPipeline\n"
            f"p = DataProcessorPipeline.from_pretrained({str(tmp_path / 'pipe')!r}, config_filename='tokenize.json')\n"
            f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
            "print(p({'action': torch.as_tensor(x)})['action.tokens'].tolist())\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip().splitlines()[-1] == str(tok.encode(chunks[:3]))
