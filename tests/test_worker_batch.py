"""The worker's batch stages, each alone on small batches (no broker, no model)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from pydantic import Field, StrictStr

from schemas import DeadLetterReason, Mention, SentimentResult
from schemas.mention import MAX_TEXT_CHARS, FieldChecks, NonBlankStr, Rfc3339Str, field_checks
from tests.worker_harness import POISON
from worker import batch as batch_module
from worker.batch import (
    TimestampParser,
    decode,
    encode,
    event_times,
    last_per_partition,
    offset_ranges,
    result_keys,
    route_languages,
)
from worker.drift import DriftMonitor
from worker.metrics import BatchHistogram, WorkerMetrics
from worker.processing import Rejected, validate


@dataclass(frozen=True)
class Record:
    """Just enough of a confluent_kafka.Message."""

    _value: bytes | None
    _key: bytes | None = None
    _timestamp_ms: int = 1_700_000_000_000

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp_ms)

    def topic(self) -> str:
        return "mentions"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0

    def headers(self) -> None:
        return None


def run_decode(values: list[bytes | None]) -> tuple[list[Record], Any]:
    records = [Record(v, f"k{i}".encode()) for i, v in enumerate(values)]
    return records, decode(records, [r.value() for r in records], TimestampParser())


def good(i: int, **extra: Any) -> bytes:
    return orjson.dumps({"id": f"p{i}", "text": f"post number {i}", **extra})


def test_a_poison_mix_gets_exactly_the_contracts_reasons_and_details() -> None:
    values: list[bytes | None] = []
    for i, (poison, _reason) in enumerate(POISON):
        values += [good(i), poison]
    _records, decoded = run_decode(values)
    assert decoded.index == list(range(0, len(values), 2)), "valid records keep consumption order"
    assert [d["id"] for d in decoded.documents] == [f"p{i}" for i in range(len(POISON))]
    assert len(decoded.rejected) == len(POISON)
    for dead, (poison, reason) in zip(decoded.rejected, POISON, strict=True):
        reference = validate(Record(poison))
        assert isinstance(reference, Rejected)
        assert dead.reason.value == reason == reference.reason.value
        assert dead.detail == reference.detail
        assert dead.record.value() == poison


def test_records_the_fast_checks_leave_to_the_contract_are_still_judged_by_it() -> None:
    # A created_at the fast parser has never seen, and a brand null: both valid for the contract.
    values = [good(0, created_at="2026-11-26T10:15:00+02:00", brand=None), good(1)]
    _records, decoded = run_decode(values)
    assert decoded.index == [0, 1] and not decoded.rejected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
field_values = (
    st.text(max_size=20)
    | st.sampled_from(
        ["", "   ", "\u2028", "2026-11-26T10:15:00Z", "2026-11-26 10:15:00", "2026-11-26T10:15"]
    )
    | json_values
)
documents = st.dictionaries(
    st.sampled_from(["id", "text", "brand", "source", "author", "lang", "url", "created_at", "extra"]),
    field_values,
    max_size=9,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(documents | json_values, min_size=1, max_size=8))
def test_decode_accepts_exactly_what_the_contract_accepts(payloads: list[Any]) -> None:
    values = [json.dumps(p).encode() for p in payloads]
    records, decoded = run_decode(list(values))
    verdicts = [validate(r) for r in records]
    assert decoded.index == [i for i, v in enumerate(verdicts) if not isinstance(v, Rejected)]
    expected = [(v.reason, v.detail) for v in verdicts if isinstance(v, Rejected)]
    assert [(r.reason, r.detail) for r in decoded.rejected] == expected


raw_values = st.sampled_from(
    [None, b"", b"\xff\xfe", b"{", b"[]", b'"x"', b"\x00", b'{"id": "a", "text": "\\ud800"}', b" \t\n"]
)
whitespace = st.sampled_from([" ", "\t", "\u00a0", "\u2003", "\u3000", "\x1c", "\u200b", "\u2028", "\x85"])
contract_documents = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=3) | st.lists(whitespace, max_size=3).map("".join) | json_values,
        "text": st.lists(whitespace | st.just("x"), max_size=4).map("".join) | st.just("y" * 10_001),
        "brand": field_values,
        "lang": field_values,
        "created_at": field_values | st.sampled_from(["2026-11-26T10:15:00+02:00", "2026-02-30T10:15:00Z"]),
        "extra": json_values,
    },
)


def conforms_oracle(doc: dict[str, Any], timestamps: TimestampParser, checks: FieldChecks) -> bool:
    """The field checks in Python, one document at a time: the compiled decode's test oracle."""
    for name, limit in checks.required:
        value = doc.get(name)
        if type(value) is not str or not value.strip() or (limit >= 0 and len(value) > limit):
            return False
    for name in checks.optional_strings:
        value = doc.get(name)
        if value is not None and type(value) is not str:
            return False
    for name in checks.timestamps:
        value = doc.get(name)
        if value is not None and (type(value) is not str or timestamps.seconds(value) is None):
            return False
    return True


