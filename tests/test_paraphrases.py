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
