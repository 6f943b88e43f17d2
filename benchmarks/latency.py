"""Latency at batch size 1, the real robot's case: one ``predict_action_chunk`` call per family, and
FAST's decode of one chunk against the published per-chunk loop.

Usage::

    nice -n 10 .venv/bin/python benchmarks/latency.py                       # collect, fit, train, measure (~15 min)
    nice -n 10 .venv/bin/python benchmarks/latency.py --skip-policies       # only the FAST decode comparison
    nice -n 10 .venv/bin/python benchmarks/latency.py --policies runs/default/models/fast ...   # trained policies

Part 1, FAST decode at b=1: the project's FAST (default settings, identity normalization on chunks
normalized once to [-1, 1], as in ``benchmarks/tokenizers.py``) and ``ReferenceFAST`` (the published
algorithm) fitted on the same chunks; each decodes the same held-out chunks one call per chunk (its
own ids); the best of several passes over all chunks, per chunk. The project's batch path on one
sequence is timed too, to show what the single-sequence path saves.

Part 2, policies at b=1: without ``--policies``, a small Meta-World demo set is collected and one
LM per family is trained briefly with the default model size (latency depends on the architecture
and, for FAST, on how many tokens the model emits: tokens per chunk is reported beside it), plus the
regression baseline. Each policy answers ``calls`` single-state queries (states of distinct demo
frames, the task's instruction) after one untimed warm-up call; median and 90th percentile of the
whole call, and the median of decoding its own ids alone.
"""

from __future__ import annotations

import statistics
import sys
import time
import timeit
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# Run as a script, this folder would come first on sys.path and benchmarks/tokenizers.py would shadow
# the `tokenizers` package: drop the folder, put the repo root there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.reference import ReferenceFAST, smooth_chunks  # noqa: E402


@dataclass
class LatencyConfig:
    """Batch-size-1 latency benchmark settings."""

    work: Path = REPO / "runs" / "latency"
    """Where demos, tokenizers and the briefly trained policies go (reused when present)."""
    policies: tuple[Path, ...] = ()
    """Trained policy directories to time instead of training new ones."""
    skip_policies: bool = False
    """Only the FAST decode comparison."""
    tasks: tuple[str, ...] = ("reach-v3", "push-v3")
    """Meta-World tasks of the demo set."""
    demos_per_task: int = 10
    """Expert episodes per task."""
    train_steps: int = 300
    """Optimizer steps of each briefly trained LM (default model size)."""
    calls: int = 50
    """Timed policy calls per policy."""
    decode_chunks: int = 300
    """Held-out chunks decoded one at a time in part 1."""
    repeats: int = 7
    """Passes over the chunks in part 1 (the fastest counts)."""
    threads: int = 1
    """torch CPU threads."""


# ---------------------------------------------------------------------- part 1: FAST decode at b=1
def _per_chunk_us(fn, seqs: list[list[int]], repeats: int) -> float:
    return min(timeit.repeat(lambda: [fn(s) for s in seqs], number=1, repeat=repeats)) / len(seqs) * 1e6


