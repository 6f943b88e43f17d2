"""The output rule (``action_tokenizers.io``): a user's files are never lost, a kill leaves the old
or the new output, a second writer is refused at once, and left-overs of killed runs go away.

Each test reproduces a data-loss case found by the reliability probe (issue 12) and asserts the
new behaviour.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from action_tokenizers import AutoActionTokenizer
from action_tokenizers.binning import BinningTokenizer
from action_tokenizers.io import (JOURNAL, LOCK, MANIFEST, STAGING_PREFIX, FolderLockedError, FolderNotOursError,
                                  OutputFolderError, atomic_directory, foreign_files, output_folder)

ROOT = Path(__file__).resolve().parents[1]


def _chunks(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(64, 4, 2))


@pytest.fixture(scope="module")
def tokenizers() -> dict[int, BinningTokenizer]:
    """Two distinguishable tokenizers: 8 and 32 bins."""
    return {n: BinningTokenizer(n_bins=n).fit(_chunks()) for n in (8, 32)}


def _user_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("my notes")
    (folder / "README.md").write_text("my readme")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")


def _assert_user_files(folder: Path) -> None:
    assert (folder / "notes.txt").read_text() == "my notes"
    assert (folder / "README.md").read_text() == "my readme"
    assert (folder / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((STAGING_PREFIX, ".action_tokenizers.tmp")))


# ---------------------------------------------------------------------- a user's files
def test_save_pretrained_refuses_a_folder_with_user_files_and_keeps_them(tokenizers, tmp_path: Path) -> None:
    folder = tmp_path / "tok"
    _user_files(folder)
    with pytest.raises(FolderNotOursError, match=rf"{folder}.*(\.git/|notes\.txt)"):
        tokenizers[8].save_pretrained(folder)
    _assert_user_files(folder)
    assert not (folder / "config.json").exists() and not (folder / LOCK).exists()


def test_overwrite_writes_beside_user_files_but_never_over_them(tokenizers, tmp_path: Path) -> None:
    folder = tmp_path / "tok"
    _user_files(folder)
    (folder / "README.md").unlink()  # our model card would take this name
    tokenizers[8].save_pretrained(folder, overwrite=True)
    tokenizers[32].save_pretrained(folder, overwrite=True)  # replaces only our files
    assert AutoActionTokenizer.from_pretrained(folder).config.n_bins == 32
    assert (folder / "notes.txt").read_text() == "my notes" and (folder / ".git" / "HEAD").is_file()
    assert foreign_files(folder) == [".git/", "notes.txt"]


def test_a_user_file_with_our_file_name_is_never_replaced(tokenizers, tmp_path: Path) -> None:
    folder = tmp_path / "tok"
    _user_files(folder)
    with pytest.raises(FolderNotOursError, match="README.md.*never replaced"):
        tokenizers[8].save_pretrained(folder, overwrite=True)
    _assert_user_files(folder)
    assert not (folder / "config.json").exists()


def test_saving_again_replaces_our_own_earlier_output(tokenizers, tmp_path: Path) -> None:
    folder = tmp_path / "tok"
    tokenizers[8].save_pretrained(folder)
    tokenizers[32].save_pretrained(folder)  # same kind of output: no --overwrite needed
    assert AutoActionTokenizer.from_pretrained(folder).config.n_bins == 32
    assert foreign_files(folder) == []


def test_a_path_that_is_a_file_is_refused_and_the_tokenizer_beside_it_still_works(tokenizers, tmp_path: Path) -> None:
    folder = tokenizers[8].save_pretrained(tmp_path / "tok")
    before = (folder / "config.json").read_bytes()
    with pytest.raises(OutputFolderError, match="config.json is a file"):
        tokenizers[32].save_pretrained(folder / "config.json")
    with pytest.raises(OutputFolderError, match="is a file"):
        tokenizers[32].save_pretrained(folder / "config.json" / "sub")
    assert (folder / "config.json").read_bytes() == before
    x = _chunks(1)
    assert AutoActionTokenizer.from_pretrained(folder).encode(x) == tokenizers[8].encode(x)


def test_another_commands_output_is_refused_without_overwrite(tokenizers, tmp_path: Path) -> None:
    with atomic_directory(tmp_path / "run", kind="eval") as staging:
        (staging / "results.json").write_text("{}")
    with pytest.raises(FolderNotOursError, match="output of 'eval', not 'tokenizer'"):
        tokenizers[8].save_pretrained(tmp_path / "run")
    assert (tmp_path / "run" / "results.json").read_text() == "{}"


@pytest.mark.slow
def test_fit_out_keeps_user_files(so101_root: Path, tmp_path: Path) -> None:
    from action_tokenizers.cli import FitConfig, run_fit

    out = tmp_path / "fit"
    _user_files(out)
    cfg = FitConfig(dataset=str(so101_root), tokenizer="binning", chunk_size=4, out=out, sweep=False, progress=False)
    with pytest.raises(FolderNotOursError, match=str(out)):
        run_fit(cfg)
    (out / "README.md").unlink()
    run_fit(FitConfig(**{**cfg.__dict__, "overwrite": True}))
    run_fit(FitConfig(**{**cfg.__dict__, "overwrite": True, "tokenizer": "fast"}))  # a second fit replaces ours only
    assert (out / "notes.txt").read_text() == "my notes" and (out / ".git" / "HEAD").is_file()
    assert AutoActionTokenizer.from_pretrained(out / "tokenizer").family == "fast"


def test_train_out_with_user_files_is_refused_before_any_work(tmp_path: Path) -> None:
    from training.train import TrainConfig, run_train

    out = tmp_path / "train"
    _user_files(out)
    with pytest.raises(FolderNotOursError, match=str(out)):
        run_train(TrainConfig(dataset=tmp_path / "no-dataset", tokenizer=tmp_path / "no-tok", out=out, progress=False))
    _assert_user_files(out)


# ---------------------------------------------------------------------- kills
class Killed(BaseException):
    """Stands for a kill: not an Exception, so no ``except Exception`` handler swallows it."""


def _kill_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Make the ``step``-th file operation of a save (an fsync'ed write or a rename) die."""
    import action_tokenizers.io as io

    calls = {"n": 0}
    real_replace, real_fsync = io.os.replace, io.os.fsync

    def tick() -> None:
        calls["n"] += 1
        if calls["n"] == step:
            raise Killed(f"killed at step {step}")

    def replace(*a, **k):
        tick()
        return real_replace(*a, **k)

    def fsync(*a, **k):
        tick()
        return real_fsync(*a, **k)

    monkeypatch.setattr(io.os, "replace", replace)
    monkeypatch.setattr(io.os, "fsync", fsync)


