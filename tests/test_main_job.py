"""The main job: every stage runs once, a re-run reuses them, a changed input re-runs what depends on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.main_job import RunConfig, Stage, headline_table, presets, run_config, run_main


def test_presets_and_bad_config():
    assert {"quick", "default", "report", "large"} <= set(presets())
    assert presets()["large"].eval.episodes >= 50 and presets()["report"].eval.episodes == 50
    with pytest.raises(ValueError, match="did you mean 'quick'"):
        RunConfig(preset="quik")
    with pytest.raises(ValueError, match="--tokenizers"):
        RunConfig(tokenizers=("bpe",))
    with pytest.raises(ValueError, match=r"--train.out is set by the run; use --out"):
        run_config("quick", train={"out": "elsewhere"})
    cfg = run_config("quick", tasks="reach-v3,push-v3", train={"max_steps": 7})
    assert cfg.tasks == ("reach-v3", "push-v3") and cfg.train.max_steps == 7 and cfg.train.hidden_size == 32
    assert str(cfg.out) == "runs/quick" and cfg.eval.horizon == 100


def test_cli_starts_from_the_preset_and_takes_nested_options():
    import tyro

    from eval.cli import _split_lists
    from eval.main_job import default_from_argv

    argv = ["--preset", "quick", "--train.max-steps", "7", "--tasks", "reach-v3,push-v3", "--fit.binning.n-bins", "64"]
    cfg = tyro.cli(RunConfig, args=_split_lists(argv), default=default_from_argv(argv))
    assert (cfg.preset, cfg.train.max_steps, cfg.train.hidden_size, cfg.collect.episodes) == ("quick", 7, 32, 4)
    assert cfg.tasks == ("reach-v3", "push-v3") and cfg.fit.binning.n_bins == 64


def test_stage_fingerprint(tmp_path):
    a, b = Stage(tmp_path / "s", {"x": 1}), Stage(tmp_path / "s", {"x": 2})
    assert not a.done
    (tmp_path / "s").mkdir()
    a.mark_done(1.0)
    assert a.done and not b.done


@pytest.mark.slow
def test_run_reuses_finished_stages(tmp_path, capsys):
    cfg = dict(out=tmp_path / "run", tasks=("reach-v3",), collect={"episodes": 2}, eval={"episodes": 1},
               train={"max_steps": 2}, tokenizers=("binning",), progress=False)
    first = run_main(run_config("quick", **cfg))
    assert set(first) == {"binning", "regression", "expert", "meta"}
    assert not any(s["reused"] for s in first["meta"]["stages"].values())
    for key in ("success_rate", "success_ci", "mean_return", "regret", "malformed", "latency_s_per_chunk", "per_task"):
        assert key in first["binning"]
    assert first["binning"]["offline"]["tokens_per_chunk_mean"] == 40
    heldout = _heldout_lists(tmp_path / "run")  # one split for every stage
    assert {"tokenizers/binning/tokenizer/config.json", "models/binning/policy_config.json",
            "models/regression/regression_config.json", "results.json"} <= set(heldout)
    assert len({tuple(v) for vs in heldout.values() for v in vs}) == 1 and next(iter(heldout.values()))[0]
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"results.json", "results.md", "demos", "tokenizers", "models", "eval"} <= files
    assert "| binning |" in capsys.readouterr().out

    second = run_main(run_config("quick", **cfg))
    assert all(s["reused"] for s in second["meta"]["stages"].values())
    assert second["binning"]["success_rate"] == first["binning"]["success_rate"]

    third = run_main(run_config("quick", **{**cfg, "train": {"max_steps": 3}}))  # training changed: train and eval re-run
    stages = third["meta"]["stages"]
    assert stages["collect"]["reused"] and stages["fit binning"]["reused"]
    assert not stages["train binning"]["reused"] and not stages["eval binning"]["reused"]
    assert stages["train regression"]["reused"]
    table = headline_table(json.loads((tmp_path / "run" / "results.json").read_text()))
    assert table.splitlines()[-1].startswith("| expert |")


def _heldout_lists(run: Path) -> dict[str, list[list[int]]]:
    """Every ``heldout_episodes`` value (at any depth) of every JSON file under ``run``, by relative path."""
    found: dict[str, list[list[int]]] = {}

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "heldout_episodes":
                    found.setdefault(path, []).append(v)
                walk(v, path)
        elif isinstance(node, list):
            for v in node:
                walk(v, path)

    for f in sorted(run.rglob("*.json")):
        walk(json.loads(f.read_text()), str(f.relative_to(run)))
    return found
