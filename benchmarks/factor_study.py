"""Why tokenized policies lose to regression: change one factor at a time, measure in closed loop.

Each row is one ``action-tokenizers train`` (unless it only changes evaluation and reuses another
row's model) and one ``action-tokenizers eval`` on the tasks where the default policies fall short,
with the same demos, split, tokenizers and evaluation seeds as the main job it starts from. The
commands are the public CLI, so every row of the table can be re-run by hand; results land in
``<out>/<row>/`` and the summary in ``<out>/factor_study.{json,md}``.

    python benchmarks/factor_study.py --run runs/default --out runs/study
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "action-tokenizers")


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    factor: str
    family: str = "fast"
    train: tuple[str, ...] = ()
    """Flags added to the default training command."""
    evaluate: tuple[str, ...] = ()
    """Flags added to the default evaluation command."""
    model_from: str | None = None
    """Evaluate this row's model instead of training one (evaluation-only factors)."""
    fit: tuple[str, ...] = ()
    """Flags of a tokenizer fitted for this row (instead of the run's own)."""
    collect: tuple[str, ...] = ()
    """Flags of demos collected for this row (the run's tasks and seeds otherwise); the run's tokenizer
    is kept and the row's model holds out its own default share of these demos."""


ROWS: tuple[Row, ...] = (  # in the order they run: trained rows first, then rows reusing the run's models
    Row("fast-steps-3000", "3000 training steps", train=("--max-steps", "3000")),
    Row("fast-lr-3e-3", "peak learning rate 3e-3", train=("--lr", "3e-3")),
    Row("fast-obs-mlp", "state encoder: MLP (256) into 4 LM positions", train=("--obs-hidden", "256", "--obs-tokens", "4")),
    Row("binning-smooth-1", "binning, cross-entropy against a Gaussian over neighbouring bins (std 1 bin)",
        family="binning", train=("--bin-smoothing", "1.0")),
    Row("binning-smooth-1-seed-1", "the same, training seed 1", family="binning",
        train=("--bin-smoothing", "1.0", "--seed", "1")),
    Row("fast-default", "default recipe (1500 steps x 32, lr 1e-3, 5 of 10 actions executed)"),
    Row("regression", "regression baseline (the run's MLP)", family="regression"),
    Row("fast-replan-2", "execute 2 of 10 actions per chunk", evaluate=("--n-action-steps", "2"), model_from="fast-default"),
    Row("fast-replan-10", "execute all 10 actions per chunk", evaluate=("--n-action-steps", "10"), model_from="fast-default"),
    Row("fast-seed-1", "default recipe, training seed 1 (same split): model-to-model spread", train=("--seed", "1")),
    Row("fast-seed-2", "default recipe, training seed 2 (same split)", train=("--seed", "2")),
    Row("fast-replan-1", "execute 1 of 10 actions per chunk", evaluate=("--n-action-steps", "1"), model_from="fast-default"),
    Row("fast-ensemble", "temporal ensembling (ACT, decay 0.01), re-planned every step",
        evaluate=("--n-action-steps", "1", "--ensemble-decay", "0.01"), model_from="fast-default"),
    Row("fast-temperature-0.5", "sampling at temperature 0.5 (default: greedy)", evaluate=("--temperature", "0.5"),
        model_from="fast-default"),
    Row("fast-chunk-20", "chunks of 20 steps (5 executed)", fit=("--chunk-size", "20")),
    Row("fast-batch-64", "batch 64", train=("--batch-size", "64")),
    Row("fast-wide", "model 256 wide, 6 layers", train=("--hidden-size", "256", "--n-layers", "6")),
    Row("binning-default", "binning, plain cross-entropy (the default before this study)", family="binning",
        train=("--bin-smoothing", "0")),
    Row("vq-default", "VQ, default recipe", family="vq"),
    Row("binning-64", "binning with 64 bins (default 256)", family="binning", fit=("--binning.n-bins", "64")),
    Row("binning-smooth-1-expect", "binning, Gaussian targets (std 1) read out as the expectation of the bin centres",
        family="binning", evaluate=("--readout", "expectation"), model_from="binning-smooth-1"),
    Row("fast-200", "200 demos per task instead of 50 (same 1500 x 32 steps)", collect=("--episodes", "200")),
    Row("fast-sas0", "demos end at success (no steps after it; default 10)", collect=("--steps-after-success", "0")),
    Row("fast-noise02", "DART: expert actions executed with Gaussian noise (std 0.2), clean actions recorded",
        collect=("--action-noise", "0.2")),
)


