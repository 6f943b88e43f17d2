"""What every theory experiment returns and how it is written: claims, slopes, JSON, Markdown, PNG."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from action_tokenizers.io import write_json


@dataclass
class Claim:
    """One statement of the paper checked by a measurement."""

    claim: str
    measured: float
    expected: str
    holds: bool

    def __post_init__(self) -> None:
        self.measured, self.holds = float(self.measured), bool(self.holds)


@dataclass
class ExperimentResult:
    """An experiment's data (JSON-able), its checked claims, a Markdown table and a plot function."""

    name: str
    title: str
    data: dict[str, Any]
    claims: list[Claim]
    table: str
    plot: Callable[[Path], None] = field(repr=False)
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.name, "title": self.title, **self.data,
                "claims": [asdict(c) for c in self.claims], "wall_s": self.wall_s}


def loglog_slope(x: np.ndarray | list[float], y: np.ndarray | list[float]) -> float:
    """Least-squares slope of log(y) against log(x) (the exponent of a power law)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError(f"log-log slope needs positive values, got x={x.tolist()} y={y.tolist()}")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "NO"
        if isinstance(v, (float, np.floating)):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def claims_table(claims: list[Claim]) -> str:
    return markdown_table(["claim", "measured", "expected", "holds"],
                          [[c.claim, c.measured, c.expected, c.holds] for c in claims])


def figure(ncols: int = 1, width: float = 5.0, height: float = 3.8) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), dpi=110, squeeze=False)
    return fig, axes[0]


def eps_ticks(ax: Any, eps: tuple[float, ...] | list[float]) -> None:
    """Label a log x axis with the eps values as 1/N (no crowded minor labels)."""
    from matplotlib.ticker import NullFormatter

    ax.set_xticks(list(eps), [f"1/{round(1 / e)}" for e in eps])
    ax.xaxis.set_minor_formatter(NullFormatter())


def save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    for ax in fig.axes:  # log axes spanning less than a decade get crowded minor labels otherwise
        if ax.get_xscale() == "log":
            ax.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temp file in the same directory, then rename: no half-written outputs."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_result(result: ExperimentResult, out: Path) -> dict[str, Path]:
    """``OUT/eN.json`` (data + claims), ``OUT/eN.md`` (tables) and ``OUT/eN.png`` (the plot)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"{result.name}.{ext}" for ext in ("json", "md", "png")}
    _replace_atomically(paths["json"], lambda p: write_json(p, result.to_json()))
    text = f"# {result.name.upper()}: {result.title}\n\n{result.table}\n\n## Claims\n\n{claims_table(result.claims)}\n"
    _replace_atomically(paths["md"], lambda p: p.write_text(text))
    _replace_atomically(paths["png"], result.plot)
    return paths
