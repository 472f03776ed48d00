"""The hot path as pure stages over columns: decode and validate -> route languages -> (normalise and
score, in the model package) -> encode. No Kafka I/O here; :mod:`worker.app` feeds consumed records in
and produces what comes out.

Every stage takes the whole batch and returns columns. The per-record loops of decode (one
``orjson.loads`` and the contract's field checks, derived from :class:`Mention`) and encode run in C
(``worker/_fastbatch.c``) where it is built; a record that is special (it fails the field checks) takes
the per-record path of :mod:`worker.processing`, the contract itself, which is the authority on the
reason and the detail a dead letter carries (and judges every record where the C is not built).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt
import orjson

from schemas import LABELS, DeadLetterReason
from schemas.mention import Mention, field_checks, primary_language
from worker.processing import Rejected, validate

try:  # decode and encode loops in C for the common record; optional (see decode and encode without it)
    from worker import _fastbatch
except ImportError:  # pragma: no cover - a build without the extension
    _fastbatch = None  # type: ignore[assignment]

#: Every field of the :class:`Mention` contract. Fields outside it are carried through to the result.
KNOWN_FIELDS: Final = frozenset(Mention.model_fields)
#: The contract's fields as the compiled decode checks them (a field it cannot check stops the import).
FIELD_CHECKS: Final = field_checks(Mention)
_TIMESTAMP_CACHE_SIZE: Final = 4096


@dataclass(slots=True)
class Decoded:
    """The outcome of :func:`decode` for one batch, in consumption order.

    ``index[j]`` is the batch position of the j-th valid record and ``documents[j]`` its JSON object
    (already checked against the contract); ``rejected`` holds the others with their reason.
    """

    index: list[int] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def texts(self) -> list[str]:
        """The ``text`` column."""
        return [doc["text"] for doc in self.documents]

    def column(self, name: str) -> list[Any]:
        """An optional field's column (None where absent)."""
        return [doc.get(name) for doc in self.documents]


