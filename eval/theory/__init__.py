"""The quantization-theory lab: Cao & Xie (2026)'s claims as runnable experiments.

Usage::

    action-tokenizers theory all --out runs/theory          # about a minute on 2 cores
    action-tokenizers theory e3 --quick                     # a few seconds

Each experiment writes ``OUT/eN.json`` (its data plus a ``claims`` list of
``{"claim", "measured", "expected", "holds"}``), ``OUT/eN.md`` (tables) and ``OUT/eN.png`` (plot),
and the claims are printed as a table. E1 regret vs eps and H for binning; E2 stable vs unstable
dynamics; E3 the learned-quantizer trap vs binning and k-means; E4 model-based augmentation;
E5 statistical rates; E6 kernel-mean vs bin-centre decoding. ``docs/theory.md`` discusses them.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from eval.theory.results import Claim, ExperimentResult, claims_table, write_result

__all__ = ["EXPERIMENTS", "Claim", "ExperimentResult", "TheoryConfig", "run_experiment", "run_theory"]

EXPERIMENTS = {
    "e1": "eval.theory.e1_regret_vs_eps",
    "e2": "eval.theory.e2_stability",
    "e3": "eval.theory.e3_learned_trap",
    "e4": "eval.theory.e4_augmentation",
    "e5": "eval.theory.e5_rates",
    "e6": "eval.theory.e6_kernel_decoding",
}
CHOICES = (*EXPERIMENTS, "all")


@dataclass
class TheoryConfig:
    """Run the quantization-theory experiments and check the paper's claims."""

    which: Annotated[Literal["e1", "e2", "e3", "e4", "e5", "e6", "all"], tyro.conf.Positional] = "all"
    """Experiment to run: e1, e2, e3, e4, e5, e6 or all."""
    out: Path = Path("runs/theory")
    """Directory for eN.json, eN.md and eN.png (other experiments' files there are kept)."""
    quick: bool = False
    """Small instances (a few seconds per experiment), as the tests run them."""
    seed: int = 0
    """Seed of every random draw."""
    progress: bool = True
    """Show a progress bar and print the claims table."""

    def __post_init__(self) -> None:
        self.which = str(self.which).lower()
        if self.which not in CHOICES:
            raise ValueError(f"unknown experiment {self.which!r}; choose one of {', '.join(CHOICES)}")
        self.out = Path(self.out)

    @property
    def experiments(self) -> tuple[str, ...]:
        return tuple(EXPERIMENTS) if self.which == "all" else (self.which,)


def run_experiment(name: str, quick: bool = False, seed: int = 0) -> ExperimentResult:
    """Run one experiment by name (e1..e6) without writing anything."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    start = time.perf_counter()
    result = importlib.import_module(EXPERIMENTS[name]).run(quick=quick, seed=seed)
    result.wall_s = time.perf_counter() - start
    return result


def run_theory(cfg: TheoryConfig) -> dict[str, dict]:
    """Run the chosen experiments, write their files under ``cfg.out`` and return ``{name: eN.json dict}``."""
    from tqdm import tqdm

    results: dict[str, dict] = {}
    claims: list[Claim] = []
    bar = tqdm(cfg.experiments, desc="theory", disable=not cfg.progress)
    for name in bar:
        bar.set_postfix(experiment=name)
        result = run_experiment(name, quick=cfg.quick, seed=cfg.seed)
        write_result(result, cfg.out)
        results[name] = result.to_json()
        claims += result.claims
    bar.close()
    if cfg.progress:
        held = sum(c.holds for c in claims)
        print(claims_table(claims))
        print(f"\n{held}/{len(claims)} claims hold; files in {cfg.out}")
    return results
