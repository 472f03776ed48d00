"""The stage's state and what it does with each input record: pure Python, no Kafka.

Input (``reputation.partials``, written by the workers inside their checkpoints; the contracts are
:class:`schemas.reputation.Partial` and :class:`schemas.reputation.Progress`):

- a **partial** (key: the brand label): ``{"type": "partial", "brand", "window_start", "window_seconds",
  "counts": [negative, neutral, positive], "sample_posts": k, "negative_sample": [{"rank", "id",
  "text", "terms": [[term, pull, count], ...]}, ...], "positive_sample": [...]}``: what one worker
  batch counted for one brand and event-time window, and its posts that may be in the window's
  bottom-k sample (worker/partials.py); the stage keeps the k of smallest ``(rank, id)`` per side;
- a **progress** record (sent to every partition): ``{"type": "progress", "source": "mentions/3",
  "event_time": t, "sources": 6}``: the input partition ``source`` has been scored up to event time
  ``t`` (the largest seen on it; null if none yet); ``sources`` is how many input partitions exist.
  With ``"idle": true`` it declares ``source`` idle: the worker owning it found it caught up (its
  position at its end) and without posts for ``REPUTATION_IDLE_SECONDS``. Its next ordinary progress
  record makes it active again.

Per partials partition the **watermark** is the smallest event time reached over the active input
partitions, minus ``grace``; when all are idle, the largest reached over all of them, minus ``grace``.
It is -inf until every input partition reported (an idle declaration counts), and it never goes back.
A window closes once the watermark reaches its end: it is judged against the brand's baseline
(:mod:`reputation.detector`) and becomes one ``reputation`` record. A partial whose window already
closed is **late**: counted and logged, not added.

Why idleness is declared by the workers, in the log (like Flink's source idleness), and not by the
stage's clock: only a partition's owner knows it is caught up, so a partition that lags is never taken
for idle; and since a partition's watermark depends only on the partials log, replaying that log (after
a crash, on another instance) closes the same windows with the same contents. What stays processing
time is *when* a worker declares a partition idle: a post arriving on it afterwards with an event time
the others passed by more than the grace is late, as on any slow partition. A stream whose partitions
all went quiet keeps its last window open until a later post (event time does not advance by itself).

State (what the changelog holds, key -> JSON): per brand (key = brand) its baseline; per open window
(key ``brand\\x00window_start``) its counts and samples, a tombstone once it closed; per partition
(key ``\\x00progress``) the event time each input partition reached, which are idle, and the
watermark reached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from reputation.detector import Baseline, DetectorOptions, Judgement, judge, net_sentiment
from schemas.reputation import STAGE_INPUT, Progress, SampledPost
from schemas.timestamps import utc_rfc3339

log = logging.getLogger(__name__)

PROGRESS_KEY = b"\x00progress"
EXAMPLES, EXAMPLE_TERMS = 3, 5  # example posts per side of a window, telling words per example


class BadRecordError(ValueError):
    """An input record that is not a partial or a progress record of this stage's window size."""


def _reason(exc: ValidationError) -> str:
    """The first problem of a refused record, in a line (the full list can be long)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "record"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"not a partial or progress record: {where}: {first['msg']}{more}"


Sample = dict[tuple[int, str], tuple[str, list[tuple[str, float, int]]]]  # (rank, id) -> (text, terms)


@dataclass
class OpenWindow:
    """A window's counts and, per side, its sample: the ``size`` posts of smallest (rank, id) seen."""

    counts: list[int]
    negative: Sample = field(default_factory=dict)
    positive: Sample = field(default_factory=dict)
    size: int = 1 << 30  # the workers' BRAND_TERMS_SAMPLE_POSTS (the smallest seen)

    def add(self, sample: Sample, posts: list[SampledPost], size: int) -> None:
        for post in posts:
            sample[(post.rank, post.id)] = (post.text, post.terms)
        self.size = min(self.size, size)
        for side in (self.negative, self.positive):
            if len(side) > self.size:
                for key in sorted(side)[self.size :]:
                    del side[key]


@dataclass
class BrandState:
    baseline: Baseline = field(default_factory=Baseline)
    open: dict[int, OpenWindow] = field(default_factory=dict)
    last: Judgement | None = None  # the last closed window's judgement (gauges)


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    brand: str
    start: int
    key: bytes
    value: bytes
    judgement: Judgement


