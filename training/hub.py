"""Trained policies on the Hugging Face Hub: push a ``train --out`` folder, load one back by repo id.

What travels is the self-contained policy (``policy_config.json``, ``lm/``, ``action_tokenizer/``,
``action_vocab.json``, the observation encoder, configs, metrics, the card); resumable
``checkpoints/`` stay local. Downloads fetch data files only (JSON, safetensors, Markdown and the
LM tokenizer's text files): nothing from a repo is imported or executed. Tests fake the Hub at the
HTTP-client boundary (``tests/fake_hub.py``).
"""

from __future__ import annotations

from pathlib import Path

from action_tokenizers.hub import push_directory, resolve_directory

__all__ = ["POLICY_ALLOW_PATTERNS", "push_policy", "resolve_policy"]

POLICY_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.md", "*.txt", "*.model"]
"""Data files of a policy repo; ``*.txt``/``*.model`` are text-tokenizer vocabularies (merges, SentencePiece)."""
LOCAL_ONLY = ("checkpoints/*",)
"""Never pushed: resumable training state."""


def resolve_policy(path_or_repo_id: str | Path, revision: str | None = None) -> Path:
    """A local policy folder as is, or a Hub repo's snapshot (data files only)."""
    return resolve_directory(path_or_repo_id, revision=revision, allow_patterns=POLICY_ALLOW_PATTERNS,
                             what="policy directory")


def push_policy(directory: str | Path, repo_id: str, private: bool = False, token: str | None = None,
                commit_message: str = "Upload tokenized-action policy") -> str:
    """Upload a trained policy folder (without ``checkpoints/``) to ``repo_id``; returns the commit URL."""
    from training.policy import POLICY_FILE

    directory = Path(directory)
    if not (directory / POLICY_FILE).is_file():
        raise FileNotFoundError(f"{directory / POLICY_FILE} is missing: push a finished `train --out` folder")
    return push_directory(directory, repo_id, private=private, token=token, commit_message=commit_message,
                          ignore_patterns=LOCAL_ONLY)
