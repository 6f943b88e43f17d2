"""Diagnostics on cases with known answers: eps of binning, TV, continuity, incremental gain, kernel decoding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from action_tokenizers.base import ActionTokenizer
from action_tokenizers.binning import BinningTokenizer
from eval.theory.diagnostics import (
    KernelDecoder,
    SeededSimulator,
    action_error,
    constant_perturbation,
    continuity_violation_rate,
    incremental_gain,
    quantization_eps,
    relaxed_tv,
    token_continuity_violation_rate,
    token_tv,
)
from eval.theory.systems import LinearSystem


# --------------------------------------------------------------------------- eps
def test_action_error_known_values() -> None:
    ref = np.zeros((2, 3, 2))
    act = ref.copy()
    act[0, 0] = [3.0, 4.0]  # norm 5
    act[1, 2] = [0.0, -1.0]  # norm 1
    rep = action_error(ref, act)
    assert rep.worst == 5.0 and rep.n == 6
    assert rep.mean == pytest.approx(6.0 / 6)
    assert rep.worst_per_dim == [3.0, 4.0]
    with pytest.raises(ValueError, match="same shape"):
        action_error(ref, act[:1])


def test_eps_of_uniform_binning_is_half_the_bin_width() -> None:
    x = np.linspace(0.0, 2.0, 20001).reshape(-1, 1, 1)
    tok = BinningTokenizer(n_bins=10, edges="uniform", normalization="minmax").fit(x)
    rep = quantization_eps(tok, x)
    assert rep.worst == pytest.approx(0.1, abs=1e-3)  # bin width 0.2 in raw units
    assert rep.mean == pytest.approx(0.05, abs=1e-3)  # uniform data: mean error is a quarter width


# --------------------------------------------------------------------------- TV
def test_tv_of_identical_is_zero_and_of_disjoint_is_one() -> None:
    p = np.array([[0.2, 0.3, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0]])
    q = np.array([[0.2, 0.3, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(token_tv(p, q), [0.0, 1.0])
    decoded = np.array([0.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(relaxed_tv(p, q, decoded, threshold=0.5), [0.0, 1.0])
    # threshold 3 forgives moving the mass from 0.0 to 3.0
    np.testing.assert_allclose(relaxed_tv(p, q, decoded, threshold=3.0), [0.0, 0.0])


def test_relaxed_tv_moves_mass_to_nearby_tokens_only() -> None:
    p, q = np.array([[0.5, 0.5, 0.0]]), np.array([[0.0, 0.5, 0.5]])
    decoded = np.array([0.0, 1.0, 10.0])
    assert token_tv(p, q)[0] == pytest.approx(0.5)
    # 0 -> 1 is free at threshold 1.5, but mass must still reach 10.0 from far away: cost 0.5
    assert relaxed_tv(p, q, decoded, threshold=1.5)[0] == pytest.approx(0.5)
    q2 = np.array([[0.0, 1.0, 0.0]])
    assert relaxed_tv(p, q2, decoded, threshold=1.5)[0] == pytest.approx(0.0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.01, 1.0), min_size=4, max_size=4), st.lists(st.floats(0.01, 1.0), min_size=4, max_size=4),
       st.floats(0.0, 3.0))
def test_relaxed_tv_is_between_zero_and_tv(a: list[float], b: list[float], threshold: float) -> None:
    p, q = np.array([a]) / sum(a), np.array([b]) / sum(b)
    tv = token_tv(p, q)[0]
    r = relaxed_tv(p, q, np.arange(4.0), threshold)[0]
    assert -1e-9 <= r <= tv + 1e-9
    assert token_tv(q, p)[0] == pytest.approx(tv)


# --------------------------------------------------------------------------- continuity
def test_binning_of_a_lipschitz_expert_never_violates() -> None:
    tok = BinningTokenizer(n_bins=64, edges="uniform", normalization="minmax").fit(np.linspace(-1, 1, 1000).reshape(-1, 1, 1))
    width = 2.0 / 64

    def act(x: np.ndarray) -> np.ndarray:
        return tok.decode(tok.encode(np.sin(x).reshape(-1, 1, 1)))[:, 0]  # sin is 1-Lipschitz

    states = np.random.default_rng(0).uniform(-1.5, 1.5, (3000, 1))
    rep = continuity_violation_rate(act, states, radius=0.05, threshold=width * (1 + 1e-9), lipschitz=1.0)
    assert rep.rate == 0.0 and rep.n_pairs == 3000


def test_step_policy_violates_at_the_crossing_rate() -> None:
    # states uniform on [0, 1], a jump at 0.5, moves of size U(0, r] in a random direction:
    # a pair crosses with probability E[size] = r / 2
    states = np.random.default_rng(1).uniform(0, 1, (40000, 1))
    rep = continuity_violation_rate(lambda x: (x > 0.5).astype(float), states, radius=0.1, threshold=0.5)
    assert rep.rate == pytest.approx(0.05, abs=0.006)


def test_token_policy_continuity() -> None:
    states = np.random.default_rng(2).uniform(-1, 1, (500, 2))
    const = lambda x: np.tile([0.25, 0.75], (x.shape[0], 1))  # noqa: E731
    assert token_continuity_violation_rate(const, np.array([0.0, 1.0]), states, radius=0.1).rate == 0.0
    hard = lambda x: np.stack([(x[:, 0] > 0), (x[:, 0] <= 0)], axis=1).astype(float)  # noqa: E731
    far = token_continuity_violation_rate(hard, np.array([0.0, 1.0]), states, radius=0.1, tolerance=0.5)
    near = token_continuity_violation_rate(hard, np.array([0.0, 1.0]), states[:100], radius=0.1, threshold=2.0)
    assert far.rate > 0.0 and near.rate == 0.0  # the two tokens decode within the threshold: no violation


# --------------------------------------------------------------------------- incremental gain
@pytest.mark.parametrize("a", [0.5, 0.9, 1.0, 1.3])
def test_linear_system_gain_equals_the_analytic_value(a: float) -> None:
    sim = LinearSystem(a, 0.7, noise_std=0.3)  # noise cancels exactly thanks to common random numbers
    assert isinstance(sim, SeededSimulator)
    x0 = np.random.default_rng(3).standard_normal((16, 1))
    delta = constant_perturbation(16, 25, 1, 0.01, seed=4)
    rep = incremental_gain(sim, x0, delta, nominal_actions=np.zeros_like(delta), seed=5)
    assert rep.gain == pytest.approx(sim.gain(25), rel=1e-9)
    assert rep.gain_mean == pytest.approx(sim.gain(25), rel=1e-9)
    assert len(rep.deviation) == 25 and rep.perturbation == pytest.approx(0.01)


def test_closed_loop_gain_uses_the_closed_loop_dynamics() -> None:
    a, b, k = 1.5, 1.0, 1.0  # unstable open loop, closed loop a - b k = 0.5
    sim = LinearSystem(a, b, noise_std=0.1)
    delta = constant_perturbation(8, 30, 1, 0.1, seed=0)
    rep = incremental_gain(sim, np.ones((8, 1)), delta, policy=lambda x: -k * x, seed=0)
    assert rep.gain == pytest.approx(LinearSystem(a - b * k, b).gain(30), rel=1e-9)
    with pytest.raises(ValueError, match="exactly one"):
        incremental_gain(sim, np.ones((8, 1)), delta, seed=0)


# --------------------------------------------------------------------------- kernel decoding
def _binning(n_bins: int = 4) -> BinningTokenizer:
    return BinningTokenizer(n_bins=n_bins, edges="uniform", normalization="minmax").fit(np.array([-1.0, 1.0]).reshape(-1, 1, 1))


def test_kernel_decodes_to_the_conditional_mean() -> None:
    tok = _binning()  # bins of width 0.5 on [-1, 1]; bin 2 is [0, 0.5) with centre 0.25
    data = np.array([0.05, 0.05, 0.05, 0.35]).reshape(-1, 1, 1)  # all in bin 2, mean 0.125
    kernel = KernelDecoder(tok).fit(data)
    out = kernel.decode([[2], [0]])
    assert out[0, 0, 0] == pytest.approx(0.125)
    assert out[1, 0, 0] == pytest.approx(tok.decode([[0]])[0, 0, 0])  # unseen token: the bin centre
    assert np.mean((kernel.decode(tok.encode(data)) - data) ** 2) < np.mean((tok.decode(tok.encode(data)) - data) ** 2)


def test_state_conditioned_kernel_recovers_a_deterministic_expert() -> None:
    tok = _binning()
    states = np.repeat([[0.0], [1.0]], 50, axis=0)
    actions = np.where(states[:, 0] > 0.5, 0.4, 0.1).reshape(-1, 1, 1)  # same bin, two values
    kernel = KernelDecoder(tok, state_bins=2).fit(actions, states)
    np.testing.assert_allclose(kernel.decode(tok.encode(actions), states)[:, 0, 0], actions[:, 0, 0])
    with pytest.raises(ValueError, match="pass states"):
        kernel.decode(tok.encode(actions))


class _MeanTokenizer(ActionTokenizer):
    """One token per chunk: the bin of its mean (to exercise the whole-sequence kernel)."""

    family = "mean-test"

    @property
    def vocab_size(self) -> int:
        return 4

    def _fit(self, x: np.ndarray) -> None:
        pass

    def _encode(self, x: np.ndarray) -> list[list[int]]:
        return [[int(np.clip((m + 1) * 2, 0, 3))] for m in x.mean(axis=(1, 2))]

    def _decode(self, batch):
        level = (np.clip(batch.padded(1)[0][:, 0], 0, 3) + 0.5) / 2 - 1
        x = np.broadcast_to(level[:, None, None], (len(batch), self.chunk_size, self.action_dim)).copy()
        return x, np.zeros(len(batch), bool), [""] * len(batch)


def test_kernel_on_whole_sequences() -> None:
    chunks = np.stack([np.array([[0.1, 0.2], [0.3, 0.2]]), np.array([[0.2, 0.2], [0.2, 0.2]])])  # both mean 0.2
    tok = _MeanTokenizer(normalization="identity").fit(chunks)
    kernel = KernelDecoder(tok).fit(chunks)
    assert not kernel.per_scalar
    np.testing.assert_allclose(kernel.decode(tok.encode(chunks))[0], chunks.mean(axis=0))
