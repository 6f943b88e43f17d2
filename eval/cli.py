"""The ``action-tokenizers`` command: one subcommand per stage, each generated from its config dataclass.

    action-tokenizers collect --tasks push-v3,reach-v3 --episodes 10 --out runs/demos
    action-tokenizers fit --dataset runs/demos --tokenizer fast --out runs/fast
    action-tokenizers inspect --tokenizer runs/fast --dataset runs/demos
    action-tokenizers train --dataset runs/demos --tokenizer runs/fast/tokenizer --out runs/lm-fast
    action-tokenizers eval --policy runs/lm-fast --tasks push-v3 --episodes 10 --out runs/eval-fast
    action-tokenizers run [--preset default] [--out runs/demo]
    action-tokenizers theory all --quick

The CLI and the Python API share names: ``--chunk-size`` is ``FitConfig.chunk_size``. Modules are
imported only for the subcommand asked for, so ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str
    config: str
    function: str
    summary: str


COMMANDS: dict[str, Command] = {
    "collect": Command("eval.collect", "CollectConfig", "run_collect", "collect scripted-expert demos into a LeRobot v3 dataset"),
    "fit": Command("action_tokenizers.cli", "FitConfig", "run_fit", "fit a tokenizer on a dataset; write it and its report"),
    "inspect": Command("action_tokenizers.cli", "InspectConfig", "run_inspect", "measure a saved tokenizer on a dataset"),
    "train": Command("training.train", "TrainConfig", "run_train", "fine-tune a causal LM on tokenized actions"),
    "train-regression": Command("eval.regression", "RegressionConfig", "run_train_regression", "train the regression-BC baseline (MLP, squared error)"),
    "eval": Command("eval.evaluate", "EvalConfig", "run_eval", "evaluate a policy in closed loop in simulation"),
    "run": Command("eval.main_job", "RunConfig", "run_main", "the main job: collect, fit, train, evaluate, report"),
    "theory": Command("eval.theory", "TheoryConfig", "run_theory", "quantization-theory experiments E1-E6"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()]
    return "usage: action-tokenizers {" + ",".join(COMMANDS) + "} [--help]\n\ncommands:\n" + "\n".join(lines)


def _split_lists(args: list[str]) -> list[str]:
    """Accept comma-separated lists (``--tasks a,b``) as well as tyro's space-separated form."""
    out = []
    for a in args:
        if not a.startswith("-") and "," in a and out and out[-1] in ("--tasks", "--tokenizers"):
            out.extend(x for x in a.split(",") if x)
        else:
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        hint = difflib.get_close_matches(name, COMMANDS, n=1)
        print(f"unknown command {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "") + "\n\n" + _usage(), file=sys.stderr)
        return 2
    cmd = COMMANDS[name]
    module = importlib.import_module(cmd.module)
    config_cls = getattr(module, cmd.config)
    try:
        cfg = tyro.cli(config_cls, args=_split_lists(rest), prog=f"action-tokenizers {name}",
                       description=(config_cls.__doc__ or cmd.summary).strip().splitlines()[0])
        getattr(module, cmd.function)(cfg)
    except (ValueError, FileNotFoundError, KeyError, TypeError, RuntimeError) as e:
        print(f"action-tokenizers {name}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
