"""A small stand-in for the Hugging Face Hub, served over real HTTP on 127.0.0.1, for tests with no network.

It implements the part of the Hub API that `huggingface_hub` 2.4 uses to push a folder and to download it
again (see /work/shared/notes/verified-here.md), with the Hub's real status codes and headers:

- writes: `POST /api/repos/create`, `POST /api/validate-yaml`, `POST /api/{type}s/{id}/preupload/{rev}`,
  the git-LFS batch endpoint plus a `PUT` target for the bytes, `POST /api/{type}s/{id}/commit/{rev}`,
  `POST /api/{type}s/{id}/branch/{branch}` and `POST /api/spaces/{id}/variables`;
- reads: `GET /api/{type}s/{id}[/revision/{rev}]`, `GET /api/{type}s/{id}/tree/{rev}[/path]`,
  `HEAD`/`GET /[{type}s/]{id}/resolve/{rev}/{path}`, `GET /api/whoami-v2`.

Users are tokens: `tokens={"alice-token": "alice"}` means the bearer token `alice-token` is user `alice`,
who may write to repos in the `alice` namespace only. A missing or unknown token on a write is a 401, a
write into someone else's namespace or repo a 403, creating an existing repo a 409 (with its `url`, as the
Hub does). Every request is recorded in `hub.requests` so tests can assert on what the client did.

Use it as a pytest fixture (`from tests.hub_server import local_hub`) or directly:

    with LocalHub(tokens={"alice-token": "alice"}) as hub:
        os.environ["HF_ENDPOINT"] = hub.endpoint
        ...
        hub.files("alice/my-model")  # {path: bytes} at the head of `main`
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import PurePosixPath
from typing import Any, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

REPO_TYPES = ("model", "dataset", "space")
# What the Hub's default .gitattributes sends to LFS (a subset), plus anything over 10 MB.
LFS_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".png", ".jpg",
                ".jpeg", ".gif", ".webp", ".npy", ".npz", ".zip", ".gz", ".tar"}
LFS_MIN_SIZE = 10 * 1024 * 1024
EMPTY_TREE_SHA = "0" * 40


def git_blob_sha1(content: bytes) -> str:
    """The oid git gives a blob: the Hub's ETag for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class StoredFile:
    content: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def git_oid(self) -> str:
        # For LFS files git stores (and the Hub reports) the pointer, not the content.
        return git_blob_sha1(lfs_pointer(self.sha256, len(self.content)) if self.lfs else self.content)


@dataclass
class Commit:
    sha: str
    parent: str | None
    summary: str
    files: dict[str, StoredFile]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    owner: str
    private: bool
    sdk: str | None = None
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    commits: dict[str, Commit] = field(default_factory=dict)
    variables: dict[str, dict[str, str]] = field(default_factory=dict)  # Space variables

    def resolve(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision, revision)
        return self.commits.get(sha)


@dataclass
class Request:
    method: str
    path: str
    status: int
    token: str | None


class HubError(Exception):
    """Raised inside a handler to answer with the Hub's error shape."""

    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


