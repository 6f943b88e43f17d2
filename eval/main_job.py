"""The main job (``make demo`` / ``action-tokenizers run``): demos -> tokenizers -> one LM each -> closed loop.

    action-tokenizers run                      # the default preset (timings: docs/results.md)
    action-tokenizers run --preset report      # the same with 50 evaluation episodes per task
    action-tokenizers run --preset quick       # a smoke run in a few minutes
    action-tokenizers run --preset large       # 50+ evaluation episodes per task, for a bigger machine
    action-tokenizers run --preset pretrained  # SmolLM2-135M (offline, the 'pretrained' extra) vs the default LM

Stages, each in its own folder of the run directory and each skipped when it finished before with
the same inputs (``stage.json`` holds a fingerprint of its config and of the stages it read)::

    demos/                 collect     Meta-World scripted experts -> LeRobot v3 dataset
    tokenizers/<family>/   fit         binning, FAST and VQ on the training episodes
    tokenizers/report/     report      offline figures on held-out episodes, rate-distortion plot
    models/<family>/       train       one causal LM per tokenizer (cross-entropy on action tokens)
    models/<family>-<lm>/  train       with --pretrained.model: a pretrained LM per tokenizer beside it
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

from action_tokenizers.cli import FitConfig
from action_tokenizers.io import OutputFolder, atomic_directory, output_folder, read_json, write_json
from action_tokenizers.registry import FAMILIES
from action_tokenizers.split import EpisodeSplit
from eval.cli import comma_list
from eval.collect import CollectConfig
from eval.evaluate import DEFAULT_TASKS, EvalConfig
from training.regression import RegressionConfig
from training.train import TrainConfig

PRESET_NAMES = ("quick", "default", "report", "large", "pretrained", "vision")
PRETRAINED_STEPS = 600
"""Optimizer steps of the pretrained preset's SmolLM2 (batch 8): what fits its hour on 2 CPU cores."""
# The vision preset's tasks: their goal is an object the camera sees (the button, the drawer), placed
# anew every episode; reach's and push's goal markers are not rendered, so no image could show them.
VISION_TASKS = ("button-press-v3", "drawer-close-v3")
VISION_CAMERA = "corner2"  # the camera LeRobot's Meta-World env renders

# Fields of each stage config that the run sets itself (paths, the split, the run's tasks and seed):
# setting them under the stage (e.g. --train.out) is refused, with the run-level option to use instead.
WIRED: dict[str, dict[str, str]] = {
    "collect": {"out": "--out", "tasks": "--tasks", "seed": "--seed", "overwrite": "--overwrite", "progress": "--progress"},
    "fit": {"dataset": "(the demos)", "out": "--out", "tokenizer": "--tokenizers", "seed": "--seed",
            "eval_fraction": "--heldout-fraction", "heldout_episodes": "--heldout-fraction", "overwrite": "--overwrite",
            "progress": "--progress"},
    "train": {"dataset": "(the demos)", "tokenizer": "(the fitted tokenizers)", "out": "--out", "seed": "--seed",
              "eval_fraction": "--heldout-fraction", "heldout_episodes": "--heldout-fraction",
              "overwrite": "--overwrite", "progress": "--progress"},
    "regression": {"dataset": "(the demos)", "out": "--out", "chunk_size": "--fit.chunk-size", "seed": "--seed",
                   "eval_fraction": "--heldout-fraction", "heldout_episodes": "--heldout-fraction",
                   "progress": "--progress"},
    "eval": {"policy": "(each trained policy)", "out": "--out", "tasks": "--tasks", "name": "(the policy's)",
             "overwrite": "--overwrite", "progress": "--progress"},
}
WIRED["pretrained"] = WIRED["train"]


