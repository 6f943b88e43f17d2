"""FAST's single-sequence decode (a robot's batch of one) gives what the batch path gives, and hands it anything unusual."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from action_tokenizers.fast import FASTTokenizer


def _smooth(n: int, h: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, h)[None, :, None]
    x = sum(rng.normal(0.0, 0.6 / (k + 1), (n, 1, d)) * np.sin(2 * np.pi * (0.5 * k + 0.25) * t + rng.uniform(0, 6.3, (n, 1, d)))
            for k in range(3))
    return x * np.array([1.0, 3.0, 0.5, 0.4])[:d] + 0.01 * rng.normal(size=(n, h, d))


@pytest.fixture(scope="module")
def fast() -> FASTTokenizer:
    return FASTTokenizer(vocab_size=256, scale=10.0, skip_dims=(3,)).fit(_smooth(600, 8, 4, 0))


@pytest.fixture(scope="module")
def chunks() -> np.ndarray:
    return _smooth(200, 8, 4, 1) * 1.3  # beyond the fit range too: exercises the clip-into-the-box projection


def _batch_path(tok: FASTTokenizer, seqs: list[list[int]]):
    """The batch path on the same sequence: a second copy in the batch turns the short path off."""
    report = tok.decode_with_report(seqs + seqs)
    return report.actions[: len(seqs)], report.malformed[: len(seqs)], report.reasons[: len(seqs)]


@settings(max_examples=60, deadline=None)
@given(row=st.integers(0, 199))
def test_one_sequence_decodes_as_in_a_batch(fast: FASTTokenizer, chunks: np.ndarray, row: int) -> None:
    ids = fast.encode(chunks[row:row + 1])
    one = fast.decode_with_report(ids)
    actions, malformed, _ = _batch_path(fast, ids)
    np.testing.assert_allclose(one.actions, actions, rtol=0, atol=0)  # the same bits
    assert not one.malformed.any() and not malformed.any() and one.reasons == [""]
    assert np.array_equal(fast.encode(one.actions), ids)  # re-encoding the decoded chunk gives the same ids


def test_the_short_path_runs_and_projects_into_the_box(fast: FASTTokenizer, chunks: np.ndarray, monkeypatch) -> None:
    calls = {"short": 0, "clip": 0}
    short, clip = fast._decode_one, fast._clip_bounded
    monkeypatch.setattr(fast, "_decode_one", lambda seq: (calls.__setitem__("short", calls["short"] + 1), short(seq))[1])
    monkeypatch.setattr(fast, "_clip_bounded", lambda x, q: (calls.__setitem__("clip", calls["clip"] + 1), clip(x, q))[1])
    for row in range(len(chunks)):
        fast.decode_with_report(fast.encode(chunks[row:row + 1]))
    assert calls["short"] == len(chunks) and calls["clip"] > 0


@settings(max_examples=60, deadline=None)
@given(seq=st.lists(st.integers(-3, 300), max_size=12))
def test_any_int_sequence_gives_the_batch_paths_answer(fast: FASTTokenizer, seq: list[int]) -> None:
    """Malformed, out-of-range or empty sequences fall through to the batch path: same chunk, same flag, same reason."""
    one = fast.decode_with_report([seq])
    actions, malformed, reasons = _batch_path(fast, [seq])
    np.testing.assert_allclose(one.actions, actions, rtol=1e-12, atol=1e-12)
    assert one.malformed.tolist() == malformed.tolist() and one.reasons == reasons


def test_other_inputs_take_the_batch_path(fast: FASTTokenizer, chunks: np.ndarray) -> None:
    ids = fast.encode(chunks[:1])
    want = fast.decode_with_report(ids).actions
    for variant in ([np.asarray(ids[0])], [tuple(ids[0])], np.asarray(ids), [[np.int64(i) for i in ids[0]]]):
        np.testing.assert_allclose(fast.decode_with_report(variant).actions, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="token ids must be ints"):  # a bool is refused, as by the batch path
        fast.decode_with_report([[True] + ids[0][1:]])


def test_refit_rebuilds_the_short_path_tables(chunks: np.ndarray) -> None:
    tok = FASTTokenizer(vocab_size=256, scale=10.0).fit(_smooth(300, 8, 4, 2))
    tok.decode_with_report(tok.encode(chunks[:1]))
    tok.fit(_smooth(300, 8, 4, 3))
    ids = tok.encode(chunks[:1])
    np.testing.assert_allclose(tok.decode_with_report(ids).actions, _batch_path(tok, ids)[0], rtol=1e-12, atol=1e-12)
