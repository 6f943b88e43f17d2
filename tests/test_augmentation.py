"""The augmentation execution mode: on a linear gymnasium env with a scripted chunk policy, then in Meta-World
through the evaluation (``eval --execution augmented``)."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from action_tokenizers.binning import BinningTokenizer
from eval.augmentation import ModelStateEnv, TransitionModel, augmented_rollout, load_or_fit_model, quantize_actions
from eval.rollout import rollout

A = np.array([[0.9, 0.1], [0.0, 0.8]])
B = np.array([[0.5], [1.0]])


class LinearEnv(gym.Env):
    """x' = A x + B a (+ optional noise); reward -||x||; the observation is the state."""

    def __init__(self, noise: float = 0.0, horizon: int = 30) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gym.spaces.Box(-5.0, 5.0, (1,), np.float64)
        self.noise, self.horizon = noise, horizon

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.x, self.t = self.np_random.normal(size=2), 0
        return self.x.copy(), {}

    def step(self, action):
        self.x = A @ self.x + B @ np.asarray(action, dtype=np.float64) + self.noise * self.np_random.normal(size=2)
        self.t += 1
        return self.x.copy(), -float(np.linalg.norm(self.x)), False, self.t >= self.horizon, {"success": bool(np.linalg.norm(self.x) < 0.05)}


class ChunkPolicy:
    """Scripted: plans a chunk with feedback a = -K x on the exact model from the queried state; logs queries."""

    chunk_size, action_dim = 4, 1

    def __init__(self) -> None:
        self.queries: list[np.ndarray] = []
        self.last_stats = {"malformed": 0}

    def predict_action_chunk(self, batch: dict) -> np.ndarray:
        x = np.asarray(batch["observation.state"], dtype=np.float64)  # (b, s)
        assert len(batch["task"]) == x.shape[0]
        self.queries.append(x.copy())
        chunk = []
        for _ in range(self.chunk_size):
            a = -(x @ np.array([[0.6], [0.5]]))  # (b, 1)
            chunk.append(a)
            x = x @ A.T + a @ B.T
        return np.stack(chunk, axis=1)  # (b, h, d)


def _transitions(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x, a = rng.normal(size=(n, 2)), rng.normal(size=(n, 1))
    return x, a, x @ A.T + a @ B.T


def _exact_model() -> TransitionModel:
    return TransitionModel(ridge=0.0).fit(*_transitions())


def test_model_recovers_linear_dynamics_and_round_trips(tmp_path) -> None:
    model = _exact_model()
    x, a, y = _transitions(50, seed=1)
    np.testing.assert_allclose(model.predict(x, a), y, atol=1e-9)
    assert model.metrics["rmse"] < 1e-9 < model.metrics["rmse_hold_state"]
    model.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir() if not p.name.startswith(".")} == {"model.safetensors", "transition_model.json"}
    loaded = TransitionModel.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict(x, a), model.predict(x, a))
    np.testing.assert_allclose(loaded.rollout(x[:3], np.zeros((3, 5, 1)))[:, -1], x[:3] @ np.linalg.matrix_power(A, 5).T, atol=1e-9)
    with pytest.raises(ValueError, match=r"states \(b, 2\)"):
        model.predict(np.zeros((1, 3)), np.zeros((1, 1)))
    with pytest.raises(FileNotFoundError):
        TransitionModel.load(tmp_path / "missing")


def _linear_envs(noise: float = 0.0, horizon: int = 30):
    """An env factory for the rollout loop (any real task name: the loop asks the registry for its text)."""
    return lambda env_name, task, seed=0, **kwargs: LinearEnv(noise=noise, horizon=horizon)


LINEAR = dict(tasks=["reach-v3"], seeds=[3], n_envs=1)


def test_exact_model_augmentation_equals_closed_loop() -> None:
    aug = augmented_rollout(ChunkPolicy(), _exact_model(), "metaworld", n_action_steps=2, horizon=20,
                            env_factory=_linear_envs(), **LINEAR).episodes[0]
    policy = ChunkPolicy()
    ref = rollout(policy, "metaworld", n_action_steps=2, horizon=20, env_factory=_linear_envs(), **LINEAR).episodes[0]
    assert aug.length == ref.length == 20 and len(policy.queries) == 10
    np.testing.assert_allclose(aug.rewards, ref.rewards, atol=1e-9)  # the same real trajectory
    assert aug.model_drift < 1e-9 and aug.episode_return == pytest.approx(ref.episode_return)


