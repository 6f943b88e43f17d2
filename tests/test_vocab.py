"""ActionVocab: exact round trips for both strategies, the published layouts, and bad mappings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.vocab import ActionVocab


@settings(max_examples=60, deadline=None)
@given(base=st.integers(0, 200_000), n=st.integers(1, 4096), data=st.data())
def test_add_round_trip_is_exact(base: int, n: int, data: st.DataObject) -> None:
    vocab = ActionVocab.add(base, n)
    local = np.asarray(data.draw(st.lists(st.integers(0, n - 1), min_size=0, max_size=50)), dtype=np.int64)
    lm = vocab.to_lm(local)
    assert np.all(lm >= base) and np.all(lm < base + n)
    np.testing.assert_array_equal(vocab.to_local(lm), local)
    assert vocab.lm_vocab_size == base + n + 2
    assert {vocab.boa_id, vocab.eoa_id}.isdisjoint(set(lm.tolist()))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 2048), skip=st.integers(0, 300), extra=st.integers(0, 100_000), data=st.data())
def test_tail_round_trip_is_exact(n: int, skip: int, extra: int, data: st.DataObject) -> None:
    size = n + 2 + skip + extra
    vocab = ActionVocab.tail(size, n, skip=skip)
    local = np.asarray(data.draw(st.lists(st.integers(0, n - 1), max_size=50)), dtype=np.int64)
    lm = vocab.to_lm(local)
    np.testing.assert_array_equal(lm, size - 1 - skip - local)
    np.testing.assert_array_equal(vocab.to_local(lm), local)
    assert np.all(lm < size - skip)
    taken = vocab.taken_ids()
    assert len(set(taken.tolist())) == n + 2 and taken.max() == size - 1 - skip


def test_openvla_and_pi0_fast_layouts() -> None:
    openvla = ActionVocab.tail(32000, 256)  # Llama-2 vocabulary: bins take the last 256 ids
    assert openvla.action_range == (32000 - 256, 31999)
    assert int(openvla.to_lm(0)) == 31999 and int(openvla.to_lm(255)) == 31744
    pi0 = ActionVocab.tail(257152, 1024, skip=128)  # PaliGemma: vocab_size - 1 - 128 - id
    assert int(pi0.to_lm(0)) == 257152 - 1 - 128
    assert int(pi0.to_lm(1023)) == 257152 - 1 - 128 - 1023
    assert "257152 - 1 - 128 - local_id" in pi0.describe()


def test_allowed_ids_are_actions_plus_end_marker() -> None:
    vocab = ActionVocab.add(10, 5)
    assert vocab.allowed_ids().tolist() == [10, 11, 12, 13, 14, 16]
    assert vocab.boa_id == 15 and vocab.boa_id not in vocab.allowed_ids()
    assert vocab.is_action(np.array([9, 10, 14, 15, 16])).tolist() == [False, True, True, False, False]


def test_non_action_ids_are_rejected() -> None:
    vocab = ActionVocab.add(10, 5)
    with pytest.raises(ValueError, match="not action ids"):
        vocab.to_local([10, 15])
    with pytest.raises(ValueError, match=r"local action ids must be in \[0, 5\)"):
        vocab.to_lm([5])


def test_tail_too_small_or_clashing_fails_clearly() -> None:
    with pytest.raises(ValueError, match="cannot take the tail mapping.*1024 action ids.*strategy 'add'"):
        ActionVocab.tail(1000, 1024)
    with pytest.raises(ValueError, match=r"overwrite reserved LM ids \[99\]"):
        ActionVocab.tail(100, 10, reserved_ids=[0, 1, 99])
    assert ActionVocab.tail(100, 10, skip=1, reserved_ids=[99]).to_lm(0) == 98


def test_unknown_strategy_and_json_round_trip(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"one of \('add', 'tail'\)"):
        ActionVocab("middle", 4, 0, 1, 4, 5, 6)
    for vocab in (ActionVocab.add(7, 9), ActionVocab.tail(500, 64, skip=128)):
        vocab.save(tmp_path)
        assert ActionVocab.load(tmp_path) == vocab
        assert "formula" in (tmp_path / "action_vocab.json").read_text()


def test_add_tokens_to_a_local_tokenizer_matches_the_mapping() -> None:
    from training.model import add_action_tokens, build_word_tokenizer

    tok = build_word_tokenizer(["push the puck", "open the door"])
    base = len(tok)
    vocab = add_action_tokens(tok, 12)
    assert vocab.first_id == base and len(tok) == vocab.lm_vocab_size == base + 14
    assert tok.convert_tokens_to_ids("<|act_3|>") == int(vocab.to_lm(3))
    assert tok.convert_tokens_to_ids("<|end_of_action|>") == vocab.eoa_id
    # the task text still tokenizes to words, not to action tokens
    ids = tok("push the door")["input_ids"]
    assert not vocab.is_action(np.asarray(ids)).any() and tok.unk_token_id not in ids
