"""The real ``huggingface_hub`` client against ``tests/fakehub.py``: mocked at the HTTP boundary only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from tests.fakehub import FakeHub

REPO = "acme/sentiment-fasttext"
MODEL = b"__label__pos\x00\x01\x02\xff fake fasttext model bytes"
FIRST_DATE = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
SECOND_DATE = datetime(2024, 6, 7, 8, 9, 10, tzinfo=UTC)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    """A running fake hub with two commits on main and a tag on the first one."""
    with FakeHub() as fake:
        fake.add_commit(
            REPO,
            {"model.ftz": MODEL, "metrics.json": b'{"f1": 0.81}', "eval/report.txt": b"ok"},
            message="Train v1",
            date=FIRST_DATE,
        )
        fake.add_commit(REPO, {"metrics.json": b'{"f1": 0.84}'}, message="Better metrics", date=SECOND_DATE)
        first = fake.commits(REPO)[1].sha
        fake.create_tag(REPO, "v1", first)
        yield fake


@pytest.fixture
def api(hub: FakeHub) -> HfApi:
    """Client pointed at the fake hub; ``token=False`` so no locally saved token is ever sent."""
    return HfApi(endpoint=hub.endpoint, token=False)


def _run_python(code: str, env: dict[str, str]) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter (the hub client reads env vars at import); parse its JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_repo_info_resolves_branch_tag_and_full_sha(hub: FakeHub, api: HfApi) -> None:
    second, first = (c.sha for c in hub.commits(REPO)[:2])
    assert len(first) == 40 and all(ch in "0123456789abcdef" for ch in first)
    assert api.repo_info(REPO).sha == second
    assert api.repo_info(REPO, revision="main").sha == second
    assert api.model_info(REPO, revision="v1").sha == first
    assert api.repo_info(REPO, revision=first).sha == first
    info = api.model_info(REPO, revision="v1", files_metadata=True)
    assert info.siblings is not None
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {"model.ftz", "metrics.json", "eval/report.txt"}
    assert siblings["model.ftz"].lfs is not None and siblings["model.ftz"].size == len(MODEL)
    with pytest.raises(RevisionNotFoundError):
        api.repo_info(REPO, revision="no-such-branch")


def test_list_repo_tree_expand_gives_last_commit_and_lfs_info(hub: FakeHub, api: HfApi) -> None:
    entries = {e.path: e for e in api.list_repo_tree(REPO, revision="main", expand=True)}
    assert set(entries) == {"model.ftz", "metrics.json", "eval"}
    model, metrics, folder = entries["model.ftz"], entries["metrics.json"], entries["eval"]
    assert isinstance(model, RepoFile) and isinstance(metrics, RepoFile) and isinstance(folder, RepoFolder)
    assert model.last_commit is not None and model.last_commit.date == FIRST_DATE
    assert model.last_commit.title == "Train v1"
    assert metrics.last_commit is not None and metrics.last_commit.date == SECOND_DATE
    assert metrics.last_commit.oid == hub.head(REPO)
    assert folder.last_commit is not None and folder.last_commit.date == FIRST_DATE
    assert model.lfs is not None and model.lfs.size == len(MODEL) and len(model.lfs.sha256) == 64
    assert metrics.lfs is None
    # At the tag, metrics.json was last changed by the first commit.
    at_tag = {e.path: e for e in api.list_repo_tree(REPO, revision="v1", expand=True)}
    assert at_tag["metrics.json"].last_commit is not None
    assert at_tag["metrics.json"].last_commit.date == FIRST_DATE
    assert sorted(api.list_repo_files(REPO)) == ["eval/report.txt", "metrics.json", "model.ftz"]


@pytest.mark.parametrize("revision", ["main", "v1", "sha"])
def test_hf_hub_download_branch_tag_and_sha(hub: FakeHub, tmp_path: Path, revision: str) -> None:
    expected_sha = hub.head(REPO) if revision == "main" else hub.commits(REPO)[1].sha
    rev = expected_sha if revision == "sha" else revision
    path = hf_hub_download(
        REPO, "metrics.json", revision=rev, cache_dir=tmp_path, endpoint=hub.endpoint, token=False
    )
    assert Path(path).read_bytes() == hub.files(REPO, expected_sha)["metrics.json"]
    assert Path(path).parent.name == expected_sha and Path(path).parent.parent.name == "snapshots"


def test_download_then_offline_cache_hit_without_any_request(hub: FakeHub, tmp_path: Path) -> None:
    cache = tmp_path / "hub-cache"
    path = hf_hub_download(
        REPO, "model.ftz", revision="main", cache_dir=cache, endpoint=hub.endpoint, token=False
    )
    head = hub.head(REPO)
    assert Path(path).read_bytes() == MODEL
    assert Path(path).is_relative_to(cache / "models--acme--sentiment-fasttext" / "snapshots" / head)
    # Plain HTTP download: HEAD for metadata, then GET of /resolve; no Xet token / CAS traffic.
    assert hub.requests == [
        ("HEAD", f"/{REPO}/resolve/main/model.ftz"),
        ("GET", f"/{REPO}/resolve/main/model.ftz"),
    ]

    n_requests = len(hub.requests)
    result = _run_python(
        f"""
        import json
        from huggingface_hub import hf_hub_download, scan_cache_dir
        path = hf_hub_download({REPO!r}, "model.ftz", revision="main")
        info = scan_cache_dir({str(cache)!r})
        files = sorted(
            (repo.repo_id, rev.commit_hash, f.file_name, sorted(rev.refs))
            for repo in info.repos for rev in repo.revisions for f in rev.files
        )
        print(json.dumps({{"path": path, "content": open(path, "rb").read().hex(), "files": files}}))
        """,
        # HF_ENDPOINT points at the fake hub, so any request the client made would be logged by it.
        env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_ENDPOINT": hub.endpoint},
    )
    assert result["path"] == path
    assert bytes.fromhex(str(result["content"])) == MODEL
    assert result["files"] == [[REPO, head, "model.ftz", ["main"]]]
    assert len(hub.requests) == n_requests


def test_hf_endpoint_env_var_works_in_fresh_interpreter(hub: FakeHub, tmp_path: Path) -> None:
    result = _run_python(
        f"""
        import json
        from huggingface_hub import hf_hub_download
        path = hf_hub_download({REPO!r}, "metrics.json", token=False)
        print(json.dumps({{"content": open(path).read()}}))
        """,
        env={"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "0"},
    )
    assert result["content"] == '{"f1": 0.84}'
    assert ("GET", f"/{REPO}/resolve/main/metrics.json") in hub.requests


def test_upload_folder_creates_byte_identical_commit(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    repo = "acme/uploaded"
    api.create_repo(repo, exist_ok=True)
    api.create_repo(repo, exist_ok=True)  # second call: 409 swallowed by exist_ok
    folder = tmp_path / "artifacts"
    folder.mkdir()
    model = bytes(range(256)) * 4 + b"\x00\xff"
    (folder / "model.ftz").write_bytes(model)
    (folder / "metrics.json").write_bytes(b'{"f1": 0.9, "name": "caf\xc3\xa9"}')

    info = api.upload_folder(repo_id=repo, folder_path=folder, commit_message="Upload model")
    assert info.oid == hub.head(repo) == api.repo_info(repo).sha
    assert hub.commits(repo)[0].message == "Upload model"
    assert hub.files(repo) == {"model.ftz": model, "metrics.json": (folder / "metrics.json").read_bytes()}

    # create_commit on top of it, then read back through the download path.
    info2 = api.create_commit(
        repo, [CommitOperationAdd("extra/notes.txt", b"hello")], commit_message="Add notes"
    )
    assert [c.sha for c in hub.commits(repo)[:2]] == [info2.oid, info.oid]
    assert set(hub.files(repo)) == {"model.ftz", "metrics.json", "extra/notes.txt"}
    path = hf_hub_download(repo, "model.ftz", cache_dir=tmp_path / "c", endpoint=hub.endpoint, token=False)
    assert Path(path).read_bytes() == model
    assert not any("xet" in p or "lfs" in p for _, p in hub.requests)
    assert hub.errors == []


def test_unknown_repo_revision_and_file(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info("acme/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/does-not-exist", "x", cache_dir=tmp_path, endpoint=hub.endpoint, token=False)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(
            REPO, "model.ftz", revision="nope", cache_dir=tmp_path, endpoint=hub.endpoint, token=False
        )
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.bin", cache_dir=tmp_path, endpoint=hub.endpoint, token=False)


def test_private_repo_needs_token(tmp_path: Path) -> None:
    with FakeHub(token="hf_secret") as hub:
        hub.add_commit("acme/private", {"model.ftz": MODEL}, private=True)
        hub.add_commit("acme/public", {"model.ftz": MODEL})
        anonymous = HfApi(endpoint=hub.endpoint, token=False)
        with pytest.raises(RepositoryNotFoundError):
            anonymous.repo_info("acme/private")
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(
                "acme/private", "model.ftz", cache_dir=tmp_path, endpoint=hub.endpoint, token=False
            )
        assert anonymous.repo_info("acme/public").sha == hub.head("acme/public")

        authed = HfApi(endpoint=hub.endpoint, token="hf_secret")
        assert authed.repo_info("acme/private").private is True
        path = hf_hub_download(
            "acme/private", "model.ftz", cache_dir=tmp_path, endpoint=hub.endpoint, token="hf_secret"
        )
        assert Path(path).read_bytes() == MODEL