@dataclass
class RunConfig:
    """Run the whole comparison: collect, fit every tokenizer, train one LM per tokenizer, evaluate, report.

    The stage options are the stages' own configs (``--collect.episodes``, ``--fit.chunk-size``,
    ``--train.max-steps``, ``--regression.steps``, ``--eval.episodes``, ``--eval.horizon``...);
    a preset is a ``RunConfig`` value (:func:`presets`) that the command line starts from.
    """

    preset: str = "default"
    """Which preset the other values start from: quick, default, report (default + 50 evaluation episodes per task) or large."""
    out: Path | None = None
    """Run directory (default: runs/<preset>). Re-running reuses finished stages."""
    tasks: tuple[str, ...] = DEFAULT_TASKS
    """Meta-World tasks, the same for collection and evaluation."""
    tokenizers: tuple[str, ...] = tuple(FAMILIES)
    """Tokenizer families to compare."""
    heldout_fraction: float = 0.1
    """Share of demo episodes held out, the same ones for every stage (tokenizer report, LMs, regression)."""
    seed: int = 0
    """Seed for collection, the split, fitting and training; evaluation seeds start at --eval.seed + seed."""
    progress: bool = True
    """Show progress bars."""
    overwrite: bool = False
    """Use a run directory that holds other files (they are kept; only this project's files are replaced)."""
    collect: CollectConfig = field(default_factory=CollectConfig)
    """Demo collection (scripted experts)."""
    fit: FitConfig = field(default_factory=FitConfig)
    """Tokenizer fitting: chunk size and each family's options."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """LM fine-tuning, one per tokenizer."""
    pretrained: TrainConfig = field(default_factory=TrainConfig)
    """A second LM per tokenizer when --pretrained.model names one (e.g. smollm2-135m, offline with the
    'pretrained' extra), fine-tuned with these settings on the same data and split; policies <family>-<model>."""
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    """The regression-BC baseline."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Closed-loop evaluation (the expert is rolled out once, on the same seeds)."""

    def __post_init__(self) -> None:
        if self.preset not in PRESET_NAMES:
            raise ValueError(unknown_preset(self.preset))
        self.tasks = comma_list(self.tasks)
        self.tokenizers = comma_list(self.tokenizers)
        bad = [t for t in self.tokenizers if t not in FAMILIES]
        if bad or not self.tokenizers:
            raise ValueError(f"--tokenizers must name some of {tuple(FAMILIES)}, got {self.tokenizers}")
        if not self.tasks:
            raise ValueError("--tasks must name at least one task")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"--heldout-fraction must be in [0, 1), got {self.heldout_fraction}")
        self.out = Path(self.out) if self.out is not None else Path("runs") / self.preset
        _check_wired(self)


def _check_wired(cfg: RunConfig) -> None:
    defaults = {"collect": CollectConfig(), "fit": FitConfig(), "train": TrainConfig(), "pretrained": TrainConfig(),
                "regression": RegressionConfig(), "eval": EvalConfig()}
    for stage, fields in WIRED.items():
        given, default = getattr(cfg, stage), defaults[stage]
        for name, instead in fields.items():
            if getattr(given, name) != getattr(default, name):
                raise ValueError(f"--{stage}.{name.replace('_', '-')} is set by the run; use {instead} instead"
                                 if instead.startswith("--") else
                                 f"--{stage}.{name.replace('_', '-')} is set by the run: it is {instead}")


_PRESETS: dict[str, RunConfig] = {}


