"""``action-tokenizers eval``: roll a policy out in simulation, next to the expert, and write the report.

Usage::

    action-tokenizers eval --policy expert --tasks reach-v3,push-v3 --episodes 10 --out runs/eval-expert
    action-tokenizers eval --policy runs/regression --episodes 20 --out runs/eval-regression --video
    action-tokenizers eval --policy runs/lm-fast --tasks reach-v3 --execution augmented --dataset runs/demos --out runs/eval-aug

Writes ``OUT/results.json`` (keyed by policy name; each entry holds ``success_rate``,
``success_ci``, ``mean_return``, ``regret``, ``malformed``, ``latency_s_per_chunk``,
``tokens_per_chunk`` and ``per_task`` with the same fields; ``meta`` holds the run's settings),
``OUT/results.md``, ``OUT/episodes.json`` (one record per episode), PNG plots, and with
``--video`` a few MP4s. The expert is rolled out on the same seeds, so regret compares the two on
identical initial states; evaluation seeds start at ``--seed`` (1000 by default, away from the
demo collector's seeds, so the policy is tested on initial states it was not trained on).

``--execution augmented`` runs the policy as in Cao & Xie's model-based augmentation
(``eval/augmentation.py``): queried on the state a transition model propagates from the real
initial state, its chunks executed open loop; the expert reference stays closed loop. The entry is
keyed ``NAME-augmented`` and adds ``execution`` and ``model_drift``; a model fitted from
``--dataset`` is saved to ``OUT/transition_model``.

Decoding and execution knobs (issue 16's factor study): ``--temperature T`` samples an LM policy's
tokens at T (0 = greedy; default its saved setting; refused for regression and the expert), with
torch's RNG seeded from ``--seed`` once per evaluation so a rerun gives the same episodes;
``--ensemble-decay K`` executes ACT's temporal ensemble of overlapping chunks (eval/rollout.py);
``--readout expectation`` reads a binning LM's chunk as the mean of the bin centres under its softmax.
All are recorded in ``meta`` and in the policy's entry (``temperature``, ``ensemble_decay``, ``readout``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from action_tokenizers.io import atomic_directory, check_output, write_json
from eval.augmentation import TransitionModel, augmented_rollout, check_model_fits, load_or_fit_model, mean_model_drift
from eval.plots import policy_entries, write_plots
from eval.policies import EXPERT, ExpertPolicy, Policy, load_policy, policy_name
from eval.rollout import (EnvPool, RolloutResult, check_decoding, check_dims, check_ensemble_decay, check_temperature,
                          rollout, samples)
from training.threads import check_threads, cpu_threads

__all__ = [
    "DEFAULT_TASKS",
    "EvalConfig",
    "PolicyEvaluation",
    "evaluate_policy",
    "policy_entry",
    "results_markdown",
    "run_eval",
    "transition_model_for",
    "write_report",
]

DEFAULT_TASKS = ("reach-v3", "push-v3", "button-press-v3", "drawer-close-v3")
# Fields of every policy entry (and of each per_task entry) in results.json.
ENTRY_FIELDS = ("success_rate", "success_ci", "mean_return", "regret", "regret_ci", "malformed", "latency_s_per_chunk", "tokens_per_chunk")


@dataclass
class EvalConfig:
    """Evaluate one policy in closed loop (and the expert on the same seeds, for regret)."""

    policy: str = EXPERT
    """'expert', a regression-baseline directory, or a trained-LM directory."""
    env: str = "metaworld"
    """Environment family."""
    tasks: tuple[str, ...] = DEFAULT_TASKS
    """Task names (comma-separated on the command line)."""
    episodes: int = 10
    """Episodes per task."""
    out: Path = Path("runs/eval")
    """Output directory (results.json, results.md, episodes.json, plots, videos)."""
    overwrite: bool = False
    """Write into an --out that holds other files (they are kept; only this project's files are replaced)."""
    seed: int = 1000
    """Seed of the first episode; episode j of every task uses seed + j."""
    n_action_steps: int | None = None
    """Actions executed from each chunk before re-planning (default: the policy's chunk size)."""
    n_envs: int = 4
    """Environment instances stepped in lockstep (the policy's batch size)."""
    horizon: int = 150
    """Steps per episode (a fixed horizon, so returns compare across policies)."""
    video: bool = False
    """Also write MP4 videos of the first --video-episodes episodes of each task."""
    video_episodes: int = 1
    """Episodes per task to film when --video is on."""
    video_size: int = 96
    """Video frame width and height in pixels (rendering on the CPU grows with the frame area)."""
    name: str | None = None
    """Key of the policy in results.json (default: the policy's name, else the directory name)."""
    progress: bool = True
    """Show progress bars."""
    execution: str = "closed_loop"
    """'closed_loop' (the policy sees the real state) or 'augmented' (it sees a transition model's propagated state; its chunks run open loop)."""
    transition_model: str | None = None
    """Augmented execution: a saved TransitionModel directory."""
    dataset: str | None = None
    """Augmented execution without --transition-model: demos to fit the model on (saved to OUT/transition_model).
    Without --execution, ``eval --dataset D`` evaluates open loop on D's episodes instead (eval/open_loop.py;
    ``eval --dataset D --help`` lists its options)."""
    paraphrased: bool = False
    """Also roll the policy out, on the same seeds, with instructions it never saw in training (eval/paraphrases.py)."""
    temperature: float | None = None
    """Sampling temperature of an LM policy's action tokens (0 = greedy; default: the policy's saved setting).
    Sampling is seeded from --seed, so a rerun is identical. Refused for policies that do not sample."""
    readout: str | None = None
    """How an LM policy reads chunks from its ids: argmax, expectation (binning and VQ) or mean; default: the policy's saved setting."""
    ensemble_decay: float | None = None
    """Temporal ensembling (ACT): execute the exp(-K*i)-weighted mean (i=0 the oldest) of every overlapping
    chunk's prediction for the current step; the policy is still called every --n-action-steps. Default: off."""
    threads: int | None = 1
    """Torch CPU threads for the policy (None = torch's default); as in training, one per process on shared cores."""

    def __post_init__(self) -> None:
        from eval import envs

        from eval.cli import comma_list

        self.tasks = comma_list(self.tasks)
        if not self.tasks:
            raise ValueError("--tasks must name at least one task")
        valid = envs.list_tasks(self.env)  # also rejects an unknown --env with the valid families
        for task in self.tasks:
            envs.check_name(task, valid, f"{self.env} task")
        for name in ("episodes", "n_envs", "horizon"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.n_action_steps is not None and self.n_action_steps < 1:
            raise ValueError(f"--n-action-steps must be >= 1 (or omitted for the chunk size), got {self.n_action_steps}")
        if self.video_episodes < 0 or self.video_size < 16:
            raise ValueError(f"--video-episodes must be >= 0 and --video-size >= 16, got {self.video_episodes}, {self.video_size}")
        self.out = Path(self.out)
        check_ensemble_decay(self.ensemble_decay)
        check_temperature(self.temperature)
        check_threads(self.threads)
        _check_execution(self)
        if self.paraphrased:
            from eval.paraphrases import paraphrase_map

            if self.execution != "closed_loop":
                raise ValueError("--paraphrased is measured in closed loop only; drop it or use --execution closed_loop")
            paraphrase_map(self.tasks)  # every task needs its paraphrases

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.episodes))