@dataclasses.dataclass
class StudyConfig:
    run: Path = Path("runs/default")
    """A main-job run directory (its demos, tokenizers and regression model are used)."""
    out: Path = Path("runs/study")
    """Where each row's model and evaluation go."""
    tasks: tuple[str, ...] = ("reach-v3", "push-v3")
    """Tasks evaluated (where the default tokenized policies fall short)."""
    episodes: int = 50
    """Evaluation episodes per task (seeds 1000 on, shared by every row)."""
    rows: tuple[str, ...] = ()
    """Only these rows (default: all)."""
    extra_rows: tuple[str, ...] = ()
    """More rows as JSON objects with Row's fields (for factors added after this file)."""
    workers: int = 2
    """Rows run at once (each uses one torch thread; their latencies share the cores, so the table leaves them out)."""


def heldout(run: Path) -> list[int]:
    stage = json.loads((run / "tokenizers" / "fast" / "stage.json").read_text())
    return list(stage["key"]["data"]["heldout_episodes"])


def train_cmd(cfg: StudyConfig, row: Row, tokenizer: Path) -> list[str]:
    split = [] if row.collect else ["--heldout-episodes", *map(str, heldout(cfg.run))]
    return [CLI, "train", "--dataset", str(demos(cfg, row)), "--tokenizer", str(tokenizer),
            "--out", str(cfg.out / row.name / "model"), *split, "--seed", "0",
            "--overwrite", "--no-progress", *row.train]


def demos(cfg: StudyConfig, row: Row) -> Path:
    return cfg.out / row.name / "demos" if row.collect else cfg.run / "demos"


def collect_cmd(cfg: StudyConfig, row: Row) -> list[str]:
    """The run's own demo tasks (from its ``meta/collect.json``), collected again with the row's flags."""
    tasks = list(json.loads((cfg.run / "demos" / "meta" / "collect.json").read_text())["tasks"])
    return [CLI, "collect", "--tasks", *tasks, "--out", str(demos(cfg, row)), "--no-progress", *row.collect]


def eval_cmd(cfg: StudyConfig, row: Row, policy: Path) -> list[str]:
    return [CLI, "eval", "--policy", str(policy), "--tasks", *cfg.tasks, "--episodes", str(cfg.episodes),
            "--n-envs", "10", "--n-action-steps", "5", "--horizon", "150", "--seed", "1000",
            "--out", str(cfg.out / row.name / "eval"), "--name", row.name, "--overwrite", "--no-progress",
            *row.evaluate]


def shown(cmd: list[str]) -> str:
    """The command as a user types it (the CLI by name, not this machine's path to it)."""
    return shlex.join(["action-tokenizers", *cmd[1:]] if cmd and cmd[0] == CLI else cmd)


def _run(cmd: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "a") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    return time.perf_counter() - start


def run_row(cfg: StudyConfig, row: Row, done: dict[str, threading.Event]) -> dict:
    try:
        return _run_row(cfg, row, done)
    finally:
        done[row.name].set()  # rows evaluating this model go on (and fail clearly if it is missing)