@pytest.mark.parametrize("step", range(1, 16))  # a save does 14 fsyncs and renames
def test_a_kill_at_any_step_leaves_a_loadable_folder(tokenizers, tmp_path: Path, step: int) -> None:
    folder = tokenizers[8].save_pretrained(tmp_path / "tok")
    with pytest.MonkeyPatch.context() as mp:
        _kill_at(mp, step)
        try:
            tokenizers[32].save_pretrained(folder)
        except Killed:
            pass
    assert AutoActionTokenizer.from_pretrained(folder).config.n_bins in (8, 32)
    assert not (folder / JOURNAL).exists()  # the load finished a committed save
    tokenizers[32].save_pretrained(folder)  # the next run cleans up and succeeds
    assert _leftovers(folder) == [] and AutoActionTokenizer.from_pretrained(folder).config.n_bins == 32


def test_left_over_temporary_folders_are_removed_by_the_next_run(tokenizers, tmp_path: Path) -> None:
    folder = tokenizers[8].save_pretrained(tmp_path / "tok")
    for i in range(3):  # what killed runs leave: full-size staging folders
        stale = folder / f"{STAGING_PREFIX}{90000 + i}-deadbeef"
        stale.mkdir()
        (stale / "tensors.safetensors").write_bytes(b"\0" * 100_000)
    tokenizers[32].save_pretrained(folder)
    assert _leftovers(folder) == []


_SAVE_LOOP = textwrap.dedent("""
    import sys
    import numpy as np
    from action_tokenizers.binning import BinningTokenizer
    x = np.random.default_rng(0).normal(size=(64, 4, 2))
    toks = [BinningTokenizer(n_bins=n).fit(x) for n in (8, 32)]
    print("ready", flush=True)
    i = 0
    while True:
        toks[i % 2].save_pretrained(sys.argv[1])
        i += 1
""")


