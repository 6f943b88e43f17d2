"""The regression-BC baseline: training lowers the loss, saving is data-only and round-trips exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from action_tokenizers.io import read_json
from action_tokenizers.normalize import Normalizer
from eval.policies import Policy, load_policy
from training.regression import RegressionConfig, RegressionPolicy, _mlp, _state_normalizer, run_train_regression

TASKS = ["Press a button", "Reach a goal position"]


def tiny_policy(state_dim: int = 4, chunk_size: int = 3, action_dim: int = 2, seed: int = 0) -> RegressionPolicy:
    """An untrained baseline built in memory (no dataset): for protocol, persistence and input checks."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = _mlp(state_dim + len(TASKS), chunk_size * action_dim, hidden=8, layers=1)
    actions = Normalizer("quantile").fit(rng.uniform(-1, 1, (100, action_dim)))
    return RegressionPolicy(model, TASKS, actions, _state_normalizer(rng.normal(size=(100, state_dim))), chunk_size, action_dim)


@pytest.fixture(scope="module")
def trained(so101_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reg") / "so101"
    run_train_regression(RegressionConfig(dataset=str(so101_root), out=out, chunk_size=5, steps=150, hidden=64,
                                          layers=2, batch_size=128, progress=False))
    return out


@pytest.mark.slow
def test_training_lowers_the_loss_and_saves_only_data(trained: Path) -> None:
    config = read_json(trained / "regression_config.json")
    history = config["loss_history"]
    assert history[-1] < 0.5 * history[0]
    assert sorted(p.name for p in trained.iterdir() if not p.name.startswith(".")) == ["model.safetensors", "regression_config.json"]
    assert config["state_dim"] == 6 and config["action_dim"] == 6 and config["chunk_size"] == 5


@pytest.mark.slow
def test_trained_policy_beats_the_mean_action(trained: Path, so101_root: Path) -> None:
    from action_tokenizers.data import load_chunks

    cs = load_chunks(so101_root, chunk_size=5, pad="last", state_key="observation.state", with_tasks=True)
    policy = load_policy(trained)
    chunks = policy.predict_action_chunk({"observation.state": cs.states, "task": cs.tasks})
    assert chunks.shape == cs.actions.shape and np.all(np.isfinite(chunks))
    err = np.abs(chunks - cs.actions)[cs.mask].mean()
    baseline = np.abs(cs.actions.mean(axis=(0, 1)) - cs.actions)[cs.mask].mean()
    assert err < 0.5 * baseline


def test_policy_protocol_and_round_trip(tmp_path: Path) -> None:
    policy = tiny_policy()
    assert isinstance(policy, Policy) and (policy.chunk_size, policy.action_dim, policy.state_dim) == (3, 2, 4)
    batch = {"observation.state": np.random.default_rng(1).normal(size=(5, 4)), "task": [TASKS[0]] * 3 + [TASKS[1]] * 2}
    chunks = policy.predict_action_chunk(batch)
    assert chunks.shape == (5, 3, 2) and np.all(np.isfinite(chunks))
    assert policy.last_stats["malformed"] == 0 and policy.last_stats["latency_s"] > 0
    policy.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "regression_config.json"]
    loaded = load_policy(tmp_path)
    assert isinstance(loaded, RegressionPolicy) and loaded.tasks == TASKS
    np.testing.assert_array_equal(loaded.predict_action_chunk(batch), chunks)


def test_same_seed_same_model(so101_root: Path, tmp_path: Path) -> None:
    cfgs = [RegressionConfig(dataset=str(so101_root), out=tmp_path / f"r{i}", chunk_size=5, steps=3, hidden=16,
                             layers=1, seed=s, progress=False) for i, s in enumerate((0, 0, 1))]
    for cfg in cfgs:
        run_train_regression(cfg)
    batch = {"observation.state": np.linspace(-1, 1, 12).reshape(2, 6), "task": ["Pick the orange cube and place it in the box"] * 2}
    a, b, c = (RegressionPolicy.from_pretrained(cfg.out).predict_action_chunk(batch) for cfg in cfgs)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_bad_inputs_name_the_problem() -> None:
    policy = tiny_policy()
    states = np.zeros((2, 4))
    with pytest.raises(ValueError, match=r"not in the training data; known tasks: \['Press a button'"):
        policy.predict_action_chunk({"observation.state": states, "task": ["fly to the moon"] * 2})
    with pytest.raises(ValueError, match=r"observation.state must have shape \(b, 4\), got \(2, 6\)"):
        policy.predict_action_chunk({"observation.state": np.zeros((2, 6)), "task": TASKS})
    with pytest.raises(ValueError, match="got 2 states but 1 task strings"):
        policy.predict_action_chunk({"observation.state": states, "task": TASKS[:1]})
    with pytest.raises(ValueError, match="--dataset is required"):
        run_train_regression(RegressionConfig())
    with pytest.raises(ValueError, match=r"--normalization must be one of"):
        RegressionConfig(dataset="x", normalization="zscore")
    with pytest.raises(ValueError, match="--steps must be >= 1"):
        RegressionConfig(dataset="x", steps=0)


def test_load_policy_rejects_unknown_directories(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds no policy marker file"):
        load_policy(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither 'expert' nor a directory"):
        load_policy(tmp_path / "missing")
