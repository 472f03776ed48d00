"""Read and validate a fastText model file (``.bin``/``.ftz``) in-process, without fastText.

fastText's loader trusts the file: a truncated or corrupt one can crash the process or load with garbage.
This reader checks every size against the bytes that are there (format: fastText's ``src/fasttext.cc``,
``args.cc``, ``dictionary.cc``, ``densematrix.cc``, ``quantmatrix.cc``, ``productquantizer.cc``), so a
file it accepts is complete: nothing missing, nothing after the output matrix. Any shortfall or
inconsistency is a :class:`ModelLoadError` naming what is wrong, never a crash.

A complete file the scorer cannot reproduce exactly (char n-grams, hierarchical softmax or negative
sampling, a quantized output matrix, non-finite weights, a table too large to copy) raises
:class:`UnsupportedModelError` *after* the whole file was checked: fastText may then load it safely.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from schemas import LABELS
from sentiment_model.errors import ModelLoadError

LABEL_PREFIX: Final = "__label__"
EOS: Final = "</s>"

_MAGIC = 793712314
_VERSIONS = frozenset({11, 12})
_LOSS_SOFTMAX, _LOSS_OVA = 3, 4
_MODEL_SUPERVISED = 3
_KSUB = 256
#: A dequantized/dense input table above this is not copied (the published one is 3.6 MB).
_MAX_TABLE_BYTES = 512 << 20
#: The bucket -> row map of a pruned file takes 4 bytes per bucket (fastText's default is 2,000,000).
_MAX_BUCKETS = 1 << 26

Loss = Literal["ova", "softmax"]


class UnsupportedModelError(Exception):
    """A complete fastText file the scorer cannot reproduce exactly; ``str(error)`` says why."""


@dataclass(frozen=True, slots=True)
class ModelFile:
    """A complete word-only supervised model with the three sentiment labels, as the scorer needs it.

    ``table`` is the input matrix (dequantized), ``output`` the output matrix (file order, ``labels``
    order); ``bucket_rows`` the bucket -> input row map of a quantized, pruned file (-1: pruned; None
    when every bucket has its row ``nwords + bucket``).
    """

    words: list[bytes]
    labels: list[bytes]
    table: npt.NDArray[np.float32]
    output: npt.NDArray[np.float32]
    loss: Loss
    word_ngrams: int
    bucket: int
    bucket_rows: npt.NDArray[np.int32] | None


class _Reader:
    """Sequential little-endian reads from the file bytes; every shortfall is a ModelLoadError."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, size: int, what: str) -> int:
        if size < 0 or self.pos + size > len(self.data):
            raise ModelLoadError(
                f"model file {self.path} is truncated or corrupt: {what} needs {size} bytes at offset "
                f"{self.pos}, the file has {len(self.data)}"
            )
        start = self.pos
        self.pos += size
        return start

    def unpack(self, fmt: str, what: str) -> tuple[int | float | bool, ...]:
        start = self.take(struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.data, start)

    def int32(self, what: str) -> int:
        return int(self.unpack("<i", what)[0])

    def int64(self, what: str) -> int:
        return int(self.unpack("<q", what)[0])

    def flag(self, what: str) -> bool:
        return bool(self.unpack("<?", what)[0])

    def array(self, dtype: type[np.generic], count: int, what: str) -> npt.NDArray[np.generic]:
        size = np.dtype(dtype).itemsize * count
        start = self.take(size, what)
        return np.frombuffer(self.data, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=start)

    def entries(self, count: int, what: str) -> tuple[list[bytes], bytes]:
        """``count`` dictionary entries (a NUL-ended word, an int64 count, an int8 type): the words, and
        the types as bytes. One loop without struct calls: the published model has 66,000 entries."""
        data, find, pos, end_of_data = self.data, self.data.find, self.pos, len(self.data)
        words: list[bytes] = []
        kinds = bytearray()
        for _ in range(count):
            end = find(b"\0", pos)
            if end < 0 or end + 10 > end_of_data:
                self.pos = pos
                raise ModelLoadError(f"model file {self.path} is truncated or corrupt: {what} never ends")
            words.append(data[pos:end])
            kinds.append(data[end + 9])
            pos = end + 10
        self.pos = pos
        return words, bytes(kinds)


def _corrupt(path: Path, detail: str) -> ModelLoadError:
    return ModelLoadError(f"model file {path} is corrupt: {detail}")


