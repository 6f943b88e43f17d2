"""PNG plots of closed-loop results for people: success per task, success vs tokens, regret vs horizon.

Each function takes the ``results.json`` dict (several policies keyed by name; metadata entries,
which lack ``success_rate``, are ignored), so one call compares every tokenizer of a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_open_loop_error_by_step", "plot_open_loop_trajectories", "plot_regret_vs_horizon",
           "plot_success_per_task", "plot_success_vs_tokens", "policy_entries", "write_plots"]


def policy_entries(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-policy entries of a results dict (metadata objects have no ``success_rate``)."""
    return {k: v for k, v in results.items() if isinstance(v, dict) and "success_rate" in v}


def _figure(width: float = 7.0, height: float = 4.0) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=120)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _yerr(entries: list[dict[str, Any]]) -> np.ndarray:
    """Asymmetric error bars (2, n) from each entry's Wilson interval."""
    rate = np.array([e["success_rate"] for e in entries])
    lo = np.array([e["success_ci"][0] for e in entries])
    hi = np.array([e["success_ci"][1] for e in entries])
    return np.stack([rate - lo, hi - rate]).clip(min=0.0)


def plot_success_per_task(results: dict[str, Any], path: Path) -> Path:
    """Grouped bars: success rate (95% Wilson interval) of every policy on every task."""
    policies = policy_entries(results)
    tasks = list(dict.fromkeys(t for p in policies.values() for t in p.get("per_task", {})))
    fig, ax = _figure(max(6.0, 1.5 * len(tasks) + 2), 4.0)
    width = 0.8 / max(len(policies), 1)
    x = np.arange(len(tasks))
    for j, (name, entry) in enumerate(policies.items()):
        cells = [entry["per_task"].get(t) for t in tasks]
        have = [i for i, c in enumerate(cells) if c is not None]
        ax.bar(x[have] + j * width - 0.4 + width / 2, [cells[i]["success_rate"] for i in have], width,
               yerr=_yerr([cells[i] for i in have]), capsize=2, label=name)
    ax.set_xticks(x, tasks, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% Wilson CI)")
    ax.legend(fontsize=8, ncol=min(len(policies), 4))
    return _save(fig, path)


def plot_success_vs_tokens(results: dict[str, Any], path: Path) -> Path | None:
    """Success against tokens per chunk for tokenized policies; the others as horizontal references."""
    policies = policy_entries(results)
    tokenized = {k: v for k, v in policies.items() if v.get("tokens_per_chunk") is not None}
    if not tokenized:
        return None
    fig, ax = _figure()
    names = list(tokenized)
    xs = [float(tokenized[k]["tokens_per_chunk"]) for k in names]
    ax.errorbar(xs, [tokenized[k]["success_rate"] for k in names], yerr=_yerr([tokenized[k] for k in names]),
                fmt="o", capsize=3)
    for name, x in zip(names, xs):
        ax.annotate(name, (x, tokenized[name]["success_rate"]), textcoords="offset points", xytext=(5, 5))
    for j, (name, entry) in enumerate((k, v) for k, v in policies.items() if k not in tokenized):
        ax.axhline(entry["success_rate"], ls="--", lw=1, color=f"C{j + 1}", label=name)
    ax.set_xlabel("tokens per chunk")
    ax.set_ylabel("success rate (95% Wilson CI)")
    ax.set_ylim(0, 1.05)
    if len(policies) > len(tokenized):
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_regret_vs_horizon(results: dict[str, Any], path: Path) -> Path | None:
    """Mean cumulative regret (expert return minus policy return so far) against the step."""
    curves = {k: v["regret_vs_horizon"] for k, v in policy_entries(results).items() if (v.get("regret_vs_horizon") or {}).get("steps")}
    if not curves:
        return None
    fig, ax = _figure()
    for name, curve in curves.items():
        ax.plot(curve["steps"], curve["regret"], marker=".", label=name)
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.set_xlabel("step t of the episode")
    ax.set_ylabel("cumulative regret up to t")
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_plots(results: dict[str, Any], out: Path) -> list[Path]:
    """Write every plot that has data into ``out``; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [
        plot_success_per_task(results, out / "success_per_task.png"),
        plot_success_vs_tokens(results, out / "success_vs_tokens.png"),
        plot_regret_vs_horizon(results, out / "regret_vs_horizon.png"),
    ]
    return [p for p in written if p is not None]


# ---------------------------------------------------------------------- open loop (eval/open_loop.py)
def plot_open_loop_trajectories(demo: np.ndarray, starts: np.ndarray, predicted: dict[str, np.ndarray],
                                names: list[str], path: Path, title: str = "") -> Path:
    """One panel per action dimension: the demonstrated trajectory (T, d) and, from each chunk start
    in ``starts``, each source's predicted chunk (n, h, d) drawn over the frames it covers."""
    d = demo.shape[1]
    fig, axes = _figure(8.0, 1.6 * d + 0.6)
    fig.clf()
    axes = fig.subplots(d, 1, sharex=True, squeeze=False)[:, 0]
    frames = np.arange(len(demo))
    for j, ax in enumerate(axes):
        ax.plot(frames, demo[:, j], color="black", lw=1.2, label="demonstrated" if j == 0 else None)
        for c, (source, chunks) in enumerate(predicted.items()):
            h = chunks.shape[1]
            for i, s in enumerate(np.asarray(starts).tolist()):
                ax.plot(np.arange(s, s + h), chunks[i, :, j], color=f"C{c}", lw=1.0, alpha=0.85,
                        label=source if (j == 0 and i == 0) else None)
            ax.scatter(starts, chunks[:, 0, j], color=f"C{c}", s=6, zorder=3)
        ax.set_ylabel(names[j] if j < len(names) else f"dim{j}", fontsize=8)
    axes[-1].set_xlabel("frame (each colored segment: one predicted chunk, from the observation at its first frame)")
    axes[0].legend(fontsize=7, ncol=len(predicted) + 1, loc="upper right")
    if title:
        axes[0].set_title(title)
    return _save(fig, path)


def plot_open_loop_error_by_step(rows: dict[str, dict[str, Any]], path: Path) -> Path:
    """Mean absolute error (raw units) at each step of the chunk, one line per row of the open-loop report."""
    fig, ax = _figure()
    for name, row in rows.items():
        steps = np.arange(len(row["per_step_mae"]))
        ax.plot(steps, row["per_step_mae"], marker=".", label=name)
    ax.set_xlabel("step within the predicted chunk")
    ax.set_ylabel("MAE (raw action units)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return _save(fig, path)
