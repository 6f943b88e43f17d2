"""The scale-out path, tested (issue 12): training under ``accelerate launch`` with two processes on
the CPU (gloo), on a few SO-101 episodes and a handful of steps. Both processes take part (the
saved state records two processes, and each finishes its loop) and the saved policy loads and
predicts.

accelerate's ``--cpu`` flag starts a single process, so the test uses the multi-process launcher
(torchrun underneath) with CUDA hidden: training then runs one distributed CPU job
(``training.train._cpu_world``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_one_policy(so101_root: Path, tmp_path: Path) -> None:
    from action_tokenizers.binning import BinningTokenizer
    from action_tokenizers.data import load_chunks
    from training import TokenizedPolicy

    BinningTokenizer(n_bins=16).fit(load_chunks(so101_root, chunk_size=4, pad="last").actions).save_pretrained(tmp_path / "tok")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           "-m", "training.train", "--dataset", str(so101_root), "--tokenizer", str(tmp_path / "tok"), "--out", str(out),
           "--max-steps", str(STEPS), "--batch-size", "4", "--hidden-size", "32", "--n-layers", "1", "--n-heads", "2",
           "--warmup-steps", "1", "--checkpoint-every", str(STEPS), "--eval-chunks", "2", "--no-progress"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # both processes ran the whole loop, as one job of two
    assert proc.stdout.count(f"trained {STEPS} steps -> {out}") == 2, proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["steps"] == STEPS
    state = json.loads(next((out / "checkpoints").glob("step-*/trainer_state.json")).read_text())
    assert state["trainer"]["num_processes"] == 2

    policy = TokenizedPolicy.from_pretrained(out, device="cpu")
    states = np.asarray(load_chunks(so101_root, chunk_size=4, pad="last", state_key="observation.state").states[:3])
    chunks = policy.predict_action_chunk({"observation.state": states, "task": "pick"})
    assert chunks.shape == (3, 4, 6) and np.all(np.isfinite(chunks))
