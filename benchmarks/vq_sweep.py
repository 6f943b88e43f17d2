"""VQ rate-distortion sweep against binning and FAST, at equal bits per chunk, plus smoothness.

Usage (about 10 minutes on 2 CPU cores; ``--quick`` for a smoke run)::

    MUJOCO_GL=egl HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/vq_sweep.py --out runs/bench/vq_sweep
    .venv/bin/python benchmarks/vq_sweep.py --metaworld runs/demos --quick

For each dataset (chunks of ``h`` steps, split by episode: every fifth episode, at least one, is
the test set) it fits

- VQ at the default config and over ``action_tokenizers.vq.SWEEP`` (codebook size, levels, groups);
- binning over 2..256 bins, and for every VQ point the binning with the most bins whose bits per
  chunk do not exceed the VQ's (2 bins when even that needs more bits: binning cannot go lower);
- FAST over a few scales, when ``action_tokenizers.fast`` is present;

and measures on the test chunks: tokens and bits per chunk (``tokens * log2(vocab)``), MAE and
RMSE in normalized units, the smoothness diagnostic (violation rate at two eps', worst/mean
error), codebook usage, and encode/decode time of 10,000 chunks. Writes ``results.json``,
``results.md`` and ``rate_distortion.png`` (one plot per dataset, bits and tokens).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
# Run as a script, this folder comes first on sys.path and benchmarks/tokenizers.py would shadow the
# `tokenizers` package: drop the folder, put the repo root there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from action_tokenizers.base import ActionTokenizer  # noqa: E402
from action_tokenizers.io import atomic_directory, write_json  # noqa: E402
from action_tokenizers.smoothness import SmoothnessConfig, smoothness_report  # noqa: E402
BINS = (2, 4, 8, 16, 32, 64, 128, 256)
FAST_SCALES = (2.0, 10.0, 50.0)
SPEED_CHUNKS = 10_000


@dataclass
class VQSweepConfig:
    """Rate-distortion sweep of the VQ tokenizer against binning and FAST."""

    out: Path = Path("runs/bench/vq_sweep")
    """Output directory (written atomically)."""
    so101: Path = REPO.parent / "shared" / "data" / "so101_record_test"
    """SO-101 LeRobot dataset root (skipped when missing)."""
    metaworld: Path = Path("runs/bench/metaworld_demos")
    """Meta-World demo dataset root; collected (4 tasks x ``episodes``) when missing."""
    episodes: int = 15
    """Episodes per task when the Meta-World demos must be collected."""
    chunk_size: int = 10
    """Chunk length h."""
    sweep_steps: int = 1500
    """Training steps of each sweep setting (the default VQ trains with its own max_steps)."""
    quick: bool = False
    """Smoke run: 100 training steps, two VQ settings, fewer bins."""
    progress: bool = True
    """Show progress bars."""


@dataclass
class Point:
    """One fitted tokenizer measured on a dataset's test chunks."""

    dataset: str
    family: str
    setting: str
    vocab_size: int
    tokens_per_chunk: float
    bits_per_chunk: float
    mae_norm: float
    rmse_norm: float
    max_err_norm: float
    fit_seconds: float
    violation_rate: float
    violation_rate_eps_0_1: float
    worst_to_mean: float
    extra: dict[str, Any] = field(default_factory=dict)


def main(cfg: VQSweepConfig) -> dict[str, Any]:
    datasets = load_datasets(cfg)
    results: dict[str, Any] = {"config": {k: str(v) for k, v in asdict(cfg).items()}, "datasets": {}}
    with atomic_directory(cfg.out) as tmp:
        for name, (train, test) in datasets.items():
            points = sweep_dataset(name, train, test, cfg)
            results["datasets"][name] = {
                "train_chunks": len(train), "test_chunks": len(test), "shape": list(train.shape[1:]),
                "points": [asdict(p) for p in points],
                "equal_bits": equal_bits_table(points),
            }
        write_json(tmp / "results.json", results)
        (tmp / "results.md").write_text(markdown(results))
        plot(results, tmp / "rate_distortion.png")
    print((cfg.out / "results.md").read_text())
    return results


