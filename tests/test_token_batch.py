"""The flat batch every family decodes from, and block-wise decoding in the base class."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from action_tokenizers import BinningTokenizer, FASTTokenizer
from action_tokenizers import base, token_batch
from action_tokenizers.token_batch import TokenBatch

SEQS = st.lists(st.lists(st.integers(-1, 50), max_size=12), max_size=10)


def _batch(seqs: list[list[int]]) -> TokenBatch:
    flat = np.array([i for s in seqs for i in s], dtype=np.int64)
    return TokenBatch(flat, np.array([len(s) for s in seqs], dtype=np.int64))


@settings(max_examples=200, deadline=None)
@given(SEQS, st.integers(1, 8), st.integers(-5, 5))
def test_padded_matches_naive(seqs, t, fill):
    ids, present = _batch(seqs).padded(t, fill)
    assert ids.shape == present.shape == (len(seqs), t)
    for row, mask, seq in zip(ids, present, seqs):
        cut = seq[:t]
        assert row.tolist() == cut + [fill] * (t - len(cut))
        assert mask.tolist() == [True] * len(cut) + [False] * (t - len(cut))


@settings(max_examples=200, deadline=None)
@given(SEQS, st.integers(1, 4))
def test_blocks_and_sequences_partition_the_batch(seqs, size):
    batch = _batch(seqs)
    assert [s.tolist() for s in batch.sequences()] == seqs
    blocks = batch.blocks(size)
    assert all(len(b) <= size for b in blocks)
    assert [s.tolist() for b in blocks for s in b.sequences()] == seqs


def test_rows_only_when_every_length_matches():
    assert _batch([[1, 2], [3, 4]]).rows(2).tolist() == [[1, 2], [3, 4]]
    assert _batch([[1, 2], [3]]).rows(2) is None


@pytest.mark.parametrize("family", ["binning", "fast"])
def test_block_decoding_equals_one_pass(monkeypatch, family):
    """Blocks change only speed: actions, flags and reasons match a single-pass decode, also when
    malformed sequences sit on either side of a block boundary."""
    rng = np.random.default_rng(0)
    chunks = np.cumsum(rng.normal(0, 0.1, (300, 8, 3)), axis=1)
    tok = (BinningTokenizer(n_bins=64) if family == "binning" else FASTTokenizer(vocab_size=256)).fit(chunks)
    ids = tok.encode(chunks[:40])
    for i in (6, 7, 8, 23):  # around the boundaries of blocks of 7
        ids[i] = ids[i][:-1] if i % 2 else ids[i] + [tok.vocab_size + 3]
    one = tok.decode_with_report(ids)
    monkeypatch.setattr(base, "DECODE_BLOCK", 7)
    blocked = tok.decode_with_report(ids)
    np.testing.assert_array_equal(blocked.actions, one.actions)
    np.testing.assert_array_equal(blocked.malformed, one.malformed)
    assert blocked.reasons == one.reasons
    assert blocked.malformed.sum() == 4


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(-2, 3) | st.booleans() | st.sampled_from([np.True_, np.int64(1)]), max_size=20),
                max_size=8))
def test_flat_check_finds_every_bool(seqs):
    """Bools pass ``array('q')`` as 0/1; the flat path must still spot each one (sparse or dense)."""
    has_bool = any(isinstance(v, (bool, np.bool_)) for s in seqs for v in s)
    out = token_batch._flatten_int_lists(seqs)
    assert (out is None) == has_bool
    if out is not None:
        ids, lengths = out
        assert ids.tolist() == [int(v) for s in seqs for v in s]
        assert lengths.tolist() == [len(s) for s in seqs]
