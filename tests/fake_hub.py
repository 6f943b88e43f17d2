"""An in-memory Hugging Face Hub behind ``httpx.MockTransport``: the one faked boundary in the tests.

The real Hub cannot be reached from the test machines, so ``huggingface_hub`` itself runs
unchanged and only its HTTP client is swapped (``huggingface_hub.set_client_factory``). The
fake implements just the endpoints that ``HfApi.create_repo``, ``HfApi.upload_folder`` (preupload
answering "regular", then the NDJSON commit with base64 contents) and ``snapshot_download``
(revision info, tree listing, ``resolve`` HEAD/GET) call, with the headers the library checks
(``X-Repo-Commit``, ``ETag``, ``Content-Length``, ``X-Error-Code``). Every request is recorded;
a route the fake does not know is recorded in ``unhandled`` and answered 404, so a test can
assert that the library asked for nothing unexpected.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote

import httpx

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
REPO = r"(?P<repo>[^/]+/[^/]+)"
ROUTES = [  # (method, path regex, handler name); first match wins
    ("GET", r"/api/agent-harnesses", "_agent_harnesses"),
    ("POST", r"/api/repos/create", "_create_repo"),
    ("POST", r"/api/validate-yaml", "_validate_yaml"),
    ("POST", rf"/api/models/{REPO}/preupload/(?P<rev>[^/]+)", "_preupload"),
    ("POST", rf"/api/models/{REPO}/commit/(?P<rev>[^/]+)", "_commit"),
    ("GET", rf"/api/models/{REPO}/tree/(?P<rev>[^/]+)", "_tree"),
    ("GET", rf"/api/models/{REPO}/revision/(?P<rev>[^/]+)", "_info"),
    ("GET", rf"/api/models/{REPO}", "_info"),
    ("HEAD", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "_resolve"),
    ("GET", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "_resolve"),
    # dataset repos (read side: snapshot_download(repo_type="dataset")); one namespace with models here
    ("GET", rf"/api/datasets/{REPO}/tree/(?P<rev>[^/]+)", "_tree"),
    ("GET", rf"/api/datasets/{REPO}/revision/(?P<rev>[^/]+)", "_info"),
    ("GET", rf"/api/datasets/{REPO}", "_info"),
    ("HEAD", rf"/datasets/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "_resolve"),
    ("GET", rf"/datasets/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "_resolve"),
]


def git_blob_sha(data: bytes) -> str:
    """The git object id of a file, which the Hub uses as a regular file's ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeRepo:
    """One model repo: a linear history of snapshots, ``main`` pointing at the last."""

    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)
    """commit sha -> {path: bytes} as of that commit, oldest first."""

    @property
    def head(self) -> str:
        return list(self.snapshots)[-1]

    @property
    def files(self) -> dict[str, bytes]:
        return self.snapshots[self.head]

    def commit(self, files: dict[str, bytes]) -> str:
        """Record a new snapshot; the sha is a 40-hex digest, as the library requires."""
        digest = hashlib.sha1(str(len(self.snapshots)).encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_sha(files[path]).encode())
        sha = digest.hexdigest()
        self.snapshots[sha] = dict(files)
        return sha


@dataclass
class Commit:
    """What one commit POST carried: the files it added (decoded) and the paths it deleted."""

    repo_id: str
    message: str
    added: dict[str, bytes]
    deleted: list[str]


