"""The tokenizer report: one JSON, one Markdown table and PNG plots for any set of fitted tokenizers.

Families plug in without changes here: the report takes ``(name, tokenizer)`` pairs, computes
:func:`action_tokenizers.metrics.tokenizer_metrics` for each, and draws every family found in
the rate-distortion sweep.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from action_tokenizers.base import ActionTokenizer
from action_tokenizers.io import write_json
from action_tokenizers.metrics import TokenizerMetrics, tokenizer_metrics

# family -> list of (label, factory) settings swept for the rate-distortion plot.
SweepSettings = dict[str, list[tuple[str, Callable[[], ActionTokenizer]]]]


def default_sweep(families: tuple[str, ...]) -> SweepSettings:
    """Rate-distortion settings per family, each family's own ``sweep_settings()`` (see the registry)."""
    from action_tokenizers.registry import family

    return {name: family(name).sweep_settings() for name in families}


@dataclass
class SweepPoint:
    family: str
    setting: str
    tokens_per_chunk: float
    bits_per_chunk: float
    mae_norm: float
    max_err_norm: float


def rate_distortion(train: np.ndarray, test: np.ndarray, sweep: SweepSettings,
                    progress: bool = True) -> list[SweepPoint]:
    """Fit every sweep setting on ``train`` and measure it on ``test``."""
    points = []
    items = [(fam, label, make) for fam, settings in sweep.items() for label, make in settings]
    for family, label, make in tqdm(items, desc="rate-distortion sweep", disable=not progress):
        tok = make().fit(train)
        y = tok.decode(tok.encode(test))
        err = np.abs(tok.normalizer.normalize(y) - tok.normalizer.normalize(test))
        lengths = [len(s) for s in tok.encode(test)]
        points.append(SweepPoint(family, label, float(np.mean(lengths)),
                                 float(np.mean(lengths) * np.log2(tok.vocab_size)),
                                 float(err.mean()), float(err.max())))
    return points


HEADLINE = [
    ("tokenizer", lambda m: m.name),
    ("vocab", lambda m: str(m.vocab_size)),
    ("tokens/chunk", lambda m: f"{m.tokens_per_chunk_mean:.1f}"),
    ("compression", lambda m: f"{m.compression_ratio:.1f}x"),
    ("bits/chunk", lambda m: f"{m.bits_per_chunk:.0f}"),
    ("MAE (raw)", lambda m: f"{m.mae_raw:.4g}"),
    ("max err (raw)", lambda m: f"{m.max_err_raw:.4g}"),
    ("eps max/mean (norm)", lambda m: f"{m.eps_max:.3g} / {m.eps_mean:.3g}"),
    ("round-trip", lambda m: f"{100 * m.roundtrip_rate:.1f}%"),
    ("clipped values (chunks)", lambda m: f"{m.clipped_values:,} ({m.clipped_chunks:,})"),
    ("unusable after 1 deletion", lambda m: f"{100 * m.deletion.unusable_rate:.0f}%" if m.deletion else "-"),
    ("vocab used", lambda m: f"{100 * m.vocab_used:.0f}%"),
    ("encode chunks/s", lambda m: f"{m.encode_chunks_per_s:,.0f}"),
    ("decode chunks/s", lambda m: f"{m.decode_chunks_per_s:,.0f}"),
    ("fit s", lambda m: "-" if m.fit_seconds is None else f"{m.fit_seconds:.1f}"),
]