def test_policy_is_queried_on_model_states_and_executes_open_loop() -> None:
    model = _exact_model()
    model.bias = np.array([0.02, -0.01])
    policy = ChunkPolicy()
    ep = augmented_rollout(policy, model, "metaworld", horizon=30, env_factory=_linear_envs(noise=0.05),
                           **LINEAR).episodes[0]  # n_action_steps = chunk size 4
    assert len(policy.queries) == 8  # ceil(30 / 4)
    start, _ = LinearEnv().reset(seed=3)
    np.testing.assert_allclose(policy.queries[0][0], start)  # both start at the real initial state
    aux = start
    for j, q in enumerate(policy.queries[:-1]):  # the next query is the model's propagation of this one's chunk
        chunk = ChunkPolicy().predict_action_chunk({"observation.state": q, "task": ["t"]})[0]
        aux = model.rollout(q, chunk[None])[0, -1]
        np.testing.assert_allclose(policy.queries[j + 1][0], aux, atol=1e-9)
    assert ep.model_drift > 0.01


def test_resync_resets_the_model_state_to_the_real_one() -> None:
    model = _exact_model()
    model.bias = np.array([0.05, 0.0])
    drifting, resynced = ModelStateEnv(LinearEnv(), model), ModelStateEnv(LinearEnv(), model, resync_every=2)
    for env in (drifting, resynced):
        env.reset(seed=0)
        for _ in range(2):
            aux, _, _, _, info = env.step(np.array([0.1]))
    np.testing.assert_allclose(aux, info["real_state"])  # resynced on step 2
    assert resynced.max_deviation[0] < drifting.max_deviation[0]


def test_quantize_actions_decodes_tokens_chunk_by_chunk() -> None:
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (11, 2))  # 11 frames: the last chunk of 4 is padded
    tok = BinningTokenizer(n_bins=8, normalization="minmax").fit(rng.uniform(-1, 1, (50, 4, 2)))
    q = quantize_actions(tok, actions)
    assert q.shape == actions.shape
    np.testing.assert_allclose(q[:8], tok.decode(tok.encode(actions[:8].reshape(2, 4, 2))).reshape(8, 2))
    assert np.abs(q - actions).max() <= 0.125 + 0.02  # half of a 2/8 bin, plus clipping at the fitted range


@pytest.mark.slow  # importing LeRobot's dataset reader dominates (~10-30 s on a busy machine)
def test_model_from_the_shared_dataset_with_a_tokenizer(so101_root) -> None:
    from action_tokenizers.data import load_chunks

    tok = BinningTokenizer(n_bins=64).fit(load_chunks(so101_root, chunk_size=5).actions)
    model = TransitionModel.from_dataset(so101_root, tokenizer=tok)
    assert model.state_dim == 6 and model.action_dim == 6
    assert model.metrics["rmse"] < model.metrics["rmse_hold_state"]  # better than predicting no motion


def test_model_state_env_hands_out_the_model_state_and_steps_the_real_env() -> None:
    model = _exact_model()
    model.bias = np.array([0.05, 0.0])
    env = ModelStateEnv(LinearEnv(), model)
    aux, info = env.reset(seed=2)
    np.testing.assert_allclose(aux, info["real_state"])
    a = np.array([0.3])
    aux2, reward, _, _, info = env.step(a)
    np.testing.assert_allclose(aux2, model.predict(aux[None], a[None])[0])
    assert reward == pytest.approx(-np.linalg.norm(info["real_state"]))  # the reward is the real env's
    assert env.max_deviation[2] == pytest.approx(np.linalg.norm(aux2 - info["real_state"]))
    assert env.max_deviation[2] == pytest.approx(0.05)  # one step of the bias, the model being exact otherwise


# ---------------------------------------------------------------------- Meta-World, through the evaluation
TASK = "reach-v3"


