"""Hugging Face Hub I/O: resolve a local directory or repo id, and upload a saved directory.

Only data files are fetched (JSON, safetensors, ``tokenizer.json``, the model card); nothing
from a repo is imported or executed. Tests fake the Hub at the HTTP-client boundary.
"""

from __future__ import annotations

from pathlib import Path

from action_tokenizers.io import recover

ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.md", "bpe_tokenizer/*.json"]
DATASET_ALLOW_PATTERNS = ["meta/*", "data/*"]
"""A LeRobot v3 dataset without its videos: what reading actions, states and tasks needs."""


def resolve_dataset(path_or_repo_id: str | Path, revision: str | None = None) -> Path:
    """A LeRobot dataset root: a local folder as is, a Hub dataset id as a local snapshot of its
    ``meta/`` and ``data/`` (never videos). Every command that takes a dataset goes through this."""
    return resolve_directory(path_or_repo_id, revision=revision, allow_patterns=DATASET_ALLOW_PATTERNS,
                             repo_type="dataset", what="dataset root")


def resolve_directory(path_or_repo_id: str | Path, revision: str | None = None,
                      allow_patterns: list[str] | None = None, repo_type: str = "model",
                      what: str = "tokenizer directory") -> Path:
    """A local directory as is; otherwise download a Hub repo's data files (``allow_patterns``,
    default: JSON, safetensors, Markdown) and return the snapshot."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        recover(path)  # finish a save that a kill interrupted, so the load sees one complete version
        return path
    text = str(path_or_repo_id)
    if path.exists():
        raise NotADirectoryError(f"{text} is a file; expected a {what} or a Hub repo id")
    if _looks_local(text):
        raise FileNotFoundError(f"{text} is neither an existing directory nor a Hub repo id: the local folder "
                                f"{_missing_part(path)} does not exist; check the path")
    if text.count("/") != 1:
        raise FileNotFoundError(f"{text} is neither an existing directory nor a Hub repo id of the form 'owner/name'")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    try:
        return Path(snapshot_download(text, revision=revision, repo_type=repo_type,
                                      allow_patterns=allow_patterns or ALLOW_PATTERNS))
    except RepositoryNotFoundError as e:
        raise FileNotFoundError(f"Hub repo {text!r} not found (and no local directory of that name)") from e
    except RevisionNotFoundError as e:  # an HfHubHTTPError, but not a connection problem
        raise FileNotFoundError(f"Hub repo {text!r} has no revision {revision!r} (a branch, tag or commit sha)") from e
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise ConnectionError(f"could not fetch {text!r} from the Hub (offline? set HF_HUB_OFFLINE=0): {e}") from e


def hub_repo_id(value: object) -> str | None:
    """``value`` as a Hub repo id ('owner/name' that is no local path), else None (model-card metadata
    lists only Hub ids: a local folder name means nothing on the Hub)."""
    import re

    text = str(value or "")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) or _looks_local(text) or Path(text).exists():
        return None
    return text


def _looks_local(text: str) -> bool:
    """A path a user meant as local: starts with ./ ../ / ~ or a drive, or its first part exists here.

    ``tr/nope`` where ``tr/`` is a local folder is a typo, not the Hub repo ``tr/nope``.
    """
    if text.startswith((".", "/", "~", "\\")) or (len(text) > 1 and text[1] == ":"):
        return True
    first = text.replace("\\", "/").split("/", 1)[0]
    return "/" in text and Path(first).exists()


def _missing_part(path: Path) -> str:
    """The first component of ``path`` that does not exist (what to fix)."""
    for p in reversed((path, *path.parents)):
        if str(p) not in ("", ".") and not p.exists():
            return str(p)
    return str(path)


def push_directory(directory: Path, repo_id: str, private: bool = False, token: str | None = None,
                   commit_message: str = "Upload action tokenizer", ignore_patterns: tuple[str, ...] = ()) -> str:
    """Create ``repo_id`` if needed and upload every file of ``directory`` (but our hidden bookkeeping
    and ``ignore_patterns``); returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(folder_path=str(directory), repo_id=repo_id, repo_type="model",
                             commit_message=commit_message,
                             ignore_patterns=[".action_tokenizers*", "*/.action_tokenizers*", *ignore_patterns])
    return str(getattr(info, "commit_url", info))
