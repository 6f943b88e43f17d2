"""The main job (``make demo`` / ``action-tokenizers run``): demos -> tokenizers -> one LM each -> closed loop.

    action-tokenizers run                      # the default preset, about 15 minutes on 2 CPU cores
    action-tokenizers run --preset report      # the same with 50 evaluation episodes per task
    action-tokenizers run --preset quick       # a smoke run in a few minutes
    action-tokenizers run --preset large       # 50+ evaluation episodes per task, for a bigger machine

Stages, each in its own folder of the run directory and each skipped when it finished before with
the same inputs (``stage.json`` holds a fingerprint of its config and of the stages it read)::

    demos/                 collect     Meta-World scripted experts -> LeRobot v3 dataset
    tokenizers/<family>/   fit         binning, FAST and VQ on the training episodes
    tokenizers/report/     report      offline figures on held-out episodes, rate-distortion plot
    models/<family>/       train       one causal LM per tokenizer (cross-entropy on action tokens)
    models/regression/     train       the regression-BC baseline (squared error on raw actions)
    eval/<policy>/         eval        closed-loop rollouts, the expert on the same seeds
    results.json, results.md, *.png    the comparison, printed at the end
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from action_tokenizers.io import OutputFolder, atomic_directory, output_folder, read_json, write_json
from action_tokenizers.registry import FAMILIES
from action_tokenizers.split import EpisodeSplit

HELDOUT_FRACTION = 0.1
"""Share of demo episodes held out, the same ones for the tokenizer report, the LMs and the regression baseline."""


@dataclass(frozen=True)
class Preset:
    """Sizes of one main-job run."""

    tasks: tuple[str, ...]
    demos_per_task: int
    eval_episodes: int
    train_steps: int
    regression_steps: int
    chunk_size: int = 10
    n_action_steps: int = 5
    max_steps: int = 150
    n_envs: int = 10
    hidden_size: int = 128
    n_layers: int = 4


PRESETS: dict[str, Preset] = {
    "quick": Preset(tasks=("reach-v3", "button-press-v3"), demos_per_task=4, eval_episodes=3, train_steps=30,
                    regression_steps=100, max_steps=100, n_envs=3, hidden_size=32, n_layers=2),
    "default": Preset(tasks=("reach-v3", "push-v3", "button-press-v3", "drawer-close-v3"), demos_per_task=50,
                      eval_episodes=10, train_steps=1500, regression_steps=3000),
    # The default run with 50 evaluation episodes per task (about 15 more minutes of rollouts on 2 cores):
    # what docs/results.md reports; it reuses a finished default run's demos, tokenizers and models.
    "report": Preset(tasks=("reach-v3", "push-v3", "button-press-v3", "drawer-close-v3"), demos_per_task=50,
                     eval_episodes=50, train_steps=1500, regression_steps=3000),
    "large": Preset(tasks=("reach-v3", "push-v3", "pick-place-v3", "button-press-v3", "drawer-close-v3", "door-open-v3"),
                    demos_per_task=100, eval_episodes=50, train_steps=4000, regression_steps=6000, n_envs=25,
                    hidden_size=256, n_layers=6),
}


@dataclass
class RunConfig:
    """Run the whole comparison: collect, fit every tokenizer, train one LM per tokenizer, evaluate, report."""

    preset: str = "default"
    """Sizes: quick, default, report (default + 50 evaluation episodes per task) or large."""
    out: Path | None = None
    """Run directory (default: runs/<preset>). Re-running reuses finished stages."""
    tasks: tuple[str, ...] | None = None
    """Meta-World tasks (default: the preset's)."""
    demos_per_task: int | None = None
    """Expert demonstrations per task (default: the preset's)."""
    eval_episodes: int | None = None
    """Closed-loop evaluation episodes per task (default: the preset's)."""
    train_steps: int | None = None
    """LM optimizer steps per tokenizer (default: the preset's)."""
    tokenizers: tuple[str, ...] = tuple(FAMILIES)
    """Tokenizer families to compare."""
    model: str | None = None
    """Hugging Face causal LM name or path to fine-tune instead of the default small Llama."""
    chunk_size: int | None = None
    """Action chunk length (default: the preset's)."""
    n_action_steps: int | None = None
    """Actions executed per chunk before re-planning (default: the preset's)."""
    seed: int = 0
    """Seed for collection, fitting and training; evaluation seeds are disjoint from collection seeds."""
    progress: bool = True
    """Show progress bars."""
    overwrite: bool = False
    """Use a run directory that holds other files (they are kept; only this project's files are replaced)."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            import difflib

            hint = difflib.get_close_matches(self.preset, PRESETS, n=1)
            raise ValueError(f"unknown preset {self.preset!r}; valid: {sorted(PRESETS)}"
                             + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        if isinstance(self.tasks, str):
            self.tasks = tuple(t for t in self.tasks.split(",") if t)
        if isinstance(self.tokenizers, str):
            self.tokenizers = tuple(t for t in self.tokenizers.split(",") if t)
        bad = [t for t in self.tokenizers if t not in FAMILIES]
        if bad or not self.tokenizers:
            raise ValueError(f"--tokenizers must name some of {tuple(FAMILIES)}, got {self.tokenizers}")
        self.out = Path(self.out) if self.out is not None else Path("runs") / self.preset

    def resolved(self) -> Preset:
        """The preset with this config's overrides applied."""
        overrides = {k: getattr(self, k) for k in ("tasks", "demos_per_task", "eval_episodes", "train_steps",
                                                    "chunk_size", "n_action_steps") if getattr(self, k) is not None}
        return dataclasses.replace(PRESETS[self.preset], **overrides)


# ---------------------------------------------------------------------------- stage reuse
@dataclass
class Stage:
    """A folder whose ``stage.json`` fingerprint says whether it is finished for these inputs."""

    path: Path
    key: dict[str, Any]
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        blob = json.dumps(self.key, sort_keys=True, default=str).encode()
        self.fingerprint = hashlib.sha256(blob).hexdigest()[:16]

    @property
    def done(self) -> bool:
        marker = self.path / "stage.json"
        return marker.is_file() and read_json(marker).get("fingerprint") == self.fingerprint

    def mark_done(self, seconds: float, extra: dict[str, Any] | None = None) -> None:
        with output_folder(self.path, None, overwrite=True) as folder:  # recorded as ours, written atomically
            folder.write_json("stage.json", {"fingerprint": self.fingerprint, "key": self.key,
                                             "seconds": seconds, **(extra or {})})


def run_stage(stage: Stage, name: str, fn: Callable[[], Any], log: dict[str, Any]) -> bool:
    """Run ``fn`` unless the stage is done; record timing in ``log``. Returns True if it ran."""
    if stage.done:
        print(f"[{name}] reusing {stage.path}")
        log[name] = {"reused": True, "seconds": read_json(stage.path / "stage.json").get("seconds")}
        return False
    print(f"[{name}] running -> {stage.path}")
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    stage.mark_done(seconds)
    log[name] = {"reused": False, "seconds": seconds}
    return True


# ---------------------------------------------------------------------------- the stages
def collect_stage(cfg: RunConfig, p: Preset, log: dict) -> Stage:
    from eval.collect import CollectConfig, run_collect

    collect = CollectConfig(tasks=p.tasks, episodes=p.demos_per_task, out=cfg.out / "demos", seed=cfg.seed,
                            overwrite=True, progress=cfg.progress)
    stage = Stage(cfg.out / "demos", {"collect": dataclasses.asdict(collect)})
    run_stage(stage, "collect", lambda: run_collect(collect), log)
    return stage


def demo_split(cfg: RunConfig, demos: Stage) -> EpisodeSplit:
    """The one train / held-out split of the demos that every later stage receives."""
    from action_tokenizers.data import load_episodes
    from action_tokenizers.split import split_episodes

    episodes = [ep.index for ep in load_episodes(demos.path, keys=("action",), with_tasks=False)]
    return split_episodes(episodes, HELDOUT_FRACTION, cfg.seed)


def fit_stage(cfg: RunConfig, p: Preset, demos: Stage, split: EpisodeSplit, log: dict) -> dict[str, Stage]:
    """Fit each family on the training episodes; the report measures them on held-out episodes."""
    from action_tokenizers.cli import DataArgs, build_tokenizer, fit_tokenizer, split_chunks
    from action_tokenizers.report import default_sweep, write_report

    data_args = DataArgs(dataset=str(demos.path), chunk_size=p.chunk_size, seed=cfg.seed,
                         heldout_episodes=tuple(split.heldout_episodes))
    stages = {f: Stage(cfg.out / "tokenizers" / f, {"demos": demos.fingerprint, "data": dataclasses.asdict(data_args),
                                                     "family": f, "config": _family_config(f)})
              for f in cfg.tokenizers}
    report = Stage(cfg.out / "tokenizers" / "report", {f: s.fingerprint for f, s in stages.items()})
    if all(s.done for s in stages.values()) and report.done:
        for f, s in stages.items():
            run_stage(s, f"fit {f}", lambda: None, log)
        run_stage(report, "tokenizer report", lambda: None, log)
        return stages
    data = split_chunks(data_args)
    fitted, seconds = {}, {}
    for family, stage in stages.items():
        def fit(family=family, stage=stage):
            tok = build_tokenizer(family, _family_config_obj(family))
            tok.heldout_episodes = data.split.heldout_episodes
            seconds[family] = fit_tokenizer(tok, data.train)
            tok.save_pretrained(stage.path / "tokenizer")
        run_stage(stage, f"fit {family}", fit, log)
        fitted[family] = _load_tokenizer(stage)
        seconds.setdefault(family, read_json(stage.path / "stage.json")["seconds"])  # a reused fit keeps its time

    def report_fn():
        with atomic_directory(report.path, kind="report", overwrite=True) as tmp:
            write_report(tmp, list(fitted.items()), data.test, train=data.train, fit_seconds=seconds or None,
                         sweep=default_sweep(tuple(fitted)), action_names=data.action_names,
                         title=f"Tokenizers on the demo set ({data.note})", progress=cfg.progress)
        for family, tok in fitted.items():  # the measured figures go into each tokenizer's model card
            tok.save_pretrained(stages[family].path / "tokenizer")
    run_stage(report, "tokenizer report", report_fn, log)
    return stages


def _family_config_obj(family: str):
    return FAMILIES[family].config_class()()


def _family_config(family: str) -> dict[str, Any]:
    return _family_config_obj(family).to_dict()


def _load_tokenizer(stage: Stage):
    from action_tokenizers.auto import AutoActionTokenizer

    return AutoActionTokenizer.from_pretrained(stage.path / "tokenizer")


def train_stage(cfg: RunConfig, p: Preset, demos: Stage, split: EpisodeSplit, tokenizers: dict[str, Stage],
                log: dict) -> dict[str, Stage]:
    from training.train import TrainConfig, run_train

    stages = {}
    for family, tok_stage in tokenizers.items():
        train = TrainConfig(dataset=demos.path, tokenizer=tok_stage.path / "tokenizer", out=cfg.out / "models" / family,
                            model=cfg.model, max_steps=p.train_steps, hidden_size=p.hidden_size, n_layers=p.n_layers,
                            seed=cfg.seed, heldout_episodes=tuple(split.heldout_episodes), overwrite=True,
                            progress=cfg.progress)
        key = {"tokenizer": tok_stage.fingerprint, "train": _portable(dataclasses.asdict(train))}
        stage = Stage(train.out, key)
        run_stage(stage, f"train {family}", lambda train=train: run_train(train), log)
        stages[family] = stage
    return stages


def regression_stage(cfg: RunConfig, p: Preset, demos: Stage, split: EpisodeSplit, log: dict) -> Stage:
    from training.regression import RegressionConfig, run_train_regression

    reg = RegressionConfig(dataset=demos.path, out=cfg.out / "models" / "regression", chunk_size=p.chunk_size,
                           steps=p.regression_steps, seed=cfg.seed, heldout_episodes=tuple(split.heldout_episodes),
                           progress=cfg.progress)
    stage = Stage(reg.out, {"demos": demos.fingerprint, "regression": _portable(dataclasses.asdict(reg))})
    run_stage(stage, "train regression", lambda: run_train_regression(reg), log)
    return stage


def eval_stage(cfg: RunConfig, p: Preset, policies: dict[str, Stage], log: dict) -> dict[str, Any]:
    """Roll out every policy and the expert on the same seeds; returns the merged results."""
    from eval.evaluate import EXPERT, EvalConfig, run_eval
    from eval.rollout import EnvPool

    merged: dict[str, Any] = {}
    pool = EnvPool()  # environments are built once and shared by every evaluation (they cost seconds each)
    for name, stage in policies.items():
        ev = EvalConfig(policy=str(stage.path), tasks=p.tasks, episodes=p.eval_episodes, out=cfg.out / "eval" / name,
                        seed=1000 + cfg.seed, n_action_steps=p.n_action_steps, n_envs=p.n_envs,
                        max_steps=p.max_steps, name=name, progress=cfg.progress)
        ev_stage = Stage(ev.out, {"policy": stage.fingerprint, "eval": _portable(dataclasses.asdict(ev))})
        run_stage(ev_stage, f"eval {name}", lambda ev=ev: run_eval(ev, pool=pool), log)
        results = read_json(ev.out / "results.json")
        merged[name] = results[name]
        merged.setdefault(EXPERT, results[EXPERT])  # same seeds in every eval: one expert reference
    pool.close()
    return merged


def _portable(d: dict[str, Any]) -> dict[str, Any]:
    """Config dict for fingerprints: paths as given (not resolved), progress flags dropped."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items() if k != "progress"}


# ---------------------------------------------------------------------------- the job
def run_main(cfg: RunConfig) -> dict[str, Any]:
    """Run every stage (reusing finished ones), write RUN/results.json + results.md + plots, print the table.

    The run directory follows the output rule (``action_tokenizers.io``): locked while a run is
    at work, refused when it holds other files than an earlier run's unless --overwrite.
    """
    with output_folder(cfg.out, "run", overwrite=cfg.overwrite) as folder:
        return _run_main(cfg, folder)


def _run_main(cfg: RunConfig, folder: OutputFolder) -> dict[str, Any]:
    p = cfg.resolved()
    start, log = time.perf_counter(), {}
    demos = collect_stage(cfg, p, log)
    split = demo_split(cfg, demos)
    tokenizers = fit_stage(cfg, p, demos, split, log)
    models = train_stage(cfg, p, demos, split, tokenizers, log)
    models["regression"] = regression_stage(cfg, p, demos, split, log)
    results = eval_stage(cfg, p, models, log)
    offline = _offline_figures(cfg, models)
    for name, figures in offline.items():
        results[name].update(figures)
    results["meta"] = {"preset": cfg.preset, "config": _portable(dataclasses.asdict(p)), "seed": cfg.seed,
                       "heldout_episodes": split.heldout_episodes,
                       "stages": log, "seconds": time.perf_counter() - start,
                       "stage_seconds": sum(s["seconds"] or 0.0 for s in log.values()), "machine": _machine()}
    with folder.stage() as tmp:
        _write(tmp, results)
    print(f"\nrun directory: {cfg.out}\n")
    print(headline_table(results))
    return results


def _offline_figures(cfg: RunConfig, models: dict[str, Stage]) -> dict[str, dict[str, Any]]:
    """Per tokenizer: reconstruction error from the tokenizer report, held-out accuracy from training."""
    report_path = cfg.out / "tokenizers" / "report" / "report.json"
    report = read_json(report_path)["tokenizers"] if report_path.is_file() else {}
    out = {}
    for family in cfg.tokenizers:
        m = report.get(family, {})
        train = _train_metrics(models[family].path).get("final", {})
        out[family] = {
            "offline": {
                "tokens_per_chunk_mean": m.get("tokens_per_chunk_mean"),
                "recon_mae_raw": m.get("mae_raw"),
                "recon_max_err_raw": m.get("max_err_raw"),
                "eps_max_norm": m.get("eps_max"),
                "heldout_token_accuracy": train.get("eval_action_accuracy"),
                "heldout_loss": train.get("eval_loss"),
                "generated_recon_mae_raw": train.get("recon_mae"),
                "vocab_size": m.get("vocab_size"),
            }
        }
    return out


def _train_metrics(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "metrics.json"
    return read_json(path) if path.is_file() else {}


def _machine() -> dict[str, Any]:
    import os
    import platform

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}


COLUMNS = ("policy", "tokens/chunk", "recon MAE (raw)", "held-out token acc", "success (95% CI)", "regret", "latency s/chunk")


def _row(name: str, e: dict[str, Any]) -> list[str]:
    off = e.get("offline", {})
    lo, hi = e.get("success_ci", [None, None])
    tpc = e.get("tokens_per_chunk") or off.get("tokens_per_chunk_mean")
    return [
        name,
        "-" if tpc is None else f"{tpc:.1f}",
        "-" if off.get("recon_mae_raw") is None else f"{off['recon_mae_raw']:.4f}",
        "-" if off.get("heldout_token_accuracy") is None else f"{100 * off['heldout_token_accuracy']:.1f}%",
        f"{100 * e['success_rate']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]",
        "-" if e.get("regret") is None else f"{e['regret']:.1f}",
        "-" if e.get("latency_s_per_chunk") is None else f"{e['latency_s_per_chunk']:.3f}",
    ]


def headline_table(results: dict[str, Any]) -> str:
    """Markdown table: one row per evaluated policy, best success first, the expert last."""
    entries = {k: v for k, v in results.items() if isinstance(v, dict) and "success_rate" in v}
    order = sorted((k for k in entries if k != "expert"), key=lambda k: -entries[k]["success_rate"])
    order += [k for k in entries if k == "expert"]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_row(k, entries[k])) + " |" for k in order]
    return "\n".join(lines)


def _write(out: Path, results: dict[str, Any]) -> None:
    from eval.plots import write_plots

    write_json(out / "results.json", results)
    plots = write_plots(results, out)
    meta = results["meta"]
    md = [f"# Main job: preset `{meta['preset']}`", "",
          f"Tasks: {', '.join(meta['config']['tasks'])}; {meta['config']['eval_episodes']} evaluation episodes per task; "
          f"{meta['stage_seconds'] / 60:.1f} min of stage time on {meta['machine']['cpus']} CPUs "
          f"(this invocation: {meta['seconds'] / 60:.1f} min; finished stages are reused).", "",
          headline_table(results), "",
          "Offline figures (tokens per chunk, reconstruction error, held-out token accuracy) sit next to closed-loop "
          "success and regret, so one can see whether offline error predicts closed-loop success.", "",
          "Tokenizer report: [tokenizers/report/report.md](tokenizers/report/report.md)", ""]
    md += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    (out / "results.md").write_text("\n".join(md) + "\n")