def decode_oracle(
    values: list[bytes | None], timestamps: TimestampParser, checks: FieldChecks = batch_module.FIELD_CHECKS
) -> tuple[list[int], list[dict[str, Any]], list[int]]:
    index: list[int] = []
    documents: list[dict[str, Any]] = []
    suspects: list[int] = []
    for i, value in enumerate(values):
        try:
            doc = orjson.loads(value)  # type: ignore[arg-type]  # None (a tombstone) raises TypeError
        except (orjson.JSONDecodeError, TypeError):
            suspects.append(i)
            continue
        if type(doc) is dict and conforms_oracle(doc, timestamps, checks):
            index.append(i)
            documents.append(doc)
        else:
            suspects.append(i)
    return index, documents, suspects


def compiled_decode(
    values: list[bytes | None], parser: TimestampParser, checks: FieldChecks = batch_module.FIELD_CHECKS
) -> tuple[list[int], list[dict[str, Any]], list[int]]:
    assert batch_module._fastbatch is not None
    return batch_module._fastbatch.decode(
        values,
        orjson.loads,
        batch_module._DECODE_ERRORS,
        checks.required,
        checks.optional_strings,
        checks.timestamps,
        parser.cache,
        parser.seconds,
    )


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(contract_documents.map(lambda d: json.dumps(d).encode()) | raw_values, max_size=10))
def test_the_compiled_decode_keeps_and_suspects_exactly_what_the_oracle_does(
    values: list[bytes | None],
) -> None:
    """Unicode whitespace (as str.strip sees it), lengths, optional types, timestamps, undecodable bytes."""
    expected = decode_oracle(values, TimestampParser())
    twice = TimestampParser()  # a warm cache: the compiled loop reads it before calling the parser
    for parser in (TimestampParser(), twice, twice):
        assert compiled_decode(values, parser) == expected


def test_the_field_checks_are_derived_from_the_mention_model() -> None:
    checks = field_checks(Mention)
    assert checks == batch_module.FIELD_CHECKS
    assert checks.required == (("id", -1), ("text", MAX_TEXT_CHARS))
    assert checks.optional_strings == ("brand", "source", "author", "lang", "url")
    assert checks.timestamps == ("created_at",)
    assert {name for name, _ in checks.required} | {*checks.optional_strings, *checks.timestamps} == set(
        Mention.model_fields
    )


def test_a_new_mention_field_is_checked_on_the_fast_path_too() -> None:
    class Wider(Mention):
        channel: StrictStr | None = None
        posted_at: Rfc3339Str | None = None
        title: Annotated[NonBlankStr, Field(max_length=5)]

    checks = field_checks(Wider)
    assert "channel" in checks.optional_strings and "posted_at" in checks.timestamps
    assert ("title", 5) in checks.required
    base = {"id": "a", "text": "good", "title": "t"}
    values = [
        orjson.dumps(doc)
        for doc in (
            base,
            {**base, "channel": 5},
            {**base, "posted_at": "yesterday"},
            {**base, "title": "longer"},
            {"id": "a", "text": "good"},
        )
    ]
    assert compiled_decode(values, TimestampParser(), checks)[2] == [1, 2, 3, 4]
    assert compiled_decode(values, TimestampParser(), checks) == decode_oracle(
        values, TimestampParser(), checks
    )

    class Odd(Mention):
        count: int = 0

    with pytest.raises(TypeError, match=r"Odd\.count"):
        field_checks(Odd)


def test_without_the_compiled_decode_the_contract_judges_every_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = [v for v, _ in POISON] + [good(1), good(2, created_at="2026-11-26T10:15:00Z")]
    _, with_c = run_decode(values)
    monkeypatch.setattr(batch_module, "_fastbatch", None)
    _records, without = run_decode(values)
    assert (without.index, without.documents) == (with_c.index, with_c.documents) and with_c.index
    assert [(r.reason, r.detail) for r in without.rejected] == [(r.reason, r.detail) for r in with_c.rejected]