def fast_decode_rows(name: str, chunks: np.ndarray, cfg: LatencyConfig) -> dict[str, float | str]:
    """Fit ours and the reference on the same [-1, 1] chunks; time one-chunk decodes of held-out chunks."""
    from action_tokenizers.base import ActionTokenizer
    from action_tokenizers.fast import FASTTokenizer

    n = len(chunks)
    fit, test = chunks[: n - min(cfg.decode_chunks, n // 3)], chunks[n - min(cfg.decode_chunks, n // 3):]
    h, d = chunks.shape[1:]
    ours = FASTTokenizer(scale=10.0, vocab_size=1024, normalization="identity").fit(fit)
    ref = ReferenceFAST.fit(list(fit), scale=10, vocab_size=1024, time_horizon=h, action_dim=d)
    ids, ref_ids = ours.encode(test), ref(test)
    single = _per_chunk_us(lambda s: ours.decode([s]), ids, cfg.repeats)
    batch_path = _per_chunk_us(lambda s: ActionTokenizer.decode_with_report(ours, [s]), ids, cfg.repeats)
    reference = _per_chunk_us(lambda s: ref.decode([s]), ref_ids, cfg.repeats)
    return {"data": f"{name} ({h}x{d}, {len(test)} chunks)", "ours_us": single, "batch_path_us": batch_path,
            "reference_us": reference, "tokens_per_chunk": float(np.mean([len(s) for s in ids]))}


def _normalized(x: np.ndarray) -> np.ndarray:
    """Per-dimension q01/q99 -> [-1, 1], clipped (what the tokenizer benchmark feeds every tokenizer)."""
    lo, hi = np.quantile(x.reshape(-1, x.shape[-1]), [0.01, 0.99], axis=0)
    return np.clip(2 * (x - lo) / np.maximum(hi - lo, 1e-8) - 1, -1, 1)


# ---------------------------------------------------------------------- part 2: policies at b=1
def build_policies(cfg: LatencyConfig) -> dict[str, Path]:
    """Collect demos, fit each family with its default config, train each LM briefly, and the regression baseline."""
    from action_tokenizers.registry import FAMILIES, tokenizer_class
    from eval.collect import CollectConfig, run_collect
    from training.regression import RegressionConfig, run_train_regression
    from training.train import TrainConfig, run_train

    demos = cfg.work / "demos"
    if not (demos / "meta" / "info.json").is_file():
        run_collect(CollectConfig(tasks=cfg.tasks, episodes=cfg.demos_per_task, out=demos, seed=0, progress=False))
    chunks = _chunks(demos)
    out: dict[str, Path] = {}
    for name in FAMILIES:
        tok_dir, model = cfg.work / "tokenizers" / name, cfg.work / "models" / name
        if not (tok_dir / "config.json").is_file():
            tokenizer_class(name)().fit(chunks.actions).save_pretrained(tok_dir, overwrite=True)
        if not (model / "policy_config.json").is_file():
            run_train(TrainConfig(dataset=demos, tokenizer=tok_dir, out=model, max_steps=cfg.train_steps,
                                  overwrite=True, progress=False, threads=cfg.threads))
        out[name] = model
    reg = cfg.work / "models" / "regression"
    if not (reg / "regression_config.json").is_file():
        run_train_regression(RegressionConfig(dataset=str(demos), out=reg, chunk_size=10, steps=cfg.train_steps,
                                              progress=False))
    out["regression"] = reg
    return out


def _chunks(demos: Path):
    from action_tokenizers.data import load_chunks

    return load_chunks(demos, chunk_size=10, pad="last", state_key="observation.state", with_tasks=True)


def time_policy(path: Path, states: np.ndarray, tasks: list[str], calls: int) -> dict[str, float | str]:
    from eval.policies import load_policy

    policy = load_policy(str(path), "metaworld")
    policy.predict_action_chunk({"observation.state": states[:1], "task": tasks[:1]})  # warm-up, untimed
    total, decode, tokens = [], [], []
    for i in range(calls):
        start = time.perf_counter()
        policy.predict_action_chunk({"observation.state": states[i:i + 1], "task": tasks[i:i + 1]})
        total.append(time.perf_counter() - start)
        ids = policy.last_stats.get("action_ids")
        if ids is not None:  # the tokenizer's share: decoding the same ids again
            t0 = time.perf_counter()
            policy.action_tokenizer.decode_with_report(ids)
            decode.append(time.perf_counter() - t0)
            tokens.append(len(ids[0]))
    total.sort()
    return {"policy": path.name, "median_ms": 1e3 * statistics.median(total), "p90_ms": 1e3 * total[int(0.9 * (len(total) - 1))],
            "decode_us": 1e6 * statistics.median(decode) if decode else float("nan"),
            "tokens_per_chunk": float(np.mean(tokens)) if tokens else float("nan")}


def main() -> None:
    import torch
    import tyro

    cfg = tyro.cli(LatencyConfig)
    torch.set_num_threads(cfg.threads)
    sets = {"synthetic": smooth_chunks(1800, 10, 34, seed=0)}
    so101 = REPO.parent / "shared" / "data" / "so101_record_test"
    if (so101 / "meta" / "info.json").is_file():
        from action_tokenizers.data import load_chunks

        sets["SO-101"] = _normalized(load_chunks(so101, chunk_size=10, pad="drop").actions)
    policies = {} if cfg.skip_policies else ({Path(p).name: Path(p) for p in cfg.policies} or build_policies(cfg))
    if (cfg.work / "demos" / "meta" / "info.json").is_file():  # the demos of an earlier run serve part 1 too
        sets["Meta-World"] = _normalized(_chunks(cfg.work / "demos").actions)

    print("| data | ours, one chunk (us) | ours via the batch path (us) | reference loop (us) | reference / ours | tokens/chunk |")
    print("|---|---|---|---|---|---|")
    for name, chunks in sets.items():
        r = fast_decode_rows(name, chunks, cfg)
        print(f"| {r['data']} | {r['ours_us']:.1f} | {r['batch_path_us']:.1f} | {r['reference_us']:.1f} "
              f"| {r['reference_us'] / r['ours_us']:.2f}x | {r['tokens_per_chunk']:.1f} |", flush=True)
    if not policies:
        return
    demos = _chunks(cfg.work / "demos") if (cfg.work / "demos").is_dir() else None
    if demos is None:
        raise SystemExit("--policies needs the demo set they were trained on under --work/demos (for real states)")
    pick = np.random.default_rng(0).choice(len(demos), size=cfg.calls, replace=False)
    states, tasks = demos.states[pick], [demos.tasks[i] for i in pick]
    print(f"\n| policy | median ms per call | p90 ms | decode alone (us) | tokens/chunk |  (b=1, {cfg.calls} calls, "
          f"{cfg.threads} torch thread(s))")
    print("|---|---|---|---|---|")
    for name, path in policies.items():
        r = time_policy(path, states, tasks, cfg.calls)
        print(f"| {name} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['decode_us']:.0f} | {r['tokens_per_chunk']:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