def markdown_table(metrics: list[TokenizerMetrics], columns=HEADLINE) -> str:
    head = "| " + " | ".join(c for c, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    rows = ["| " + " | ".join(f(m) for _, f in columns) + " |" for m in metrics]
    return "\n".join([head, sep, *rows])


def per_dim_table(metrics: list[TokenizerMetrics], action_names: list[str] | None) -> str:
    d = metrics[0].action_dim
    names = action_names if action_names and len(action_names) == d else [f"dim {j}" for j in range(d)]
    head = "| tokenizer | " + " | ".join(f"{n} MAE / max" for n in names) + " |"
    sep = "|" + "|".join("---" for _ in range(d + 1)) + "|"
    rows = [
        f"| {m.name} | " + " | ".join(f"{a:.3g} / {b:.3g}" for a, b in zip(m.mae_raw_per_dim, m.max_err_raw_per_dim)) + " |"
        for m in metrics
    ]
    return "\n".join([head, sep, *rows])


def plot_rate_distortion(points: list[SweepPoint], metrics: list[TokenizerMetrics], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "tokens_per_chunk", "tokens per chunk"), (axes[1], "bits_per_chunk", "bits per chunk")):
        for family in dict.fromkeys(p.family for p in points):
            pts = sorted((getattr(p, key), p.mae_norm) for p in points if p.family == family)
            ax.plot(*zip(*pts), "o-", label=f"{family} sweep", alpha=0.8)
        for m in metrics:
            xval = m.tokens_per_chunk_mean if key == "tokens_per_chunk" else m.bits_per_chunk
            ax.scatter([xval], [m.mae_norm], marker="*", s=160, zorder=5, label=f"{m.name} (chosen)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("reconstruction MAE (normalized)")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle("Rate-distortion on held-out chunks")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_trajectories(tokenizers: list[tuple[str, ActionTokenizer]], chunks: np.ndarray, path: Path,
                      n_examples: int = 2, action_names: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_examples = min(n_examples, len(chunks))
    # The chunks that move most: resting chunks make every tokenizer look perfect.
    motion = np.ptp(chunks, axis=1).sum(axis=1)
    idx = np.sort(np.argsort(-motion)[: max(n_examples * 20, 1)][:: max(20, 1)][:n_examples])
    d = chunks.shape[2]
    fig, axes = plt.subplots(n_examples, d, figsize=(2.8 * d, 2.3 * n_examples), squeeze=False)
    decoded = {name: tok.decode(tok.encode(chunks[idx])) for name, tok in tokenizers}
    for r, i in enumerate(idx):
        for j in range(d):
            ax = axes[r, j]
            ax.plot(chunks[i, :, j], "k-", lw=2.2, label="original")
            for name, y in decoded.items():
                ax.plot(y[r, :, j], "--", lw=1.3, label=name)
            title = action_names[j] if action_names and len(action_names) == d else f"dim {j}"
            ax.set_title(f"chunk {i}: {title}", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0, -1].legend(fontsize=7)
    fig.suptitle("Decoded vs original action chunks")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class TokenizerReport:
    metrics: list[TokenizerMetrics]
    sweep: list[SweepPoint]
    smoothness: dict[str, Any]
    files: dict[str, str]

    def table(self) -> str:
        return markdown_table(self.metrics)


def smoothness_of(tok: ActionTokenizer, test: np.ndarray, seed: int = 0) -> dict[str, Any] | None:
    """The smoothness diagnostic of :mod:`action_tokenizers.smoothness`, when that module is present."""
    try:
        from action_tokenizers import smoothness
    except ImportError:
        return None
    result = smoothness.smoothness_report(tok, test, seed=seed)
    flat = {k: v for k, v in asdict(result).items() if k not in ("error", "usage")}
    flat["worst_to_mean_error"] = result.error.worst_to_mean
    flat["usage"] = [{"group": u.group.name, "share_used": u.usage.share_used, "perplexity": u.usage.perplexity}
                     for u in result.usage]
    return flat


def write_report(out: Path, tokenizers: list[tuple[str, ActionTokenizer]], test: np.ndarray,
                 train: np.ndarray | None = None, fit_seconds: dict[str, float] | None = None,
                 sweep: SweepSettings | None = None, action_names: list[str] | None = None,
                 title: str = "Tokenizer report", progress: bool = True) -> TokenizerReport:
    """Measure every tokenizer on ``test``, sweep rate-distortion on ``train``/``test``, write files to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fit_seconds = fit_seconds or {}
    metrics, smooth = [], {}
    for name, tok in tqdm(tokenizers, desc="measuring tokenizers", disable=not progress):
        m = tokenizer_metrics(tok, test, name=name, fit_seconds=fit_seconds.get(name))
        s = smoothness_of(tok, test)
        if s is not None:
            smooth[name] = s
            m.extra["smoothness"] = s
        metrics.append(m)
        tok.metrics = {k: v for k, v in m.to_dict().items() if isinstance(v, (int, float))}
    points = rate_distortion(train, test, sweep, progress=progress) if (train is not None and sweep) else []
    files = {"json": "report.json", "markdown": "report.md", "rate_distortion": "rate_distortion.png",
             "trajectories": "trajectories.png"}
    write_json(out / files["json"], {
        "title": title,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "n_test_chunks": int(len(test)),
        "tokenizers": {m.name: m.to_dict() for m in metrics},
        "rate_distortion": [asdict(p) for p in points],
    })
    plot_rate_distortion(points, metrics, out / files["rate_distortion"])
    plot_trajectories(tokenizers, test, out / files["trajectories"], action_names=action_names)
    (out / files["markdown"]).write_text(_markdown(title, metrics, points, smooth, action_names, files))
    return TokenizerReport(metrics, points, smooth, {k: str(out / v) for k, v in files.items()})


def _markdown(title: str, metrics: list[TokenizerMetrics], points: list[SweepPoint], smooth: dict,
              action_names: list[str] | None, files: dict[str, str]) -> str:
    parts = [f"# {title}", "", f"Measured on {metrics[0].n_chunks} held-out chunks of "
             f"{metrics[0].chunk_size} x {metrics[0].action_dim}.", "", markdown_table(metrics), "",
             "## Per-dimension reconstruction error (raw units)", "", per_dim_table(metrics, action_names), "",
             "## Decoding under corruption (one token per sequence)", "",
             "| tokenizer | deleted: flagged | deleted: unusable | deleted: MAE (norm) | substituted: flagged | substituted: unusable | substituted: MAE (norm) |",
             "|---|---|---|---|---|---|---|"]
    for m in metrics:
        d, s = m.deletion, m.substitution
        parts.append(f"| {m.name} | {100 * d.flagged_rate:.0f}% | {100 * d.unusable_rate:.0f}% | {d.mae_norm:.3g} | "
                     f"{100 * s.flagged_rate:.0f}% | {100 * s.unusable_rate:.0f}% | {s.mae_norm:.3g} |")
    if smooth:
        parts += ["", "## Smoothness (relaxed TV continuity over nearby chunk pairs)", "",
                  "| tokenizer | " + " | ".join(_smooth_keys(smooth)) + " |",
                  "|---|" + "|".join("---" for _ in _smooth_keys(smooth)) + "|"]
        for name, s in smooth.items():
            parts.append(f"| {name} | " + " | ".join(_fmt(s.get(k)) for k in _smooth_keys(smooth)) + " |")
    if points:
        parts += ["", "## Rate-distortion sweep", "", "| family | setting | tokens/chunk | bits/chunk | MAE (norm) | max err (norm) |",
                  "|---|---|---|---|---|---|"]
        parts += [f"| {p.family} | {p.setting} | {p.tokens_per_chunk:.1f} | {p.bits_per_chunk:.0f} | {p.mae_norm:.4g} | {p.max_err_norm:.4g} |"
                  for p in points]
    parts += ["", f"![rate-distortion]({files['rate_distortion']})", "", f"![trajectories]({files['trajectories']})", ""]
    return "\n".join(parts)


def _smooth_keys(smooth: dict) -> list[str]:
    first = next(iter(smooth.values()))
    return [k for k, v in first.items() if isinstance(v, (int, float))]


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
