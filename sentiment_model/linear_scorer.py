"""Score a word-only linear fastText model in C and numpy, a whole batch at a time, exactly as fastText does.

fastText's ``predict`` holds the GIL and builds Python objects per row; for the published model (word
tokens plus word bigrams, projected to 3 dims, quantized) a text's scores are only ``output @ mean(rows)``
followed by a sigmoid (``loss=ova``) or a softmax. This module reads the ``.ftz``/``.bin`` file itself
(format: fastText's ``src/fasttext.cc``, ``args.cc``, ``dictionary.cc``, ``densematrix.cc``,
``quantmatrix.cc``, ``productquantizer.cc``) and reproduces fastText's arithmetic bit for bit, so
probabilities agree to float32 rounding (1e-7) and labels always agree:

* tokens: split on fastText's separators (space, ``\\t \\n \\v \\f \\r \\0``), then ``</s>``; a line
  ends at the first newline or literal ``</s>`` token; tokens starting with ``__label__`` are labels and
  are ignored; words outside the vocabulary add no row but their hash still feeds the word n-grams;
* hashes: FNV-1a over the token's UTF-8 bytes read as *signed* chars (uint32); n-gram hash
  ``h = h * 116049371 + next`` over the word hashes sign-extended to uint64, ``% bucket``; a quantized
  file keeps only the buckets in its prune index;
* rows are summed in fastText's order (words, then n-grams ``(i, i+1..i+n-1)``) in float32, multiplied
  by ``float32(1 / rows)``, dotted with each output row sequentially in float32; ``ova`` uses fastText's
  512-entry sigmoid table over [-8, 8] (a step of 1/32: an exact logit picks the same entry), and the
  result goes through fastText's ``exp(log(p + 1e-5))``. A text with no row gets no prediction (zeros).

Anything it cannot reproduce exactly (char n-grams, hierarchical softmax or negative sampling, a
quantized output matrix, an unknown version, a table too large to hold) raises
:class:`UnsupportedModelError` and the caller keeps using fastText.

The per-token loop (tokenise, hash, look up, sum the rows) runs in a small C extension,
``sentiment_model/_fastlinear.c``, when it is built (``LinearScorer.kernel == "c"``; the package build
compiles it), else in numpy (``"numpy"``): both give the same float32 sums bit for bit (the tests hold
them to it); the C loop releases the GIL. Everything after the sums (scale, output matrix, sigmoid or
softmax) is the same numpy code for both.

Measured (``python -m bench.scorer_bench --model-path <published-recipe .ftz>``: 2,000 normalised
TweetEval lines per call through ``Predictor.predict_normalized``, the C kernel, the numpy kernel and
fastText in turn in one process, 30 rounds; a 2-core machine shared with other agents, load average
1.5-1.8, so figures are noisy; process CPU time per record, best / median):

* val lines, four runs: C 1.62-2.42 / 1.82-2.60 µs, numpy 6.14-8.86 / 6.91-9.85, fastText
  11.5-20.5 / 13.7-22.6 (C / fastText 0.12-0.14 in every run, C / numpy about 0.27);
* train lines: C 1.64 / 2.03 µs, numpy 6.38 / 7.31, fastText 13.2 / 15.6 (0.12);
* the tests' recipe-shaped model (trained by the bench without ``--model-path``): C 1.65 / 1.87,
  numpy 6.67 / 8.07, fastText 10.4 / 13.7.

(fastText's figure includes the per-row repacking that ``Predictor.predict_normalized_fasttext`` has
always done.) Of the C kernel's ~1.7 µs, ~1.3 is the loop itself (about half of it cache misses into the
vocabulary, prune map and rows: 0.57 µs/line with every table in cache) and ~0.4 the numpy steps after
it. The numpy kernel stays as the fallback: about 60 numpy passes over token-sized arrays (find tokens,
pack, probe, hash unknown words, n-grams, place rows, gather, sum), a few ns per token each, plus
per-call overhead; it also serves :meth:`token_rows` and :meth:`explain`, which are not hot.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from schemas import LABELS
from sentiment_model.byte_tokens import MISSING, ByteTokens, KeyTable, fnv1a, pack_words, split_spaces
from sentiment_model.errors import ModelLoadError

try:  # optional: built from _fastlinear.c by the package build; without it the numpy path scores
    from sentiment_model import _fastlinear
except ImportError:  # pragma: no cover - depends on the build
    _fastlinear = None  # type: ignore[assignment]

LABEL_PREFIX: Final = "__label__"
EOS: Final = "</s>"

_MAGIC = 793712314
_VERSIONS = frozenset({11, 12})
_LOSS_SOFTMAX, _LOSS_OVA = 3, 4
_MODEL_SUPERVISED = 3
_KSUB = 256
_NGRAM_MULTIPLIER = 116049371
_FNV_OFFSET, _FNV_PRIME = 2166136261, 16777619
_SIGMOID_TABLE_SIZE, _MAX_SIGMOID = 512, 8
#: A dequantized/dense input table above this is not copied (the published one is 3.6 MB).
_MAX_TABLE_BYTES = 512 << 20
#: The bucket -> row map of a pruned file takes 4 bytes per bucket (fastText's default is 2,000,000).
_MAX_BUCKETS = 1 << 26
#: Rows x dim gathered at once when summing (float32 values): bounds a batch's scratch memory.
_BLOCK_VALUES = 1 << 21
#: Lines with more rows than this are summed on their own instead of widening the padded block.
_LONG_LINE_ROWS = 256

# Token code of a label (word ids are >= 0, an unknown token is byte_tokens.MISSING).
_LABEL = -2

# fastText's separators other than the space: a line holding one (or a literal "</s>") is rewritten
# first; normalised lines never do, so the common batch skips this.
# (Six substring scans: a regex character class took 10 ms on a 2,000-line batch.)
_SEPARATORS = "\t\n\v\f\r\x00"
_TO_SPACE = str.maketrans(dict.fromkeys("\t\v\f\r\x00", " "))

Loss = Literal["ova", "softmax"]
KernelName = Literal["c", "numpy"]


class UnsupportedModelError(Exception):
    """A valid fastText file this scorer cannot reproduce exactly; ``str(error)`` says why."""


@dataclass(frozen=True, slots=True)
class TokenRows:
    """The input rows a batch reads: text ``i`` uses ``row_ids[offsets[i]:offsets[i + 1]]``.

    Rows are in fastText's order (word rows in token order, then word n-gram rows); a row id indexes the
    model's input matrix (word id, or ``nwords +`` bucket / pruned bucket index), so the same id in two
    texts is the same word or n-gram. Row ``r`` spans word tokens ``starts[r] .. starts[r] + lengths[r]
    - 1`` of the batch (word tokens numbered across the whole batch; a word has length 1, a bigram 2).
    """

    row_ids: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.int64]
    starts: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why one text got its scores.

    Identity (checked by the tests): ``logits[c] == sum(t[1][c] for t in tokens)`` to float32 rounding,
    where each token's contribution is ``output_row_c . input_row / number_of_rows``; repeated tokens are
    merged (their contributions added). ``probabilities = LinearScorer.scores_from_logits(logits)``.
    Word n-grams appear as ``"w1 w2"``; ``</s>`` is fastText's end-of-text token. Words outside the model
    and n-grams it does not keep add nothing and are not listed. No row at all: ``tokens == []``,
    zero logits and zero probabilities (fastText makes no prediction).
    """

    tokens: list[tuple[str, tuple[float, float, float]]]
    logits: tuple[float, float, float]


