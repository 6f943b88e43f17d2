"""Training checkpoints as plain files: safetensors for tensors, JSON for everything else.

``out/checkpoints/step-00000200/``::

    model.safetensors      the PolicyModel (LM + observation encoder)
    optimizer.safetensors  per-parameter optimizer tensors (AdamW moments, step counts)
    rng.safetensors        torch CPU (and CUDA) generator states
    trainer_state.json     step, optimizer hyper-parameters, scheduler state, loss history, config

Every checkpoint directory is written under the output rule (``action_tokenizers.io``): staged,
then committed, with a manifest of its files and their sha256; older ones are deleted (only
their listed files) after that, so a run killed at any moment leaves its last complete
checkpoint usable. ``trainer_state.json`` also records how many processes trained
(``num_processes``), so a resume on another layout is visible. Nothing is pickled (accelerate's ``save_state`` would pickle the
optimizer and RNG states), so loading never executes code from the directory. The data order is
a function of ``(seed, step)``, so no sampler state is needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from action_tokenizers.io import (JOURNAL, OutputFolder, atomic_directory, read_json, recover, verify_manifest,
                                  write_json)

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
FORMAT_VERSION = 1
_NAME = re.compile(r"^step-(\d{8})$")


@dataclass
class TrainerState:
    """What the loop needs to continue besides tensors."""

    step: int = 0
    losses: list[list[float]] = field(default_factory=list)
    """[step, train loss] pairs, one per logged step."""
    evals: list[dict[str, Any]] = field(default_factory=list)
    """Held-out metrics, one dict per evaluation."""
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0
    train_tokens: int = 0
    num_processes: int = 1
    """Processes that trained (accelerate's world size) at the last save."""


def checkpoint_dirs(out: Path) -> list[Path]:
    """Complete checkpoints under ``out``, oldest first.

    A checkpoint whose save was killed before its commit holds only a staging folder (no
    ``trainer_state.json``) and is skipped; one killed after its commit is finished first.
    """
    root = out / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for p in sorted(root.iterdir()):
        if p.is_dir() and _NAME.match(p.name):
            if (p / JOURNAL).is_file():
                recover(p)
            if (p / STATE_FILE).is_file():
                found.append(p)
    return found


def save_checkpoint(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    state: TrainerState, config: dict[str, Any], keep: int = 1,
                    folder: OutputFolder | None = None) -> Path:
    """Write ``checkpoints/step-N`` atomically, then drop all but the newest ``keep``.

    ``folder``: the run's open output folder; old checkpoints are removed through it (only our files).
    """
    from safetensors.torch import save_file, save_model

    path = out / CHECKPOINTS_DIR / f"step-{state.step:08d}"
    with atomic_directory(path, kind="checkpoint", overwrite=True) as tmp:
        save_model(model, str(tmp / MODEL_FILE))
        tensors, optim_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, str(tmp / OPTIM_FILE))
        save_file(_rng_tensors(), str(tmp / RNG_FILE))
        write_json(tmp / STATE_FILE, {
            "format_version": FORMAT_VERSION, "step": state.step, "config": config,
            "optimizer": optim_meta, "scheduler": scheduler.state_dict(),
            "trainer": {"losses": state.losses, "evals": state.evals,
                        "train_seconds": state.train_seconds, "train_cpu_seconds": state.train_cpu_seconds,
                        "train_tokens": state.train_tokens, "num_processes": state.num_processes},
        })
    for old in checkpoint_dirs(out)[:-keep]:
        if folder is not None:
            folder.remove(old.relative_to(out).as_posix())
        else:
            with OutputFolder(old.parent, None, overwrite=True) as f:
                f.remove(old.name)
    return path


def read_checkpoint_config(path: Path) -> dict[str, Any]:
    """The training config a checkpoint was written with (to refuse resuming a different run)."""
    saved = read_json(path / STATE_FILE, what="checkpoint state")
    if saved.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer version (format {saved['format_version']})")
    if "config" not in saved or "step" not in saved:
        raise ValueError(f"{path / STATE_FILE} is incomplete (needs 'config' and 'step'): the checkpoint is corrupted")
    return saved["config"]


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> TrainerState:
    """Restore model, optimizer, scheduler and RNG in place; errors name the broken file."""
    from safetensors.torch import load_file, load_model

    recover(path)
    saved = read_json(path / STATE_FILE, what="checkpoint state")
    for name in (MODEL_FILE, OPTIM_FILE, RNG_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"checkpoint {path} is incomplete: {name} is missing")
    try:
        verify_manifest(path, (STATE_FILE, MODEL_FILE, OPTIM_FILE, RNG_FILE))
    except ValueError as e:  # a changed or truncated file
        raise ValueError(f"checkpoint {path} is corrupted: {e}") from e
    try:
        missing, unexpected = load_model(model, str(path / MODEL_FILE), strict=False)
        optim_tensors = load_file(str(path / OPTIM_FILE))
        rng = load_file(str(path / RNG_FILE))
    except Exception as e:  # safetensors raises several types for truncated or garbled files
        raise ValueError(f"checkpoint {path} is corrupted: {type(e).__name__}: {e}") from e
    if missing or unexpected:
        raise ValueError(f"checkpoint {path / MODEL_FILE} does not match the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    try:
        optimizer.load_state_dict(_unflatten_optimizer(optim_tensors, saved["optimizer"]))
        scheduler.load_state_dict(saved["scheduler"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise ValueError(f"checkpoint {path} has an optimizer/scheduler state that does not fit this run: {e}") from e
    _set_rng(rng)
    t = saved.get("trainer", {})
    return TrainerState(step=int(saved["step"]), losses=t.get("losses", []), evals=t.get("evals", []),
                        train_seconds=float(t.get("train_seconds", 0.0)),
                        train_cpu_seconds=float(t.get("train_cpu_seconds", 0.0)), train_tokens=int(t.get("train_tokens", 0)),
                        num_processes=int(t.get("num_processes", 1)))


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}/{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}/{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, name = key.split("/", 1)
        state.setdefault(int(pid), {})[name] = v
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda_{i}"] = s
    return out


def _set_rng(rng: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(rng) if k.startswith("cuda_")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
