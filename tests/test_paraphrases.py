"""Paraphrased instructions: one list per Meta-World task, never a training string, seeds shared with the original run."""

from __future__ import annotations

import pytest

from eval.paraphrases import PARAPHRASES, check_unseen, instruction_for, paraphrase_map, unknown_word_share


def test_every_metaworld_task_has_paraphrases_that_differ_from_its_description() -> None:
    from eval.envs import list_tasks, task_description

    tasks = list_tasks("metaworld")
    assert sorted(PARAPHRASES) == sorted(tasks)
    descriptions = [task_description("metaworld", t) for t in tasks]
    check_unseen(PARAPHRASES, descriptions)  # no paraphrase is any task's training instruction
    for task, options in PARAPHRASES.items():
        assert len(options) >= 2 and len(set(options)) == len(options), task


def test_a_paraphrase_seen_in_training_is_refused() -> None:
    with pytest.raises(ValueError, match="appear among the training instructions"):
        check_unseen({"reach-v3": ("Reach a goal position",)}, ["reach  a GOAL position"])


def test_episodes_cycle_through_the_paraphrases_and_unknown_tasks_are_named() -> None:
    p = paraphrase_map(["reach-v3"])
    got = [instruction_for("reach-v3", j, p) for j in range(4)]
    assert got == [PARAPHRASES["reach-v3"][j % len(PARAPHRASES["reach-v3"])] for j in range(4)]
    with pytest.raises(KeyError, match="did you mean 'reach-v3'"):
        paraphrase_map(["reach-v2"])


def test_word_level_tokenizer_loses_paraphrase_words() -> None:
    from training.model import build_word_tokenizer

    tok = build_word_tokenizer(["Reach a goal position"])
    assert unknown_word_share(tok, ["Reach a goal position"]) == 0.0
    assert unknown_word_share(tok, ["Reach the red target quickly"]) == pytest.approx(4 / 5)


def test_rollout_gives_each_episode_its_instruction_and_records_it() -> None:
    import gymnasium as gym
    import numpy as np

    from eval.rollout import rollout

    class FakeEnv:
        action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float64)

        def reset(self, seed=None):
            return np.zeros(3), {}

        def step(self, action):
            return np.zeros(3), 0.0, False, False, {"success": 0.0}

        def close(self):
            pass

    def factory(envs):
        return lambda env_name, task, seed=0, **kwargs: envs.pop(0)

    seen: list[list[str]] = []

    class TextPolicy:
        chunk_size, action_dim = 2, 2
        last_stats = {"malformed": 0}

        def predict_action_chunk(self, batch):
            seen.append(list(batch["task"]))
            return np.zeros((len(batch["task"]), 2, 2))

    texts = {"reach-v3": ("first wording", "second wording")}
    out = rollout(TextPolicy(), "metaworld", ["reach-v3"], [5, 6, 7], horizon=4, n_envs=2,
                  env_factory=factory([FakeEnv(), FakeEnv()]),
                  instructions=lambda task, j: instruction_for(task, j, texts))
    assert [e.instruction for e in out.episodes] == ["first wording", "second wording", "first wording"]
    assert seen[0] == ["first wording", "second wording"] and seen[-1] == ["first wording"]
    default = rollout(TextPolicy(), "metaworld", ["reach-v3"], [5], horizon=2, n_envs=1, env_factory=factory([FakeEnv()]))
    assert default.episodes[0].instruction == "Reach a goal position"  # the task description, as in the demos


@pytest.mark.slow
def test_eval_reports_original_and_paraphrased_success_side_by_side(metaworld_root, tmp_path) -> None:
    """A tiny LM policy and the regression baseline on a short rollout: the LM gets unseen sentences, the
    regression baseline (one-hot over its training tasks) is reported as not applicable."""
    import json

    from action_tokenizers.binning import BinningTokenizer
    from action_tokenizers.data import load_chunks
    from eval.evaluate import EvalConfig, run_eval
    from training.regression import RegressionConfig, run_train_regression
    from training.train import TrainConfig, run_train

    chunks = load_chunks(metaworld_root, chunk_size=4, pad="last")
    tok_dir = BinningTokenizer(n_bins=16).fit(chunks.actions).save_pretrained(tmp_path / "tok")
    lm_dir = tmp_path / "lm"
    run_train(TrainConfig(dataset=metaworld_root, tokenizer=tok_dir, out=lm_dir, hidden_size=16, n_layers=1, n_heads=2,
                          max_steps=2, batch_size=4, warmup_steps=1, eval_chunks=2, progress=False))
    tasks = ("reach-v3", "push-v3")
    out = tmp_path / "eval-lm"
    results = run_eval(EvalConfig(policy=str(lm_dir), tasks=tasks, episodes=3, out=out, horizon=6, n_action_steps=3,
                                  n_envs=2, name="lm", paraphrased=True, progress=False))
    p = results["lm"]["paraphrased"]
    assert p["applicable"] and 0.0 <= p["success_rate"] <= 1.0 and set(p["per_task"]) == set(tasks)
    assert p["instructions"] == {t: list(PARAPHRASES[t]) for t in tasks}
    assert p["unknown_word_share"] > 0.3  # the word-level LM built from the demo strings loses most paraphrase words
    episodes = json.loads((out / "episodes.json").read_text())
    original, para = episodes["lm"], episodes["lm-paraphrased"]
    assert [(e["task"], e["seed"]) for e in para] == [(e["task"], e["seed"]) for e in original]  # same initial states
    assert [e["instruction"] for e in para] == [instruction_for(e["task"], j % 3, PARAPHRASES) for j, e in enumerate(para)]
    assert {e["instruction"] for e in original} == {"Reach a goal position", "Push the puck to a goal"}
    assert "lm-paraphrased" not in results  # episodes only; the summary sits in the lm entry
    assert "| lm |" in (out / "results.md").read_text().split("Instructions never seen in training")[1]

    reg_dir = tmp_path / "regression"
    run_train_regression(RegressionConfig(dataset=str(metaworld_root), out=reg_dir, chunk_size=4, steps=1, hidden=16,
                                          layers=1, progress=False))
    results = run_eval(EvalConfig(policy=str(reg_dir), tasks=("reach-v3",), episodes=1, out=tmp_path / "eval-reg",
                                  horizon=3, n_action_steps=3, n_envs=1, paraphrased=True, progress=False))
    assert results["regression"]["paraphrased"] == {"applicable": False, "reason": "takes the task from a closed set, not as text"}