def test_encode_writes_the_result_schema_with_extra_fields_first_and_ours_winning() -> None:
    docs = [
        {"id": "a", "text": "t", "brand": "acme", "created_at": "2026-11-26T10:15:00Z", "campaign": {"n": 1}},
        {"id": "b", "text": "t", "author": "x", "lang": "en", "url": "u", "label": "spoofed", "z": 1},
    ]
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    label_ids = probabilities.argmax(axis=1)
    model = {"repo": "org/model", "revision": "abc", "sha256": "0" * 64}
    out = encode(docs, probabilities, label_ids, model, "2026-12-01T00:00:00Z")
    first, second = (orjson.loads(o) for o in out)
    assert next(iter(first)) == "campaign" and first["campaign"] == {"n": 1}
    assert (first["label"], first["score"], first["brand"]) == ("negative", 0.7, "acme")
    assert second["label"] == "positive", "ours win on a clash"
    assert second["z"] == 1 and "author" not in second and "lang" not in second and "url" not in second
    for raw, doc in zip(out, docs, strict=True):
        result = SentimentResult.model_validate_json(raw)
        mention = Mention.model_validate(doc)
        assert result.model_extra == {
            k: v for k, v in (mention.model_extra or {}).items() if k not in SentimentResult.model_fields
        }
        assert result.scores.model_dump() == pytest.approx(
            dict(zip(("negative", "neutral", "positive"), probabilities[out.index(raw)], strict=True))
        )


def test_the_compiled_encoder_is_built() -> None:
    """``make test`` builds worker/_fastbatch.c: without it every record would take the Python path."""
    assert batch_module._fastbatch is not None


strings = st.text(max_size=12) | st.sampled_from(
    ['"', "\\", "\x00\x1f\x7f", "\b\f\n\r\t", "é😀\u2028", "\ud800"]  # a lone surrogate: orjson refuses it
)
result_documents = st.fixed_dictionaries(
    {"id": strings, "text": st.just("t")},
    optional={
        "brand": strings | st.none() | st.integers(),
        "source": strings | st.none(),
        "created_at": strings | st.none(),
        "author": strings,
        "extra": json_values,
    },
)
probability_rows = st.lists(
    st.floats(min_value=0, max_value=1) | st.sampled_from([1e-300, 5e-324, 1e-5, 1.0, float("nan")]),
    min_size=3,
    max_size=3,
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(result_documents, probability_rows), max_size=6))
def test_the_compiled_encoder_writes_exactly_the_bytes_of_the_python_one(
    rows: list[tuple[dict[str, Any], list[float]]],
) -> None:
    """Records it leaves to Python (extra fields, a non-str value, a lone surrogate, a NaN) included."""
    docs = [doc for doc, _ in rows]
    probabilities = np.array([p for _, p in rows], dtype=np.float64).reshape(-1, 3)
    label_ids = np.nan_to_num(probabilities, nan=-1.0).argmax(axis=1)
    model = {"repo": "org/m\u00e9", "revision": None, "sha256": "0" * 64}
    try:
        expected: list[bytes] | type[Exception] = batch_module._encode_python(
            docs, probabilities, label_ids, model, "2026-12-06T00:00:00.000000Z"
        )
    except orjson.JSONEncodeError:
        expected = orjson.JSONEncodeError
    if expected is orjson.JSONEncodeError:
        with pytest.raises(orjson.JSONEncodeError):
            encode(docs, probabilities, label_ids, model, "2026-12-06T00:00:00.000000Z")
    else:
        assert encode(docs, probabilities, label_ids, model, "2026-12-06T00:00:00.000000Z") == expected


