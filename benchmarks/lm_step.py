"""CPU cost of one training step and of one batch-size-1 action chunk, per base LM.

Usage::

    nice -n 10 .venv/bin/python benchmarks/lm_step.py                          # default LM and smollm2-135m
    nice -n 10 .venv/bin/python benchmarks/lm_step.py --models default --steps 3

A training step is the real one (``training.train.train_step``: forward, cross-entropy on the
action tokens, backward, AdamW) on a synthetic batch shaped like the main job's (``batch_size``
sequences of a short task prompt, one observation slot and ``tokens_per_chunk`` action ids), with
``torch`` limited to ``threads`` threads as ``action-tokenizers train`` does on CPU. The first step
(allocation, lazy initialisation) is not counted; the median of the others is reported, with the
time of loading the model. CPU time is reported beside wall time: on a shared machine the wall time
also measures the other jobs. Numbers go in docs/results.md.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# Run as a script, this folder would come first on sys.path and benchmarks/tokenizers.py would shadow
# the `tokenizers` package: drop the folder, put the repo root there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass
class StepBenchConfig:
    """Training-step benchmark settings."""

    models: tuple[str, ...] = ("default", "smollm2-135m")
    """'default' (the from-scratch Llama of the main job) and/or any --model value."""
    steps: int = 4
    """Timed steps (after one untimed step)."""
    batch_size: int = 32
    """Sequences per step (the main job's)."""
    tokens_per_chunk: int = 40
    """Action ids per sequence (binning at h=10, d=4)."""
    n_actions: int = 256
    """Action vocabulary size."""
    threads: int = 1
    """torch CPU threads (training's default on CPU)."""


def _build(model: str, n_actions: int, task: str):
    from training.model import LMSpec, build_default, load_pretrained

    if model == "default":
        return build_default([task], n_actions, LMSpec())
    return load_pretrained(model, n_actions, "add")


def measure(cfg: StepBenchConfig, model: str) -> dict[str, float | str | int]:
    import torch

    from training.model import PolicyModel, count_parameters
    from training.observation import StateProjection
    from training.sequences import build_examples, build_prompt, collate
    from training.train import TrainConfig, train_step

    task = "Push the puck to a goal"
    t0 = time.perf_counter()
    base = _build(model, cfg.n_actions, task)
    load_s = time.perf_counter() - t0
    enc = StateProjection(39, base.lm.get_input_embeddings().embedding_dim)
    net = PolicyModel(base.lm, enc)
    rng = np.random.default_rng(0)
    prompt = build_prompt(base.tokenizer(task)["input_ids"], enc.n_tokens, base.vocab, base.tokenizer.pad_token_id)
    actions = rng.integers(0, cfg.n_actions, (cfg.batch_size, cfg.tokens_per_chunk)).tolist()
    ex = build_examples([prompt] * cfg.batch_size, actions, rng.normal(size=(cfg.batch_size, 39)), base.vocab)
    batch = collate(ex, np.arange(cfg.batch_size), base.tokenizer.pad_token_id, "observation.state")

    class _NoAccelerator:  # train_step's only needs from accelerate, on one CPU process
        backward = staticmethod(lambda loss: loss.backward())
        clip_grad_norm_ = staticmethod(torch.nn.utils.clip_grad_norm_)

    tc = TrainConfig(dataset=Path("."), tokenizer=Path("."), out=Path("."))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    times, cpu = [], []
    for i in range(cfg.steps + 1):
        start, c0 = time.perf_counter(), time.process_time()
        train_step(net, batch, opt, sched, _NoAccelerator(), tc, base.vocab)
        if i:
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - c0)
    return {"model": model, "n_params": count_parameters(net), "load_s": load_s,
            "step_s_median": statistics.median(times), "step_cpu_s_median": statistics.median(cpu),
            "seq_len": int(batch["input_ids"].shape[1])}


def main() -> None:
    import torch
    import tyro

    cfg = tyro.cli(StepBenchConfig)
    torch.set_num_threads(cfg.threads)
    print(f"| model | parameters | load s | step s, wall (median of {cfg.steps}) | step s, CPU | batch x sequence length |")
    print("|---|---|---|---|---|---|")
    for model in cfg.models:
        r = measure(cfg, model)
        print(f"| {r['model']} | {r['n_params'] / 1e6:.1f} M | {r['load_s']:.1f} | {r['step_s_median']:.2f} "
              f"| {r['step_cpu_s_median']:.2f} | {cfg.batch_size} x {r['seq_len']} |", flush=True)


if __name__ == "__main__":
    main()