def presets() -> dict[str, RunConfig]:
    """The named run sizes, as ``RunConfig`` values (built on first use: the stage configs check task names)."""
    if not _PRESETS:
        four = ("reach-v3", "push-v3", "button-press-v3", "drawer-close-v3")
        # 200 demos per task, 3000 steps of 64 (each chunk seen about as often as 50 demos at 1500 x 32):
        # what closed the gap to regression on reach and push (docs/results.md's factor study). Two
        # torch threads: the run's stages go one at a time, so training may use both cores of the
        # 2-core reference machine.
        default = dict(tasks=four, collect=CollectConfig(episodes=200),
                       train=TrainConfig(max_steps=3000, batch_size=64, threads=2),
                       regression=RegressionConfig(steps=3000),
                       eval=EvalConfig(episodes=10, n_envs=10, n_action_steps=5, horizon=150, paraphrased=True))
        built = {
            "quick": RunConfig(preset="default", tasks=("reach-v3", "button-press-v3"), collect=CollectConfig(episodes=4),
                               train=TrainConfig(max_steps=30, hidden_size=32, n_layers=2),
                               regression=RegressionConfig(steps=100),
                               eval=EvalConfig(episodes=3, n_envs=3, n_action_steps=5, horizon=100)),
            "default": RunConfig(preset="default", **default),
            # The default run with 50 evaluation episodes per task: what docs/results.md reports; it
            # reuses a finished default run's demos, tokenizers and models.
            "report": RunConfig(preset="default", **{**default, "eval": EvalConfig(episodes=50, n_envs=10, n_action_steps=5,
                                                                                  horizon=150, paraphrased=True)}),
            "large": RunConfig(preset="default", tasks=("reach-v3", "push-v3", "pick-place-v3", "button-press-v3",
                                                        "drawer-close-v3", "door-open-v3"),
                               collect=CollectConfig(episodes=200),  # steps scaled with the tasks from the default's
                               train=TrainConfig(max_steps=4500, batch_size=64, hidden_size=256, n_layers=6),
                               regression=RegressionConfig(steps=6000),
                               eval=EvalConfig(episodes=50, n_envs=25, n_action_steps=5, horizon=150, paraphrased=True)),
            # SmolLM2-135M fine-tuned offline beside the default LM, FAST only (its short sequences keep a
            # 135 M-parameter model trainable on a CPU), sized to finish within an hour on 2 cores
            # (docs/results.md): the same demos, split and seeds for both, and the unseen instructions.
            "pretrained": RunConfig(preset="default", tasks=("reach-v3", "button-press-v3"), tokenizers=("fast",),
                                    collect=CollectConfig(episodes=20), train=TrainConfig(max_steps=1500),
                                    pretrained=TrainConfig(model="smollm2-135m", max_steps=PRETRAINED_STEPS,
                                                           batch_size=8, lr=1e-3, warmup_steps=20, eval_chunks=16,
                                                           action_softmax=True, checkpoint_every=PRETRAINED_STEPS),
                                    regression=RegressionConfig(steps=3000),
                                    eval=EvalConfig(episodes=10, n_envs=10, n_action_steps=5, horizon=150, paraphrased=True)),
            # Camera observations as in LeRobot's Meta-World env: a 64x64 corner2 frame + agent_pos (4-D);
            # the privileged 39-D state is recorded (observation.environment_state) but is no input.
            "vision": RunConfig(preset="default", tasks=VISION_TASKS,
                                collect=CollectConfig(episodes=50, cameras=(VISION_CAMERA,), image_size=64),
                                train=TrainConfig(max_steps=1500, image_keys=(f"observation.images.{VISION_CAMERA}",)),
                                regression=RegressionConfig(steps=1000, batch_size=64,
                                                            image_keys=(f"observation.images.{VISION_CAMERA}",)),
                                eval=EvalConfig(episodes=50, n_envs=10, n_action_steps=5, horizon=150)),
        }
        _PRESETS.update({name: dataclasses.replace(cfg, preset=name, out=None) for name, cfg in built.items()})
    return _PRESETS


def unknown_preset(name: str) -> str:
    import difflib

    hint = difflib.get_close_matches(name, PRESET_NAMES, n=1)
    return f"unknown preset {name!r}; valid: {sorted(PRESET_NAMES)}" + (f" (did you mean {hint[0]!r}?)" if hint else "")


def run_config(preset: str = "default", **changes: Any) -> RunConfig:
    """A preset with changes; a stage's changes as a dict: ``run_config("quick", train={"max_steps": 2})``."""
    if preset not in presets():
        raise ValueError(unknown_preset(preset))
    base = presets()[preset]
    for stage in WIRED:
        if isinstance(changes.get(stage), dict):
            changes[stage] = dataclasses.replace(getattr(base, stage), **changes[stage])
    return dataclasses.replace(base, preset=preset, **{"out": None, **changes})