def _read_matrix(
    reader: _Reader, quantized: bool, path: Path, what: str, declines: list[str]
) -> npt.NDArray[np.float32] | None:
    """A dense or product-quantized matrix as a float32 ``(rows, dim)`` array of fastText's values;
    None (its bytes checked and skipped, the reason in ``declines``) when too large to copy."""
    if not quantized:
        rows, dim = reader.int64(f"{what} rows"), reader.int64(f"{what} dim")
        if rows < 0 or dim <= 0:
            raise _corrupt(path, f"{what} is {rows} x {dim}")
        if rows * dim * 4 > _MAX_TABLE_BYTES:
            reader.take(rows * dim * 4, what)
            declines.append(f"{what} is {rows} x {dim}, too large to copy")
            return None
        values = reader.array(np.float32, rows * dim, what)
        return values.astype(np.float32).reshape(rows, dim)  # a native copy: the file's bytes can go
    qnorm = reader.flag(f"{what} qnorm")
    rows, dim = reader.int64(f"{what} rows"), reader.int64(f"{what} dim")
    codesize = reader.int32(f"{what} code size")
    if rows < 0 or dim <= 0:
        raise _corrupt(path, f"{what} is {rows} x {dim}")
    codes = reader.array(np.uint8, codesize, f"{what} codes")
    pq_dim, nsubq, dsub, lastdsub = (reader.int32(f"{what} quantizer header") for _ in range(4))
    if pq_dim != dim or dsub <= 0 or nsubq != -(-dim // dsub) or lastdsub != (dim % dsub or dsub):
        raise _corrupt(path, f"{what} quantizer {pq_dim}/{nsubq}/{dsub}/{lastdsub} does not fit dim {dim}")
    if codesize != rows * nsubq:
        raise _corrupt(path, f"{what} holds {codesize} codes for {rows} rows of {nsubq}")
    centroids = reader.array(np.float32, dim * _KSUB, f"{what} centroids")
    norm_codes = norms = None
    if qnorm:
        norm_codes = reader.array(np.uint8, rows, f"{what} norm codes")
        npq = tuple(reader.int32(f"{what} norm quantizer header") for _ in range(4))
        if npq != (1, 1, 1, 1):
            raise _corrupt(path, f"{what} norm quantizer header {npq}")
        norms = np.asarray(reader.array(np.float32, _KSUB, f"{what} norm centroids"), dtype=np.float32)
    if rows * dim * 4 > _MAX_TABLE_BYTES:
        declines.append(f"{what} is {rows} x {dim}, too large to dequantize")
        return None
    table = np.empty((rows, dim), dtype=np.float32)
    code_matrix = codes.reshape(rows, nsubq)
    for m in range(nsubq):  # productquantizer.cc get_centroids: the last sub-quantizer may be narrower
        width = lastdsub if m == nsubq - 1 else dsub
        # Sub-quantizer m's 256 centroids of `width` values; the uint8 codes index them directly (no
        # int64 copy of the codes: the peak RSS of a load is what a pod must be sized for).
        block = centroids[m * _KSUB * dsub : m * _KSUB * dsub + _KSUB * width].reshape(_KSUB, width)
        table[:, m * dsub : m * dsub + width] = block[code_matrix[:, m]]
    if norm_codes is not None and norms is not None:
        # addcode adds alpha * c in float32: the same product, formed once here.
        table *= norms[norm_codes][:, None]
    return table


def read_model_file(path: Path | str) -> ModelFile:
    """Read and check ``path``; :class:`ModelLoadError` if it is not a complete fastText model with the
    three sentiment labels, :class:`UnsupportedModelError` if it is one the scorer cannot reproduce."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc}") from exc
    try:
        return _parse(data, path)
    except (ModelLoadError, UnsupportedModelError):
        raise
    except (ValueError, IndexError, OverflowError, MemoryError, UnicodeError, struct.error) as exc:
        raise _corrupt(path, f"{type(exc).__name__}: {exc}") from exc


def _parse(data: bytes, path: Path) -> ModelFile:
    reader = _Reader(data, path)
    if len(data) < 8 or reader.int32("magic") != _MAGIC:
        raise ModelLoadError(f"model file {path} is not a fastText model (wrong magic number)")
    version = reader.int32("version")
    if version not in _VERSIONS:
        raise ModelLoadError(f"model file {path} has fastText file version {version} (known: 11, 12)")
    dim, _ws, _epoch, _min_count, _neg, word_ngrams, loss, model = (
        reader.int32("arguments") for _ in range(8)
    )
    bucket, minn, maxn, _lr_update = (reader.int32("arguments") for _ in range(4))
    reader.unpack("<d", "arguments")
    if version == 11 and model == _MODEL_SUPERVISED:
        maxn = 0  # fasttext.cc: old supervised models never used char n-grams
    if model != _MODEL_SUPERVISED:
        raise ModelLoadError(f"model file {path} is not a classifier (fastText model kind {model})")
    if dim <= 0:
        raise _corrupt(path, f"dim {dim}")
    declines: list[str] = []
    if loss not in (_LOSS_OVA, _LOSS_SOFTMAX):
        declines.append(f"loss {loss} (only softmax=3 and ova=4 are reproduced)")
    if maxn > 0:
        declines.append(f"char n-grams (minn={minn}, maxn={maxn})")
    if word_ngrams > 1 and not 0 < bucket <= _MAX_BUCKETS:
        declines.append(f"word n-grams with bucket={bucket}")

    size, nwords, nlabels = (reader.int32("dictionary header") for _ in range(3))
    reader.int64("dictionary token count")
    prune_size = reader.int64("dictionary prune index size")
    if min(nwords, nlabels) < 0 or size != nwords + nlabels or prune_size < -1:
        raise _corrupt(path, f"dictionary header {size}/{nwords}/{nlabels}/{prune_size}")
    entries, kinds = reader.entries(size, "a dictionary entry")
    if kinds != bytes(nwords) + b"\1" * nlabels:
        i = next(i for i, kind in enumerate(kinds) if kind != (0 if i < nwords else 1))
        raise _corrupt(path, f"dictionary entry {i} has type {kinds[i]}")
    words, labels = entries[:nwords], entries[nwords:]
    pairs: npt.NDArray[np.int32] | None = None
    if prune_size >= 0:
        pairs = np.asarray(reader.array(np.int32, 2 * prune_size, "prune index"), dtype=np.int32).reshape(
            -1, 2
        )
    quantized = reader.flag("input quantization flag")
    table = _read_matrix(reader, quantized, path, "input matrix", declines)
    quantized_output = reader.flag("output quantization flag")
    if quantized and quantized_output:
        declines.append("quantized output matrix (qout)")
    output = _read_matrix(reader, quantized and quantized_output, path, "output matrix", declines)
    if reader.pos != len(data):
        raise _corrupt(path, f"{len(data) - reader.pos} bytes after the output matrix")

    if not quantized and prune_size >= 0:
        raise _corrupt(path, "a pruned dictionary with a dense input matrix")
    if table is not None:
        # fastText sizes the input matrix nwords + bucket, or nwords + kept buckets once pruned.
        with_ngrams = word_ngrams > 1 or maxn > 0
        expected_rows = nwords + (bucket if prune_size < 0 else prune_size) if with_ngrams else None
        if table.shape[1] != dim or (expected_rows is not None and table.shape[0] != expected_rows):
            raise _corrupt(path, f"input matrix {table.shape} for {nwords} words, dim {dim}")
        if table.shape[0] < nwords:
            raise _corrupt(path, f"input matrix has {table.shape[0]} rows for {nwords} words")
        if (
            pairs is not None
            and pairs.size
            and not 0 <= int(pairs[:, 1].min()) <= int(pairs[:, 1].max()) < (table.shape[0] - nwords)
        ):
            raise _corrupt(path, "prune index points outside the input matrix")
    if output is not None and output.shape != (nlabels, dim):
        raise _corrupt(path, f"output matrix {output.shape}, expected ({nlabels}, {dim})")
    if sorted(labels) != sorted((LABEL_PREFIX + label).encode() for label in LABELS):
        found = sorted(label.decode("utf-8", "replace") for label in labels)
        raise ModelLoadError(f"model file {path} has labels {found}, expected {list(LABELS)}")
    if (
        table is not None
        and output is not None
        and not (np.isfinite(table).all() and np.isfinite(output).all())
    ):
        declines.append("non-finite weights")
    if declines or table is None or output is None:
        raise UnsupportedModelError("; ".join(declines))
    bucket_rows = None
    if pairs is not None and word_ngrams > 1:
        bucket_rows = np.full(bucket, -1, dtype=np.int32)
        keys = pairs[:, 0]
        kept = np.flatnonzero((keys >= 0) & (keys < bucket))
        bucket_rows[keys[kept]] = nwords + pairs[kept, 1]
        if (
            int(np.count_nonzero(bucket_rows >= 0)) != kept.size
        ):  # a repeated key: unordered_map keeps its last
            _, last = np.unique(keys[kept][::-1], return_index=True)
            kept = kept[::-1][last]
            bucket_rows[:] = -1
            bucket_rows[keys[kept]] = nwords + pairs[kept, 1]
    return ModelFile(
        words=words,
        labels=labels,
        table=table,
        output=output,
        loss="ova" if loss == _LOSS_OVA else "softmax",
        word_ngrams=max(word_ngrams, 1),
        bucket=bucket,
        bucket_rows=bucket_rows,
    )