def _check_execution(cfg: EvalConfig) -> None:
    from eval.augmentation import MODES

    if cfg.execution not in MODES:
        raise ValueError(f"--execution must be one of {', '.join(MODES)}, got {cfg.execution!r}")
    has_model = cfg.transition_model is not None or cfg.dataset is not None
    if cfg.execution == "augmented" and not has_model:
        raise ValueError("--execution augmented needs a transition model: pass --transition-model DIR (a saved "
                         "TransitionModel) or --dataset DEMOS (a LeRobot demo dataset to fit one on)")
    if cfg.execution == "closed_loop" and has_model:
        raise ValueError("--transition-model and --dataset are used only with --execution augmented")


@dataclass
class PolicyEvaluation:
    """One policy's rollouts and their summary (the results.json entry)."""

    name: str
    entry: dict[str, Any]
    rollout: RolloutResult


def n_action_steps(policy: Policy, cfg: EvalConfig) -> int:
    """Actions run per chunk: ``cfg.n_action_steps`` (default the chunk size); the expert re-plans every step."""
    if isinstance(policy, ExpertPolicy):
        return 1
    return int(cfg.n_action_steps or policy.chunk_size)


def temperature_for(policy: Policy, cfg: EvalConfig) -> float | None:
    """The temperature passed to ``policy``'s calls: ``cfg.temperature``, except for the expert reference (None)."""
    return None if isinstance(policy, ExpertPolicy) else cfg.temperature