def default_from_argv(argv: list[str]) -> RunConfig:
    """The preset named by ``--preset NAME`` in a command line (the CLI's starting values)."""
    name = "default"
    for i, a in enumerate(argv):
        if a == "--preset" and i + 1 < len(argv):
            name = argv[i + 1]
        elif a.startswith("--preset="):
            name = a.split("=", 1)[1]
    if name not in presets():
        raise ValueError(unknown_preset(name))
    return presets()[name]


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
def collect_stage(cfg: RunConfig, log: dict) -> Stage:
    from eval.collect import run_collect

    collect = dataclasses.replace(cfg.collect, tasks=cfg.tasks, out=cfg.out / "demos", seed=cfg.seed, overwrite=True,
                                  progress=cfg.progress)
    stage = Stage(collect.out, {"collect": _portable(dataclasses.asdict(collect))})
    run_stage(stage, "collect", lambda: run_collect(collect), log)
    return stage


def demo_split(cfg: RunConfig, demos: Stage) -> EpisodeSplit:
    """The one train / held-out split of the demos that every later stage receives."""
    from action_tokenizers.data import load_episodes
    from action_tokenizers.split import split_episodes

    episodes = [ep.index for ep in load_episodes(demos.path, keys=("action",), with_tasks=False)]
    return split_episodes(episodes, cfg.heldout_fraction, cfg.seed)


def fit_stage(cfg: RunConfig, demos: Stage, split: EpisodeSplit, log: dict) -> dict[str, Stage]:
    """Fit each family on the training episodes; the report measures them on held-out episodes."""
    from action_tokenizers.cli import build_tokenizer, fit_tokenizer, split_chunks
    from action_tokenizers.report import default_sweep, write_report

    fit = dataclasses.replace(cfg.fit, dataset=str(demos.path), seed=cfg.seed,
                              heldout_episodes=tuple(split.heldout_episodes), progress=cfg.progress)
    data_key = {k: v for k, v in _portable(dataclasses.asdict(fit)).items() if k not in FAMILIES}
    stages = {f: Stage(cfg.out / "tokenizers" / f, {"demos": demos.fingerprint, "data": data_key, "family": f,
                                                     "config": getattr(fit, f).to_dict()})
              for f in cfg.tokenizers}
    report = Stage(cfg.out / "tokenizers" / "report", {f: s.fingerprint for f, s in stages.items()})
    if all(s.done for s in stages.values()) and report.done:
        for f, s in stages.items():
            run_stage(s, f"fit {f}", lambda: None, log)
        run_stage(report, "tokenizer report", lambda: None, log)
        return stages
    data = split_chunks(fit)
    fitted, seconds = {}, {}
    for family, stage in stages.items():
        def fit_one(family=family, stage=stage):
            tok = build_tokenizer(family, getattr(fit, family))
            tok.heldout_episodes = data.split.heldout_episodes
            seconds[family] = fit_tokenizer(tok, data.train)
            tok.save_pretrained(stage.path / "tokenizer")
        run_stage(stage, f"fit {family}", fit_one, log)
        fitted[family] = _load_tokenizer(stage)
        seconds.setdefault(family, read_json(stage.path / "stage.json")["seconds"])  # a reused fit keeps its time

    def report_fn():
        with atomic_directory(report.path, kind="report", overwrite=True) as tmp:
            write_report(tmp, list(fitted.items()), data.test, train=data.train, fit_seconds=seconds or None,
                         sweep=default_sweep(tuple(fitted)) if fit.sweep else None, action_names=data.action_names,
                         title=f"Tokenizers on the demo set ({data.note})", progress=cfg.progress)
        for family, tok in fitted.items():  # the measured figures go into each tokenizer's model card
            tok.save_pretrained(stages[family].path / "tokenizer")
    run_stage(report, "tokenizer report", report_fn, log)
    return stages


