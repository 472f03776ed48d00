"""Per-brand reputation: net sentiment over sliding windows (gauges) and tumbling-window aggregates for
the compacted ``reputation`` topic.

Windows run on processing time (the ``processed_at`` stamped on each result), so an aggregate equals a
recount of the output topic by ``processed_at``. Brands are the bounded metric labels: configured
brands, everything else ``other``. Each worker aggregates what it scored; the topic key carries the
worker (``member``), so one brand's window is the sum over members and compaction never overwrites
one worker's counts with another's.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from datetime import UTC, datetime

import orjson

from schemas import LABELS
from worker.metrics import WorkerMetrics

_BUCKET_SECONDS = 10  # resolution of the sliding windows
_COLUMN: dict[str, int] = {label: i for i, label in enumerate(LABELS)}


def net_sentiment(counts: list[int]) -> float:
    """(positive - negative) / total, 0 without posts."""
    total = sum(counts)
    return (counts[2] - counts[0]) / total if total else 0.0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class Reputation:
    """Counts scored posts per (brand, label) into sliding buckets and tumbling windows."""

    def __init__(
        self, metrics: WorkerMetrics, gauge_windows: list[int], window_seconds: int, member: str
    ) -> None:
        self.metrics = metrics
        self.gauge_windows = sorted(gauge_windows)
        self.window_seconds = window_seconds
        self.member = member
        self._buckets: dict[str, deque[tuple[int, list[int]]]] = {}
        self._windows: dict[tuple[str, int], list[int]] = {}

    def observe(self, counts: Counter[tuple[str, str]], now: float) -> None:
        """Add one batch: ``{(sentiment, brand label): posts}`` scored at ``now`` (unix seconds)."""
        bucket = int(now // _BUCKET_SECONDS) * _BUCKET_SECONDS
        window = int(now // self.window_seconds) * self.window_seconds
        for (label, brand), n in counts.items():
            column = _COLUMN[label]
            buckets = self._buckets.setdefault(brand, deque())
            if not buckets or buckets[-1][0] != bucket:
                buckets.append((bucket, [0, 0, 0]))
            buckets[-1][1][column] += n
            self._windows.setdefault((brand, window), [0, 0, 0])[column] += n

    def refresh_gauges(self, now: float) -> None:
        """Recompute the sliding-window gauges (the worker calls this every 2 s, with the lag)."""
        longest = self.gauge_windows[-1] if self.gauge_windows else 0
        for brand, buckets in self._buckets.items():
            while buckets and buckets[0][0] + _BUCKET_SECONDS <= now - longest:
                buckets.popleft()
            for seconds in self.gauge_windows:
                since = now - seconds
                sums = [0, 0, 0]
                for start, counts in buckets:
                    if start + _BUCKET_SECONDS > since:
                        for i in range(3):
                            sums[i] += counts[i]
                window = str(seconds)
                for label, n in zip(LABELS, sums, strict=True):
                    self.metrics.brand_posts.labels(brand, window, label).set(n)
                self.metrics.brand_net.labels(brand, window).set(net_sentiment(sums))

    def closed_windows(self, now: float, everything: bool = False) -> list[tuple[bytes, bytes]]:
        """``(key, value)`` records of the tumbling windows that ended by ``now`` (all with ``everything``,
        at shutdown: this worker adds nothing more to them), removed from memory."""
        records = []
        for (brand, start), counts in sorted(self._windows.items()):
            if not everything and start + self.window_seconds > now:
                continue
            del self._windows[(brand, start)]
            document: dict[str, object] = {
                "brand": brand,
                "window_start": _iso(start),
                "window_end": _iso(start + self.window_seconds),
                "window_seconds": self.window_seconds,
                "member": self.member,
                "negative": counts[0],
                "neutral": counts[1],
                "positive": counts[2],
                "total": sum(counts),
                "net_sentiment": round(net_sentiment(counts), 6),
            }
            key = f"{brand}|{_iso(start)}|{self.member}".encode()
            records.append((key, orjson.dumps(document)))
        return records

    def next_close(self) -> float:
        """When the oldest open window ends (inf when none is open)."""
        return min((start + self.window_seconds for _, start in self._windows), default=math.inf)