def ensemble_decay_for(policy: Policy, cfg: EvalConfig) -> float | None:
    """The ensembling decay for ``policy``: ``cfg.ensemble_decay``; None for the expert (it re-plans every step)."""
    return None if isinstance(policy, ExpertPolicy) else cfg.ensemble_decay


def effective_temperature(policy: Policy, cfg: EvalConfig) -> float | None:
    """The temperature ``policy`` actually samples at (its saved one unless overridden); None if it does not sample."""
    if not samples(policy):
        return None
    chosen = temperature_for(policy, cfg)
    return float(getattr(policy, "temperature", 0.0) if chosen is None else chosen)


@contextlib.contextmanager
def seeded_sampling(temperature: float | None, seed: int) -> Iterator[None]:
    """Seed torch's RNG with ``seed`` for the enclosed rollouts when they sample (restored afterwards).

    Why: generation samples from torch's global RNG, so without this two identical evaluations of a
    sampling policy differ; greedy decoding needs no seed (and torch is then not imported here).
    """
    if not temperature:
        yield
        return
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def set_readout(policy: Policy, readout: str) -> None:
    """``--readout`` on an LM policy (checked against its tokenizer); refused for other policies."""
    if not hasattr(policy, "readout"):
        raise ValueError(f"--readout applies to LM policies; {type(policy).__name__} reads no tokens: drop it")
    from training.generation import check_readout

    policy.readout = check_readout(readout, policy.action_tokenizer)


def check_policy(policy: Policy, cfg: EvalConfig) -> None:
    """Reject a policy whose action/state dimension or chunk length does not fit any requested task,
    or that is given a temperature it cannot sample at."""
    from eval.envs import env_spec

    check_decoding(policy, temperature_for(policy, cfg))
    for task in cfg.tasks:
        spec = env_spec(cfg.env, task)
        check_dims(policy, spec.action_dim, _policy_state_dim(policy, cfg.env, spec.obs_dim), n_action_steps(policy, cfg))


def _policy_state_dim(policy: Policy, env: str, obs_dim: int) -> int:
    """The state size the rollout gives ``policy``: LeRobot's agent_pos to a policy trained on it."""
    from eval.envs import PolicyCameras

    view = PolicyCameras.for_policy(policy, env)
    return obs_dim if view is None else view.state_dim(obs_dim)


def warm_up(policy: Policy, cfg: EvalConfig) -> None:
    """One untimed call before the rollouts, so one-off start-up costs (lazy imports, first kernel
    launches: seconds for an LM) do not land in the per-chunk latency."""
    from eval.envs import env_spec, task_description

    state_dim = getattr(policy, "state_dim", None)
    if isinstance(policy, ExpertPolicy) or state_dim is None:
        return
    import numpy as np

    spec = env_spec(cfg.env, cfg.tasks[0])
    batch = {"observation.state": np.zeros((min(cfg.n_envs, 2), int(state_dim))),
             "task": [task_description(cfg.env, cfg.tasks[0])] * min(cfg.n_envs, 2)}
    if spec.obs_dim == state_dim:
        policy.predict_action_chunk(batch)


def _rollout(policy: Policy, cfg: EvalConfig, pool: EnvPool | None, model: TransitionModel | None,
             instructions: Callable[[str, int], str] | None = None) -> RolloutResult:
    """The executor: closed loop, or the augmentation when a transition model is given (same records, same seeds)."""
    warm_up(policy, cfg)
    render = cfg.video_episodes if cfg.video else 0
    kwargs = dict(n_action_steps=n_action_steps(policy, cfg), horizon=cfg.horizon, n_envs=cfg.n_envs,
                  render_episodes=render, progress=cfg.progress, pool=pool,
                  render_kwargs={"render_mode": "rgb_array", "width": cfg.video_size, "height": cfg.video_size},
                  temperature=temperature_for(policy, cfg), ensemble_decay=ensemble_decay_for(policy, cfg))
    with seeded_sampling(effective_temperature(policy, cfg), cfg.seed):  # after the warm-up: same draws every run
        if model is None:
            return rollout(policy, cfg.env, cfg.tasks, cfg.seeds, instructions=instructions, **kwargs)
        return augmented_rollout(policy, model, cfg.env, cfg.tasks, cfg.seeds, **kwargs)