class LocalHub:
    """An in-memory Hub behind a threaded HTTP server on 127.0.0.1 and a free port."""

    def __init__(self, tokens: dict[str, str] | None = None):
        self.tokens = dict(tokens or {"alice-token": "alice"})
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content, shared by all repos like the Hub's store
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> "LocalHub":
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval makes shutdown (and so each test's teardown) quick.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "LocalHub is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ----------------------------------------------------------------- test helpers
    def add_repo(self, repo_id: str, owner: str, *, repo_type: str = "model", private: bool = False,
                 files: dict[str, bytes] | None = None) -> Repo:
        """Seed a repo owned by `owner` (for example someone else's, to provoke a conflict)."""
        repo = self._new_repo(repo_type, repo_id, owner, private, sdk="gradio" if repo_type == "space" else None)
        if files:
            self._commit(repo, "main", "seed", {p: StoredFile(c, self._is_lfs(p, len(c))) for p, c in files.items()},
                         deleted=[])
        return repo

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id.lower())]

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """What the Hub serves for `repo_id` at `revision`: {path: content}."""
        commit = self.repo(repo_id, repo_type).resolve(revision)
        return {} if commit is None else {path: f.content for path, f in commit.files.items()}

    def paths_requested(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]

    # ----------------------------------------------------------------- internals
    def _new_repo(self, repo_type: str, repo_id: str, owner: str, private: bool, sdk: str | None) -> Repo:
        repo = Repo(repo_type=repo_type, repo_id=repo_id, owner=owner, private=private, sdk=sdk)
        # The Hub starts every repo with one commit holding .gitattributes.
        self.repos[(repo_type, repo_id.lower())] = repo
        self._commit(repo, "main", "initial commit",
                     {".gitattributes": StoredFile(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n", False)},
                     deleted=[])
        return repo

    @staticmethod
    def _is_lfs(path: str, size: int) -> bool:
        return PurePosixPath(path).suffix.lower() in LFS_SUFFIXES or size >= LFS_MIN_SIZE

    def _commit(self, repo: Repo, branch: str, summary: str, added: dict[str, StoredFile],
                deleted: list[str]) -> Commit:
        parent = repo.branches.get(branch)
        files = dict(repo.commits[parent].files) if parent else {}
        for path in deleted:
            files = {p: f for p, f in files.items() if p != path and not p.startswith(path.rstrip("/") + "/")}
        files.update(added)
        digest = hashlib.sha1(json.dumps([parent, summary, sorted((p, f.git_oid) for p, f in files.items())])
                              .encode())
        commit = Commit(sha=digest.hexdigest(), parent=parent, summary=summary, files=files)
        repo.commits[commit.sha] = commit
        repo.branches[branch] = commit.sha
        return commit


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's client expects

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    # ----------------------------------------------------------------- plumbing
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization", "")
        self.token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        self.recorded = False
        status = 500
        try:
            with self.hub.lock:
                status = self._route(method, url.path)
        except HubError as err:
            status = err.status
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send(err.status, {"error": err.message, **err.extra}, headers=headers)
        finally:
            if not self.recorded:  # a route that failed before answering
                self.hub.requests.append(Request(method, url.path, status, self.token))

    def _send(self, status: int, payload: Any = None, *, raw: bytes | None = None,
              headers: dict[str, str] | None = None, content_type: str = "application/json") -> int:
        body = raw if raw is not None else json.dumps(payload).encode()
        # Record before answering: the client may act on the answer (and a test inspect `requests`) at once.
        self.hub.requests.append(Request(self.command, urlsplit(self.path).path, status, self.token))
        self.recorded = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return status

    def _json(self) -> Any:
        return json.loads(self.body or b"{}")

    # ----------------------------------------------------------------- auth
    def _user(self, required: bool) -> str | None:
        if self.token is None:
            if required:
                raise HubError(401, "You must be authenticated to do this: pass a token")
            return None
        user = self.hub.tokens.get(self.token)
        if user is None:
            # The Hub's exact message; huggingface_hub keys on it to tell a bad token from a missing repo.
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _repo(self, repo_type: str, repo_id: str, *, write: bool) -> Repo:
        user = self._user(required=write)
        repo = self.hub.repos.get((repo_type, repo_id.lower()))
        if repo is None or (repo.private and repo.owner != user):
            raise HubError(404, "Repository not found", code="RepoNotFound")
        if write and repo.owner != user:
            raise HubError(403, "You don't have write access to this repository")
        return repo

    # ----------------------------------------------------------------- routes
    def _route(self, method: str, path: str) -> int:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if method == "GET" and path == "/api/whoami-v2":
            user = self._user(required=True)
            return self._send(200, {"type": "user", "name": user, "auth": {"accessToken": {"role": "write"}}})
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo()
        if method == "POST" and path == "/api/validate-yaml":
            return self._send(200, {"errors": [], "warnings": []})
        if method == "PUT" and parts[:1] == ["lfs-upload"] and len(parts) == 2:
            return self._lfs_put(parts[1])
        if parts[:1] == ["api"] and len(parts) >= 4 and parts[1].rstrip("s") in REPO_TYPES:
            repo_type, repo_id, rest = parts[1][:-1], f"{parts[2]}/{parts[3]}", parts[4:]
            return self._api_repo(method, repo_type, repo_id, rest)
        # Git/LFS and file URLs: /{id}..., /datasets/{id}..., /spaces/{id}...
        repo_type = "model"
        if parts and parts[0] in ("datasets", "spaces"):
            repo_type, parts = parts[0][:-1], parts[1:]
        if method == "POST" and len(parts) >= 5 and parts[1].endswith(".git") and parts[2:5] == ["info", "lfs",
                                                                                                   "objects"]:
            return self._lfs_batch(repo_type, f"{parts[0]}/{parts[1][:-4]}")
        if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(repo_type, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        raise HubError(404, f"Not found: {method} {path}")

    def _api_repo(self, method: str, repo_type: str, repo_id: str, rest: list[str]) -> int:
        if method == "GET" and (not rest or rest[0] == "revision"):
            revision = "/".join(rest[1:]) if rest else "main"
            return self._repo_info(repo_type, repo_id, revision)
        if method == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
            return self._tree(repo_type, repo_id, rest[1], "/".join(rest[2:]))
        if method == "POST" and rest[:1] == ["preupload"] and len(rest) == 2:
            return self._preupload(repo_type, repo_id, rest[1])
        if method == "POST" and rest[:1] == ["commit"] and len(rest) == 2:
            return self._commit(repo_type, repo_id, rest[1])
        if method == "POST" and rest[:1] == ["branch"] and len(rest) == 2:
            return self._create_branch(repo_type, repo_id, rest[1])
        if method == "POST" and repo_type == "space" and rest == ["variables"]:
            repo = self._repo(repo_type, repo_id, write=True)
            payload = self._json()
            repo.variables[payload["key"]] = {"value": payload["value"],
                                              **({"description": payload["description"]}
                                                 if payload.get("description") else {})}
            return self._send(200, repo.variables)
        raise HubError(404, f"Not found: {method} /api/{repo_type}s/{repo_id}/{'/'.join(rest)}")

    def _url(self, repo: Repo) -> str:
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return f"{self.hub.endpoint}/{prefix}{repo.repo_id}"

    def _create_repo(self) -> int:
        user = self._user(required=True)
        payload = self._json()
        repo_type = payload.get("type") or "model"
        namespace = payload.get("organization") or user
        repo_id = f"{namespace}/{payload['name']}"
        existing = self.hub.repos.get((repo_type, repo_id.lower()))
        if existing is not None and not (existing.private and existing.owner != user):
            # The Hub answers 409 and still gives the url, which `exist_ok=True` reads.
            raise HubError(409, f"You already created this {repo_type} repo" if existing.owner == user
                           else f"A {repo_type} repo named {existing.repo_id} already exists",
                           extra={"url": self._url(existing)})
        if namespace != user:
            raise HubError(403, f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"')
        if repo_type == "space" and payload.get("sdk") not in ("gradio", "streamlit", "docker", "static"):
            raise HubError(400, "Invalid sdk for a Space")
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = self.hub._new_repo(repo_type, repo_id, user, private, payload.get("sdk"))
        for variable in payload.get("variables") or []:
            repo.variables[variable["key"]] = {"value": variable["value"]}
        return self._send(200, {"url": self._url(repo), "name": repo_id})

    def _create_branch(self, repo_type: str, repo_id: str, branch: str) -> int:
        repo = self._repo(repo_type, repo_id, write=True)
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        start = self._json().get("startingPoint") or "main"
        commit = repo.resolve(start)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {start}", code="RevisionNotFound")
        repo.branches[branch] = commit.sha
        return self._send(200, {})

    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> int:
        repo = self._repo(repo_type, repo_id, write=True)
        head = repo.resolve(revision)
        answers = []
        for entry in self._json()["files"]:
            lfs = self.hub._is_lfs(entry["path"], entry["size"])
            answer = {"path": entry["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
            stored = head.files.get(entry["path"]) if head else None
            if stored is not None:  # lets the client skip files that did not change
                answer["oid"] = stored.sha256 if stored.lfs else git_blob_sha1(stored.content)
            answers.append(answer)
        return self._send(200, {"files": answers, "commitOid": head.sha if head else None})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> int:
        self._repo(repo_type, repo_id, write=True)
        objects = []
        for obj in self._json()["objects"]:
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub.lfs_objects:  # no `actions` = already stored
                answer["actions"] = {"upload": {"href": f"{self.hub.endpoint}/lfs-upload/{obj['oid']}"}}
            objects.append(answer)
        return self._send(200, {"transfer": "basic", "objects": objects},
                          content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str) -> int:
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, "LFS object does not match its oid")
        self.hub.lfs_objects[oid] = self.body
        return self._send(200, {})

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> int:
        repo = self._repo(repo_type, repo_id, write=True)
        if revision not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), None)
        if header is None:
            raise HubError(400, "Missing commit header")
        added: dict[str, StoredFile] = {}
        deleted: list[str] = []
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                added[value["path"]] = StoredFile(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                content = self.hub.lfs_objects.get(value["oid"])
                if content is None or len(content) != value["size"]:
                    raise HubError(400, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                added[value["path"]] = StoredFile(content, lfs=True)
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
        commit = self.hub._commit(repo, revision, header.get("summary") or "", added, deleted)
        return self._send(200, {"commitUrl": f"{self._url(repo)}/commit/{commit.sha}", "commitOid": commit.sha,
                                "success": True})

    def _head(self, repo_type: str, repo_id: str, revision: str) -> tuple[Repo, Commit]:
        repo = self._repo(repo_type, repo_id, write=False)
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return repo, commit

    def _repo_info(self, repo_type: str, repo_id: str, revision: str) -> int:
        repo, commit = self._head(repo_type, repo_id, revision)
        info = {"id": repo.repo_id, "_id": repo.repo_id, "author": repo.owner, "sha": commit.sha,
                "private": repo.private, "disabled": False, "gated": False, "tags": [], "downloads": 0,
                "likes": 0, "lastModified": "2026-11-27T00:00:00.000Z",
                "createdAt": "2026-11-27T00:00:00.000Z",
                "siblings": [{"rfilename": path} for path in sorted(commit.files)]}
        if repo_type == "space":
            info.update({"sdk": repo.sdk, "runtime": {"stage": "BUILDING"}})
        return self._send(200, info)

    def _tree(self, repo_type: str, repo_id: str, revision: str, prefix: str) -> int:
        _, commit = self._head(repo_type, repo_id, revision)
        recursive = self.query.get("recursive", ["false"])[0].lower() == "true"
        prefix = prefix.strip("/")
        entries: dict[str, dict] = {}
        for path, stored in sorted(commit.files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            relative = path[len(prefix) + 1:] if prefix else path
            parts = relative.split("/")
            # Folders on the way, then the file itself (only direct children unless recursive).
            for depth in range(1, len(parts)):
                if depth > 1 and not recursive:
                    break
                folder = "/".join(([prefix] if prefix else []) + parts[:depth])
                entries.setdefault(folder, {"type": "directory", "path": folder, "size": 0, "oid": EMPTY_TREE_SHA})
            if len(parts) > 1 and not recursive:
                continue
            entry = {"type": "file", "path": path, "size": len(stored.content), "oid": stored.git_oid}
            if stored.lfs:
                entry["lfs"] = {"oid": stored.sha256, "size": len(stored.content),
                                "pointerSize": len(lfs_pointer(stored.sha256, len(stored.content)))}
            entries[path] = entry
        if prefix and not entries:
            raise HubError(404, f"Entry not found: {prefix}", code="EntryNotFound")
        return self._send(200, list(entries.values()))

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> int:
        _, commit = self._head(repo_type, repo_id, revision)
        stored = commit.files.get(path)
        if stored is None:
            raise HubError(404, "Entry not found", code="EntryNotFound")
        headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        if stored.lfs:
            headers.update({"ETag": f'"{stored.sha256}"', "X-Linked-Etag": f'"{stored.sha256}"',
                            "X-Linked-Size": str(len(stored.content))})
        else:
            headers["ETag"] = f'"{stored.git_oid}"'
        return self._send(200, raw=stored.content, headers=headers, content_type="application/octet-stream")


# ------------------------------------------------------------------------- pytest fixtures
@pytest.fixture
def local_hub() -> Iterator[LocalHub]:
    """A fresh, running LocalHub where token `alice-token` is user `alice`."""
    with LocalHub(tokens={"alice-token": "alice"}) as hub:
        yield hub


@pytest.fixture
def hub_env(local_hub: LocalHub, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> LocalHub:
    """Point huggingface_hub, in this process, at `local_hub` as user alice (HF_TOKEN=alice-token).

    huggingface_hub read HF_ENDPOINT and friends when it was first imported, so its constants are patched
    as well as the environment (which subprocesses inherit). The stored login lives in a temporary HF_HOME:
    write `hub_env.token_path` to test it, after `monkeypatch.delenv("HF_TOKEN")`. In-process downloads
    must pass `cache_dir=` (the cache folder constant is not patched).
    """
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    home.mkdir()
    for key, value in hub_client_env(local_hub.endpoint, str(home)).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", local_hub.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        local_hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    local_hub.token_path = home / "token"  # type: ignore[attr-defined]
    return local_hub


def hub_client_env(hub_endpoint: str, hf_home: str, token: str | None = "alice-token") -> dict[str, str]:
    """Environment variables that point a *new* Python process's huggingface_hub at a local Hub.

    huggingface_hub reads them at import time, hence a subprocess (or setting them before the first import).
    """
    import os

    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING_FACE_"))}
    env.update({
        "HF_ENDPOINT": hub_endpoint,
        "HF_HUB_DISABLE_XET": "1",  # otherwise uploads ask for a xet write token the stand-in does not serve
        "HF_HOME": hf_home,  # no stored login, no cache shared with the user
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_ETAG_TIMEOUT": "5",
        "HF_HUB_DOWNLOAD_TIMEOUT": "5",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    })
    if token is not None:
        env["HF_TOKEN"] = token
    return env