class TimestampParser:
    """``created_at`` strings -> unix seconds, validated as the contract does, with a bounded cache.

    Posts of one scrape often share a timestamp string (to the second), and parsing is the costliest
    check of a record: the cache makes the common case one dict lookup.
    """

    def __init__(self) -> None:
        self.cache: dict[str, float] = {}
        """Strings already parsed -> their seconds (the compiled decode looks here before calling)."""

    def seconds(self, value: str) -> float | None:
        """Unix seconds of an RFC 3339 ``value``, or None when the contract would reject it."""
        cached = self.cache.get(value)
        if cached is not None:
            return cached
        if len(value) < 20 or value[10] not in "Tt ":
            return None
        try:
            parsed = datetime.fromisoformat(value.replace("z", "Z"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            return None
        if len(self.cache) >= _TIMESTAMP_CACHE_SIZE:
            self.cache.clear()
        seconds = self.cache[value] = parsed.timestamp()
        return seconds


def decode(records: Sequence[Any], values: Sequence[bytes | None], timestamps: TimestampParser) -> Decoded:
    """Parse and check a batch: one ``orjson.loads`` per value, straight from the bytes (it validates
    UTF-8 itself, so there is no separate decode copy), and the contract's field checks
    (:data:`FIELD_CHECKS`, derived from :class:`Mention`), in C (``worker/_fastbatch.c``). Records that
    fail any of them are judged by the contract itself, one by one, which gives the exact reasons and
    details; without the compiled loop every record is."""
    if _fastbatch is None:
        index: list[int] = []
        documents: list[dict[str, Any]] = []
        suspects = list(range(len(values)))
    else:
        index, documents, suspects = _fastbatch.decode(
            values if type(values) is list else list(values),
            orjson.loads,
            _DECODE_ERRORS,
            FIELD_CHECKS.required,
            FIELD_CHECKS.optional_strings,
            FIELD_CHECKS.timestamps,
            timestamps.cache,
            timestamps.seconds,
        )
    out = Decoded(index, documents)
    if suspects:
        _judge(out, records, suspects)
    return out


_DECODE_ERRORS: Final = (orjson.JSONDecodeError, TypeError)  # TypeError: None (a tombstone)


def _judge(out: Decoded, records: Sequence[Any], suspects: list[int]) -> None:
    """The per-record path: the contract decides; a record it accepts joins the valid ones in order."""
    late: list[tuple[int, dict[str, Any]]] = []
    for i in suspects:
        outcome = validate(records[i])
        if isinstance(outcome, Rejected):
            out.rejected.append(outcome)
        else:  # accepted by the contract after all (a case the fast checks leave to it)
            late.append((i, orjson.loads(records[i].value())))
    if late:
        merged = sorted([*zip(out.index, out.documents, strict=True), *late], key=lambda pair: pair[0])
        out.index[:] = [i for i, _ in merged]
        out.documents[:] = [doc for _, doc in merged]


def route_languages(
    decoded: Decoded, records: Sequence[Any], languages: frozenset[str]
) -> list[tuple[Rejected, str]]:
    """Take out the posts whose ``lang`` is given and is not one the model scores.

    They must never be scored as if they were English; they go to the dead-letter topic with reason
    ``unsupported_language`` (their bytes untouched, replayable once a model for them exists). Untagged
    posts stay. Returns each routed record with its primary language tag, for the metrics.
    """
    routed: list[tuple[Rejected, str]] = []
    keep: list[int] = []
    for j, doc in enumerate(decoded.documents):
        lang = doc.get("lang")
        if lang is None or not lang.strip() or primary_language(lang) in languages:
            keep.append(j)
            continue
        primary = primary_language(lang)
        detail = (
            f"lang {lang!r} is not a language the model scores ({', '.join(sorted(languages))}; "
            "setting MODEL_LANGUAGES): not scored"
        )
        routed.append(
            (Rejected(records[decoded.index[j]], DeadLetterReason.UNSUPPORTED_LANGUAGE, detail), primary)
        )
    if routed:
        decoded.index[:] = [decoded.index[j] for j in keep]
        decoded.documents[:] = [decoded.documents[j] for j in keep]
        decoded.rejected.extend(rejected for rejected, _ in routed)
    return routed


def encode(
    documents: Sequence[dict[str, Any]],
    probabilities: npt.NDArray[np.float64],
    label_ids: npt.NDArray[np.intp],
    model: dict[str, Any],
    processed_at: str,
) -> list[bytes]:
    """Result events (see :class:`schemas.SentimentResult`), one per document.

    Fields outside the contract come first, in their input order, and ours win on a clash (as the
    result schema says); contract fields that the result does not repeat (author, lang, url) are left out.
    The compiled encoder (``worker/_fastbatch.c``) writes the records that carry no such field; Python
    writes the rest, and everything where the extension is not built.
    """
    if _fastbatch is None or not documents:
        return _encode_python(documents, probabilities, label_ids, model, processed_at)
    rows = np.ascontiguousarray(probabilities, dtype=np.float64)
    labels = np.ascontiguousarray(label_ids, dtype=np.int64)
    out = _fastbatch.encode(
        documents if type(documents) is list else list(documents),
        orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY),  # every float written once, by orjson
        labels,
        LABELS,
        orjson.dumps(model),
        orjson.dumps(processed_at),
        KNOWN_FIELDS,
    )
    if None not in out:
        return cast(list[bytes], out)
    results: list[bytes] = []
    for i, result in enumerate(out):
        if result is None:  # left to Python: a carried-through field, an unusual value
            one = slice(i, i + 1)
            result = _encode_python([documents[i]], rows[one], labels[one], model, processed_at)[0]
        results.append(result)
    return results


def _encode_python(
    documents: Sequence[dict[str, Any]],
    probabilities: npt.NDArray[np.float64],
    label_ids: npt.NDArray[np.intp] | npt.NDArray[np.int64],
    model: dict[str, Any],
    processed_at: str,
) -> list[bytes]:
    dumps = orjson.dumps
    known = KNOWN_FIELDS
    labels = LABELS
    out: list[bytes] = []
    for doc, row, label in zip(documents, probabilities.tolist(), label_ids.tolist(), strict=True):
        result: dict[str, Any] = (
            {} if doc.keys() <= known else {k: v for k, v in doc.items() if k not in known}
        )
        result["id"] = doc["id"]
        result["label"] = labels[label]
        result["score"] = row[label]
        result["scores"] = {"negative": row[0], "neutral": row[1], "positive": row[2]}
        result["model"] = model
        result["brand"] = doc.get("brand")
        result["source"] = doc.get("source")
        result["created_at"] = doc.get("created_at")
        result["processed_at"] = processed_at
        out.append(dumps(result))
    return out


def result_keys(records: Sequence[Any], decoded: Decoded) -> list[bytes | None]:
    """The input's key, or the post id when the input had none: one post's results stay in one partition."""
    keys: list[bytes | None] = []
    for i, doc in zip(decoded.index, decoded.documents, strict=True):
        key = records[i].key()
        keys.append(key if key is not None else doc["id"].encode())
    return keys


def event_times(
    records: Sequence[Any], decoded: Decoded, timestamps: TimestampParser
) -> npt.NDArray[np.float64]:
    """Unix seconds each valid post happened: its ``created_at``, else its record's timestamp."""
    out = np.empty(len(decoded.documents), np.float64)
    for j, (i, doc) in enumerate(zip(decoded.index, decoded.documents, strict=True)):
        created = doc.get("created_at")
        seconds = timestamps.seconds(created) if created is not None else None
        out[j] = seconds if seconds is not None else records[i].timestamp()[1] / 1000
    return out


def offset_ranges(partitions: Sequence[int], offsets: Sequence[int]) -> dict[int, tuple[int, int, int]]:
    """``{partition: (first offset, last offset, records)}`` of a batch: what the checkpoint tracks,
    once per partition instead of once per record."""
    part = np.asarray(partitions, np.int64)
    offs = np.asarray(offsets, np.int64)
    ranges: dict[int, tuple[int, int, int]] = {}
    for p in np.unique(part).tolist():
        chosen = offs[part == p]
        ranges[p] = (int(chosen.min()), int(chosen.max()), len(chosen))
    return ranges


def last_per_partition(partitions: Sequence[int]) -> dict[int, int]:
    """``{partition: batch position of its last record}`` (for the lag-in-seconds gauge)."""
    return {p: i for i, p in enumerate(partitions)}