def transition_model_for(policy: Policy, cfg: EvalConfig) -> TransitionModel | None:
    """The augmented run's model (loaded, or fitted on ``cfg.dataset``), checked against every task; None in closed loop."""
    from eval.envs import env_spec

    if cfg.execution != "augmented":
        return None
    model = load_or_fit_model(policy, cfg.transition_model, cfg.dataset)
    for task in cfg.tasks:
        spec = env_spec(cfg.env, task)
        check_model_fits(model, spec.obs_dim, spec.action_dim, f"{cfg.env} task {task}")
    return model


def policy_entry(policy: Policy, result: RolloutResult, expert: RolloutResult | None, n_action_steps: int) -> dict[str, Any]:
    """The results.json entry: metrics overall and per task, plus what the policy is."""
    from eval.metrics import summarize

    entry = summarize(result.episodes, None if expert is None else expert.episodes)
    fixed = getattr(policy, "tokens_per_chunk", None)
    if fixed is not None and not callable(fixed):
        for e in (entry, *entry["per_task"].values()):
            e["tokens_per_chunk"] = e["tokens_per_chunk"] if e["tokens_per_chunk"] is not None else float(fixed)
    entry["chunk_size"] = int(policy.chunk_size)
    entry["n_action_steps"] = int(n_action_steps)
    return entry


def evaluate_policy(
    policy: Policy, cfg: EvalConfig, name: str, expert: RolloutResult | None = None, pool: EnvPool | None = None,
    model: TransitionModel | None = None,
) -> PolicyEvaluation:
    """Check, roll out and summarize one policy; regret against ``expert`` (same seeds) when given.

    Pass one ``EnvPool`` to every call of a run so environment instances are built once. With a
    transition ``model`` the policy runs augmented (queried on model-propagated states).
    """
    check_policy(policy, cfg)
    result = _rollout(policy, cfg, pool, model)
    if expert is None and isinstance(policy, ExpertPolicy):
        expert = result  # the closed-loop expert's regret is 0 by definition
    entry = policy_entry(policy, result, expert, n_action_steps(policy, cfg))
    entry["execution"] = "closed_loop" if model is None else "augmented"
    entry["temperature"] = effective_temperature(policy, cfg)
    entry["ensemble_decay"] = ensemble_decay_for(policy, cfg)
    entry["readout"] = getattr(policy, "readout", None)
    if model is not None:
        entry["model_drift"] = mean_model_drift(result.episodes)
    return PolicyEvaluation(name, entry, result)


def evaluate_paraphrased(policy: Policy, cfg: EvalConfig, expert: RolloutResult | None = None,
                         pool: EnvPool | None = None) -> tuple[dict[str, Any], RolloutResult | None]:
    """The same seeds with an unseen instruction per episode: the entry's ``paraphrased`` block and the rollouts.

    Policies that cannot take a new sentence (a one-hot over training tasks) get
    ``{"applicable": False, "reason": ...}`` and no rollouts.
    """
    from eval.envs import list_tasks, task_description
    from eval.paraphrases import check_unseen, instruction_for, paraphrase_map, reads_free_text, unknown_word_share

    if not reads_free_text(policy):
        return {"applicable": False, "reason": "takes the task from a closed set, not as text"}, None
    texts = paraphrase_map(cfg.tasks)
    check_unseen(texts, [task_description(cfg.env, t) for t in list_tasks(cfg.env)])
    result = _rollout(policy, cfg, pool, None, instructions=lambda task, j: instruction_for(task, j, texts))
    full = policy_entry(policy, result, expert, n_action_steps(policy, cfg))
    keep = ("success_rate", "success_ci", "malformed")
    block = {"applicable": True, **{k: full[k] for k in keep},
             "per_task": {t: {k: e[k] for k in keep} for t, e in full["per_task"].items()},
             "instructions": {t: list(v) for t, v in texts.items()},
             "unknown_word_share": unknown_word_share(getattr(policy, "lm_tokenizer", None), [p for v in texts.values() for p in v])}
    return block, result


def percent_ci(entry: dict[str, Any]) -> str:
    """An entry's success as a report cell: 'x% [lo, hi]' (95% Wilson interval)."""
    lo, hi = entry["success_ci"]
    return f"{100 * entry['success_rate']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"