def _run_row(cfg: StudyConfig, row: Row, done: dict[str, threading.Event]) -> dict:
    folder = cfg.out / row.name
    folder.mkdir(parents=True, exist_ok=True)
    log, record = folder / "log.txt", {"row": dataclasses.asdict(row), "commands": []}
    tokenizer = cfg.run / "tokenizers" / row.family / "tokenizer"
    if row.collect:
        cmd = collect_cmd(cfg, row)
        record["commands"].append(shown(cmd))
        if not (demos(cfg, row) / "meta" / "info.json").exists():
            record["collect_s"] = _run(cmd, log)
    if row.fit:
        fit = [CLI, "fit", "--dataset", str(cfg.run / "demos"), "--tokenizer", row.family,
               "--heldout-episodes", *map(str, heldout(cfg.run)), "--seed", "0",
               "--out", str(folder / "tokenizer"), "--overwrite", "--no-progress", *row.fit]
        record["commands"].append(shown(fit))
        if not (folder / "tokenizer" / "config.json").exists():
            record["fit_s"] = _run(fit, log)
        tokenizer = folder / "tokenizer"
    if not (row.train or row.fit or row.collect or row.model_from):  # the default recipe: the run's own model
        policy = cfg.run / "models" / row.family
    elif row.model_from:
        done[row.model_from].wait()
        source = cfg.out / row.model_from / "model"
        policy = source if source.exists() else cfg.run / "models" / row.family
    else:
        policy = folder / "model"
        cmd = train_cmd(cfg, row, tokenizer)
        record["commands"].append(shown(cmd))
        if not (policy / "policy_config.json").exists():
            record["train_s"] = _run(cmd, log)
    done[row.name].set()  # evaluation-only rows on this model may start now
    cmd = eval_cmd(cfg, row, policy)
    record["commands"].append(shown(cmd))
    if not (folder / "eval" / "results.json").exists():
        record["eval_s"] = _run(cmd, log)
    results = json.loads((folder / "eval" / "results.json").read_text())
    record["result"] = {k: results[row.name][k] for k in ("episodes", "successes", "success_rate", "success_ci",
                                                          "regret", "latency_s_per_chunk", "malformed")}
    record["per_task"] = {t: {k: e[k] for k in ("success_rate", "success_ci")}
                          for t, e in results[row.name]["per_task"].items()}
    (folder / "row.json").write_text(json.dumps(record, indent=2))
    print(f"[study] {row.name}: {100 * record['result']['success_rate']:.0f}%", flush=True)
    return record


def _cell(rate: float, ci: list[float]) -> str:
    return f"{100 * rate:.0f}% [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"


def markdown(records: list[dict], tasks: tuple[str, ...]) -> str:
    head = "| row | factor | " + " | ".join(tasks) + " | both tasks (95% CI) | regret |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in records:
        res = r["result"]
        cells = [_cell(r["per_task"][t]["success_rate"], r["per_task"][t]["success_ci"]) for t in tasks]
        lines.append(f"| {r['row']['name']} | {r['row']['factor']} | " + " | ".join(cells)
                     + f" | {_cell(res['success_rate'], res['success_ci'])} | {res['regret']:.1f} |")
    return "\n".join(lines) + "\n"


def main(cfg: StudyConfig) -> None:
    rows = list(ROWS) + [Row(**json.loads(x)) for x in cfg.extra_rows]
    if cfg.rows:
        rows = [r for r in rows if r.name in cfg.rows]
    done = {r.name: threading.Event() for r in rows}
    for r in rows:  # a row whose source model is not in this run uses the one already on disk
        if r.model_from and r.model_from not in done:
            done[r.model_from] = threading.Event()
            done[r.model_from].set()
    cfg.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(cfg.workers) as pool:
        futures = [pool.submit(run_row, cfg, r, done) for r in rows]
        records = []
        for f in futures:
            try:
                records.append(f.result())
            except subprocess.CalledProcessError as e:
                print(f"[study] failed: {shlex.join(e.cmd)}", flush=True)
    summary = {"tasks": list(cfg.tasks), "episodes_per_task": cfg.episodes, "rows": records}
    (cfg.out / "factor_study.json").write_text(json.dumps(summary, indent=2))
    (cfg.out / "factor_study.md").write_text(markdown(records, cfg.tasks))
    print(markdown(records, cfg.tasks))


if __name__ == "__main__":
    main(tyro.cli(StudyConfig))