class _Reader:
    """Sequential little-endian reads from the file bytes; every shortfall is a ModelLoadError."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def _take(self, size: int, what: str) -> int:
        if size < 0 or self.pos + size > len(self.data):
            raise ModelLoadError(
                f"model file {self.path} is truncated or corrupt: {what} needs {size} bytes at offset "
                f"{self.pos}, the file has {len(self.data)}"
            )
        start = self.pos
        self.pos += size
        return start

    def unpack(self, fmt: str, what: str) -> tuple[int | float | bool, ...]:
        start = self._take(struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.data, start)

    def int32(self, what: str) -> int:
        return int(self.unpack("<i", what)[0])

    def int64(self, what: str) -> int:
        return int(self.unpack("<q", what)[0])

    def flag(self, what: str) -> bool:
        return bool(self.unpack("<?", what)[0])

    def array(self, dtype: type[np.generic], count: int, what: str) -> npt.NDArray[np.generic]:
        size = np.dtype(dtype).itemsize * count
        start = self._take(size, what)
        return np.frombuffer(self.data, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=start)

    def cstring(self, what: str) -> bytes:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ModelLoadError(f"model file {self.path} is truncated or corrupt: {what} never ends")
        word = self.data[self.pos : end]
        self.pos = end + 1
        return word


def _corrupt(path: Path, detail: str) -> ModelLoadError:
    return ModelLoadError(f"model file {path} is corrupt: {detail}")


def _read_matrix(reader: _Reader, quantized: bool, path: Path, what: str) -> npt.NDArray[np.float32]:
    """A dense or product-quantized matrix, as a float32 ``(rows, dim)`` array of fastText's values."""
    if not quantized:
        rows, dim = reader.int64(f"{what} rows"), reader.int64(f"{what} dim")
        if rows < 0 or dim <= 0:
            raise _corrupt(path, f"{what} is {rows} x {dim}")
        if rows * dim * 4 > _MAX_TABLE_BYTES:
            raise UnsupportedModelError(f"{what} is {rows} x {dim}, too large to copy")
        values = reader.array(np.float32, rows * dim, what)
        return np.asarray(values, dtype=np.float32).reshape(rows, dim)
    qnorm = reader.flag(f"{what} qnorm")
    rows, dim = reader.int64(f"{what} rows"), reader.int64(f"{what} dim")
    codesize = reader.int32(f"{what} code size")
    if rows < 0 or dim <= 0:
        raise _corrupt(path, f"{what} is {rows} x {dim}")
    if rows * dim * 4 > _MAX_TABLE_BYTES:
        raise UnsupportedModelError(f"{what} is {rows} x {dim}, too large to dequantize")
    codes = reader.array(np.uint8, codesize, f"{what} codes")
    pq_dim, nsubq, dsub, lastdsub = (reader.int32(f"{what} quantizer header") for _ in range(4))
    if pq_dim != dim or dsub <= 0 or nsubq != -(-dim // dsub) or lastdsub != (dim % dsub or dsub):
        raise _corrupt(path, f"{what} quantizer {pq_dim}/{nsubq}/{dsub}/{lastdsub} does not fit dim {dim}")
    if codesize != rows * nsubq:
        raise _corrupt(path, f"{what} holds {codesize} codes for {rows} rows of {nsubq}")
    centroids = reader.array(np.float32, dim * _KSUB, f"{what} centroids")
    table = np.empty((rows, dim), dtype=np.float32)
    code_matrix = codes.reshape(rows, nsubq).astype(np.int64)
    for m in range(nsubq):  # productquantizer.cc get_centroids: the last sub-quantizer may be narrower
        width = lastdsub if m == nsubq - 1 else dsub
        base = m * _KSUB * dsub + code_matrix[:, m] * width
        table[:, m * dsub : m * dsub + width] = centroids[base[:, None] + np.arange(width)]
    if qnorm:
        norm_codes = reader.array(np.uint8, rows, f"{what} norm codes")
        npq = tuple(reader.int32(f"{what} norm quantizer header") for _ in range(4))
        if npq != (1, 1, 1, 1):
            raise _corrupt(path, f"{what} norm quantizer header {npq}")
        norms = np.asarray(reader.array(np.float32, _KSUB, f"{what} norm centroids"), dtype=np.float32)
        # addcode adds alpha * c in float32: the same product, formed once here.
        table *= norms[norm_codes.astype(np.int64)][:, None]
    return table


def _sigmoid_table() -> npt.NDArray[np.float32]:
    """loss.cc's table: entry i is sigmoid(float32(16 i) / 512 - 8), via float32 exp."""
    out = np.empty(_SIGMOID_TABLE_SIZE + 1, dtype=np.float32)
    for i in range(_SIGMOID_TABLE_SIZE + 1):
        x = np.float32(np.float32(i * 2 * _MAX_SIGMOID) / np.float32(_SIGMOID_TABLE_SIZE)) - np.float32(8)
        e = np.float32(math.exp(-float(x)))  # std::exp(float): float32 result
        out[i] = np.float32(1.0 / (1.0 + float(e)))
    return out


def _canonical(line: str) -> str:
    """``line`` as fastText reads it, with single spaces: cut at a newline or a literal ``</s>``."""
    cut = line.find("\n")
    if cut >= 0:
        line = line[:cut]
    tokens = line.translate(_TO_SPACE).split(" ")
    if EOS in tokens:
        tokens = tokens[: tokens.index(EOS)]
    return " ".join(tokens)


def _sign_extend(hashes: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint64]:
    """``uint64_t h = int32_t(hash)``: fastText keeps word hashes as int32."""
    return hashes.view(np.int32).astype(np.int64).view(np.uint64)


class LinearScorer:
    """A loaded word-only fastText classifier scored without fastText (``from_file``; thread-safe,
    read-only): the row sums in C or numpy (:attr:`kernel`), the rest in numpy."""

    name: Final = "numpy"

    def __init__(
        self,
        *,
        words: list[bytes],
        labels: list[bytes],
        table: npt.NDArray[np.float32],
        output: npt.NDArray[np.float32],
        loss: Loss,
        word_ngrams: int,
        bucket: int,
        prune_keys: npt.NDArray[np.int64] | None,
        prune_rows: npt.NDArray[np.int64] | None,
        kernel: KernelName | None = None,
    ) -> None:
        """``kernel``: ``"numpy"`` forces the numpy path; None takes the compiled loop when built."""
        nwords = len(words)
        self.loss: Loss = loss
        self.dim = int(table.shape[1])
        self._words = words
        self._word_ngrams = word_ngrams
        self._bucket = bucket
        self._nwords = nwords
        # A zero row at the end pads the fixed-width blocks (x + 0 == x in float32).
        self._table = np.vstack((table, np.zeros((1, self.dim), dtype=np.float32)))
        self._pad_row = int(table.shape[0])
        label_bytes = [(LABEL_PREFIX + label).encode() for label in LABELS]
        self._output = np.ascontiguousarray(output[[labels.index(label) for label in label_bytes]])
        # Bucket -> input row (-1: pruned), one gather per batch (searchsorted on the prune index took
        # 30 ms per 2,000 lines); 4 bytes per bucket.
        self._bucket_rows: npt.NDArray[np.int32] | None = None
        if prune_keys is not None and prune_rows is not None and word_ngrams > 1:
            self._bucket_rows = np.full(bucket, -1, dtype=np.int32)
            inside = (prune_keys >= 0) & (prune_keys < bucket)
            self._bucket_rows[prune_keys[inside]] = prune_rows[inside]
        self._sigmoid = _sigmoid_table()
        self._keys = KeyTable([*words, *labels], [*range(nwords), *([_LABEL] * len(labels))])
        eos = split_spaces(EOS.encode())
        self._eos_chunks = eos.chunks[:, 0]
        self._prefix_chunks = split_spaces(LABEL_PREFIX.encode()).chunks[:, 0]
        packed = pack_words(words)
        hashes = _sign_extend(fnv1a(packed, np.arange(nwords, dtype=np.int64)))
        self._word_hash = np.append(hashes, np.uint64(0))  # index -1: the unknown-word placeholder
        self._pull: npt.NDArray[np.float64] | None = None
        self._texts: npt.NDArray[np.object_] | None = None
        if kernel == "c" and _fastlinear is None:
            raise UnsupportedModelError("the compiled kernel sentiment_model._fastlinear is not built")
        use_c = _fastlinear is not None and kernel != "numpy"
        self._kernel = self._c_kernel(words, labels) if use_c else None
        self.kernel: KernelName = "numpy" if self._kernel is None else "c"
        """Which code sums the rows of a batch: ``"c"`` (the compiled loop) or ``"numpy"``."""

    def _c_kernel(self, words: list[bytes], labels: list[bytes]) -> _fastlinear.Kernel:
        return _fastlinear.Kernel(
            [*words, *labels],
            [*range(len(words)), *([_LABEL] * len(labels))],
            self._word_ngrams,
            self._bucket,
            self._nwords,
            self._bucket_rows,
            self._table,
            self.dim,
        )

    # ---- loading -------------------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: Path | str, kernel: KernelName | None = None) -> LinearScorer:
        """Parse ``path``; :class:`ModelLoadError` if corrupt, :class:`UnsupportedModelError` if the file
        is fine but not reproducible here. ``kernel``: see :meth:`__init__`."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"cannot read model file {path}: {exc}") from exc
        try:
            return cls._parse(data, path, kernel)
        except (ModelLoadError, UnsupportedModelError):
            raise
        except (ValueError, IndexError, OverflowError, MemoryError, UnicodeError, struct.error) as exc:
            raise _corrupt(path, f"{type(exc).__name__}: {exc}") from exc

    @classmethod
    def _parse(cls, data: bytes, path: Path, kernel: KernelName | None) -> LinearScorer:
        reader = _Reader(data, path)
        if reader.int32("magic") != _MAGIC:
            raise ModelLoadError(f"model file {path} is not a fastText model (wrong magic number)")
        version = reader.int32("version")
        if version not in _VERSIONS:
            raise UnsupportedModelError(f"fastText file version {version} (known: 11, 12)")
        dim, _ws, _epoch, _min_count, _neg, word_ngrams, loss, model = (
            reader.int32("arguments") for _ in range(8)
        )
        bucket, minn, maxn, _lr_update = (reader.int32("arguments") for _ in range(4))
        reader.unpack("<d", "arguments")
        if version == 11 and model == _MODEL_SUPERVISED:
            maxn = 0  # fasttext.cc: old supervised models never used char n-grams
        if model != _MODEL_SUPERVISED:
            raise UnsupportedModelError(f"not a supervised model (model kind {model})")
        if loss not in (_LOSS_OVA, _LOSS_SOFTMAX):
            raise UnsupportedModelError(f"loss {loss} (only softmax=3 and ova=4 are reproduced)")
        if maxn > 0:
            raise UnsupportedModelError(f"char n-grams (minn={minn}, maxn={maxn})")
        if word_ngrams > 1 and not 0 < bucket <= _MAX_BUCKETS:
            raise UnsupportedModelError(f"word n-grams with bucket={bucket}")
        if dim <= 0:
            raise _corrupt(path, f"dim {dim}")

        size, nwords, nlabels = (reader.int32("dictionary header") for _ in range(3))
        reader.int64("dictionary token count")
        prune_size = reader.int64("dictionary prune index size")
        if min(nwords, nlabels) < 0 or size != nwords + nlabels or prune_size < -1:
            raise _corrupt(path, f"dictionary header {size}/{nwords}/{nlabels}/{prune_size}")
        words: list[bytes] = []
        labels: list[bytes] = []
        for i in range(size):
            word = reader.cstring("a dictionary word")
            reader.int64("a word count")
            kind = int(reader.unpack("<b", "a word type")[0])
            if kind != (0 if i < nwords else 1):
                raise _corrupt(path, f"dictionary entry {i} has type {kind}")
            (words if i < nwords else labels).append(word)
        prune_keys = prune_rows = None
        if prune_size == 0:
            prune_keys = prune_rows = np.zeros(0, dtype=np.int64)
        elif prune_size > 0:
            pairs = reader.array(np.int32, 2 * prune_size, "prune index").reshape(-1, 2).astype(np.int64)
            keys, first = np.unique(pairs[::-1, 0], return_index=True)  # unordered_map: last pair wins
            prune_keys, prune_rows = keys, nwords + pairs[::-1, 1][first]
        quantized = reader.flag("input quantization flag")
        table = _read_matrix(reader, quantized, path, "input matrix")
        quantized_output = reader.flag("output quantization flag")
        if quantized and quantized_output:
            raise UnsupportedModelError("quantized output matrix (qout)")
        output = _read_matrix(reader, False, path, "output matrix")
        if reader.pos != len(data):
            raise _corrupt(path, f"{len(data) - reader.pos} bytes after the output matrix")

        if not quantized and prune_size >= 0:
            raise _corrupt(path, "a pruned dictionary with a dense input matrix")
        # fastText sizes the input matrix nwords + bucket, or nwords + kept buckets once pruned.
        expected_rows = nwords + (bucket if prune_size < 0 else prune_size) if word_ngrams > 1 else None
        if table.shape[1] != dim or (expected_rows is not None and table.shape[0] != expected_rows):
            raise _corrupt(path, f"input matrix {table.shape} for {nwords} words, dim {dim}")
        if table.shape[0] < nwords:
            raise _corrupt(path, f"input matrix has {table.shape[0]} rows for {nwords} words")
        if output.shape != (nlabels, dim):
            raise _corrupt(path, f"output matrix {output.shape}, expected ({nlabels}, {dim})")
        if prune_rows is not None and prune_rows.size and int(prune_rows.max()) >= table.shape[0]:
            raise _corrupt(path, "prune index points past the input matrix")
        if sorted(labels) != sorted((LABEL_PREFIX + label).encode() for label in LABELS):
            found = sorted(label.decode("utf-8", "replace") for label in labels)
            raise ModelLoadError(f"model file {path} has labels {found}, expected {list(LABELS)}")
        if not (np.isfinite(table).all() and np.isfinite(output).all()):
            raise UnsupportedModelError("non-finite weights")
        return cls(
            words=words,
            labels=labels,
            table=table,
            output=output,
            loss="ova" if loss == _LOSS_OVA else "softmax",
            word_ngrams=max(word_ngrams, 1),
            bucket=bucket,
            prune_keys=prune_keys,
            prune_rows=prune_rows,
            kernel=kernel,
        )

    # ---- the batch path ------------------------------------------------------------------------------

    def token_rows(self, lines: Sequence[str]) -> TokenRows:
        """The input rows each line reads, in fastText's order (see :class:`TokenRows`)."""
        return self._features(lines).token_rows()

    def _tokens(self, lines: Sequence[str]) -> ByteTokens:
        """The batch's tokens, each line followed by its ``</s>`` (which also marks where it ends)."""
        joined = f" {EOS} ".join(lines) + f" {EOS}" if lines else ""
        if lines and (joined.count(EOS) != len(lines) or any(c in joined for c in _SEPARATORS)):
            special = [EOS in line or any(c in line for c in _SEPARATORS) for line in lines]
            joined = f" {EOS} ".join(
                _canonical(line) if odd else line for line, odd in zip(lines, special, strict=True)
            )
            joined += f" {EOS}"
        return split_spaces(joined.encode("utf-8", "surrogatepass"))

    def _features(self, lines: Sequence[str]) -> _Features:
        n = len(lines)
        tokens = self._tokens(lines)
        codes = self._keys.lookup(tokens)
        is_eos = (tokens.lengths == len(EOS)) & (tokens.chunks[0] == self._eos_chunks[0])
        line_of = np.cumsum(is_eos) - is_eos  # line id of every token
        oov = np.flatnonzero(codes == MISSING)
        if oov.size:  # an unknown token starting with the label prefix is a label: no hash, no row
            prefix = self._prefix_chunks
            label_like = (tokens.lengths[oov] >= len(LABEL_PREFIX)) & (tokens.chunks[0, oov] == prefix[0])
            label_like &= (tokens.chunks[1, oov] & np.uint64(0xFF)) == prefix[1]
            codes[oov[label_like]] = _LABEL
            oov = oov[~label_like]
        word_pos = np.flatnonzero(codes != _LABEL)
        w_code = codes[word_pos]
        w_line = line_of[word_pos]
        # Integer gathers only: boolean-mask indexing measured 4x slower than a gather here.
        w_hash = self._word_hash[w_code]  # an unknown word (-1) reads the placeholder at the end...
        unknown = np.flatnonzero(w_code < 0)
        w_hash[unknown] = _sign_extend(fnv1a(tokens, word_pos[unknown]))  # ...replaced here
        features = _Features(n, tokens, word_pos)
        features.add(w_line, w_code, 0)  # an unknown word (-1) has no row
        # Then n-grams (i, i+k), ordered by i then k: one kind per k, interleaved by add_ngrams.
        grams: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
        current = w_hash
        for k in range(1, self._word_ngrams):
            if word_pos.size <= k:
                break
            current = current[:-1] * np.uint64(_NGRAM_MULTIPLIER) + w_hash[k:]
            rows = self._ngram_rows(current)
            rows[w_line[k:] != w_line[:-k]] = -1  # an n-gram never spans two lines
            grams.append((w_line[:-k], rows))
        features.add_ngrams(grams)
        return features

    def _ngram_rows(self, ngram_hashes: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        """Input row of each n-gram bucket; -1 where the prune index dropped it (pushHash)."""
        buckets = (ngram_hashes % np.uint64(self._bucket)).astype(np.int64)
        if self._bucket_rows is None:  # no prune index: every bucket has its row
            return buckets + self._nwords
        return self._bucket_rows[buckets].astype(np.int64)

    def logits(self, lines: Sequence[str]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """fastText's float32 output scores before the sigmoid/softmax, ``(n, 3)`` in LABELS order, and
        whether each line read any row (fastText predicts nothing for a line without one)."""
        return self._logits_from_sums(*self.row_sums(lines))

    def row_sums(self, lines: Sequence[str]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Each line's float32 sum of its input rows in fastText's order, ``(n, dim)``, and its number of
        rows ``(n,)``; the same bits from either kernel."""
        if self._kernel is not None:
            sums = np.zeros((len(lines), self.dim), dtype=np.float32)
            counts = np.empty(len(lines), dtype=np.int64)
            if self._kernel.sum_rows(lines, sums, counts):
                return sums, counts
            # False: a line holds a lone surrogate (no UTF-8 form); numpy encodes it with surrogatepass.
        features = self._features(lines)
        return self._sums_of(features), features.counts

    def _logits(self, features: _Features) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        return self._logits_from_sums(self._sums_of(features), features.counts)

    def _sums_of(self, features: _Features) -> npt.NDArray[np.float32]:
        """The numpy kernel: the rows of :meth:`_features` gathered in blocks and summed."""
        n, counts = features.n, features.counts
        line, position, row = features.flat()
        # Lines longest first, so column j of the padded (position, line) block is a prefix of lines.
        order = np.argsort(-counts, kind="stable")
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        sums = np.zeros((n, self.dim), dtype=np.float32)
        long_lines = np.flatnonzero(counts > _LONG_LINE_ROWS)
        short = counts[line] <= _LONG_LINE_ROWS if long_lines.size else slice(None)
        sorted_counts = np.minimum(counts[order], _LONG_LINE_ROWS)
        width = int(sorted_counts[0]) if n else 0
        if width:
            padded = np.full((width, n), self._pad_row, dtype=np.int64)
            padded[position[short], rank[line[short]]] = row[short]
            # Lines in blocks of similar length (they are sorted); a block's rows are gathered once,
            # position-major, and summed over the position axis. numpy sums pairwise only along the
            # fast axis in memory (np.sum notes); along axis 0 it adds position after position: the same
            # sequential float32 sum as fastText's loop (the parity tests hold it to that). np.take:
            # a 2-D row gather by fancy indexing measured 4x slower.
            block = max(1, _BLOCK_VALUES // (width * self.dim))
            for begin in range(0, n, block):
                depth = int(sorted_counts[begin])
                if depth == 0:
                    break
                rows_here = np.take(self._table, padded[:depth, begin : begin + block], axis=0)
                sums[begin : begin + block] = np.add.reduce(rows_here, axis=0)
        for long_line in long_lines.tolist():  # rare: thousands of tokens
            mine = np.flatnonzero(line == long_line)
            ordered = row[mine][np.argsort(position[mine])]
            sums[rank[long_line]] = np.add.accumulate(np.take(self._table, ordered, axis=0), axis=0)[-1]
        return sums[rank]

    def _logits_from_sums(
        self, sums: npt.NDArray[np.float32], counts: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        n = counts.size
        has_rows = counts > 0
        scale = np.zeros(n, dtype=np.float32)
        scale[has_rows] = (1.0 / counts[has_rows]).astype(np.float32)  # Vector::mul(real(1.0 / n))
        hidden = sums * scale[:, None]
        logits = np.zeros((n, len(LABELS)), dtype=np.float32)
        for j in range(self.dim):  # DenseMatrix::dotRow: d += w[j] * h[j], in order, in float32
            logits += hidden[:, j : j + 1] * self._output[:, j]
        return logits, has_rows

    def scores_from_logits(
        self, logits: npt.NDArray[np.float32], has_rows: npt.NDArray[np.bool_] | None = None
    ) -> npt.NDArray[np.float64]:
        """fastText's returned probabilities for float32 ``logits``: the table sigmoid (ova) or softmax,
        then ``exp(log(p + 1e-5))`` as fastText reports them; rows without input are zeros."""
        logits = np.asarray(logits, dtype=np.float32)
        if self.loss == "ova":
            index = (logits + np.float32(_MAX_SIGMOID)) * np.float32(_SIGMOID_TABLE_SIZE)
            index = index / np.float32(_MAX_SIGMOID) / np.float32(2)
            inside = np.clip(index, 0, _SIGMOID_TABLE_SIZE).astype(np.int64)
            probs = self._sigmoid[inside]
            probs = np.where(logits < -_MAX_SIGMOID, np.float32(0), probs)
            probs = np.where(logits > _MAX_SIGMOID, np.float32(1), probs).astype(np.float32)
        else:
            peak = logits.max(axis=1, keepdims=True)
            exps = np.exp(logits - peak)
            total = np.zeros((logits.shape[0], 1), dtype=np.float32)
            for j in range(logits.shape[1]):  # z += output[i], in order
                total += exps[:, j : j + 1]
            probs = exps / total
        # predictLine: exp(std_log(p)) with std_log(p) = float32(log(p + 1e-5)).
        logged = np.log(probs.astype(np.float64) + 1e-5).astype(np.float32)
        reported: npt.NDArray[np.float64] = np.exp(logged).astype(np.float64)
        if has_rows is not None:
            reported[~has_rows] = 0.0
        return reported

    def fasttext_probabilities(self, lines: Sequence[str]) -> npt.NDArray[np.float64]:
        """What fastText's ``predict(lines, k=3)`` returns, as an ``(n, 3)`` array in LABELS order."""
        logits, has_rows = self.logits(lines)
        return self.scores_from_logits(logits, has_rows)

    # ---- explanations --------------------------------------------------------------------------------

    def word_pulls(self, lines: Sequence[str]) -> tuple[list[list[str]], list[npt.NDArray[np.float64]]]:
        """Each line's words (the model's own, in token order; word n-grams and unknown words left out)
        and each word's pull: its contribution to the negative logit minus its contribution to the
        positive one (``> 0`` pulls negative), with the same contributions as :meth:`explain`."""
        word_rows, per_line, counts = self._word_rows(lines)
        pull = self._row_pull()[word_rows] / np.repeat(counts, per_line)
        ends = np.cumsum(per_line)
        texts = self._word_texts()[word_rows].tolist()
        bounds = [0, *ends.tolist()]
        tokens = [texts[a:b] for a, b in itertools.pairwise(bounds)]
        return tokens, np.split(pull, ends[:-1]) if len(lines) else []

    def _word_rows(
        self, lines: Sequence[str]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The lines' word rows in token order (``</s>`` included), how many each line has, and each
        line's number of rows of any kind. The compiled loop reads them off its own pass (50 TweetEval
        lines: 75 against 300 µs for the numpy path's features)."""
        n = len(lines)
        if self._kernel is not None:
            counts, per_line = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
            found = self._kernel.sum_rows(lines, np.empty((n, self.dim), np.float32), counts, per_line)
            if isinstance(found, bytes):
                return np.frombuffer(found, dtype=np.int64), per_line, counts
        rows = self.token_rows(lines)
        counts = np.diff(rows.offsets)
        post = np.repeat(np.arange(n), counts)
        is_word = np.flatnonzero((rows.lengths == 1) & (rows.row_ids < self._nwords))
        return rows.row_ids[is_word], np.bincount(post[is_word], minlength=n), counts

    def _word_texts(self) -> npt.NDArray[np.object_]:
        """Every vocabulary entry as text, decoded once (row i is word i)."""
        if self._texts is None:
            self._texts = np.array([w.decode("utf-8", "replace") for w in self._words], dtype=object)
        return self._texts

    def _row_pull(self) -> npt.NDArray[np.float64]:
        """``(output_negative - output_positive) . row`` of every input row, computed once."""
        if self._pull is None:
            negative, positive = LABELS.index("negative"), LABELS.index("positive")
            direction = self._output[negative].astype(np.float64) - self._output[positive]
            self._pull = self._table.astype(np.float64) @ direction
        return self._pull

    def explain(self, line: str) -> Explanation:
        """Each token's contribution to each class logit for one normalised line (see
        :class:`Explanation` for the identity)."""
        features = self._features([line])
        logits, has_rows = self._logits(features)
        rows = features.token_rows()
        count = rows.row_ids.size
        merged: dict[str, npt.NDArray[np.float64]] = {}
        if count:
            parts = self._table[rows.row_ids].astype(np.float64) @ self._output.astype(np.float64).T / count
            tokens = features.tokens
            names = [tokens.text(i).decode("utf-8", "replace") for i in features.word_pos.tolist()]
            for start, length, part in zip(rows.starts.tolist(), rows.lengths.tolist(), parts, strict=True):
                name = " ".join(names[start : start + length])
                merged[name] = merged[name] + part if name in merged else part
        listed = [(name, (float(v[0]), float(v[1]), float(v[2]))) for name, v in merged.items()]
        first = logits[0].astype(np.float64) if bool(has_rows[0]) else np.zeros(3)
        return Explanation(tokens=listed, logits=(float(first[0]), float(first[1]), float(first[2])))


class _Features:
    """The rows a batch reads, grouped by kind (words, then word n-grams), with each row's position
    inside its line: fastText's order is words in token order, then n-grams ``(i, i+k)`` by ``i`` then
    ``k``. Which tokens a row spans is decoded only when asked (:meth:`token_rows`)."""

    def __init__(self, n: int, tokens: ByteTokens, word_pos: npt.NDArray[np.int64]) -> None:
        self.n, self.tokens, self.word_pos = n, tokens, word_pos
        self.counts = np.zeros(n, dtype=np.int64)
        # (line, position, row, entry index, n-gram orders: 0 for words)
        self._parts: list[
            tuple[
                npt.NDArray[np.int64],
                npt.NDArray[np.int64],
                npt.NDArray[np.int64],
                npt.NDArray[np.int64],
                int,
            ]
        ] = []

    def add(self, line: npt.NDArray[np.int64], row: npt.NDArray[np.int64], orders: int) -> None:
        """One kind of entry, in order within each line; rows < 0 are dropped. Entry ``e`` is word
        ``e`` (``orders == 0``) or the n-gram from word ``e // orders`` over ``e % orders + 2`` words."""
        kept = np.flatnonzero(row >= 0)
        kept_line = line[kept]
        count = np.bincount(kept_line, minlength=self.n)
        first = np.cumsum(count) - count  # index of each line's first kept entry
        position = np.arange(kept.size) - first[kept_line]
        if self._parts:
            position += self.counts[kept_line]
        self._parts.append((kept_line, position, row[kept], kept, orders))
        self.counts += count

    def add_ngrams(self, grams: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]) -> None:
        """The n-grams of every order, interleaved as fastText lists them: (i, i+1), (i, i+2), ..."""
        if len(grams) == 1:
            self.add(grams[0][0], grams[0][1], 1)
        elif grams:
            total, orders = grams[0][0].size + 1, len(grams)
            lines = np.zeros((total, orders), dtype=np.int64)
            rows = np.full((total, orders), -1, dtype=np.int64)
            for k, (line, row) in enumerate(grams):
                lines[: line.size, k], rows[: row.size, k] = line, row
            self.add(lines.reshape(-1), rows.reshape(-1), orders)

    def flat(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(line, position in line, row) of every kept entry."""
        if len(self._parts) == 1:
            return self._parts[0][0], self._parts[0][1], self._parts[0][2]
        line, position, row = (np.concatenate([part[i] for part in self._parts]) for i in range(3))
        return line, position, row

    def token_rows(self) -> TokenRows:
        """The entries laid out line by line (see :class:`TokenRows`)."""
        offsets = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(self.counts, out=offsets[1:])
        total = int(offsets[-1])
        row_ids, starts, lengths = (np.empty(total, dtype=np.int64) for _ in range(3))
        for line, position, row, entry, orders in self._parts:
            place = offsets[line] + position
            row_ids[place] = row
            starts[place] = entry if orders == 0 else entry // orders
            lengths[place] = 1 if orders == 0 else entry % orders + 2
        return TokenRows(row_ids=row_ids, offsets=offsets, starts=starts, lengths=lengths)