def regret_cell(entry: dict[str, Any]) -> str:
    """``87.5 [60.1, 114.9]``: mean paired regret and its 95% interval; "-" without an expert."""
    if entry.get("regret") is None:
        return "-"
    ci = entry.get("regret_ci")
    return f"{entry['regret']:.1f}" + ("" if ci is None else f" [{ci[0]:.1f}, {ci[1]:.1f}]")


def paraphrased_cell(entry: dict[str, Any]) -> str:
    """Report cell for an entry's paraphrased success: 'x% [lo, hi]', 'n/a' or '-' (not measured)."""
    p = entry.get("paraphrased")
    if p is None:
        return "-"
    return percent_ci(p) if p.get("applicable") else "n/a"


def results_markdown(results: dict[str, Any]) -> str:
    """Markdown tables: one row per policy overall, then success per task and policy."""
    policies = policy_entries(results)

    def num(x: Any, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    lines = [
        "| policy | success (95% CI) | mean return | regret (95% CI) | malformed | latency / chunk (ms) | tokens / chunk | control Hz |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in policies.items():
        lo, hi = e["success_ci"]
        lat = None if e.get("latency_s_per_chunk") is None else 1000 * e["latency_s_per_chunk"]
        lines.append(
            f"| {name} | {e['success_rate']:.2f} [{lo:.2f}, {hi:.2f}] | {e['mean_return']:.1f} | {regret_cell(e)} "
            f"| {e['malformed']} | {num(lat, '.2f')} | {num(e.get('tokens_per_chunk'), '.1f')} | {num(e.get('control_hz'), '.0f')} |"
        )
    measured = {name: e for name, e in policies.items() if "paraphrased" in e}
    if measured:
        lines += ["", "Instructions never seen in training (eval/paraphrases.py), same seeds:", "",
                  "| policy | original instruction | paraphrased instruction | paraphrase tokens unknown to the LM |",
                  "|---|---|---|---|"]
        for name, e in measured.items():
            share = e["paraphrased"].get("unknown_word_share")
            lines.append(f"| {name} | {percent_ci(e)} | {paraphrased_cell(e)} "
                         f"| {'-' if share is None else f'{100 * share:.0f}%'} |")
    tasks = list(dict.fromkeys(t for e in policies.values() for t in e.get("per_task", {})))
    lines += ["", "Success rate per task (95% Wilson interval):", "", "| task | " + " | ".join(policies) + " |",
              "|---|" + "---|" * len(policies)]
    for task in tasks:
        cells = []
        for e in policies.values():
            t = e.get("per_task", {}).get(task)
            cells.append("-" if t is None else f"{t['success_rate']:.2f} [{t['success_ci'][0]:.2f}, {t['success_ci'][1]:.2f}]")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, Any], out: Path) -> list[Path]:
    """Write results.json, results.md and the plots for a dict of several policies' results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    (out / "results.md").write_text(results_markdown(results))
    return [out / "results.json", out / "results.md", *write_plots(results, out)]


def _write_videos(evaluations: list[PolicyEvaluation], out: Path, fps: int) -> list[str]:
    import imageio.v3 as iio

    written = []
    for ev in evaluations:
        for (task, seed), frames in ev.rollout.frames.items():
            path = out / "videos" / f"{ev.name}_{task}_seed{seed}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            iio.imwrite(path, frames, plugin="pyav", codec="libx264", fps=fps)
            written.append(str(path.relative_to(out)))
    return written


def _meta(cfg: EvalConfig, seconds: float, episodes: int) -> dict[str, Any]:
    return {
        "policy": str(cfg.policy),
        "env": cfg.env,
        "tasks": list(cfg.tasks),
        "episodes_per_task": cfg.episodes,
        "seeds": [cfg.seed, cfg.seed + cfg.episodes - 1],
        "n_action_steps": cfg.n_action_steps,
        "temperature": cfg.temperature,
        "ensemble_decay": cfg.ensemble_decay,
        "readout": cfg.readout,
        "execution": cfg.execution,
        "n_envs": cfg.n_envs,
        "horizon": cfg.horizon,
        "seconds": seconds,
        "seconds_per_episode": seconds / max(episodes, 1),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
    }


def evaluate_expert(cfg: EvalConfig, pool: EnvPool | None = None, expert: Policy | None = None) -> PolicyEvaluation:
    """The closed-loop expert on ``cfg``'s tasks and seeds: the reference every policy's regret is measured against."""
    return evaluate_policy(expert or ExpertPolicy(cfg.env), cfg, EXPERT, pool=pool)


def _check_same_episodes(expert: PolicyEvaluation, cfg: EvalConfig) -> None:
    """A shared expert evaluation must cover exactly this evaluation's (task, seed) episodes."""
    have = {(e.task, e.seed) for e in expert.rollout.episodes}
    want = {(t, s) for t in cfg.tasks for s in cfg.seeds}
    if have != want:
        raise ValueError(f"the expert evaluation passed in covers other episodes ({len(have)} (task, seed) pairs) than "
                         f"this evaluation ({len(want)}): regret compares the same seeds only")