class FakeHub:
    """``repos`` maps ``owner/name`` to a :class:`FakeRepo`; ``requests`` logs every call."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[httpx.Request] = []
        self.commits: list[Commit] = []
        self.unhandled: list[str] = []
        self.card_metadata: list[dict] = []
        self._lock = threading.Lock()  # snapshot_download fetches files from several threads

    # ------------------------------------------------------------------ test helpers
    def add_repo(self, repo_id: str, files: dict[str, bytes]) -> str:
        """Create a repo holding ``files`` (plus ``.gitattributes``, as the Hub does); returns the sha."""
        repo = self.repos.setdefault(repo_id, FakeRepo())
        return repo.commit({".gitattributes": GITATTRIBUTES, **(repo.files if repo.snapshots else {}), **files})

    def client(self) -> httpx.Client:
        """A client for ``set_client_factory``, keeping the library's request hook (offline check)."""
        return httpx.Client(transport=httpx.MockTransport(self.handle), event_hooks=_library_hooks(),
                            follow_redirects=True)

    def async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle), follow_redirects=True)

    def requested_files(self, repo_id: str, method: str | None = None) -> list[str]:
        """Paths asked for through ``resolve`` (HEAD and GET, or only ``method``)."""
        prefix = f"/{repo_id}/resolve/"
        return [
            unquote(r.url.path[len(prefix):]).split("/", 1)[1]
            for r in self.requests
            if r.url.path.startswith(prefix) and (method is None or r.method == method)
        ]

    # ------------------------------------------------------------------ transport
    def handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
            path = unquote(request.url.path)
            for method, pattern, name in ROUTES:
                match = re.fullmatch(pattern, path)
                if request.method == method and match:
                    return getattr(self, name)(request, **match.groupdict())
            self.unhandled.append(f"{request.method} {request.url}")
            return _error(404, "Unknown", f"fake Hub has no route for {request.method} {path}")

    def _repo_at(self, repo_id: str, rev: str) -> tuple[str, dict[str, bytes]] | httpx.Response:
        repo = self.repos.get(repo_id)
        if repo is None:
            return _error(404, "RepoNotFound", f"Repository {repo_id} not found")
        sha = repo.head if rev == "main" else rev
        if sha not in repo.snapshots:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return sha, repo.snapshots[sha]

    # ------------------------------------------------------------------ endpoints
    def _agent_harnesses(self, request: httpx.Request) -> httpx.Response:
        """The registry the library fetches once a day to build its user agent: empty here."""
        return httpx.Response(200, json={"standardEnvVars": [], "harnesses": {}})

    def _create_repo(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        repo_id = f"{body['organization']}/{body['name']}"
        if repo_id in self.repos:  # the Hub's 409 carries the url too; create_repo(exist_ok=True) reads it
            return httpx.Response(409, headers={"X-Error-Message": "You already created this model repo"},
                                  json={"error": "You already created this model repo",
                                        "url": f"{_base(request)}/{repo_id}"})
        self.add_repo(repo_id, {})
        return httpx.Response(200, json={"url": f"{_base(request)}/{repo_id}", "name": repo_id})

    def _validate_yaml(self, request: httpx.Request) -> httpx.Response:
        """The model card's front matter must be a YAML mapping (the Hub checks more)."""
        import yaml

        content = json.loads(request.content)["content"]
        match = re.match(r"---\n(.*?)\n---\n", content, flags=re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as e:
            return httpx.Response(400, json={"errors": [{"message": f"invalid YAML: {e}"}], "warnings": []})
        if not isinstance(metadata, dict):
            return httpx.Response(400, json={"errors": [{"message": "metadata must be a mapping"}], "warnings": []})
        self.card_metadata.append(metadata)
        return httpx.Response(200, json={"errors": [], "warnings": []})

    def _preupload(self, request: httpx.Request, repo: str, rev: str) -> httpx.Response:
        found = self._repo_at(repo, rev)
        if isinstance(found, httpx.Response):
            return found
        _, files = found
        answer = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_blob_sha(files[f["path"]]) if f["path"] in files else None}
            for f in json.loads(request.content)["files"]
        ]
        return httpx.Response(200, json={"files": answer, "commitOid": found[0]})

    def _commit(self, request: httpx.Request, repo: str, rev: str) -> httpx.Response:
        found = self._repo_at(repo, rev)
        if isinstance(found, httpx.Response):
            return found
        lines = [json.loads(line) for line in request.content.splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        added, deleted = {}, []
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                added[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deleted.append(value["path"])
            elif key != "header":  # lfsFile, deletedFolder: not needed for tokenizer directories
                return _error(400, None, f"fake Hub does not implement commit operation {key!r}")
        files = {p: b for p, b in found[1].items() if p not in deleted} | added
        self.commits.append(Commit(repo, header["summary"], added, deleted))
        sha = self.repos[repo].commit(files)
        return httpx.Response(200, json={"commitUrl": f"{_base(request)}/{repo}/commit/{sha}",
                                         "commitOid": sha, "pullRequestUrl": None})

    def _info(self, request: httpx.Request, repo: str, rev: str = "main") -> httpx.Response:
        found = self._repo_at(repo, rev)
        if isinstance(found, httpx.Response):
            return found
        sha, files = found
        return httpx.Response(200, json={"id": repo, "modelId": repo, "sha": sha, "private": False,
                                         "siblings": [{"rfilename": p} for p in files]})

    def _tree(self, request: httpx.Request, repo: str, rev: str) -> httpx.Response:
        found = self._repo_at(repo, rev)
        if isinstance(found, httpx.Response):
            return found
        entries = [{"type": "file", "path": p, "size": len(b), "oid": git_blob_sha(b)} for p, b in found[1].items()]
        return httpx.Response(200, json=entries)

    def _resolve(self, request: httpx.Request, repo: str, rev: str, path: str) -> httpx.Response:
        found = self._repo_at(repo, rev)
        if isinstance(found, httpx.Response):
            return found
        sha, files = found
        if path not in files:
            return _error(404, "EntryNotFound", f"{path} does not exist on {rev}", {"X-Repo-Commit": sha})
        data = files[path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha(data)}"', "Content-Length": str(len(data))}
        return httpx.Response(200, headers=headers, content=b"" if request.method == "HEAD" else data)


def _base(request: httpx.Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc.decode()}"


def _error(status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """An error as the Hub sends it: ``X-Error-Code`` is what the library maps to exception types."""
    extra = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {}), **(headers or {})}
    return httpx.Response(status, headers=extra, json={"error": message})


def _library_hooks() -> dict:
    """The library's own request hook (it enforces ``HF_HUB_OFFLINE``), so offline mode stays real."""
    from huggingface_hub.utils._http import hf_request_event_hook

    return {"request": [hf_request_event_hook]}
