"""A minimal fake Hugging Face Hub HTTP server for tests.

The real ``huggingface_hub`` client talks to it over plain HTTP on 127.0.0.1, so only the network boundary is
faked. Supported routes (model repos only):

* ``GET /api/models/{repo}[/revision/{rev}]``: ``model_info`` / ``repo_info``
* ``GET /api/models/{repo}/tree/{rev}[/{path}]``: ``list_repo_tree`` / ``list_repo_files``
* ``HEAD|GET /{repo}/resolve/{rev}/{path}``: ``hf_hub_download`` (served directly, no redirect, no Xet)
* ``POST /api/repos/create``: ``create_repo``
* ``POST /api/models/{repo}/preupload/{rev}``: always answers ``uploadMode: regular``
* ``POST /api/models/{repo}/commit/{rev}``: NDJSON with base64 ``file`` / ``deletedFile`` operations
* ``GET /api/whoami-v2``

Because the preupload endpoint answers ``regular`` for every file, the client inlines every file as base64
in the commit payload and never uses the LFS batch API or the Xet protocol. Files matching ``lfs_suffixes``
are nevertheless *reported* as LFS files (``lfs`` info in tree listings, ``X-Linked-Etag`` and
``X-Linked-Size`` on ``/resolve``), like on the real Hub.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from schemas.timestamps import utc_rfc3339

__all__ = ["DEFAULT_LFS_SUFFIXES", "FakeCommit", "FakeHub"]

DEFAULT_LFS_SUFFIXES: tuple[str, ...] = (
    ".bin",
    ".ftz",
    ".safetensors",
    ".pt",
    ".pth",
    ".onnx",
    ".h5",
    ".npz",
)
_RESERVED = frozenset({"revision", "tree", "preupload", "commit", "commits", "refs", "resolve"})


@dataclass(frozen=True)
class FakeCommit:
    """One commit as recorded by the fake hub: what changed, not the full tree."""

    sha: str
    repo_id: str
    branch: str
    message: str
    date: datetime
    parent: str | None
    files: Mapping[str, bytes]
    deleted: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Blob:
    """A file version, plus the sha of the commit that last changed it."""

    data: bytes
    commit: str
    lfs: bool

    @property
    def git_oid(self) -> str:
        """Git blob id of the content (of the LFS pointer file for LFS files)."""
        return _git_hash(self.pointer if self.lfs else self.data)

    @property
    def sha256(self) -> str:
        """Hex sha256 of the content."""
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        """Git LFS pointer file for this content."""
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n"
        ).encode()

    @property
    def etag(self) -> str:
        """What the Hub sends as (linked) ETag: sha256 for LFS files, git blob id otherwise."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class _Snapshot:
    """A commit together with the full tree it produces."""

    commit: FakeCommit
    tree: dict[str, _Blob]
    seq: int


@dataclass
class _Repo:
    """State of one model repository."""

    repo_id: str
    private: bool
    created_at: datetime
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    snapshots: dict[str, _Snapshot] = field(default_factory=dict)


class _HttpError(Exception):
    """Raised by route handlers to produce an error response with Hub-style error headers."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def _git_hash(data: bytes) -> str:
    """Git blob sha1, as computed by ``git hash-object``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _iso(date: datetime) -> str:
    """Format a date like the Hub does (``2024-01-02T03:04:05.000Z``); naive dates are taken as UTC."""
    return utc_rfc3339(date if date.tzinfo is not None else date.replace(tzinfo=UTC), "milliseconds")