def run_eval(cfg: EvalConfig, pool: EnvPool | None = None, expert: PolicyEvaluation | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.policy`` (and the expert on the same seeds); write the report; return results.

    ``pool`` lets several evaluations share environment instances, and ``expert`` one closed-loop
    expert evaluation on these seeds (:func:`evaluate_expert`): the main job passes both, so the
    expert is rolled out once per job, not once per policy.
    """
    check_output(cfg.out, "eval", cfg.overwrite)  # refuse now, not after the rollouts
    with cpu_threads(cfg.threads):
        return _run_eval(cfg, pool, expert)


def _run_eval(cfg: EvalConfig, pool: EnvPool | None, expert: PolicyEvaluation | None) -> dict[str, Any]:
    from eval.envs import env_spec

    start = time.perf_counter()
    policy = load_policy(cfg.policy, cfg.env)
    name = cfg.name or policy_name(policy, fallback=Path(str(cfg.policy)).name)
    if name == "meta":
        raise ValueError("'meta' is reserved for run metadata in results.json; pass another --name")
    if isinstance(policy, ExpertPolicy):  # asked for by name: the knobs check_policy leaves off the reference
        check_decoding(policy, cfg.temperature)
        if cfg.ensemble_decay is not None:
            raise ValueError("--ensemble-decay does nothing for the expert (it re-plans every step with chunks of 1): drop it")
    if cfg.readout is not None:
        set_readout(policy, cfg.readout)
    check_policy(policy, cfg)  # before any rollout, the expert's included
    model = transition_model_for(policy, cfg)  # likewise
    is_expert = isinstance(policy, ExpertPolicy)
    only_expert = is_expert and model is None
    if model is not None and not cfg.name:
        name += "-augmented"
    if name == EXPERT and not only_expert:
        raise ValueError(f"{EXPERT!r} names the closed-loop expert in results.json; pass another --name")
    with contextlib.nullcontext(pool) if pool is not None else EnvPool() as pool:
        if expert is None:
            expert = evaluate_expert(cfg, pool, policy if is_expert else None)
        else:
            _check_same_episodes(expert, cfg)
        evaluations = [expert] if only_expert else [evaluate_policy(policy, cfg, name, expert.rollout, pool, model), expert]
        if cfg.paraphrased and not only_expert:
            block, paraphrased = evaluate_paraphrased(policy, cfg, expert.rollout, pool)
            evaluations[0].entry["paraphrased"] = block
            if paraphrased is not None:  # its episodes go to episodes.json beside the original ones
                evaluations.append(PolicyEvaluation(f"{name}-paraphrased", {}, paraphrased))
    results: dict[str, Any] = {ev.name: ev.entry for ev in evaluations if ev.entry}
    n_episodes = sum(len(ev.rollout.episodes) for ev in evaluations)
    results["meta"] = _meta(cfg, time.perf_counter() - start, n_episodes)
    if model is not None:
        results["meta"]["transition_model"] = {"path": cfg.transition_model or "transition_model", **model.source, **model.metrics}
    with atomic_directory(cfg.out, kind="eval", overwrite=cfg.overwrite) as tmp:
        write_report(results, tmp)
        if model is not None and cfg.transition_model is None:
            model.save(tmp / "transition_model")
        write_json(tmp / "episodes.json", {ev.name: [e.to_json() for e in ev.rollout.episodes] for ev in evaluations})
        if cfg.video:
            results["meta"]["videos"] = _write_videos(evaluations, tmp, env_spec(cfg.env, cfg.tasks[0]).fps)
            write_json(tmp / "results.json", results)
    if cfg.progress:
        print(results_markdown(results) + f"\nwrote {cfg.out / 'results.json'}")
    return results
