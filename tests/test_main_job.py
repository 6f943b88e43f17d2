"""The main job: every stage runs once, a re-run reuses them, a changed input re-runs what depends on it."""

from __future__ import annotations

import json

import pytest

from eval.main_job import PRESETS, RunConfig, Stage, headline_table, run_main


def test_presets_and_bad_config():
    assert {"quick", "default", "large"} <= set(PRESETS)
    assert PRESETS["large"].eval_episodes >= 50
    with pytest.raises(ValueError, match="did you mean 'quick'"):
        RunConfig(preset="quik")
    with pytest.raises(ValueError, match="--tokenizers"):
        RunConfig(tokenizers=("bpe",))
    cfg = RunConfig(preset="quick", tasks="reach-v3,push-v3", train_steps=7)
    assert cfg.resolved().tasks == ("reach-v3", "push-v3") and cfg.resolved().train_steps == 7


def test_stage_fingerprint(tmp_path):
    a, b = Stage(tmp_path / "s", {"x": 1}), Stage(tmp_path / "s", {"x": 2})
    assert not a.done
    (tmp_path / "s").mkdir()
    a.mark_done(1.0)
    assert a.done and not b.done


@pytest.mark.slow
def test_run_reuses_finished_stages(tmp_path, capsys):
    cfg = dict(preset="quick", out=tmp_path / "run", tasks=("reach-v3",), demos_per_task=2, eval_episodes=1,
               train_steps=2, tokenizers=("binning",), progress=False)
    first = run_main(RunConfig(**cfg))
    assert set(first) == {"binning", "regression", "expert", "meta"}
    assert not any(s["reused"] for s in first["meta"]["stages"].values())
    for key in ("success_rate", "success_ci", "mean_return", "regret", "malformed", "latency_s_per_chunk", "per_task"):
        assert key in first["binning"]
    assert first["binning"]["offline"]["tokens_per_chunk_mean"] == 40
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"results.json", "results.md", "demos", "tokenizers", "models", "eval"} <= files
    assert "| binning |" in capsys.readouterr().out

    second = run_main(RunConfig(**cfg))
    assert all(s["reused"] for s in second["meta"]["stages"].values())
    assert second["binning"]["success_rate"] == first["binning"]["success_rate"]

    third = run_main(RunConfig(**{**cfg, "train_steps": 3}))  # training changed: train and eval re-run, data reused
    stages = third["meta"]["stages"]
    assert stages["collect"]["reused"] and stages["fit binning"]["reused"]
    assert not stages["train binning"]["reused"] and not stages["eval binning"]["reused"]
    assert stages["train regression"]["reused"]
    table = headline_table(json.loads((tmp_path / "run" / "results.json").read_text()))
    assert table.splitlines()[-1].startswith("| expert |")