class SpyPolicy:
    """Meta-World's reach expert asked once per chunk, its action held for the chunk; records what it was shown."""

    chunk_size, action_dim, state_dim = 4, 4, 39

    def __init__(self) -> None:
        from eval.envs import expert_policy

        self.expert = expert_policy("metaworld", TASK)
        self.states: list[np.ndarray] = []
        self.chunks: list[np.ndarray] = []
        self.last_stats = {"malformed": 0}

    def predict_action_chunk(self, batch: dict) -> np.ndarray:
        states = np.asarray(batch["observation.state"], dtype=np.float64)  # (b, s)
        chunks = np.stack([np.repeat(self.expert(s)[None], self.chunk_size, axis=0) for s in states])  # (b, h, d)
        self.states.extend(states)
        self.chunks.extend(chunks)
        return chunks


def _replay(seed: int, actions: np.ndarray) -> np.ndarray:
    """Real states (t + 1, s) of the env from reset(seed) under the given actions (t, d)."""
    from eval.envs import make_env

    env = make_env("metaworld", TASK, seed=0)
    obs, _ = env.reset(seed=seed)
    states = [obs]
    for a in actions:
        states.append(env.step(a.astype(np.float32))[0])
    env.close()
    return np.stack(states).astype(np.float64)


@pytest.mark.slow  # collecting the demo fixture and building Meta-World envs take ~20 s on a busy machine
def test_metaworld_policy_is_queried_on_model_states_with_the_closed_loop_seeds(metaworld_root: Path) -> None:
    from eval.rollout import EnvPool, rollout

    model = TransitionModel.from_dataset(metaworld_root)
    assert model.state_dim == 39 and model.action_dim == 4 and model.source["actions"] == "raw"
    assert model.metrics["rmse"] < model.metrics["rmse_hold_state"]
    seeds, steps = [1000, 1001], 12
    aug_policy, cl_policy = SpyPolicy(), SpyPolicy()
    with EnvPool() as pool:
        aug = augmented_rollout(aug_policy, model, "metaworld", [TASK], seeds, horizon=steps, n_envs=1, pool=pool)
        ref = rollout(cl_policy, "metaworld", [TASK], seeds, horizon=steps, n_envs=1, pool=pool)
    assert [(e.task, e.seed, e.length) for e in aug.episodes] == [(e.task, e.seed, e.length) for e in ref.episodes] \
        == [(TASK, s, steps) for s in seeds]
    calls = steps // SpyPolicy.chunk_size  # 3 calls per episode, episodes run one after the other (n_envs=1)
    for j, (episode, seed) in enumerate(zip(aug.episodes, seeds)):
        queries = np.stack(aug_policy.states[j * calls : (j + 1) * calls])  # (calls, s)
        actions = np.concatenate(aug_policy.chunks[j * calls : (j + 1) * calls]).astype(np.float32)  # (steps, d)
        real = _replay(seed, actions)
        np.testing.assert_allclose(queries[0], real[0])  # the same initial state as closed loop ...
        np.testing.assert_allclose(queries[0], cl_policy.states[j * calls])
        for k in range(1, calls):  # ... then the model's prediction from the previous query under the chunk
            predicted = model.rollout(queries[k - 1][None], actions[None, (k - 1) * 4 : k * 4])[0, -1]
            np.testing.assert_allclose(queries[k], predicted, atol=1e-9)
            assert np.linalg.norm(queries[k] - real[4 * k]) > 1e-6  # not the real state
        assert episode.model_drift == pytest.approx(np.max(np.linalg.norm(
            model.rollout(real[0][None], actions[None])[0] - real[1:], axis=1)), rel=1e-6)