class FakeHub:
    """In-memory fake Hub served over HTTP on 127.0.0.1; use it as a context manager.

    ``token``: if set, private repos are only readable, and writes (create repo, preupload, commit) only
    allowed, with ``Authorization: Bearer <token>``. ``requests`` logs ``(method, url path)`` of every request
    (path as sent, percent-encoding kept, query string dropped).
    """

    def __init__(
        self,
        token: str | None = None,
        username: str = "fake-user",
        lfs_suffixes: Iterable[str] = DEFAULT_LFS_SUFFIXES,
    ) -> None:
        """Create the (not yet started) fake hub."""
        self.token = token
        self.username = username
        self.lfs_suffixes = tuple(lfs_suffixes)
        self.requests: list[tuple[str, str]] = []
        self.errors: list[str] = []  # tracebacks of unexpected server-side exceptions (answered with a 500)
        self._repos: dict[str, _Repo] = {}
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def endpoint(self) -> str:
        """Base URL to pass as ``endpoint=`` to ``HfApi`` / ``hf_hub_download``."""
        if self._server is None:
            raise RuntimeError("FakeHub is not running; use it as a context manager or call start().")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeHub:
        """Bind an ephemeral port on 127.0.0.1 and serve in a daemon thread."""
        if self._server is None:
            self._server = _Server(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakehub", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None
            self._thread = None

    def __enter__(self) -> FakeHub:
        """Start the server."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the server."""
        self.stop()

    # ------------------------------------------------------------------ test-side API

    def create_repo(self, repo_id: str, private: bool = False, exist_ok: bool = True) -> None:
        """Create an empty repo whose ``main`` branch points at an empty "initial commit"."""
        with self._lock:
            if repo_id in self._repos:
                if not exist_ok:
                    raise ValueError(f"repo {repo_id} already exists")
                return
            now = datetime.now(UTC)
            repo = _Repo(repo_id=repo_id, private=private, created_at=now)
            self._repos[repo_id] = repo
            self._commit(repo, {}, (), branch="main", message="initial commit", date=now)

    def add_commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        branch: str = "main",
        message: str = "",
        date: datetime | None = None,
        *,
        deleted: Iterable[str] = (),
        private: bool | None = None,
    ) -> str:
        """Commit ``files`` (added/overwritten) on top of ``branch`` and return the 40-hex commit sha.

        The repo is created if needed (public unless ``private=True``); a new branch forks from ``main``.
        ``date`` (default: now; naive = UTC) becomes the ``lastCommit.date`` of every file changed here.
        """
        with self._lock:
            if repo_id not in self._repos:
                self.create_repo(repo_id, private=bool(private))
            repo = self._repos[repo_id]
            if private is not None:
                repo.private = private
            return self._commit(
                repo, dict(files), tuple(deleted), branch=branch, message=message or "Update files", date=date
            )

    def create_tag(self, repo_id: str, tag: str, commit: str) -> None:
        """Point ``tag`` at ``commit`` (a full sha, branch or existing tag)."""
        with self._lock:
            repo = self._repos[repo_id]
            repo.tags[tag] = self._resolve(repo, commit).commit.sha

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Full tree (path -> content) of ``repo_id`` at ``revision``."""
        with self._lock:
            snapshot = self._resolve(self._repos[repo_id], revision)
            return {path: blob.data for path, blob in snapshot.tree.items()}

    def commits(self, repo_id: str) -> list[FakeCommit]:
        """All commits of the repo (all branches), newest first (in creation order, not by ``date``)."""
        with self._lock:
            snapshots = sorted(self._repos[repo_id].snapshots.values(), key=lambda s: s.seq, reverse=True)
            return [s.commit for s in snapshots]

    def head(self, repo_id: str, branch: str = "main") -> str:
        """Commit sha ``branch`` currently points to."""
        with self._lock:
            return self._repos[repo_id].branches[branch]

    # ------------------------------------------------------------------ internals

    def _commit(
        self,
        repo: _Repo,
        files: dict[str, bytes],
        deleted: tuple[str, ...],
        *,
        branch: str,
        message: str,
        date: datetime | None,
    ) -> str:
        """Create a commit on ``branch`` (caller holds the lock)."""
        date = date or datetime.now(UTC)
        if date.tzinfo is None:
            date = date.replace(tzinfo=UTC)
        parent = repo.branches.get(branch) or repo.branches.get("main")
        tree = dict(repo.snapshots[parent].tree) if parent else {}
        for path in deleted:
            prefix = path.rstrip("/") + "/"
            for existing in [p for p in tree if p == path or p.startswith(prefix)]:
                del tree[existing]
        seq = next(self._counter)
        seed = json.dumps([repo.repo_id, branch, parent, message, _iso(date), seq, sorted(files)]).encode()
        digest = hashlib.sha1(seed + b"".join(files[p] for p in sorted(files)))
        sha = digest.hexdigest()
        for path, data in files.items():
            tree[path] = _Blob(data=bytes(data), commit=sha, lfs=path.endswith(self.lfs_suffixes))
        commit = FakeCommit(
            sha=sha,
            repo_id=repo.repo_id,
            branch=branch,
            message=message,
            date=date,
            parent=parent,
            files={p: bytes(d) for p, d in files.items()},
            deleted=deleted,
        )
        repo.snapshots[sha] = _Snapshot(commit=commit, tree=tree, seq=seq)
        repo.branches[branch] = sha
        return sha

    def _resolve(self, repo: _Repo, revision: str) -> _Snapshot:
        """Resolve a branch, tag or full commit sha (``refs/heads/x`` / ``refs/tags/x`` accepted too)."""
        for name in (revision, revision.removeprefix("refs/heads/")):
            if name in repo.branches:
                return repo.snapshots[repo.branches[name]]
        for name in (revision, revision.removeprefix("refs/tags/")):
            if name in repo.tags:
                return repo.snapshots[repo.tags[name]]
        if revision in repo.snapshots:
            return repo.snapshots[revision]
        raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _authorized(self, authorization: str | None) -> bool:
        """Whether the request carries the configured token (always true when no token is configured)."""
        return self.token is None or authorization == f"Bearer {self.token}"

    def _readable_repo(self, repo_id: str, authorization: str | None) -> _Repo:
        """Look up a repo for reading, enforcing privacy."""
        repo = self._repos.get(repo_id)
        if repo is None:
            raise _HttpError(404, "Repository not found", "RepoNotFound")
        if repo.private and not self._authorized(authorization):
            raise _HttpError(401, "Invalid username or password.", "RepoNotFound")
        return repo

    def _check_write(self, authorization: str | None) -> None:
        """Reject writes without the configured token."""
        if not self._authorized(authorization):
            raise _HttpError(401, "Invalid credentials in Authorization header")

    def _split_repo(self, segments: list[str]) -> tuple[str, list[str]]:
        """Split URL segments into (repo_id, rest), preferring repos that exist, then ``namespace/name``."""
        two, one = "/".join(segments[:2]), segments[0] if segments else ""
        if len(segments) >= 2 and two in self._repos:
            return two, segments[2:]
        if one in self._repos:
            return one, segments[1:]
        if len(segments) >= 2 and segments[1] not in _RESERVED:
            return two, segments[2:]
        return one, segments[1:]

    # ------------------------------------------------------------------ routes

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Route one request; returns (status, headers, body). Raises ``_HttpError`` for Hub-style errors."""
        segments = [unquote(s) for s in path.strip("/").split("/")]
        auth = headers.get("authorization")
        with self._lock:
            if segments[:2] == ["api", "whoami-v2"] and method == "GET":
                if self.token is not None and not self._authorized(auth):
                    raise _HttpError(401, "Invalid credentials in Authorization header")
                return _json({"type": "user", "name": self.username, "fullname": self.username, "orgs": []})
            if segments[:2] == ["api", "validate-yaml"] and method == "POST":
                # Model-card metadata check before an upload: accept any YAML front matter.
                return _json({"errors": [], "warnings": []})
            if segments[:3] == ["api", "repos", "create"] and method == "POST":
                self._check_write(auth)
                return self._create_repo_route(json.loads(body or b"{}"))
            if segments[:2] == ["api", "models"] and len(segments) >= 3:
                repo_id, rest = self._split_repo(segments[2:])
                return self._api_route(method, repo_id, rest, query, auth, body)
            if (
                len(segments) >= 4
                and segments[0] not in ("api", "datasets", "spaces")
                and method in ("GET", "HEAD")
            ):
                repo_id, rest = self._split_repo(segments)
                if len(rest) >= 3 and rest[0] == "resolve":
                    return self._resolve_route(method, repo_id, rest[1], "/".join(rest[2:]), auth, headers)
            if segments[0] in ("datasets", "spaces") or segments[:2] in (
                ["api", "datasets"],
                ["api", "spaces"],
            ):
                raise _HttpError(404, "FakeHub only serves model repos", "RepoNotFound")
        raise _HttpError(501, f"FakeHub does not implement {method} {path}")

    def _create_repo_route(self, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        """``POST /api/repos/create``."""
        if payload.get("type") not in (None, "model"):
            raise _HttpError(400, "FakeHub only supports model repos")
        repo_id = f"{payload.get('organization') or self.username}/{payload['name']}"
        url = f"{self.endpoint}/{repo_id}"
        if repo_id in self._repos:
            return _json({"error": "You already created this model repo", "url": url}, status=409)
        self.create_repo(
            repo_id, private=payload.get("visibility") == "private" or payload.get("private") is True
        )
        return _json({"url": url, "name": repo_id, "id": repo_id})

    def _api_route(
        self,
        method: str,
        repo_id: str,
        rest: list[str],
        query: dict[str, list[str]],
        auth: str | None,
        body: bytes,
    ) -> tuple[int, dict[str, str], bytes]:
        """``/api/models/{repo}/...`` routes."""
        if method == "POST" and len(rest) == 2 and rest[0] in ("preupload", "commit"):
            self._check_write(auth)
            repo = self._readable_repo(repo_id, auth)
            if rest[0] == "preupload":
                return self._preupload_route(repo, rest[1], json.loads(body or b"{}"))
            return self._commit_route(repo, rest[1], body)
        if method != "GET":
            raise _HttpError(
                501, f"FakeHub does not implement {method} /api/models/{repo_id}/{'/'.join(rest)}"
            )
        repo = self._readable_repo(repo_id, auth)
        if not rest or (len(rest) == 2 and rest[0] == "revision"):
            snapshot = self._resolve(repo, rest[1] if rest else "main")
            return _json(self._model_info(repo, snapshot, blobs=_flag(query, "blobs")))
        if len(rest) >= 2 and rest[0] == "tree":
            snapshot = self._resolve(repo, rest[1])
            entries = self._tree(
                snapshot, repo, "/".join(rest[2:]), _flag(query, "recursive"), _flag(query, "expand")
            )
            return _json(entries)
        raise _HttpError(501, f"FakeHub does not implement GET /api/models/{repo_id}/{'/'.join(rest)}")

    def _model_info(self, repo: _Repo, snapshot: _Snapshot, blobs: bool) -> dict[str, Any]:
        """JSON body of ``model_info``."""
        siblings: list[dict[str, Any]] = []
        for path in sorted(snapshot.tree):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                blob = snapshot.tree[path]
                sibling.update(size=len(blob.data), blobId=blob.git_oid)
                if blob.lfs:
                    sibling["lfs"] = {
                        "sha256": blob.sha256,
                        "size": len(blob.data),
                        "pointerSize": len(blob.pointer),
                    }
            siblings.append(sibling)
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": snapshot.commit.sha,
            "lastModified": _iso(snapshot.commit.date),
            "createdAt": _iso(repo.created_at),
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "spaces": [],
            "usedStorage": sum(len(b.data) for b in snapshot.tree.values()),
        }

    def _last_commit(self, repo: _Repo, sha: str) -> dict[str, str]:
        """``lastCommit`` JSON for a commit."""
        commit = repo.snapshots[sha].commit
        return {"id": commit.sha, "title": commit.message, "date": _iso(commit.date)}

    def _tree(
        self, snapshot: _Snapshot, repo: _Repo, prefix: str, recursive: bool, expand: bool
    ) -> list[Any]:
        """JSON body of ``list_repo_tree`` for ``prefix`` (a folder; "" is the root)."""
        prefix = prefix.strip("/")
        base = prefix + "/" if prefix else ""
        under = sorted(p for p in snapshot.tree if p.startswith(base))
        if prefix and not under:
            raise _HttpError(404, f"Entry not found: {prefix}", "EntryNotFound")
        files: list[str] = []
        folders: set[str] = set()
        for path in under:
            parts = path[len(base) :].split("/")
            if recursive:
                files.append(path)
                folders.update(base + "/".join(parts[:i]) for i in range(1, len(parts)))
            elif len(parts) == 1:
                files.append(path)
            else:
                folders.add(base + parts[0])
        entries: list[dict[str, Any]] = []
        for folder in sorted(folders):
            content = sorted((p, b) for p, b in snapshot.tree.items() if p.startswith(folder + "/"))
            entry: dict[str, Any] = {
                "type": "directory",
                "oid": hashlib.sha1(repr([(p, b.git_oid) for p, b in content]).encode()).hexdigest(),
                "size": 0,
                "path": folder,
            }
            if expand:
                newest = max((b.commit for _, b in content), key=lambda s: repo.snapshots[s].seq)
                entry["lastCommit"] = self._last_commit(repo, newest)
            entries.append(entry)
        for path in files:
            blob = snapshot.tree[path]
            entry = {"type": "file", "oid": blob.git_oid, "size": len(blob.data), "path": path}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": len(blob.pointer)}
            if expand:
                entry["lastCommit"] = self._last_commit(repo, blob.commit)
            entries.append(entry)
        return entries

    def _preupload_route(
        self, repo: _Repo, revision: str, payload: dict[str, Any]
    ) -> tuple[int, dict[str, str], bytes]:
        """``POST .../preupload/{rev}``: every file is uploaded "regular" (inline base64 in the commit)."""
        tree = self._resolve(repo, revision).tree
        result = []
        for item in payload.get("files", []):
            existing = tree.get(item["path"])
            result.append(
                {
                    "path": item["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    # git blob id of the current content: lets the client skip unchanged files
                    "oid": _git_hash(existing.data) if existing is not None else None,
                }
            )
        return _json({"files": result, "commitOid": self._resolve(repo, revision).commit.sha})

    def _commit_route(self, repo: _Repo, revision: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """``POST .../commit/{rev}`` with an NDJSON body."""
        if revision not in repo.branches:
            self._resolve(repo, revision)  # 404 RevisionNotFound for unknown revisions
            raise _HttpError(400, f"Can only commit to a branch, not to {revision}")
        header: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        deleted: list[str] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise _HttpError(400, f"Unsupported encoding {value.get('encoding')}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                path = value["path"]
                tree = repo.snapshots[repo.branches[revision]].tree
                if key == "deletedFile" and path not in tree:
                    raise _HttpError(404, "A file with this name doesn't exist", "EntryNotFound")
                deleted.append(path)
            else:
                raise _HttpError(400, f"FakeHub does not support commit operation {key!r} (LFS/Xet uploads)")
        parent = header.get("parentCommit")
        if parent is not None and parent != repo.branches[revision]:
            raise _HttpError(412, "A commit has happened since. Please refresh and try again.")
        message = header.get("summary") or "Update files"
        sha = self._commit(repo, files, tuple(deleted), branch=revision, message=message, date=None)
        return _json(
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{self.endpoint}/{repo.repo_id}/commit/{sha}",
                "pullRequestUrl": None,
            }
        )

    def _resolve_route(
        self,
        method: str,
        repo_id: str,
        revision: str,
        path: str,
        auth: str | None,
        headers: Mapping[str, str],
    ) -> tuple[int, dict[str, str], bytes]:
        """``HEAD|GET /{repo}/resolve/{rev}/{path}``: served directly (no redirect, no Xet headers)."""
        repo = self._readable_repo(repo_id, auth)
        snapshot = self._resolve(repo, revision)
        commit_header = {"X-Repo-Commit": snapshot.commit.sha}
        blob = snapshot.tree.get(path)
        if blob is None:
            raise _HttpError(404, "Entry not found", "EntryNotFound", headers=commit_header)
        out = {
            **commit_header,
            "ETag": f'"{blob.etag}"',
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}";',
        }
        if blob.lfs:
            out["X-Linked-Etag"] = f'"{blob.sha256}"'
            out["X-Linked-Size"] = str(len(blob.data))
        data = blob.data
        status = 200
        range_header = headers.get("range")
        if method == "GET" and range_header and range_header.startswith("bytes="):
            start_s, _, end_s = range_header[len("bytes=") :].partition("-")
            start = int(start_s or 0)
            end = min(int(end_s), len(data) - 1) if end_s else len(data) - 1
            out["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        return status, out, data


def _flag(query: dict[str, list[str]], name: str) -> bool:
    """Whether a boolean query parameter is set (``true``/``1``/``True``)."""
    return any(v.lower() in ("1", "true") for v in query.get(name, []))


def _json(payload: Any, status: int = 200) -> tuple[int, dict[str, str], bytes]:
    """A JSON response triple."""
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


class _Server(ThreadingHTTPServer):
    """HTTP server bound to 127.0.0.1 on an ephemeral port, holding a reference to its FakeHub."""

    daemon_threads = True

    def __init__(self, hub: FakeHub) -> None:
        """Bind 127.0.0.1:0."""
        self.hub = hub
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Translate HTTP requests into ``FakeHub.handle`` calls."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        """Handle GET."""
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        """Handle HEAD."""
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        """Handle POST."""
        self._dispatch("POST")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def _read_body(self) -> bytes:
        """Read the request body (Content-Length or chunked)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self, method: str) -> None:
        """Run the hub's router and write the response."""
        hub = cast(_Server, self.server).hub
        url = urlsplit(self.path)
        with hub._lock:
            hub.requests.append((method, url.path))
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, out_headers, payload = hub.handle(method, url.path, parse_qs(url.query), headers, body)
        except _HttpError as err:
            status, out_headers, payload = _json({"error": err.message}, status=err.status)
            out_headers.update(err.headers)
            out_headers["X-Error-Message"] = err.message
            if err.code is not None:
                out_headers["X-Error-Code"] = err.code
        except Exception:
            tb = traceback.format_exc()
            with hub._lock:
                hub.errors.append(tb)
            status, out_headers, payload = _json({"error": tb}, status=500)
        self.send_response(status)
        for key, value in out_headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)