# ---------------------------------------------------------------------- data
def load_datasets(cfg: VQSweepConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (train, test) chunks, split by episode."""
    from action_tokenizers.data import load_chunks

    roots = {}
    if (cfg.so101 / "meta" / "info.json").is_file():
        roots["so101"] = cfg.so101
    roots["metaworld"] = ensure_metaworld(cfg)
    out = {}
    for name, root in roots.items():
        cs = load_chunks(root, chunk_size=cfg.chunk_size, stride=1)
        episodes = np.unique(cs.episode_index)
        test_eps = episodes[4::5] if len(episodes) >= 5 else episodes[-1:]
        is_test = np.isin(cs.episode_index, test_eps)
        out[name] = (cs.actions[~is_test], cs.actions[is_test])
    return out


def ensure_metaworld(cfg: VQSweepConfig) -> Path:
    if (cfg.metaworld / "meta" / "info.json").is_file():
        return cfg.metaworld
    from eval.collect import CollectConfig, run_collect

    run_collect(CollectConfig(episodes=cfg.episodes, out=cfg.metaworld, seed=0, progress=cfg.progress))
    return cfg.metaworld


# ---------------------------------------------------------------------- sweep
def sweep_dataset(name: str, train: np.ndarray, test: np.ndarray, cfg: VQSweepConfig) -> list[Point]:
    from action_tokenizers.binning import BinningTokenizer
    from action_tokenizers.vq import SWEEP, VQTokenizer

    steps = 100 if cfg.quick else cfg.sweep_steps
    settings: list[tuple[str, str, Any]] = [("vq", "default (rvq g2 L2 K256)",
                                             lambda: VQTokenizer(max_steps=100) if cfg.quick else VQTokenizer())]
    sweep = SWEEP[:2] if cfg.quick else SWEEP
    settings += [("vq", f"rvq g{g} L{lv} K{k}", lambda g=g, lv=lv, k=k: VQTokenizer(
        groups=g, levels=lv, codebook_size=k, max_steps=steps)) for g, lv, k in sweep]
    settings += [("vq", "fsq g2 L1 (8,5,5,5)", lambda: VQTokenizer(quantizer="fsq", levels=1, max_steps=steps))]
    settings += [("binning", f"{n} bins", lambda n=n: BinningTokenizer(n_bins=n)) for n in (BINS[:3] if cfg.quick else BINS)]
    settings += fast_settings(cfg)
    points = []
    for family, label, make in tqdm(settings, desc=f"sweep {name}", disable=not cfg.progress):
        points.append(measure(name, family, label, make, train, test, speed=label.startswith("default")))
    h, d = train.shape[1:]
    done = {p.setting for p in points}
    for p in [p for p in points if p.family == "vq"]:
        n = equal_bits_bins(p.bits_per_chunk, h * d)
        if f"{n} bins" not in done:
            points.append(measure(name, "binning", f"{n} bins", lambda n=n: BinningTokenizer(n_bins=n), train, test))
            done.add(f"{n} bins")
    return points


def fast_settings(cfg: VQSweepConfig) -> list[tuple[str, str, Any]]:
    try:
        from action_tokenizers.fast import FASTTokenizer
    except ImportError:
        return []
    scales = FAST_SCALES[1:2] if cfg.quick else FAST_SCALES
    return [("fast", f"scale {s:g}", lambda s=s: FASTTokenizer(scale=s)) for s in scales]


def equal_bits_bins(bits: float, scalars: int) -> int:
    """Most bins per scalar whose bits per chunk (scalars * log2(n)) do not exceed ``bits``; at least 2."""
    return max(2, int(math.floor(2 ** (bits / scalars) + 1e-9)))


def measure(dataset: str, family: str, label: str, make: Any, train: np.ndarray, test: np.ndarray,
            speed: bool = False) -> Point:
    start = time.perf_counter()
    tok: ActionTokenizer = make().fit(train)
    fit_s = time.perf_counter() - start
    ids = tok.encode(test)
    y = tok.decode(ids)
    err = tok.normalizer.normalize(y) - tok.normalizer.normalize(test)
    tokens = float(np.mean([len(s) for s in ids]))
    smooth = smoothness_report(tok, test)
    tight = smoothness_report(tok, test, SmoothnessConfig(eps=0.1))
    extra: dict[str, Any] = {"usage": [{"group": u.group.name, "share_used": u.usage.share_used,
                                        "perplexity": u.usage.perplexity} for u in smooth.usage]}
    if family == "vq":
        extra["train_codebook_usage"] = tok.metrics.get("codebook_usage")
        extra["steps"] = tok.metrics.get("steps")
    if speed:
        extra.update(speed_10k(tok, test))
    return Point(dataset, family, label, tok.vocab_size, tokens, tokens * math.log2(tok.vocab_size),
                 float(np.abs(err).mean()), float(np.sqrt((err ** 2).mean())), float(np.abs(err).max()),
                 round(fit_s, 2), smooth.violation_rate, tight.violation_rate, smooth.error.worst_to_mean, extra)


def speed_10k(tok: ActionTokenizer, test: np.ndarray) -> dict[str, float]:
    """Seconds to encode and to decode 10,000 chunks in one batched call (best of 3)."""
    x = np.resize(test, (SPEED_CHUNKS, *test.shape[1:]))
    enc, dec = math.inf, math.inf
    for _ in range(3):
        t = time.perf_counter()
        ids = tok.encode(x)
        enc = min(enc, time.perf_counter() - t)
        t = time.perf_counter()
        tok.decode(ids)
        dec = min(dec, time.perf_counter() - t)
    return {"encode_10k_s": round(enc, 4), "decode_10k_s": round(dec, 4)}


def equal_bits_table(points: list[Point]) -> list[dict[str, Any]]:
    """Each VQ point beside the binning at the most bins that fit in its bits (or 2 bins)."""
    binning = {p.setting: p for p in points if p.family == "binning"}
    rows = []
    for p in points:
        if p.family != "vq":
            continue
        scalars = round(binning["2 bins"].tokens_per_chunk) if "2 bins" in binning else None
        b = binning.get(f"{equal_bits_bins(p.bits_per_chunk, scalars)} bins") if scalars else None
        if b is None:
            continue
        rows.append({"vq": p.setting, "vq_bits": p.bits_per_chunk, "vq_tokens": p.tokens_per_chunk,
                     "vq_mae_norm": p.mae_norm, "binning": b.setting, "binning_bits": b.bits_per_chunk,
                     "binning_tokens": b.tokens_per_chunk, "binning_mae_norm": b.mae_norm,
                     "vq_better": p.mae_norm < b.mae_norm})
    return rows


# ---------------------------------------------------------------------- outputs
def markdown(results: dict[str, Any]) -> str:
    lines = ["# VQ rate-distortion sweep", ""]
    for name, res in results["datasets"].items():
        lines += [f"## {name} (train {res['train_chunks']} / test {res['test_chunks']} chunks, h x d = "
                  f"{res['shape'][0]} x {res['shape'][1]})", "",
                  "| family | setting | vocab | tokens | bits | MAE (norm) | RMSE (norm) | max err | "
                  "violations eps'=0.2 / 0.1 | worst/mean | fit s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for p in res["points"]:
            lines.append(f"| {p['family']} | {p['setting']} | {p['vocab_size']} | {p['tokens_per_chunk']:.1f} | "
                         f"{p['bits_per_chunk']:.0f} | {p['mae_norm']:.4f} | {p['rmse_norm']:.4f} | "
                         f"{p['max_err_norm']:.3f} | {p['violation_rate']:.3f} / {p['violation_rate_eps_0_1']:.3f} | "
                         f"{p['worst_to_mean']:.1f} | {p['fit_seconds']:.1f} |")
        default = next((p for p in res["points"] if p["setting"].startswith("default")), None)
        if default:
            lines += ["", f"Default VQ: codebook usage (train) {default['extra'].get('train_codebook_usage')}, "
                          f"encode 10k chunks {default['extra'].get('encode_10k_s')} s, "
                          f"decode {default['extra'].get('decode_10k_s')} s."]
        lines += ["", "Equal bits: VQ vs binning with the most bins that fit in the VQ's bits (2 bins when "
                      "none fits).", "", "| VQ | bits | MAE | binning | bits | MAE | VQ better |", "|---|---|---|---|---|---|---|"]
        for r in res["equal_bits"]:
            lines.append(f"| {r['vq']} | {r['vq_bits']:.0f} | {r['vq_mae_norm']:.4f} | {r['binning']} | "
                         f"{r['binning_bits']:.0f} | {r['binning_mae_norm']:.4f} | {'yes' if r['vq_better'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["datasets"])
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 4 * len(names)), squeeze=False)
    colors = {"vq": "tab:red", "binning": "tab:blue", "fast": "tab:green"}
    for row, name in zip(axes, names):
        points = results["datasets"][name]["points"]
        for ax, key, label in ((row[0], "bits_per_chunk", "bits per chunk"), (row[1], "tokens_per_chunk", "tokens per chunk")):
            for fam, color in colors.items():
                ps = sorted((p for p in points if p["family"] == fam), key=lambda p: p[key])
                if ps:
                    ax.plot([p[key] for p in ps], [p["mae_norm"] for p in ps], "o-" if fam != "vq" else "o",
                            color=color, label=fam)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel("MAE (normalized)")
            ax.set_title(f"{name}: error vs {label}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(VQSweepConfig))
