"""``run_eval`` through the real Meta-World loop: results.json schema, the report, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eval.evaluate import ENTRY_FIELDS, EvalConfig, results_markdown, run_eval, write_report
from training.regression import RegressionConfig, run_train_regression


def _check_entry(entry: dict) -> None:
    for key in ENTRY_FIELDS:
        assert key in entry, key
    assert 0.0 <= entry["success_rate"] <= 1.0
    lo, hi = entry["success_ci"]
    assert 0.0 <= lo <= entry["success_rate"] <= hi <= 1.0


def _check_results(results: dict, policies: set[str]) -> None:
    assert {k for k, v in results.items() if "success_rate" in v} == policies
    assert "meta" in results and "success_rate" not in results["meta"]
    for name in policies:
        _check_entry(results[name])
        assert results[name]["per_task"]
        for task_entry in results[name]["per_task"].values():
            _check_entry(task_entry)


@pytest.mark.slow
def test_expert_eval_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    cfg = EvalConfig(policy="expert", tasks=("reach-v3",), episodes=2, out=out, horizon=60, n_envs=2,
                     video=True, video_episodes=1, video_size=32, progress=False)
    results = run_eval(cfg)
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    _check_results(results, {"expert"})
    e = results["expert"]
    assert e["success_rate"] == 1.0 and e["regret"] == 0.0 and e["malformed"] == 0  # expert succeeds by step ~55
    assert e["tokens_per_chunk"] is None and e["n_action_steps"] == 1
    assert results["meta"]["seeds"] == [1000, 1001] and results["meta"]["episodes_per_task"] == 2
    episodes = json.loads((out / "episodes.json").read_text())["expert"]
    assert [ep["seed"] for ep in episodes] == [1000, 1001] and all(ep["length"] == 60 for ep in episodes)
    assert (out / "results.md").read_text().startswith("| policy | success (95% CI)")
    assert "| expert | 1.00 [0.34, 1.00] |" in (out / "results.md").read_text()
    assert {"success_per_task.png", "regret_vs_horizon.png"} <= {p.name for p in out.iterdir()}
    video = out / results["meta"]["videos"][0]
    assert video.suffix == ".mp4" and video.stat().st_size > 0


@pytest.mark.slow
def test_regression_baseline_through_the_whole_loop(metaworld_root: Path, tmp_path: Path) -> None:
    model = tmp_path / "regression"
    run_train_regression(RegressionConfig(dataset=str(metaworld_root), out=model, chunk_size=4, steps=1, hidden=16,
                                          layers=1, progress=False))
    out = tmp_path / "eval"
    results = run_eval(EvalConfig(policy=str(model), tasks=("reach-v3", "push-v3"), episodes=2, out=out,
                                  horizon=12, n_action_steps=3, n_envs=2, progress=False))
    _check_results(results, {"regression", "expert"})
    reg = results["regression"]
    assert reg["n_action_steps"] == 3 and reg["chunk_size"] == 4 and reg["errors"] == 0
    assert set(reg["per_task"]) == {"reach-v3", "push-v3"}
    assert isinstance(reg["regret"], float) and reg["latency_s_per_chunk"] > 0
    episodes = json.loads((out / "episodes.json").read_text())
    assert [(e["task"], e["seed"]) for e in episodes["regression"]] == [(e["task"], e["seed"]) for e in episodes["expert"]]
    assert all(len(e["latency_s"]) == 4 for e in episodes["regression"])  # ceil(12 / 3) policy calls
    paired = {(e["task"], e["seed"]): e["episode_return"] for e in episodes["expert"]}
    want = np.mean([paired[(e["task"], e["seed"])] - e["episode_return"] for e in episodes["regression"]])
    assert reg["regret"] == pytest.approx(want)


def test_mismatched_action_dim_rejected_before_any_rollout(tmp_path: Path) -> None:
    from action_tokenizers.normalize import Normalizer
    from training.regression import RegressionPolicy, _mlp, _state_normalizer

    rng = np.random.default_rng(0)
    model = tmp_path / "six-d"
    model.mkdir()
    RegressionPolicy(_mlp(39 + 1, 3 * 6, 8, 1), ["Reach a goal position"], Normalizer().fit(rng.normal(size=(50, 6))),
                     _state_normalizer(rng.normal(size=(50, 39))), 3, 6).save_pretrained(model)
    out = tmp_path / "eval"
    with pytest.raises(ValueError, match="policy action dimension 6 does not match the environment's 4"):
        run_eval(EvalConfig(policy=str(model), tasks=("reach-v3",), episodes=1, out=out, progress=False))
    assert not out.exists()


def test_bad_config_names_the_fix() -> None:
    with pytest.raises(ValueError, match=r"unknown metaworld task 'reach-v9' \(did you mean 'reach-v3'\?\); valid: .*push-v3"):
        EvalConfig(tasks=("reach-v9",))
    with pytest.raises(ValueError, match="unknown env family 'pusht'"):
        EvalConfig(env="pusht")
    with pytest.raises(ValueError, match="--episodes must be >= 1, got 0"):
        EvalConfig(episodes=0)
    assert EvalConfig(tasks="reach-v3, push-v3").tasks == ("reach-v3", "push-v3")  # type: ignore[arg-type]


def _entry(rate: float, n: int, tokens: float | None) -> dict:
    from eval.metrics import success_interval

    k = round(rate * n)
    base = {"success_rate": k / n, "success_ci": list(success_interval(k, n)), "mean_return": 100.0 * rate,
            "regret": 100.0 * (1 - rate), "malformed": 0, "latency_s_per_chunk": 0.01, "tokens_per_chunk": tokens,
            "control_hz": 500.0}
    curve = {"steps": [1, 50, 100], "regret": [0.0, 10 * (1 - rate), 30 * (1 - rate)]}
    return {**base, "per_task": {"reach-v3": dict(base), "push-v3": dict(base)}, "regret_vs_horizon": curve}


def test_report_compares_several_policies(tmp_path: Path) -> None:
    results = {"binning": _entry(0.6, 10, 40.0), "fast": _entry(0.8, 10, 11.5), "vq": _entry(0.3, 10, 4.0),
               "regression": _entry(0.9, 10, None), "expert": _entry(1.0, 10, None), "meta": {"tasks": ["reach-v3"]}}
    written = write_report(results, tmp_path)
    assert {p.name for p in written} == {"results.json", "results.md", "success_per_task.png",
                                         "success_vs_tokens.png", "regret_vs_horizon.png"}
    md = results_markdown(results)
    for name in ("binning", "fast", "vq", "regression", "expert"):
        assert f"| {name} |" in md
    assert "| fast | 0.80 [0.49, 0.94]" in md and "meta" not in md
    assert all(p.stat().st_size > 1000 for p in written if p.suffix == ".png")