def _load_tokenizer(stage: Stage):
    from action_tokenizers.auto import AutoActionTokenizer

    return AutoActionTokenizer.from_pretrained(stage.path / "tokenizer")


def train_stage(cfg: RunConfig, demos: Stage, split: EpisodeSplit, tokenizers: dict[str, Stage],
                log: dict) -> dict[str, Stage]:
    from training.train import ORDERED_FAMILIES, run_train

    lms = {"": cfg.train} | ({f"-{model_slug(cfg.pretrained.model)}": cfg.pretrained} if cfg.pretrained.model else {})
    stages = {}
    for family, tok_stage in tokenizers.items():
        for suffix, base in lms.items():
            name = family + suffix
            smoothing = base.bin_smoothing if family in ORDERED_FAMILIES else None  # --train.bin-smoothing: binning's
            train = dataclasses.replace(base, dataset=str(demos.path), tokenizer=str(tok_stage.path / "tokenizer"),
                                        bin_smoothing=smoothing,
                                        out=cfg.out / "models" / name, seed=cfg.seed,
                                        heldout_episodes=tuple(split.heldout_episodes), overwrite=True,
                                        progress=cfg.progress)
            key = {"tokenizer": tok_stage.fingerprint, "train": _portable(dataclasses.asdict(train))}
            stage = Stage(train.out, key)
            run_stage(stage, f"train {name}", lambda train=train: run_train(train), log)
            stages[name] = stage
    return stages


def model_slug(model: str) -> str:
    """A --model value as a policy-name suffix: ``smollm2-135m``, ``org/Name`` -> ``Name``, ``x.gguf`` -> ``x``."""
    import re

    name = Path(model).name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.removesuffix(".gguf")) or "pretrained"


def regression_stage(cfg: RunConfig, demos: Stage, split: EpisodeSplit, log: dict) -> Stage:
    from training.regression import run_train_regression

    reg = dataclasses.replace(cfg.regression, dataset=str(demos.path), out=cfg.out / "models" / "regression",
                              chunk_size=cfg.fit.chunk_size, seed=cfg.seed,
                              heldout_episodes=tuple(split.heldout_episodes), progress=cfg.progress)
    stage = Stage(reg.out, {"demos": demos.fingerprint, "regression": _portable(dataclasses.asdict(reg))})
    run_stage(stage, "train regression", lambda: run_train_regression(reg), log)
    return stage


def eval_stage(cfg: RunConfig, policies: dict[str, Stage], log: dict) -> dict[str, Any]:
    """Roll out every policy on the same seeds; the expert once, as every policy's regret reference."""
    from eval.evaluate import EXPERT, evaluate_expert, run_eval
    from eval.rollout import EnvPool

    merged: dict[str, Any] = {}
    expert = None
    with EnvPool() as pool:  # environments are built once and shared by every evaluation (they cost seconds each)
        for name, stage in policies.items():
            ev = dataclasses.replace(cfg.eval, policy=str(stage.path), tasks=cfg.tasks, out=cfg.out / "eval" / name,
                                     seed=cfg.eval.seed + cfg.seed, name=name, overwrite=True, progress=cfg.progress)
            ev_key = {k: v for k, v in _portable(dataclasses.asdict(ev)).items()  # knobs left off keep old fingerprints
                      if not (k in ("temperature", "ensemble_decay", "readout") and v is None)}
            ev_stage = Stage(ev.out, {"policy": stage.fingerprint, "eval": ev_key})

            def evaluate(ev=ev):
                nonlocal expert
                expert = expert or evaluate_expert(ev, pool)  # the same seeds for every policy
                run_eval(ev, pool=pool, expert=expert)
            run_stage(ev_stage, f"eval {name}", evaluate, log)
            results = read_json(ev.out / "results.json")
            merged[name] = results[name]
            merged.setdefault(EXPERT, results[EXPERT])
    return merged