def test_without_the_compiled_encoder_python_writes_every_record(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = [{"id": "a", "text": "t", "brand": "acme"}, {"id": "b", "text": "t", "x": 1}]
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    with_c = encode(docs, probabilities, probabilities.argmax(axis=1), {"repo": "r"}, "now")
    monkeypatch.setattr(batch_module, "_fastbatch", None)
    assert encode(docs, probabilities, probabilities.argmax(axis=1), {"repo": "r"}, "now") == with_c


def test_result_keys_fall_back_to_the_post_id() -> None:
    records = [Record(good(0), b"k0"), Record(good(1), None)]
    decoded = decode(records, [r.value() for r in records], TimestampParser())
    assert result_keys(records, decoded) == [b"k0", b"p1"]


def test_event_times_use_created_at_else_the_record_timestamp() -> None:
    records = [Record(good(0, created_at="2026-11-26T10:15:00Z")), Record(good(1), None, 1_000)]
    decoded = decode(records, [r.value() for r in records], TimestampParser())
    assert event_times(records, decoded, TimestampParser()).tolist() == [1795688100.0, 1.0]


def test_foreign_language_posts_are_routed_with_a_reason_and_untagged_ones_stay() -> None:
    tags = ["es", "en-US", None, "EN_gb", "", "pt-BR", "xx-weird"]
    values: list[bytes | None] = [good(i, lang=t) if t is not None else good(i) for i, t in enumerate(tags)]
    records, decoded = run_decode(values)
    routed = route_languages(decoded, records, frozenset({"en"}))
    assert [d["id"] for d in decoded.documents] == ["p1", "p2", "p3", "p4"]
    assert [language for _, language in routed] == ["es", "pt", "xx"]
    assert all(r.reason is DeadLetterReason.UNSUPPORTED_LANGUAGE for r, _ in routed)
    assert "'es'" in routed[0][0].detail and "MODEL_LANGUAGES" in routed[0][0].detail
    assert decoded.rejected == [r for r, _ in routed]


def test_offsets_are_tracked_once_per_partition() -> None:
    partitions = [0, 1, 0, 2, 1, 0]
    offsets = [10, 5, 11, 7, 6, 13]
    assert offset_ranges(partitions, offsets) == {0: (10, 13, 3), 1: (5, 6, 2), 2: (7, 7, 1)}
    assert last_per_partition(partitions) == {0: 5, 1: 4, 2: 3}


def test_batch_histogram_exposes_what_a_histogram_of_the_same_values_does() -> None:
    buckets = (0.001, 0.01, 0.1, 1, 10)
    values = np.array([0.0, 0.001, 0.0011, 0.05, 0.1, 3.0, 10.0, 11.0, 500.0])
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = BatchHistogram("lag_seconds", "doc", buckets, ours_registry)
    theirs = Histogram("lag_seconds", "doc", buckets=buckets, registry=theirs_registry)
    ours.observe_many(values[:4])
    ours.observe_many(values[4:])
    ours.observe_many(np.array([]))
    for v in values.tolist():
        theirs.observe(v)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        }

    assert samples(ours_registry) == pytest.approx(samples(theirs_registry))


def test_predictions_are_counted_per_brand_and_label_once_per_batch() -> None:
    metrics = WorkerMetrics(["Acme", "globex"])
    brands = metrics.brand_indices(["acme", "ACME", None, "initech", "globex", "acme"])
    assert [metrics.brand_names[i] for i in brands.tolist()] == [
        "acme", "acme", "other", "other", "globex", "acme",
    ]  # fmt: skip
    tally = metrics.tally_predictions(brands, np.array([0, 0, 2, 1, 2, 1]))
    assert tally == {
        ("negative", "acme"): 2,
        ("neutral", "acme"): 1,
        ("positive", "other"): 1,
        ("neutral", "other"): 1,
        ("positive", "globex"): 1,
    }
    assert metrics.predictions.labels("negative", "acme")._value.get() == 0, "a tally counts nothing yet"
    metrics.count_predictions(tally)
    assert metrics.predictions.labels("negative", "acme")._value.get() == 2


def test_the_drift_window_is_measured_without_a_registry_and_slides_by_whole_batches() -> None:
    """worker.drift is pure: it returns what the worker's drift observer turns into gauges."""
    monitor = DriftMonitor(window=1000, min_records=500, oov_sample=1)
    assert monitor.set_model(None, lambda lines: (0, 1)).label_shares is None  # label drift off
    reference = {"val_prediction_distribution": {"negative": 0.2, "neutral": 0.5, "positive": 0.3}}
    known = monitor.set_model({**reference, "oov_token_rate": 0.1}, lambda lines: (
        sum(line.split().count("zorblax") for line in lines), sum(len(line.split()) for line in lines)
    ))  # fmt: skip
    assert known.label_shares == pytest.approx([0.2, 0.5, 0.3]) and known.oov_rate == 0.1
    usual = np.repeat(np.arange(3), [80, 200, 120])  # the reference mix, 400 posts
    first = monitor.observe(usual, ["a b c d"] * 400)
    assert (first.records, first.jsd, first.psi, first.oov_rate) == (400, None, None, None)  # too few
    monitor.observe(usual, ["a b c d"] * 400)
    steady = monitor.observe(usual, ["a b c d"] * 400)
    assert steady.records == 1200 and steady.jsd == pytest.approx(0.0, abs=1e-9)
    skewed = monitor.observe(np.zeros(400, np.intp), ["zorblax b c d"] * 400)
    assert skewed.records == 1200  # the oldest batch left; the rest still fills the window
    assert skewed.label_shares == pytest.approx([2 / 3 * 0.2 + 1 / 3, 2 / 3 * 0.5, 2 / 3 * 0.3])
    assert skewed.jsd is not None and skewed.jsd > 0.05 and skewed.psi is not None and skewed.psi > 0.25
    assert skewed.oov_rate == pytest.approx(400 / 4800)
