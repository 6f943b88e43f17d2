"""Hub I/O (``push_to_hub``, ``from_pretrained(repo_id)``) through the real ``huggingface_hub``.

Only the HTTP client is faked (``tests/fake_hub.py``): repo creation, YAML validation, preupload,
the NDJSON commit, revision info, the tree listing and ``resolve`` HEAD/GET all run through the
library's own code, its cache and its offline switch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from action_tokenizers.auto import AutoActionTokenizer
from action_tokenizers.binning import BinningTokenizer
from fake_hub import FakeHub

REPO_ID = "robot-lab/so101-binning"
SAVED_FILES = {"config.json", "tensors.safetensors", "README.md"}
FORBIDDEN = {"evil.py": b"import os; os.system('echo pwned')\n", "weights.pkl": b"\x80\x04K\x01.",
             "pytorch_model.bin": b"\x80\x02}q\x00.", "pkg/__init__.py": b"raise SystemExit\n"}


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """The fake Hub installed as the library's HTTP client, online, with every cache under tmp_path."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    home = tmp_path / "hf_home"
    monkeypatch.chdir(tmp_path)  # "owner/name" must not collide with a directory of the checkout
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_XET_CACHE", str(home / "xet"))
    for name, value in {"HF_HUB_OFFLINE": False, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
                        "HF_TOKEN_PATH": str(home / "token"), "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
                        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json")}.items():
        monkeypatch.setattr(constants, name, value)
    fake = FakeHub()
    huggingface_hub.set_client_factory(fake.client)
    huggingface_hub.set_async_client_factory(fake.async_client)
    try:
        yield fake
    finally:
        huggingface_hub.set_client_factory(_http.default_client_factory)
        huggingface_hub.set_async_client_factory(_http.default_async_client_factory)


@pytest.fixture(scope="module")
def chunks() -> np.ndarray:
    """(n, h, d) = (64, 4, 3) smooth-ish random actions."""
    rng = np.random.default_rng(0)
    return np.cumsum(rng.normal(scale=0.1, size=(64, 4, 3)), axis=1)


def fitted(chunks: np.ndarray, n_bins: int = 32) -> BinningTokenizer:
    return BinningTokenizer(n_bins=n_bins, edges="quantile").fit(chunks)


def commit_sha(url: str) -> str:
    return url.rsplit("/commit/", 1)[1]


def resolved(hub: FakeHub) -> set[str]:
    return set(hub.requested_files(REPO_ID))


def hub_snapshot(tmp_path: Path) -> Path:
    """The one snapshot directory the library wrote into the temporary cache."""
    (snapshot,) = (tmp_path / "hf_home" / "hub").glob(f"models--{REPO_ID.replace('/', '--')}/snapshots/*")
    return snapshot


# ---------------------------------------------------------------------- push


def test_push_uploads_exactly_the_saved_files(hub: FakeHub, chunks: np.ndarray, tmp_path: Path) -> None:
    from safetensors.numpy import load

    tok = fitted(chunks)
    url = tok.push_to_hub(REPO_ID, token="hf_fake_write_token")

    saved = tok.save_pretrained(tmp_path / "local")
    expected = {p.name: p.read_bytes() for p in saved.iterdir() if not p.name.startswith(".")}  # not the manifest
    assert set(expected) == SAVED_FILES
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert commit.repo_id == REPO_ID and commit.deleted == []
    assert commit.added == expected  # byte for byte what save_pretrained writes
    # Data, not pickles: each file parses as its own format.
    assert json.loads(commit.added["config.json"])["action_tokenizer_class"] == "BinningTokenizer"
    assert set(load(commit.added["tensors.safetensors"])) == set(load(expected["tensors.safetensors"]))
    assert commit.added["README.md"].startswith(b"---\n")
    assert hub.card_metadata and hub.card_metadata[0]["library_name"] == "action-tokenizers"

    assert commit_sha(url) == hub.repos[REPO_ID].head
    assert set(hub.repos[REPO_ID].files) == SAVED_FILES | {".gitattributes"}
    writes = [r for r in hub.requests if r.method == "POST"]
    assert [r.url.path.rsplit("/", 1)[0] for r in writes if "/models/" in r.url.path] == [
        f"/api/models/{REPO_ID}/preupload", f"/api/models/{REPO_ID}/commit"]
    assert all(r.headers.get("authorization") == "Bearer hf_fake_write_token" for r in writes)
    assert hub.unhandled == []


def test_push_again_reuses_the_repo_and_skips_unchanged_files(hub: FakeHub, chunks: np.ndarray) -> None:
    tok = fitted(chunks)
    first = tok.push_to_hub(REPO_ID)
    again = tok.push_to_hub(REPO_ID)  # repo exists (409 -> exist_ok) and nothing changed: no new commit
    assert len(hub.commits) == 1 and commit_sha(again) == commit_sha(first)

    changed = fitted(chunks, n_bins=16).push_to_hub(REPO_ID)
    assert len(hub.commits) == 2 and commit_sha(changed) == hub.repos[REPO_ID].head != commit_sha(first)
    assert json.loads(hub.repos[REPO_ID].files["config.json"])["vocab_size"] == 16


# ---------------------------------------------------------------------- load


def test_from_pretrained_repo_id_round_trips_through_the_hub(hub: FakeHub, chunks: np.ndarray) -> None:
    tok = fitted(chunks)
    tok.push_to_hub(REPO_ID)

    direct = BinningTokenizer.from_pretrained(REPO_ID)
    auto = AutoActionTokenizer.from_pretrained(REPO_ID)

    assert isinstance(auto, BinningTokenizer)
    ids = tok.encode(chunks)
    assert direct.encode(chunks) == ids and auto.encode(chunks) == ids
    np.testing.assert_array_equal(direct.decode(ids), tok.decode(ids))
    np.testing.assert_array_equal(auto.decode(ids), tok.decode(ids))
    assert resolved(hub) == SAVED_FILES
    assert hub.unhandled == []


def test_only_data_files_are_requested(hub: FakeHub, chunks: np.ndarray, tmp_path: Path) -> None:
    fitted(chunks).push_to_hub(REPO_ID)
    hub.add_repo(REPO_ID, FORBIDDEN)  # someone added code and pickles to the repo

    tok = AutoActionTokenizer.from_pretrained(REPO_ID)

    assert tok.is_fitted
    requested = resolved(hub)
    assert requested == SAVED_FILES, f"requested {sorted(requested)}"
    assert not requested & set(FORBIDDEN)
    snapshot = hub_snapshot(tmp_path)
    on_disk = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}
    assert on_disk == SAVED_FILES
    assert hub.unhandled == []