@pytest.mark.slow
def test_sigkill_during_saves_leaves_old_or_new(tokenizers, tmp_path: Path) -> None:
    folder = tokenizers[8].save_pretrained(tmp_path / "tok")
    rng = np.random.default_rng(0)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _SAVE_LOOP, str(folder)], cwd=ROOT, stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout.readline().strip() == "ready"
        try:
            proc.wait(timeout=float(rng.uniform(0.05, 0.5)))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert AutoActionTokenizer.from_pretrained(folder).config.n_bins in (8, 32)
    tokenizers[8].save_pretrained(folder)
    assert _leftovers(folder) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.one_of(st.tuples(st.just("save"), st.sampled_from([8, 32])),
                              st.tuples(st.just("kill"), st.sampled_from([8, 32]), st.integers(1, 14)),
                              st.tuples(st.just("load"))), min_size=1, max_size=8))
def test_random_saves_kills_and_loads_always_load_old_or_new(tokenizers, tmp_path_factory, ops) -> None:
    """Model: the folder holds the last completed save; a killed save may or may not have landed.

    ``possible`` holds the n_bins a load may see (0: nothing saved yet).
    """
    folder = tmp_path_factory.mktemp("prop") / "tok"
    x = _chunks(2)
    ids = {n: tok.encode(x) for n, tok in tokenizers.items()}
    possible = {0}
    for op in ops:
        if op[0] == "save":
            tokenizers[op[1]].save_pretrained(folder)
            possible = {op[1]}
        elif op[0] == "kill":
            with pytest.MonkeyPatch.context() as mp:
                _kill_at(mp, op[2])
                try:
                    tokenizers[op[1]].save_pretrained(folder)
                    possible = {op[1]}
                except Killed:
                    possible = possible | {op[1]}
        else:
            try:
                loaded = AutoActionTokenizer.from_pretrained(folder)
            except FileNotFoundError:
                assert 0 in possible, "a saved tokenizer was lost"
                possible = {0}
                continue
            assert loaded.config.n_bins in possible
            assert loaded.encode(x) == ids[loaded.config.n_bins]
            possible = {loaded.config.n_bins}  # a load settles an interrupted commit
        if folder.is_dir():  # a killed single-file write removes its temp file
            assert not any(p.name.startswith(".action_tokenizers.tmp") for p in folder.iterdir())


# ---------------------------------------------------------------------- the lock
def test_a_second_writer_fails_at_once_naming_the_holder(tokenizers, tmp_path: Path) -> None:
    folder = tokenizers[8].save_pretrained(tmp_path / "tok")
    with output_folder(folder, "tokenizer"):
        with pytest.raises(FolderLockedError, match=rf"{folder} is being written by another process \(pid {os.getpid()}"):
            tokenizers[32].save_pretrained(folder)
    assert AutoActionTokenizer.from_pretrained(folder).config.n_bins == 8
    assert not (folder / LOCK).exists()  # released and removed by its holder


@pytest.mark.slow
def test_lock_refuses_a_second_process(tokenizers, tmp_path: Path) -> None:
    folder = tokenizers[8].save_pretrained(tmp_path / "tok")
    holder = textwrap.dedent(f"""
        import sys, time
        from action_tokenizers.io import output_folder
        with output_folder({str(folder)!r}, "tokenizer"):
            print("locked", flush=True)
            sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError, match=f"pid {proc.pid}"):
            tokenizers[32].save_pretrained(folder)
    finally:
        proc.communicate("\n", timeout=60)
    tokenizers[32].save_pretrained(folder)  # free again
    assert AutoActionTokenizer.from_pretrained(folder).config.n_bins == 32


def test_manifest_lists_our_files_with_checksums(tokenizers, tmp_path: Path) -> None:
    import json

    folder = tokenizers[8].save_pretrained(tmp_path / "tok")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["kind"] == "tokenizer"
    assert set(manifest["files"]) == {"README.md", "config.json", "tensors.safetensors"}
    assert all(len(h) == 64 for h in manifest["files"].values())


def test_eval_out_with_user_files_is_refused_before_the_rollouts(tmp_path: Path) -> None:
    from eval.evaluate import EvalConfig, run_eval

    out = tmp_path / "eval"
    _user_files(out)
    with pytest.raises(FolderNotOursError, match=rf"{out} holds files this project did not write"):
        run_eval(EvalConfig(policy="expert", tasks=("reach-v3",), episodes=1, out=out, progress=False))
    _assert_user_files(out)


def test_a_second_train_run_into_the_same_out_is_refused_at_once(tmp_path: Path) -> None:
    from training.train import TrainConfig, run_train

    out = tmp_path / "train"
    with output_folder(out, "train"):  # a first run at work
        with pytest.raises(FolderLockedError, match=rf"{out} is being written by another process"):
            run_train(TrainConfig(dataset=tmp_path / "d", tokenizer=tmp_path / "t", out=out, progress=False))
