"""Errors a user can read (issue 12): every failure of a command is one line naming what failed and
what to do, the traceback is behind ``--debug`` (or ``ACTION_TOKENIZERS_DEBUG=1``), and Ctrl-C
says how to resume, with exit code 130."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from eval.cli import main


def _one_line_error(capsys: pytest.CaptureFixture, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"action-tokenizers {command}: error: ")
    return lines[0]


def test_out_that_is_a_file(so101_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "a-file"
    target.write_text("keep me")
    rc = main(["fit", "--dataset", str(so101_root), "--out", str(target), "--no-sweep", "--no-progress"])
    assert rc == 1
    assert "is a file, not a folder" in _one_line_error(capsys, "fit")
    assert target.read_text() == "keep me"


def test_out_with_user_files_names_the_folder(so101_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["fit", "--dataset", str(so101_root), "--out", str(out), "--no-sweep", "--no-progress"]) == 1
    line = _one_line_error(capsys, "fit")
    assert str(out) in line and "notes.txt" in line and "--overwrite" in line


@pytest.mark.parametrize("code,hint", [(errno.EBUSY, "Device or resource busy"), (errno.EACCES, "Permission denied"),
                                       (errno.EROFS, "Read-only file system")])
def test_raw_os_errors_become_one_line_with_the_path(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                     code: int, hint: str) -> None:
    import os

    import action_tokenizers.cli as fit_cli

    def fail(cfg):
        raise OSError(code, os.strerror(code), "/data/out")

    monkeypatch.setattr(fit_cli, "run_fit", fail)
    assert main(["fit", "--dataset", "x", "--out", "/data/out"]) == 1
    line = _one_line_error(capsys, "fit")
    assert "/data/out" in line and hint in line and ";" in line  # what failed; what to do


def test_unexpected_errors_are_named_and_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture) -> None:
    import action_tokenizers.cli as fit_cli

    def bug(cfg):
        return 1 / 0

    monkeypatch.setattr(fit_cli, "run_fit", bug)
    assert main(["fit", "--dataset", "x"]) == 1
    assert "unexpected ZeroDivisionError" in _one_line_error(capsys, "fit")
    with pytest.raises(ZeroDivisionError):
        main(["fit", "--dataset", "x", "--debug"])
    monkeypatch.setenv("ACTION_TOKENIZERS_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["fit", "--dataset", "x"])


@pytest.mark.parametrize("command,module,function,hint", [
    ("train", "training.train", "run_train", "--resume"),
    ("collect", "eval.collect", "run_collect", "rerun the same command"),
    ("run", "eval.main_job", "run_main", "finished stages are kept"),
])
def test_ctrl_c_says_how_to_resume(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path,
                                   command: str, module: str, function: str, hint: str) -> None:
    import importlib

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(module), function, interrupted)
    args = {"train": ["--dataset", "d", "--tokenizer", "t", "--out", str(tmp_path / "o")],
            "collect": ["--out", str(tmp_path / "o")], "run": ["--out", str(tmp_path / "o")]}[command]
    assert main([command, *args]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"action-tokenizers {command}: interrupted" in err and hint in err


def test_local_typo_for_the_tokenizer_is_a_missing_path(so101_root: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tr").mkdir()
    rc = main(["train", "--dataset", str(so101_root), "--tokenizer", "tr/nope", "--out", "run", "--no-progress"])
    assert rc == 1
    line = _one_line_error(capsys, "train")
    assert "local folder tr/nope does not exist; check the path" in line
    assert "could not fetch" not in line and "offline" not in line  # not reported as a Hub connection problem
    assert not (tmp_path / "run").exists()  # a run that failed before writing leaves no empty folder
