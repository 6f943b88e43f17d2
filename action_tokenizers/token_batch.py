"""Token-id input as decoding wants it: one flat int64 array and the lengths (:class:`TokenBatch`).

What the user passes to ``decode`` (lists of Python ints, arrays, tensors, or malformed things
such as floats, bools and huge ints) is checked here in one flat pass where possible, with a
careful per-token path that names the first bad value. Out-of-range ids are clamped to ``-1`` or
``vocab_size`` and counted, so a family's ``_decode`` never sees an id it cannot index.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["TokenBatch", "TokenIds", "check_token_ids", "check_token_ids_each", "segment_sums"]

TokenIds = Sequence[Sequence[int]] | Sequence[int] | np.ndarray
_BOOL_TYPES = (bool, np.bool_)


@dataclass(frozen=True)
class TokenBatch:
    """Id sequences as decoding wants them: every id in one flat int64 array, plus each length.

    Splitting a batch into one small array per sequence costs more than decoding it, so families
    read whole rows (:meth:`rows`, :meth:`padded`) or the flat ids directly; :meth:`sequences`
    is there for the rare per-sequence repair. Ids are clamped to ``[-1, vocab_size]``: -1 and
    ``vocab_size`` stand for any out-of-range id (already counted by the base).
    """

    flat: np.ndarray
    """(total,) int64: the ids of all sequences, concatenated."""
    lengths: np.ndarray
    """(n,) int64: how many ids each sequence holds."""

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def ends(self) -> np.ndarray:
        """(n,) index in ``flat`` one past each sequence's last id."""
        return np.cumsum(self.lengths)

    def rows(self, t: int) -> np.ndarray | None:
        """(n, t) view of the ids when every sequence holds exactly ``t``; None otherwise."""
        if np.all(self.lengths == t):
            return self.flat.reshape(len(self), t)
        return None

    def padded(self, t: int, fill: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(n, t) ids (longer sequences cut, shorter ones padded with ``fill``) and where ids are present."""
        rows = self.rows(t)
        if rows is not None:
            return rows, np.ones(rows.shape, dtype=bool)
        present = np.arange(t)[None, :] < self.lengths[:, None]
        index = (self.ends - self.lengths)[:, None] + np.arange(t)[None, :]
        ids = np.full((len(self), t), fill, dtype=np.int64)
        ids[present] = self.flat[index[present]]
        return ids, present

    def blocks(self, size: int) -> list["TokenBatch"]:
        """Consecutive sub-batches of at most ``size`` sequences (views, no copies)."""
        if len(self) <= size:
            return [self]
        ends = np.concatenate(([0], self.ends))
        return [TokenBatch(self.flat[ends[a]:ends[min(a + size, len(self))]], self.lengths[a:a + size])
                for a in range(0, len(self), size)]

    def sequences(self) -> list[np.ndarray]:
        """One array (a view into ``flat``) per sequence."""
        return np.split(self.flat, self.ends[:-1]) if len(self) else []


def check_token_ids(tokens: TokenIds, vocab_size: int) -> tuple[TokenBatch, np.ndarray]:
    """Validate a batch of id sequences: a :class:`TokenBatch` (ids clamped to ``[-1, vocab_size]``)
    and how many ids of each sequence were out of range.

    Integer arrays and batches of plain int lists (what ``encode`` and LM generation return) are
    checked in one flat pass; anything else (other iterables, non-int values) takes the per-token
    path, which gives the same results and names the first bad value.
    """
    if isinstance(tokens, np.ndarray):
        if tokens.ndim != 2:
            raise ValueError(f"token array must be 2-D (n, t), got shape {tokens.shape}")
        if tokens.dtype.kind in "iu" and tokens.size:
            n, t = tokens.shape
            flat = tokens.reshape(-1).astype(np.int64)  # uint64 beyond int64 wraps negative: still out of range
            return _clamped(flat, np.full(n, t, dtype=np.int64), vocab_size)
        tokens = tokens.tolist()
    batch = _flatten_int_lists(tokens)
    if batch is not None:
        return _clamped(*batch, vocab_size)
    return check_token_ids_each(tokens, vocab_size)


def _clamped(flat: np.ndarray, lengths: np.ndarray, vocab_size: int) -> tuple[TokenBatch, np.ndarray]:
    """Flat int64 ids and lengths -> a batch clamped to ``[-1, vocab_size]`` and out-of-range counts."""
    bad = (flat < 0) | (flat >= vocab_size)
    if not bad.any():  # the common case: nothing to clamp or report
        return TokenBatch(flat, lengths), np.zeros(lengths.shape[0], dtype=np.int64)
    return TokenBatch(np.clip(flat, -1, vocab_size), lengths), segment_sums(bad, np.cumsum(lengths))


def check_token_ids_each(tokens: TokenIds, vocab_size: int) -> tuple[TokenBatch, np.ndarray]:
    """The careful path: one sequence, and where needed one token, at a time; names the first bad value."""
    v = vocab_size
    seqs: list[np.ndarray] = []
    for i, seq in enumerate(tokens):
        if isinstance(seq, np.ndarray) and seq.ndim == 1 and seq.dtype.kind in "iu":  # int rows: vectorized
            seqs.append(seq.astype(np.int64))
            continue
        if not isinstance(seq, (list, tuple, np.ndarray)) and hasattr(seq, "__array__"):
            seq = np.asarray(seq)  # a tensor row
        if isinstance(seq, np.ndarray):
            if seq.ndim != 1:
                raise TypeError(f"sequence {i} must be a list of ints, got an array of shape {seq.shape}")
            seq = seq.tolist()
        if isinstance(seq, (str, bytes)) or not hasattr(seq, "__iter__"):
            raise TypeError(f"sequence {i} must be a list of ints, got {type(seq).__name__}")
        ints = []
        for tok in seq:
            if isinstance(tok, (bool, np.bool_)) or not isinstance(tok, (int, np.integer)):
                raise TypeError(f"sequence {i} holds {tok!r} ({type(tok).__name__}); token ids must be ints")
            ints.append(min(max(int(tok), -1), v))
        seqs.append(np.asarray(ints, dtype=np.int64))
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    flat = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
    return _clamped(flat, lengths, vocab_size)


def as_token_input(tokens: Any) -> Any:
    """Tensors (torch, jax...) become NumPy arrays; lists, tuples and arrays pass as they are."""
    if isinstance(tokens, (list, tuple, np.ndarray)) or not hasattr(tokens, "__array__"):
        return tokens
    if hasattr(tokens, "detach"):
        tokens = tokens.detach().cpu()
    return np.asarray(tokens)


def is_single_sequence(tokens: TokenIds) -> bool:
    if isinstance(tokens, np.ndarray):
        return tokens.ndim == 1
    if isinstance(tokens, (list, tuple)):  # [] is one sequence of no ids, as np.array([]) is
        return len(tokens) == 0 or isinstance(tokens[0], (int, np.integer))
    return False


def _flatten_int_lists(tokens: TokenIds) -> tuple[np.ndarray, np.ndarray] | None:
    """Lists/tuples of Python (or numpy) ints -> (flat int64 ids, lengths) in one pass; None if anything else.

    ``array('q')`` rejects floats, strings, None and ints beyond int64 (the per-token path then
    raises or clamps as usual); bools pass it as 0/1, so the few 0/1 values are checked by type.
    """
    if not isinstance(tokens, (list, tuple)) or not set(map(type, tokens)) <= {list, tuple}:
        return None
    buffer = array("q")
    try:
        for seq in tokens:  # fromlist is the fastest path from Python ints to a C buffer
            buffer.fromlist(seq) if type(seq) is list else buffer.extend(seq)
    except (TypeError, OverflowError):
        return None
    ids = np.frombuffer(buffer, dtype=np.int64)
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    return None if _holds_bool(tokens, ids, lengths) else (ids, lengths)


def _holds_bool(tokens: list | tuple, ids: np.ndarray, lengths: np.ndarray) -> bool:
    """Whether any 0/1 in ``ids`` came from a bool: only those values are looked at, one by one where
    a sequence holds few of them, by one C-level pass over its types where it holds many."""
    small = ids.view(np.uint64) <= 1  # 0 or 1 (negatives wrap to huge)
    if not small.any():
        return False
    ends = np.cumsum(lengths)
    per_seq = segment_sums(small, ends)
    dense = per_seq * 8 > lengths
    for i in np.flatnonzero(dense).tolist():
        if not set(map(type, tokens[i])).isdisjoint(_BOOL_TYPES):
            return True
    sparse = ~dense
    at = np.flatnonzero(small & np.repeat(sparse, lengths))  # sorted, so grouped by sequence
    owner = np.repeat(np.flatnonzero(sparse), per_seq[sparse])
    local = at - (ends - lengths)[owner]
    return any(type(tokens[i][k]) in _BOOL_TYPES for i, k in zip(owner.tolist(), local.tolist()))


def segment_sums(values: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Sums of ``values`` over consecutive segments ending at ``ends`` (the cumsum of segment lengths)."""
    total = np.concatenate(([0], np.cumsum(values, dtype=np.int64)))
    return total[ends] - total[np.concatenate(([0], ends[:-1]))] if ends.size else np.zeros(0, dtype=np.int64)


def out_of_range_note(count: int, vocab_size: int) -> str:
    return f"{count} id(s) outside [0, {vocab_size})"


def join_reasons(a: str, b: str) -> str:
    return "; ".join(s for s in (a, b) if s)