def _portable(d: dict[str, Any]) -> dict[str, Any]:
    """Config dict for fingerprints: paths as given (not resolved), progress flags dropped."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items() if k != "progress"}


def _config_json(cfg: RunConfig) -> dict[str, Any]:
    """The run's settings for results.json: run-level fields and each stage's own options (not the wired ones)."""
    top = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items() if k not in WIRED}
    for stage, wired in WIRED.items():
        top[stage] = {k: v for k, v in _portable(dataclasses.asdict(getattr(cfg, stage))).items() if k not in wired}
    return top


# ---------------------------------------------------------------------------- the job
def run_main(cfg: RunConfig) -> dict[str, Any]:
    """Run every stage (reusing finished ones), write RUN/results.json + results.md + plots, print the table.

    The run directory follows the output rule (``action_tokenizers.io``): locked while a run is
    at work, refused when it holds other files than an earlier run's unless --overwrite.
    """
    with output_folder(cfg.out, "run", overwrite=cfg.overwrite) as folder:
        return _run_main(cfg, folder)


def _run_main(cfg: RunConfig, folder: OutputFolder) -> dict[str, Any]:
    start, log = time.perf_counter(), {}
    demos = collect_stage(cfg, log)
    split = demo_split(cfg, demos)
    tokenizers = fit_stage(cfg, demos, split, log)
    models = train_stage(cfg, demos, split, tokenizers, log)
    models["regression"] = regression_stage(cfg, demos, split, log)
    results = eval_stage(cfg, models, log)
    offline = _offline_figures(cfg, models)
    for name, figures in offline.items():
        results[name].update(figures)
    results["meta"] = {"preset": cfg.preset, "config": _config_json(cfg), "seed": cfg.seed,
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
    for name, stage in models.items():
        family = name.partition("-")[0]  # <family> or <family>-<pretrained model>
        if family not in cfg.tokenizers:
            continue
        m = report.get(family, {})
        train = _train_metrics(stage.path).get("final", {})
        out[name] = {
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


COLUMNS = ("policy", "tokens/chunk", "recon MAE (raw)", "held-out token acc", "success (95% CI)",
           "unseen instructions (95% CI)", "regret (95% CI)", "latency s/chunk")


def _row(name: str, e: dict[str, Any]) -> list[str]:
    from eval.evaluate import paraphrased_cell, percent_ci, regret_cell

    off = e.get("offline", {})
    tpc = e.get("tokens_per_chunk") or off.get("tokens_per_chunk_mean")
    return [
        name,
        "-" if tpc is None else f"{tpc:.1f}",
        "-" if off.get("recon_mae_raw") is None else f"{off['recon_mae_raw']:.4f}",
        "-" if off.get("heldout_token_accuracy") is None else f"{100 * off['heldout_token_accuracy']:.1f}%",
        percent_ci(e),
        paraphrased_cell(e),
        regret_cell(e),
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
          f"Tasks: {', '.join(meta['config']['tasks'])}; {meta['config']['eval']['episodes']} evaluation episodes per task; "
          f"{meta['stage_seconds'] / 60:.1f} min of stage time on {meta['machine']['cpus']} CPUs "
          f"(this invocation: {meta['seconds'] / 60:.1f} min; finished stages are reused).", "",
          headline_table(results), "",
          "Offline figures (tokens per chunk, reconstruction error, held-out token accuracy) sit next to closed-loop "
          "success and regret, so one can see whether offline error predicts closed-loop success. *Unseen "
          "instructions*: the same seeds with a paraphrased instruction per episode (eval/paraphrases.py); n/a for "
          "policies that take the task from a closed set (the regression baseline's one-hot), - when not measured.", "",
          "Tokenizer report: [tokenizers/report/report.md](tokenizers/report/report.md)", ""]
    md += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    (out / "results.md").write_text("\n".join(md) + "\n")