@dataclass
class PartitionState:
    brands: dict[str, BrandState] = field(default_factory=dict)
    sources: dict[str, float] = field(default_factory=dict)  # input partition -> event time reached
    idle: set[str] = field(default_factory=set)  # input partitions declared idle
    expected_sources: int = 0
    mark: float = float("-inf")  # the watermark reached (it never goes back)
    dirty: set[bytes] = field(default_factory=set)  # changelog keys changed since the last drain

    def watermark(self, grace: float) -> float:
        if len(self.sources.keys() | self.idle) < max(1, self.expected_sources):
            return self.mark
        active = [t for s, t in self.sources.items() if s not in self.idle]
        if active:
            reached = min(active)
        elif self.sources:
            reached = max(self.sources.values())
        else:
            return self.mark
        return max(self.mark, reached - grace)


class StageState:
    """Every partition this instance owns: apply input records, close windows, drain changelog entries."""

    def __init__(
        self, window_seconds: int, grace_seconds: float, options: DetectorOptions, top_terms: int = 10
    ) -> None:
        self.window = window_seconds
        self.grace = grace_seconds
        self.options = options
        self.top_terms = top_terms
        self.partitions: dict[int, PartitionState] = {}
        self.late_posts = 0

    # --- input ---------------------------------------------------------------------------------------------
    def apply(self, partition: int, value: bytes) -> int:
        """Add one input record; returns the number of late posts it held (0 for a record in time).
        Raises :class:`BadRecordError` (with the reason) for a record that does not fit the schema."""
        try:
            doc = STAGE_INPUT.validate_json(value)
        except ValidationError as exc:
            raise BadRecordError(_reason(exc)) from None
        part = self.partitions.setdefault(partition, PartitionState())
        if isinstance(doc, Progress):
            if doc.event_time is not None and doc.event_time > part.sources.get(doc.source, float("-inf")):
                part.sources[doc.source] = doc.event_time
            if doc.idle:
                part.idle.add(doc.source)
            elif doc.event_time is None:
                raise BadRecordError("a progress record without event_time that does not declare idle")
            else:
                part.idle.discard(doc.source)
            part.expected_sources = max(part.expected_sources, doc.sources)
            part.dirty.add(PROGRESS_KEY)
            return 0
        if doc.window_seconds != self.window:
            raise BadRecordError(
                f"a partial of {doc.window_seconds}s windows; this stage closes {self.window}s windows "
                "(REPUTATION_WINDOW_SECONDS must be the same for workers and stage)"
            )
        brand, start, counts = doc.brand, doc.window_start, doc.counts
        if start + self.window <= part.watermark(self.grace):
            return sum(counts)
        state = part.brands.setdefault(brand, BrandState())
        window = state.open.get(start)
        if window is None:
            window = state.open[start] = OpenWindow([0, 0, 0])
        for i in range(3):
            window.counts[i] += counts[i]
        window.add(window.negative, doc.negative_sample, doc.sample_posts)
        window.add(window.positive, doc.positive_sample, doc.sample_posts)
        part.dirty.add(_window_key(brand, start))
        return 0

    def close(self, partition: int) -> list[ClosedWindow]:
        """Judge and remove every window of ``partition`` that the watermark passed, oldest first."""
        part = self.partitions.get(partition)
        if part is None:
            return []
        watermark = part.watermark(self.grace)
        if watermark > part.mark:
            part.mark = watermark
            part.dirty.add(PROGRESS_KEY)
        closed: list[ClosedWindow] = []
        for brand in sorted(part.brands):
            state = part.brands[brand]
            for start in sorted(s for s in state.open if s + self.window <= watermark):
                closed.append(self._judge(brand, start, state, state.open.pop(start)))
                part.dirty.add(brand.encode())
                part.dirty.add(_window_key(brand, start))  # now a tombstone
        return closed

    def _judge(self, brand: str, start: int, state: BrandState, window: OpenWindow) -> ClosedWindow:
        counts = window.counts
        total = sum(counts)
        j = judge(state.baseline, counts[0], total, self.options)
        state.last = j
        document = {
            "brand": brand,
            "window_start": utc_rfc3339(start),
            "window_end": utc_rfc3339(start + self.window),
            "window_seconds": self.window,
            "negative": counts[0],
            "neutral": counts[1],
            "positive": counts[2],
            "total": total,
            "net_sentiment": round(net_sentiment(counts), 6),
            "negative_share": round(j.share, 6),
            "baseline_share": round(j.baseline_share, 6),
            "dispersion": round(j.dispersion, 4),
            "zscore": round(j.zscore, 4),
            "evidence": round(j.evidence, 4),
            "baseline_volume": round(j.baseline_volume, 4),
            "volume_ratio": round(j.volume_ratio, 4),
            "warm": j.warm,
            "alert": j.alert,
            "top_negative_terms": _top_terms(window.negative, self.top_terms),
            "top_positive_terms": _top_terms(window.positive, self.top_terms),
            "negative_examples": _examples(window.negative),
            "positive_examples": _examples(window.positive),
        }
        key = f"{brand}|{utc_rfc3339(start)}".encode()
        return ClosedWindow(brand, start, key, orjson.dumps(document), j)

    # --- changelog -----------------------------------------------------------------------------------------
    def drain(self) -> list[tuple[int, bytes, bytes | None]]:
        """``(partition, key, value)`` of every state entry changed since the last drain (value None: a
        tombstone, for a window that closed)."""
        out: list[tuple[int, bytes, bytes | None]] = []
        for partition, part in sorted(self.partitions.items()):
            for key in sorted(part.dirty):
                out.append((partition, key, self._encode(part, key)))
            part.dirty.clear()
        return out

    def _encode(self, part: PartitionState, key: bytes) -> bytes | None:
        if key == PROGRESS_KEY:
            mark = part.mark if part.mark != float("-inf") else None
            return orjson.dumps(
                {
                    "sources": part.sources,
                    "idle": sorted(part.idle),
                    "expected_sources": part.expected_sources,
                    "watermark": mark,
                }
            )
        brand, _, start = key.decode().partition("\x00")
        state = part.brands[brand]
        if not start:
            return orjson.dumps({"baseline": state.baseline.to_json()})
        w = state.open.get(int(start))
        if w is None:
            return None
        return orjson.dumps(
            {
                "counts": w.counts,
                "size": w.size,
                "negative": [[r, i, text, terms] for (r, i), (text, terms) in sorted(w.negative.items())],
                "positive": [[r, i, text, terms] for (r, i), (text, terms) in sorted(w.positive.items())],
            }
        )

    def restore(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Load one changelog entry (the last value of each key wins; None: a tombstone)."""
        part = self.partitions.setdefault(partition, PartitionState())
        if key == PROGRESS_KEY:
            if value is None:
                return
            doc: dict[str, Any] = orjson.loads(value)
            part.sources = {s: float(t) for s, t in doc["sources"].items()}
            part.idle = set(doc.get("idle", ()))
            part.expected_sources = int(doc["expected_sources"])
            mark = doc.get("watermark")
            part.mark = float("-inf") if mark is None else float(mark)
            return
        brand, _, start = key.decode().partition("\x00")
        state = part.brands.setdefault(brand, BrandState())
        if not start:
            if value is not None:
                state.baseline = Baseline.from_json(orjson.loads(value)["baseline"])
            return
        if value is None:
            state.open.pop(int(start), None)
            return
        w = orjson.loads(value)
        window = OpenWindow(list(w["counts"]), size=int(w["size"]))
        for side, entries in ((window.negative, w["negative"]), (window.positive, w["positive"])):
            for rank, post_id, text, terms in entries:
                side[(int(rank), str(post_id))] = (text, [(t, float(p), int(n)) for t, p, n in terms])
        state.open[int(start)] = window

    def drop(self, partition: int) -> None:
        """Forget a partition (revoked, or to be restored again from the changelog)."""
        self.partitions.pop(partition, None)


def _window_key(brand: str, start: int) -> bytes:
    """The changelog key of one open window (the brand's own key holds its baseline): an entry per
    window keeps each record small however many windows are open."""
    return f"{brand}\x00{start}".encode()


def _top_terms(sample: Sample, top: int) -> list[dict[str, object]]:
    """The ``top`` terms by pull summed over the sample (in rank order: the same sums on every replay),
    strongest first, ties alphabetical."""
    sums: dict[str, list[float]] = {}
    for key in sorted(sample):
        for term, pull, count in sample[key][1]:
            entry = sums.setdefault(term, [0.0, 0.0])
            entry[0] += pull
            entry[1] += count
    ranked = sorted(sums.items(), key=lambda item: (-item[1][0], item[0]))[:top]
    return [{"term": t, "pull": round(p, 4), "count": int(n)} for t, (p, n) in ranked]


def _examples(sample: Sample) -> list[dict[str, object]]:
    """The 3 sampled posts whose terms pull hardest to their side (ties: smaller rank), with their 5
    strongest terms."""
    strongest = sorted(
        (key for key in sample if sample[key][1]),
        key=lambda key: (-sum(p for _, p, _ in sample[key][1]), key),
    )[:EXAMPLES]
    return [
        {"id": key[1], "text": sample[key][0], "terms": [t for t, _, _ in sample[key][1][:EXAMPLE_TERMS]]}
        for key in strongest
    ]