def test_revision_pins_an_older_commit(hub: FakeHub, chunks: np.ndarray) -> None:
    old_url = fitted(chunks, n_bins=32).push_to_hub(REPO_ID)
    fitted(chunks, n_bins=8).push_to_hub(REPO_ID)

    assert AutoActionTokenizer.from_pretrained(REPO_ID).vocab_size == 8
    assert BinningTokenizer.from_pretrained(REPO_ID, revision=commit_sha(old_url)).vocab_size == 32


def test_offline_mode_uses_the_cache_and_names_the_switch(hub: FakeHub, chunks: np.ndarray,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    tok = fitted(chunks)
    tok.push_to_hub(REPO_ID)
    hub.add_repo("robot-lab/never-downloaded", {"config.json": b"{}"})
    AutoActionTokenizer.from_pretrained(REPO_ID)  # fills the cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    n_requests = len(hub.requests)

    cached = AutoActionTokenizer.from_pretrained(REPO_ID)
    assert cached.encode(chunks) == tok.encode(chunks)
    with pytest.raises(ConnectionError, match="HF_HUB_OFFLINE"):
        AutoActionTokenizer.from_pretrained("robot-lab/never-downloaded")
    assert len(hub.requests) == n_requests  # the library's offline hook stopped every request


# ---------------------------------------------------------------------- errors


def test_missing_repo_is_a_clear_file_not_found(hub: FakeHub) -> None:
    for load in (BinningTokenizer.from_pretrained, AutoActionTokenizer.from_pretrained):
        with pytest.raises(FileNotFoundError, match="robot-lab/does-not-exist.*not found"):
            load("robot-lab/does-not-exist")
    assert any(r.url.path == "/api/models/robot-lab/does-not-exist/revision/main" for r in hub.requests)


def test_missing_revision_is_a_clear_file_not_found(hub: FakeHub, chunks: np.ndarray) -> None:
    fitted(chunks).push_to_hub(REPO_ID)
    with pytest.raises(FileNotFoundError, match="no-such-branch"):
        AutoActionTokenizer.from_pretrained(REPO_ID, revision="no-such-branch")


@pytest.mark.parametrize("bad", ["no_such_dir", "./robot-lab/missing", "a/b/c", "/definitely/not/here", "~/nope"])
def test_missing_local_path_is_not_sent_to_the_hub(hub: FakeHub, bad: str) -> None:
    with pytest.raises(FileNotFoundError, match="neither an existing directory nor a Hub repo id"):
        AutoActionTokenizer.from_pretrained(bad)
    assert hub.requests == []


def test_a_file_is_not_a_tokenizer_directory(hub: FakeHub, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(NotADirectoryError, match="expected a tokenizer directory"):
        BinningTokenizer.from_pretrained(tmp_path / "config.json")
    assert hub.requests == []
