"""The one output rule every command and every ``save_pretrained`` follows, and small JSON helpers.

The rule (why: a user's folder is theirs; a killed run must never cost them their last result):

- A folder we write holds our own files, listed in a small manifest (:data:`MANIFEST`, with a
  sha256 per file and the kind of output: ``tokenizer``, ``fit``, ``train`` ...). A file not in a
  manifest is the user's: it is never replaced, moved or deleted.
- Opening a folder that holds anything else than the same kind of output of ours is refused with
  the names of what is there, unless ``overwrite=True`` (``--overwrite``), which then replaces only
  our own files. A path that is a file is refused.
- New files are first written, complete and fsync'ed, into a hidden staging folder inside the
  output folder. A journal naming them is then written atomically: that is the commit. Only then
  are the files moved into place (``os.replace``) and the manifest rewritten. A kill before the
  commit leaves the earlier output untouched; a kill after it is finished by the next writer or
  loader (:func:`recover`), so a load always sees the earlier complete output or the new one.
  Staging folders of killed, uncommitted runs are removed on the next run.
- A lock (``flock`` on :data:`LOCK`) makes a second writer fail at once, naming the holder.

``atomic_directory(path, kind)`` is the short form used by most writers: it yields a staging
folder, and everything written there is committed into ``path`` when the block ends.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = ".action_tokenizers.json"
"""Our files in a folder: ``{"kind", "files": {relative path: sha256}}``; written last."""
LOCK = ".action_tokenizers.lock"
"""Lock file (``flock``); holds the pid and command of the current writer."""
JOURNAL = ".action_tokenizers.journal.json"
"""Commit record of a write in progress: which staged files go where, which old ones go away."""
STAGING_PREFIX = ".action_tokenizers.staging-"
TMP_PREFIX = ".action_tokenizers.tmp-"
_INTERNAL = (MANIFEST, LOCK, JOURNAL)
MANIFEST_VERSION = 1


class OutputFolderError(RuntimeError):
    """An output folder cannot be written (a file in the way, an unwritable folder, another writer)."""


class FolderLockedError(OutputFolderError):
    """Another process is writing the same folder."""


class FolderNotOursError(FileExistsError):
    """The folder holds files this project did not write (or another command's output)."""


class ChecksumError(ValueError):
    """A saved file does not match the checksum recorded when it was written."""


# ---------------------------------------------------------------------- the output folder
class OutputFolder:
    """An output folder opened for writing under the rule above (see :func:`output_folder`)."""

    def __init__(self, path: str | Path, kind: str | None, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.kind = kind
        self.overwrite = overwrite
        self._lock_fd: int | None = None
        self._created = False

    # -- opening and closing
    def open(self) -> "OutputFolder":
        _refuse_file(self.path)
        if not (self.path / JOURNAL).is_file():  # (with a journal: our interrupted save, finished below)
            self._check_contents()  # before anything is created in a user's folder
        self._created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _lock(self.path)
        except OSError as e:
            raise _unwritable(self.path, e) from e
        try:
            recover(self.path, locked=True)
            _remove_leftovers(self.path)
            self._check_contents()  # again, now that we hold the lock
            if self.kind is None:
                self.kind = read_manifest(self.path).get("kind", "output")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self._lock_fd is not None:
            _unlock(self._lock_fd, self.path)
            self._lock_fd = None
            if self._created:  # a run that failed before writing anything leaves no empty folder behind
                with contextlib.suppress(OSError):
                    self.path.rmdir()

    def __enter__(self) -> "OutputFolder":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_contents(self) -> None:
        if not self.path.is_dir():
            return
        manifest = read_manifest(self.path)
        foreign = foreign_files(self.path)
        if foreign and not self.overwrite:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise FolderNotOursError(
                f"{self.path} holds files this project did not write ({shown}); choose another output "
                "folder, or pass --overwrite (overwrite=True) to write beside them (they are kept)")
        old_kind = manifest.get("kind")
        if old_kind and self.kind and old_kind != self.kind and not self.overwrite:
            raise FolderNotOursError(
                f"{self.path} holds the output of '{old_kind}', not '{self.kind}'; choose another output "
                "folder, or pass --overwrite (overwrite=True) to replace it")

    # -- writing
    @contextlib.contextmanager
    def stage(self, replace: bool = False) -> Iterator[Path]:
        """Yield an empty staging folder; what is written there is committed when the block ends.

        ``replace=True``: the new files are the whole output; our files from earlier writes that
        are not among them are deleted at the commit (never anyone else's). On an exception
        nothing is committed and the staging folder is removed.
        """
        if self._lock_fd is None:
            raise OutputFolderError(f"{self.path} is not open for writing")
        staging = self.path / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._commit(staging, replace)  # once the journal is written, a failure is finished by recover()

    def write_bytes(self, rel: str, data: bytes) -> Path:
        """Write one file (relative path) atomically and record it as ours."""
        with self.stage() as staging:
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return self.path / rel

    def write_text(self, rel: str, text: str) -> Path:
        return self.write_bytes(rel, text.encode())

    def write_json(self, rel: str, obj: Any) -> Path:
        return self.write_text(rel, _dumps(obj))

    def remove(self, rel: str) -> None:
        """Delete our files at or under ``rel`` (a file or a folder); anything else there stays."""
        rel = rel.rstrip("/")
        self._delete([f for f in own_files_recursive(self.path) if f == rel or f.startswith(rel + "/")])

    def remove_all(self) -> None:
        """Delete every file of ours here (an earlier run's output); the user's files stay."""
        self._delete(own_files_recursive(self.path))

    def _delete(self, rels: list[str]) -> None:
        manifest = read_manifest(self.path)
        files = {k: v for k, v in manifest.get("files", {}).items() if k not in set(rels)}
        self._apply_journal({"staging": None, "files": [], "delete": sorted(rels),
                             "manifest": {**manifest, "kind": manifest.get("kind", self.kind), "files": files}})

    def own_files(self) -> dict[str, str]:
        return dict(read_manifest(self.path).get("files", {}))

    def _commit(self, staging: Path, replace: bool) -> None:
        try:
            journal = self._plan(staging, replace)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._apply_journal(journal)

    def _plan(self, staging: Path, replace: bool) -> dict[str, Any]:
        """The journal of a commit: staged files to move in, our old files to delete, the new manifest."""
        old = read_manifest(self.path)
        old_files: dict[str, str] = old.get("files", {})
        new_files = {rel: _sync_and_hash(staging / rel) for rel in _walk_files(staging)}
        clash = [rel for rel in new_files
                 if rel not in old_files and (self.path / rel).exists() and not _inside_own_subfolder(self.path, rel)]
        if clash:
            raise FolderNotOursError(
                f"{self.path} already holds {', '.join(clash[:5])}, which this project did not write; "
                "move it away (it is never replaced)")
        delete = sorted(set(old_files) - set(new_files)) if replace else []
        files = dict(new_files) if replace else {**old_files, **new_files}
        manifest = {"manifest_version": MANIFEST_VERSION, "kind": self.kind or old.get("kind", "output"),
                    "files": dict(sorted(files.items()))}
        return {"staging": staging.name, "files": sorted(new_files), "delete": delete, "manifest": manifest}

    def _apply_journal(self, journal: dict[str, Any]) -> None:
        _write_atomic(self.path / JOURNAL, _dumps(journal).encode())  # the commit point
        _fsync_dir(self.path)
        _roll_forward(self.path, journal)


@contextlib.contextmanager
def output_folder(path: str | Path, kind: str | None, overwrite: bool = False) -> Iterator[OutputFolder]:
    """Open ``path`` for writing under the output rule; the lock is held until the block ends.

    ``kind`` names the command (``fit``, ``eval``, ``tokenizer``...): a folder holding another
    kind's output is refused unless ``overwrite``. ``kind=None`` accepts whatever kind is there.
    """
    folder = OutputFolder(path, kind, overwrite)
    with folder:
        yield folder


@contextlib.contextmanager
def atomic_directory(path: str | Path, kind: str = "output", overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder; on success its files replace our earlier output at ``path``.

    The short form of :func:`output_folder` + :meth:`OutputFolder.stage` with ``replace=True``:
    a user's own files in ``path`` are kept (and refused unless ``overwrite``), ours are
    replaced, and a kill at any moment leaves the earlier complete output or the new one.
    """
    with output_folder(path, kind, overwrite) as folder, folder.stage(replace=True) as staging:
        yield staging


# ---------------------------------------------------------------------- reading side
def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a folder ({} when there is none or it is unreadable)."""
    try:
        data = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("files", {}), dict) else {}


def recover(path: str | Path, locked: bool = False) -> None:
    """Finish a commit that a kill interrupted (a journal is present); a no-op otherwise.

    Loaders call this before reading, so a load never sees half of a commit. Without
    ``locked`` it takes the folder's lock first and refuses while another process writes.
    """
    path = Path(path)
    journal_path = path / JOURNAL
    if not journal_path.is_file():
        return
    if not locked:
        try:
            fd = _lock(path)  # FolderLockedError (not an OSError) passes through: a writer is at work
        except OSError as e:
            raise OutputFolderError(
                f"{path} holds an interrupted save that cannot be finished here ({e.strerror or e}); "
                "open it once with write access (any load or save finishes it)") from e
        try:
            recover(path, locked=True)
        finally:
            _unlock(fd, path)
        return
    try:
        journal = json.loads(journal_path.read_text())
    except (OSError, ValueError):
        journal_path.unlink(missing_ok=True)  # torn before the commit: the old output stands
        return
    _roll_forward(path, journal)


def foreign_files(path: str | Path, limit: int = 50) -> list[str]:
    """Relative paths under ``path`` that no manifest of ours lists (the user's files).

    A folder holding nothing of ours is named once (``.git/``), not file by file.
    """
    out: list[str] = []
    _foreign(Path(path), set(), "", out)
    return out[:limit]


def own_files_recursive(path: str | Path) -> list[str]:
    """Relative paths of every file of ours under ``path``: listed in its manifest or a nested one."""
    path = Path(path)
    out = set(read_manifest(path).get("files", {}))
    for dirpath, dirnames, names in os.walk(path):
        d = Path(dirpath)
        dirnames[:] = [n for n in dirnames if not n.startswith(STAGING_PREFIX)]
        if d == path or MANIFEST not in names:
            continue
        rel = d.relative_to(path).as_posix()
        out.update(f"{rel}/{f}" for f in read_manifest(d).get("files", {}))
        out.add(f"{rel}/{MANIFEST}")
    return sorted(f for f in out if (path / f).is_file())


def check_output(path: str | Path, kind: str | None, overwrite: bool = False) -> None:
    """Refuse ``path`` now (before a long computation) if writing it later would be refused."""
    folder = OutputFolder(path, kind, overwrite)
    _refuse_file(folder.path)
    folder._check_contents()


def verify_checksums(directory: str | Path, checksums: dict[str, str], where: str) -> None:
    """Refuse a file whose sha256 differs from the one recorded at save time, naming the file."""
    directory = Path(directory)
    for rel, expected in sorted(checksums.items()):
        f = directory / rel
        if not f.is_file():
            continue  # the loader that needs it says what is missing
        actual = file_sha256(f)
        if actual != expected:
            raise ChecksumError(
                f"{f} does not match the sha256 recorded in {where} (expected {expected[:12]}..., got "
                f"{actual[:12]}...): the file was changed or corrupted; save or download it again")


def verify_manifest(directory: str | Path, names: tuple[str, ...]) -> None:
    """Check the files ``names`` against our manifest, where one lists them (hand edits, bit flips)."""
    files = read_manifest(directory).get("files", {})
    verify_checksums(directory, {n: files[n] for n in names if n in files}, f"{Path(directory) / MANIFEST}")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


DATA_SUFFIXES = (".safetensors", ".json")


def checksums(directory: str | Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every data file (safetensors, JSON) under ``directory``, by relative posix path.

    Model cards and our own bookkeeping files are left out: a user may edit a README.
    """
    directory = Path(directory)
    return {rel: file_sha256(directory / rel) for rel in _walk_files(directory)
            if rel not in exclude and rel.endswith(DATA_SUFFIXES) and not _is_internal(rel.rsplit("/", 1)[-1])}


# ---------------------------------------------------------------------- internals
def _refuse_file(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise OutputFolderError(f"{path} is a file, not a folder; choose a folder path for the output")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputFolderError(f"{parent} is a file, so {path} cannot be a folder; choose another path")
            break


def _unwritable(path: Path, e: OSError) -> OSError:
    if isinstance(e, OutputFolderError):
        return e
    return OutputFolderError(f"cannot write to {path}: {e.strerror or e}; choose a writable output folder")


def _lock(path: Path) -> int:
    """Take the folder's lock without waiting; the lock file names the holder and goes away on unlock.

    The file is removed by its holder, so after locking we check that the file we hold is still
    the one at the path (otherwise a holder removed it meanwhile: try again on the new one).
    """
    import fcntl

    for _ in range(100):
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise FolderLockedError(
                    f"{path} is being written by another process ({holder or 'holder unknown'}); wait for it "
                    "to finish or choose another output folder") from None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path / LOCK).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}: {' '.join(_command())}".encode(), 0)
            return fd
        os.close(fd)
    raise FolderLockedError(f"{path}: could not take the lock (other processes keep replacing it)")


def _unlock(fd: int, path: Path) -> None:
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_ino == os.stat(path / LOCK).st_ino:
            os.unlink(path / LOCK)  # while still holding it (see _lock)
    os.close(fd)  # releases the flock


def _command() -> list[str]:
    argv = [os.path.basename(sys.argv[0])] + sys.argv[1:] if sys.argv and sys.argv[0] else ["python"]
    return argv[:8]


def _remove_leftovers(path: Path) -> None:
    """Staging folders and temp files of killed runs (we hold the lock: no live writer owns them)."""
    for entry in path.iterdir():
        if entry.name.startswith(STAGING_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(TMP_PREFIX):
            entry.unlink(missing_ok=True)


def _roll_forward(path: Path, journal: dict[str, Any]) -> None:
    """Apply a committed journal; every step may be repeated, so a kill here is finished next time."""
    staging = path / journal["staging"] if journal.get("staging") else None
    if staging is not None:
        for rel in journal["files"]:
            src = staging / rel
            if src.is_file():
                (path / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, path / rel)
    for rel in journal["delete"]:
        target = path / rel
        if target.is_file() or target.is_symlink():
            target.unlink()
        _prune_empty(path, target.parent)
    _write_atomic(path / MANIFEST, _dumps(journal["manifest"]).encode())
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)
    (path / JOURNAL).unlink(missing_ok=True)
    _fsync_dir(path)


def _prune_empty(root: Path, d: Path) -> None:
    """Remove empty folders from ``d`` up to (not including) ``root``; a lock file alone counts as empty."""
    while d != root and root in d.parents:
        with contextlib.suppress(OSError):
            if {p.name for p in d.iterdir()} <= {LOCK}:
                (d / LOCK).unlink(missing_ok=True)
                d.rmdir()
        d = d.parent


def _write_atomic(target: Path, data: bytes) -> None:
    tmp = target.parent / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sync_and_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb+") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
        os.fsync(f.fileno())
    return h.hexdigest()


def _walk_files(root: Path) -> list[str]:
    """Relative posix paths of the files under ``root``, lock files left out."""
    out = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name == LOCK:
                continue
            out.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(out)


def _inside_own_subfolder(root: Path, rel: str) -> bool:
    """Whether ``rel`` lies in a sub-folder whose own manifest lists it (a nested save of ours)."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        sub = root.joinpath(*parts[:i])
        if "/".join(parts[i:]) in read_manifest(sub).get("files", {}):
            return True
    return False


def _is_internal(name: str) -> bool:
    return name in _INTERNAL or name.startswith((STAGING_PREFIX, TMP_PREFIX))


def _foreign(d: Path, owned: set[str], prefix: str, out: list[str]) -> bool:
    """Append the foreign files under ``d`` to ``out``; returns whether ``d`` holds anything of ours."""
    listed = set(read_manifest(d).get("files", {}))
    owned = owned | listed
    ours = bool(listed)
    try:
        entries = sorted(d.iterdir())
    except OSError:
        return ours
    for e in entries:
        if _is_internal(e.name):
            ours = True
        elif e.is_dir() and not e.is_symlink():
            sub_out: list[str] = []
            sub = {r[len(e.name) + 1:] for r in owned if r.startswith(e.name + "/")}
            if _foreign(e, sub, prefix + e.name + "/", sub_out):
                ours = True
                out.extend(sub_out)
            elif sub_out:
                out.append(prefix + e.name + "/")
        elif e.name in owned:
            ours = True
        else:
            out.append(prefix + e.name)
    return ours


# ---------------------------------------------------------------------- JSON and safetensors
def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _dumps(obj: Any) -> str:
    return json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (NumPy values converted; NaN -> null), atomically."""
    path = Path(path)
    _write_atomic(path, _dumps(obj).encode())


def read_json(path: str | Path, what: str = "file") -> dict:
    """Read a JSON object, with an error that names the file when it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} is missing")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {path} is not a text file: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold a JSON object, got {type(data).__name__}")
    return data


def load_safetensors(path: str | Path, what: str = "directory", framework: str = "numpy") -> dict[str, Any]:
    """Load a safetensors file (``numpy`` arrays or ``torch`` tensors) with errors that name the file.

    A missing file means the ``what`` is incomplete; a file that does not parse is reported as
    corrupted. Never unpickles anything.
    """
    from safetensors import SafetensorError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the {what} is incomplete")
    if framework == "torch":
        from safetensors.torch import load_file
    else:
        from safetensors.numpy import load_file
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path} is corrupted or not a safetensors file: {e}") from e
