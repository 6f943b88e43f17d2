"""The ``action-tokenizers`` command: one subcommand per stage, each generated from its config dataclass.

    action-tokenizers collect --tasks push-v3,reach-v3 --episodes 10 --out runs/demos
    action-tokenizers fit --dataset runs/demos --tokenizer fast --out runs/fast
    action-tokenizers inspect --tokenizer runs/fast --dataset runs/demos
    action-tokenizers train --dataset runs/demos --tokenizer runs/fast/tokenizer --out runs/lm-fast
    action-tokenizers eval --policy runs/lm-fast --tasks push-v3 --episodes 10 --out runs/eval-fast
    action-tokenizers eval --policy runs/lm-fast --dataset ../shared/data/so101_record_test --out runs/ol-fast
    action-tokenizers run [--preset default] [--out runs/demo]
    action-tokenizers collect --tasks button-press-v3 --cameras corner2 --image-size 64 --out runs/cam-demos
    action-tokenizers train --dataset runs/cam-demos --tokenizer runs/fast/tokenizer --out runs/lm-cam \
        --image-keys observation.images.corner2 [--vision-encoder cnn]
    action-tokenizers run --preset vision
    action-tokenizers theory all --quick

The CLI and the Python API share names: ``--chunk-size`` is ``FitConfig.chunk_size``. Modules are
imported only for the subcommand asked for, so ``--help`` stays fast. Any error is one line saying
what failed and what to do (``--debug`` or ``ACTION_TOKENIZERS_DEBUG=1`` for the traceback);
Ctrl-C exits with 130 and says how to resume.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str
    config: str
    function: str
    summary: str
    defaults: str | None = None
    """Function of ``module`` giving the starting values from the command line (``run --preset NAME``)."""


COMMANDS: dict[str, Command] = {
    "collect": Command("eval.collect", "CollectConfig", "run_collect", "collect scripted-expert demos into a LeRobot v3 dataset"),
    "fit": Command("action_tokenizers.cli", "FitConfig", "run_fit", "fit a tokenizer on a dataset; write it and its report"),
    "inspect": Command("action_tokenizers.cli", "InspectConfig", "run_inspect", "measure a saved tokenizer on a dataset"),
    "train": Command("training.train", "TrainConfig", "run_train", "fine-tune a causal LM on tokenized actions"),
    "train-regression": Command("training.regression", "RegressionConfig", "run_train_regression", "train the regression-BC baseline (MLP, squared error)"),
    "eval": Command("eval.evaluate", "EvalConfig", "run_eval",
                    "evaluate a policy in closed loop in simulation, or open loop on a dataset (--dataset DIR)"),
    "run": Command("eval.main_job", "RunConfig", "run_main", "the main job: collect, fit, train, evaluate, report",
                   defaults="default_from_argv"),
    "theory": Command("eval.theory", "TheoryConfig", "run_theory", "quantization-theory experiments E1-E6"),
}


# ``eval --dataset D`` without ``--execution``: open loop on the dataset's episodes (no simulator).
# Closed loop uses --dataset only with --execution augmented, so the two never compete for a command line.
OPEN_LOOP = Command("eval.open_loop", "OpenLoopConfig", "run_open_loop", "evaluate a policy open loop on a dataset's episodes")


def _is_open_loop(args: list[str]) -> bool:
    given = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    return "--dataset" in given and not given & {"--execution", "--transition-model"}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()]
    return "usage: action-tokenizers {" + ",".join(COMMANDS) + "} [--help]\n\ncommands:\n" + "\n".join(lines)


LIST_OPTIONS = ("tasks", "tokenizers", "cameras")
"""Options (at any nesting: ``--tasks``, ``--eval.tasks``) that take a list of names."""


def comma_list(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Names from ``"a,b"`` or ``("a", "b")`` (or ``("a,b",)``): the one place comma lists are parsed."""
    parts = (value,) if isinstance(value, str) else tuple(value)
    return tuple(x.strip() for part in parts for x in str(part).split(",") if x.strip())


def _split_lists(args: list[str]) -> list[str]:
    """Accept comma-separated lists (``--tasks a,b``) as well as tyro's space-separated form."""
    out: list[str] = []
    for a in args:
        if not a.startswith("-") and "," in a and out and out[-1].rsplit(".", 1)[-1].lstrip("-") in LIST_OPTIONS:
            out.extend(comma_list(a))
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
    debug = "--debug" in rest or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    rest = [a for a in rest if a != "--debug"]
    cmd = OPEN_LOOP if name == "eval" and _is_open_loop(rest) else COMMANDS[name]
    try:
        module = importlib.import_module(cmd.module)
        config_cls = getattr(module, cmd.config)
        default = getattr(module, cmd.defaults)(rest) if cmd.defaults else None
        cfg = tyro.cli(config_cls, args=_split_lists(rest), prog=f"action-tokenizers {name}", default=default,
                       description=(config_cls.__doc__ or cmd.summary).strip().splitlines()[0])
        getattr(module, cmd.function)(cfg)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\naction-tokenizers {name}: interrupted; {INTERRUPT_HINTS.get(name, 'rerun the same command')}",
              file=sys.stderr)
        return 130
    except Exception as e:  # every error becomes one line; the traceback is behind --debug
        if debug:
            raise
        print(f"action-tokenizers {name}: error: {describe_error(e)} (--debug shows the traceback)", file=sys.stderr)
        return 1
    return 0


DEBUG_ENV = "ACTION_TOKENIZERS_DEBUG"
"""Set to 1 (or pass --debug) for full tracebacks instead of one-line errors."""
INTERRUPT_HINTS = {
    "train": "rerun the same command with --resume to continue from the last checkpoint",
    "collect": "nothing was kept in --out; rerun the same command to collect again",
    "run": "rerun the same command: finished stages are kept and skipped",
}
# Errors whose message already says what failed and what to do (ours, and the library's own).
_PLAIN = (ValueError, KeyError, TypeError, RuntimeError, LookupError, ConnectionError, NotImplementedError)
_OS_HINTS = {
    errno.EACCES: "choose a folder you can write to", errno.EROFS: "choose a writable folder",
    errno.EBUSY: "the path is in use or a mount point; choose another folder", errno.ENOSPC: "free disk space",
    errno.ENOENT: "check the path", errno.ENOTDIR: "a part of the path is a file; check the path",
    errno.EISDIR: "a folder is in the way; check the path", errno.EEXIST: "choose another path",
}


def describe_error(e: BaseException) -> str:
    """One line: what failed and what to do. Raw OS errors get the path and a hint; unknown
    exception types are named, as they point to a bug."""
    if isinstance(e, OSError) and e.strerror and not isinstance(e, ConnectionError):
        where = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "") if e.filename else "a file operation"
        hint = _OS_HINTS.get(e.errno or -1, "check the path and its permissions")
        text = f"{where}: {e.strerror}; {hint}"
    elif isinstance(e, KeyError) and len(e.args) == 1:
        text = str(e.args[0])
    elif isinstance(e, (OSError, *_PLAIN)):
        text = str(e) or type(e).__name__
    else:
        text = f"unexpected {type(e).__name__}: {e}; this is likely a bug: rerun with --debug and report it"
    return " ".join(text.split())


if __name__ == "__main__":
    raise SystemExit(main())