@pytest.mark.slow  # the whole eval command: demo fixture, two Meta-World rollouts, the report
def test_eval_command_runs_augmented(metaworld_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from eval.cli import main

    out = tmp_path / "eval"
    rc = main(["eval", "--policy", "expert", "--tasks", TASK, "--episodes", "2", "--horizon", "30", "--n-envs", "2",
               "--execution", "augmented", "--dataset", str(metaworld_root), "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    aug, expert = results["expert-augmented"], results["expert"]
    from eval.evaluate import ENTRY_FIELDS

    for entry in (aug, expert):
        assert set(ENTRY_FIELDS) <= set(entry) and set(ENTRY_FIELDS) <= set(entry["per_task"][TASK])
    assert aug["execution"] == "augmented" and expert["execution"] == "closed_loop" and expert["regret"] == 0.0
    assert results["meta"]["execution"] == "augmented" and results["meta"]["transition_model"]["dataset"] == str(metaworld_root)
    episodes = json.loads((out / "episodes.json").read_text())
    assert [e["seed"] for e in episodes["expert-augmented"]] == [e["seed"] for e in episodes["expert"]] == [1000, 1001]
    drifts = [e["model_drift"] for e in episodes["expert-augmented"]]
    assert aug["model_drift"] == pytest.approx(np.mean(drifts)) and min(drifts) > 0
    paired = {e["seed"]: e["episode_return"] for e in episodes["expert"]}
    assert aug["regret"] == pytest.approx(np.mean([paired[e["seed"]] - e["episode_return"] for e in episodes["expert-augmented"]]))
    saved = TransitionModel.load(out / "transition_model")  # the fitted model is saved with the report
    assert saved.source["dataset"] == str(metaworld_root)
    assert saved.metrics["rmse"] == pytest.approx(results["meta"]["transition_model"]["rmse"])
    assert "\n| expert-augmented | " in (out / "results.md").read_text()  # a row of the report's table


@pytest.mark.slow  # reads the demo fixture (LeRobot's reader)
def test_the_model_is_fitted_on_the_policys_decoded_tokens(metaworld_root: Path) -> None:
    from action_tokenizers.data import load_chunks

    class TokenPolicy:
        action_tokenizer = BinningTokenizer(n_bins=4).fit(load_chunks(metaworld_root, chunk_size=4).actions)

    raw = load_or_fit_model(object(), dataset=metaworld_root)
    coarse = load_or_fit_model(TokenPolicy(), dataset=metaworld_root)
    assert coarse.source["actions"] == "decoded tokens of BinningTokenizer (chunk 4)"
    assert coarse.metrics["n_transitions"] == raw.metrics["n_transitions"]
    assert not np.allclose(coarse.weights, raw.weights)  # 4 bins change the actions it was fitted on


def test_bad_execution_settings_fail_before_any_rollout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    import eval.evaluate as evaluate
    from eval.evaluate import EvalConfig, run_eval

    with pytest.raises(ValueError, match=r"--execution must be one of augmented, closed_loop, got 'open_loop'"):
        EvalConfig(tasks=(TASK,), execution="open_loop")
    with pytest.raises(ValueError, match="--execution augmented needs a transition model: pass --transition-model"):
        EvalConfig(tasks=(TASK,), execution="augmented")
    with pytest.raises(ValueError, match="used only with --execution augmented"):
        EvalConfig(tasks=(TASK,), dataset="runs/demos")
    from eval.cli import main

    with pytest.raises(SystemExit):  # the command line says the same
        main(["eval", "--tasks", TASK, "--execution", "open_loop", "--out", str(tmp_path / "cli")])
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())  # tyro draws a box around the message
    assert "--execution must be one of augmented, closed_loop, got 'open_loop'" in err

    def no_rollout(*args, **kwargs):
        raise AssertionError("a rollout started")

    monkeypatch.setattr(evaluate, "rollout", no_rollout)
    monkeypatch.setattr(evaluate, "augmented_rollout", no_rollout)
    out = tmp_path / "eval"
    with pytest.raises(FileNotFoundError, match="transition model directory .*nowhere does not exist"):
        run_eval(EvalConfig(tasks=(TASK,), episodes=1, out=out, execution="augmented",
                            transition_model=str(tmp_path / "nowhere"), progress=False))
    _exact_model().save(tmp_path / "toy")  # states 2-D, actions 1-D
    with pytest.raises(ValueError, match=r"transition model maps states of dimension 2 .* metaworld task reach-v3 has states of dimension 39"):
        run_eval(EvalConfig(tasks=(TASK,), episodes=1, out=out, execution="augmented",
                            transition_model=str(tmp_path / "toy"), progress=False))
    assert not out.exists()
