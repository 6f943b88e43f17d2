"""Library-level commands: ``fit`` a tokenizer on a LeRobot dataset and ``inspect`` a saved one.

Usage::

    action-tokenizers fit --dataset ../shared/data/so101_record_test --tokenizer binning --chunk-size 10 --out runs/so101-binning
    action-tokenizers inspect --tokenizer runs/so101-binning/tokenizer --dataset ../shared/data/so101_record_test

``fit`` writes ``OUT/tokenizer/`` (the saved tokenizer, ready for ``from_pretrained`` or
``push_to_hub``) and ``OUT/report/`` (report.json, report.md, PNG plots) in one atomic step.
Family options are nested: ``--binning.n-bins 128``, ``--fast.scale 10``, ``--vq.quantizer fsq``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from action_tokenizers.auto import load_tokenizer
from action_tokenizers.base import ActionTokenizer, TokenizerConfig
from action_tokenizers.io import atomic_directory, check_output, write_json
from action_tokenizers.registry import FAMILIES, tokenizer_class
from action_tokenizers.split import DataSelection, EpisodeSplit


DataArgs = DataSelection
"""Which chunks to read (the one data selection of every stage, :class:`action_tokenizers.split.DataSelection`)."""


@dataclass
class _FitOptions(DataArgs):
    """Fit one tokenizer family on a dataset and write the tokenizer plus its report."""

    tokenizer: str = "binning"
    """Family: one of the registry's (binning, fast, vq)."""
    out: Path = Path("runs/tokenizer")
    """Output directory: OUT/tokenizer (saved tokenizer) and OUT/report."""
    normalizer_from_stats: bool = False
    """Take the normalizer from the dataset's meta/stats.json instead of fitting it."""
    sweep: bool = True
    """Also sweep the family's settings for the rate-distortion plot."""
    overwrite: bool = False
    """Replace an earlier fit's files in --out (other files there are kept)."""
    progress: bool = True
    """Show progress bars."""
    push_to_hub: str | None = None
    """After fitting, upload OUT/tokenizer (with its model card) to this Hub repo id."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tokenizer not in FAMILIES:
            raise ValueError(f"--tokenizer must be one of {sorted(FAMILIES)}, got {self.tokenizer!r}")

    def family_config(self) -> TokenizerConfig:
        return getattr(self, self.tokenizer)


# One nested option group per registered family (``--binning.n-bins``, ``--fast.scale``, ...).
FitConfig = dataclasses.make_dataclass(
    "FitConfig",
    [(name, fam.config_class(), field(default_factory=fam.config_class())) for name, fam in FAMILIES.items()],
    bases=(_FitOptions,),
)
FitConfig.__doc__ = _FitOptions.__doc__
FitConfig.__module__ = __name__


@dataclass
class InspectConfig(DataArgs):
    """Measure a saved tokenizer on a dataset and write the report."""

    tokenizer: str = ""
    """Saved tokenizer directory (or Hub repo id); a fit output directory works too."""
    out: Path | None = None
    """Report directory (default: TOKENIZER/../report-inspect or ./report)."""
    progress: bool = True
    """Show progress bars."""


@dataclass
class SplitChunks:
    train: np.ndarray
    test: np.ndarray
    action_names: list[str] | None
    stats: dict
    split: EpisodeSplit

    @property
    def note(self) -> str:
        return self.split.note


def split_chunks(args: DataArgs) -> SplitChunks:
    """Load chunks and split them by whole episodes (:mod:`action_tokenizers.split`) into train and held-out.

    With no held-out episode (fraction 0 or a single episode) the report measures on the training chunks.
    """
    from action_tokenizers.data import load_chunks

    from action_tokenizers.hub import resolve_dataset

    root = resolve_dataset(args.dataset)  # a local root as is; a Hub id as a snapshot of meta/ and data/
    cs = load_chunks(root, chunk_size=args.chunk_size, stride=args.stride, action_key=args.action_key, pad="drop")
    split = args.split(cs.episode_index)
    train, test = split.rows(cs.episode_index)
    if not len(test):
        return SplitChunks(cs.actions, cs.actions, cs.action_names, cs.stats, split)
    return SplitChunks(cs.actions[train], cs.actions[test], cs.action_names, cs.stats, split)


def build_tokenizer(family: str, config: TokenizerConfig) -> ActionTokenizer:
    return tokenizer_class(family)(config)


def fit_tokenizer(tok: ActionTokenizer, train: np.ndarray, stats: dict | None = None,
                  action_key: str = "action") -> float:
    """Fit (optionally with the dataset's stats as normalizer); returns the seconds taken."""
    if stats is not None:
        tok.fit_normalizer_from_stats(stats, action_key)
    start = time.perf_counter()
    tok.fit(train)
    return time.perf_counter() - start


def run_fit(cfg: FitConfig) -> Path:
    """Fit, measure and save atomically: ``OUT/tokenizer`` and ``OUT/report``."""
    from action_tokenizers.report import default_sweep, write_report

    check_output(cfg.out, "fit", cfg.overwrite)  # refuse now, not after the fit
    if not cfg.dataset:
        raise ValueError("--dataset is required (a LeRobot v3 dataset root or Hub repo id)")
    data = split_chunks(cfg)
    tok = build_tokenizer(cfg.tokenizer, cfg.family_config())
    tok.heldout_episodes = data.split.heldout_episodes
    tok.source = {"dataset": cfg.dataset, "action_key": cfg.action_key}  # the model card's datasets
    seconds = fit_tokenizer(tok, data.train, data.stats if cfg.normalizer_from_stats else None, cfg.action_key)
    with atomic_directory(cfg.out, kind="fit", overwrite=cfg.overwrite) as tmp:
        report = write_report(tmp / "report", [(cfg.tokenizer, tok)], data.test, train=data.train,
                              fit_seconds={cfg.tokenizer: seconds},
                              sweep=default_sweep((cfg.tokenizer,)) if cfg.sweep else None,
                              action_names=data.action_names,
                              title=f"{cfg.tokenizer} tokenizer on {cfg.dataset} ({data.note})",
                              progress=cfg.progress)
        tok.save_pretrained(tmp / "tokenizer")
        write_json(tmp / "fit_config.json", {**_jsonable(dataclasses.asdict(cfg)),
                                             "heldout_episodes": data.split.heldout_episodes})
    print(report.table())
    print(f"\ntokenizer: {cfg.out / 'tokenizer'}\nreport:    {cfg.out / 'report' / 'report.md'}")
    if cfg.push_to_hub:
        from action_tokenizers.hub import push_directory

        print(f"pushed to {cfg.push_to_hub}: {push_directory(cfg.out / 'tokenizer', cfg.push_to_hub)}")
    return cfg.out


def _jsonable(d: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def resolve_tokenizer_dir(path: str) -> str:
    """Accept a fit output directory (with a tokenizer/ subfolder) where a tokenizer directory is expected."""
    from action_tokenizers.auto import resolve_tokenizer_path

    return str(resolve_tokenizer_path(path))


def run_inspect(cfg: InspectConfig) -> Path:
    """Measure a saved tokenizer on a dataset's chunks (its own chunk size) and write the report."""
    from action_tokenizers.report import write_report

    if not cfg.tokenizer:
        raise ValueError("--tokenizer is required (a saved tokenizer directory or Hub repo id)")
    tok = load_tokenizer(cfg.tokenizer)  # a tokenizer directory, a fit --out folder or a Hub id
    args = dataclasses.replace(cfg, chunk_size=tok.chunk_size, eval_fraction=0.0, heldout_episodes=None)
    data = split_chunks(args)
    out = cfg.out or (Path(cfg.tokenizer).parent / "report-inspect" if Path(cfg.tokenizer).is_dir() else Path("report"))
    report = write_report(out, [(tok.family, tok)], data.test, action_names=data.action_names,
                          title=f"{type(tok).__name__} on {cfg.dataset}", progress=cfg.progress)
    print(report.table())
    print(f"\nreport: {out / 'report.md'}")
    return out
