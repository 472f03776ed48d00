"""Per-brand reputation: net sentiment over sliding windows (gauges), tumbling-window aggregates for the
compacted ``reputation`` topic, crisis detection per brand, and the terms that explain each window.

Windows run on processing time (the ``processed_at`` stamped on each result), so an aggregate equals a
recount of the output topic by ``processed_at``. Brands are the bounded metric labels: configured
brands, everything else ``other``. Each worker aggregates what it scored; the topic key carries the
worker (``member``), so one brand's window is the sum over members and compaction never overwrites
one worker's counts with another's.

**Crisis detection** (:class:`BrandBaseline`). When a tumbling window of ``W`` seconds closes, every
brand label gets the window's ``n`` posts and ``k`` negatives (0 and 0 when it had none) and is compared
with its own baseline, learned online from the windows before it:

- share ``s = k / n``; baseline mean ``m`` and *excess* variance ``v`` of the share are exponentially
  weighted (``alpha = 1 - 2 ** (-1 / half_life)``). The excess is what the windows vary beyond binomial
  sampling noise: ``v`` learns ``(s - m)**2 - m(1 - m)/n``, clipped at 0;
- deviation ``z = (s - m) / sqrt(v + m(1 - m)/n + floor**2)``: a window with few posts is noisier, so it
  needs a larger jump; ``floor`` (``BRAND_SHARE_STD_FLOOR``) keeps a very steady brand from paging on a
  one-point wobble;
- negative volume ``k`` has its own weighted mean ``c``; ``ratio = k / max(c, 1)``;
- ``z`` is 0 and ``ratio`` 1 until the brand learned ``BRAND_BASELINE_WARMUP_WINDOWS`` windows;
- the baseline then learns the window, clipped to ``m +- 3 sd`` (share) and ``3 max(c, 1)`` (volume), so
  a crisis does not become "normal" within a few windows: it is absorbed over the half-life;
- the first window the worker counts posts in (it started part-way through it) and windows emitted at
  shutdown are not learned; windows that passed while the worker was idle are learned as empty (at most
  ``_MAX_GAP_WINDOWS`` of them).

The thresholds (z, minimum posts, ratio) live in the alert rules, not here: the worker exports the
deviation, Prometheus decides (``deploy/prometheus/alerts.yml``: BrandSentimentDrop, BrandNegativeSpike).

**Terms** (:class:`TermTally`). :meth:`Reputation.observe_terms` takes each post's tokens and each
token's pull (its contribution to the negative minus the positive logit; > 0 pulls negative). Per brand
and window it sums the pull of every token in posts scored negative that pulls negative, and the
opposite pull of every token in posts scored positive that pulls positive; stop words, masked URLs and
handles, lexicon tokens (``__...__``), punctuation, numbers, single letters and the brand's own name are
left out. The
tallies are pruned to their strongest entries when they grow, so memory is bounded; each closed window
record carries the top ``BRAND_TOP_TERMS`` of each side.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from reputation.detector import net_sentiment
from schemas import LABELS
from schemas.timestamps import utc_rfc3339
from worker.metrics import WorkerMetrics
from worker.terms import TermTally, is_term

_BUCKET_SECONDS = 10  # resolution of the sliding windows
_COLUMN: dict[str, int] = {label: i for i, label in enumerate(LABELS)}
_NEGATIVE, _POSITIVE = _COLUMN["negative"], _COLUMN["positive"]
_LEARN_CLIP_Z = 3.0  # a window further than this from the baseline is learned as if it were this far
_LEARN_CLIP_RATIO = 3.0  # ... and a negative volume above this many times the usual
_MAX_GAP_WINDOWS = 1000  # idle longer than this: the volume baseline has long decayed anyway
_MIN_PULL = 1e-6


# --- crisis detection ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deviation:
    """One brand's closed window against its baseline (before the baseline learned the window)."""

    posts: int
    negatives: int
    share: float
    baseline_share: float
    zscore: float
    baseline_volume: float
    volume_ratio: float
    windows: int  # windows learned so far (this one included)


class BrandBaseline:
    """Exponentially weighted baseline of one brand's negative share and negative volume per window."""

    def __init__(self, half_life_windows: float, warmup_windows: int, std_floor: float) -> None:
        self.alpha = 1.0 - 0.5 ** (1.0 / half_life_windows)
        self.warmup = warmup_windows
        self.floor = std_floor
        self.share_mean = 0.0
        self.share_excess_var = 0.0
        self.share_windows = 0  # windows with posts (share is undefined without)
        self.volume_mean = 0.0
        self.windows = 0

    def _share_sd(self, posts: int) -> float:
        m = self.share_mean
        return math.sqrt(self.share_excess_var + m * (1.0 - m) / posts + self.floor**2)

    def observe(self, negatives: int, posts: int) -> Deviation:
        """Score one closed window against the baseline, then learn it."""
        share = negatives / posts if posts else 0.0
        warm = self.windows >= self.warmup and self.share_windows > 0
        z = (share - self.share_mean) / self._share_sd(posts) if warm and posts else 0.0
        ratio = negatives / max(self.volume_mean, 1.0) if warm else 1.0
        before = (self.share_mean, self.volume_mean)
        self._learn(negatives, posts, share, warm)
        return Deviation(posts, negatives, share, before[0], z, before[1], ratio, self.windows)

    def _learn(self, negatives: int, posts: int, share: float, warm: bool) -> None:
        a = self.alpha
        if posts:
            if self.share_windows == 0:
                self.share_mean = share
            else:
                if warm:
                    limit = _LEARN_CLIP_Z * self._share_sd(posts)
                    share = min(max(share, self.share_mean - limit), self.share_mean + limit)
                d = share - self.share_mean
                sampling = self.share_mean * (1.0 - self.share_mean) / posts
                self.share_mean += a * d
                self.share_excess_var = max(0.0, (1.0 - a) * (self.share_excess_var + a * (d * d - sampling)))
            self.share_windows += 1
        volume = float(negatives)
        if warm:
            volume = min(volume, _LEARN_CLIP_RATIO * max(self.volume_mean, 1.0))
        self.volume_mean = volume if self.windows == 0 else self.volume_mean + a * (volume - self.volume_mean)
        self.windows += 1


# --- terms -----------------------------------------------------------------------------------------------


@dataclass
class _Window:
    counts: list[int]
    negative_terms: TermTally
    positive_terms: TermTally


class Reputation:
    """Counts scored posts per (brand, label) into sliding buckets and tumbling windows; scores each
    closed window against the brand's baseline and keeps the terms that explain it."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        gauge_windows: list[int],
        window_seconds: int,
        member: str,
        half_life_windows: float = 30.0,
        warmup_windows: int = 10,
        std_floor: float = 0.02,
        top_terms: int = 10,
    ) -> None:
        self.metrics = metrics
        self.gauge_windows = sorted(gauge_windows)
        self.window_seconds = window_seconds
        self.member = member
        self.top_terms = top_terms
        #: Whether closed windows are kept for :meth:`closed_windows` (False when the topic is off: they
        #: are scored and dropped, so memory stays bounded).
        self.publish = True
        self._buckets: dict[str, deque[tuple[int, list[int]]]] = {}
        self._windows: dict[tuple[str, int], _Window] = {}
        self._baselines = {
            brand: BrandBaseline(half_life_windows, warmup_windows, std_floor)
            for brand in metrics.brand_names
        }
        self._learned_until: int | None = None  # start of the next window the baselines will learn
        self._ready: list[tuple[bytes, bytes]] = []
        self.deviations: dict[str, Deviation] = {}  # last closed window per brand (for tests, the demo)

    def _window(self, brand: str, start: int) -> _Window:
        window = self._windows.get((brand, start))
        if window is None:
            window = _Window([0, 0, 0], TermTally(self.top_terms), TermTally(self.top_terms))
            self._windows[(brand, start)] = window
        return window

    def observe(self, counts: Counter[tuple[str, str]], now: float) -> None:
        """Add one batch: ``{(sentiment, brand label): posts}`` scored at ``now`` (unix seconds)."""
        bucket = int(now // _BUCKET_SECONDS) * _BUCKET_SECONDS
        start = int(now // self.window_seconds) * self.window_seconds
        if self._learned_until is None:  # the window the worker started in is partial: not learned
            self._learned_until = start + self.window_seconds
        for (label, brand), n in counts.items():
            column = _COLUMN[label]
            buckets = self._buckets.setdefault(brand, deque())
            if not buckets or buckets[-1][0] != bucket:
                buckets.append((bucket, [0, 0, 0]))
            buckets[-1][1][column] += n
            self._window(brand, start).counts[column] += n

    def observe_terms(
        self,
        brand_labels: Sequence[str],
        label_ids: npt.NDArray[np.intp],
        tokens_per_post: Sequence[Sequence[str]],
        pull_per_post: Sequence[npt.NDArray[np.floating]],
        now: float,
    ) -> None:
        """Add one batch's explanations, row i for post i: its bounded brand label, predicted label id
        (:data:`schemas.LABELS` order), normalised tokens and each token's pull (contribution to the
        negative minus the positive logit: > 0 pulls negative). ``now`` as given to :meth:`observe`."""
        if self.top_terms == 0:
            return
        start = int(now // self.window_seconds) * self.window_seconds
        for brand, label, tokens, pulls in zip(
            brand_labels, label_ids.tolist(), tokens_per_post, pull_per_post, strict=True
        ):
            if label == _NEGATIVE:
                tally, sign = self._window(brand, start).negative_terms, 1.0
            elif label == _POSITIVE:
                tally, sign = self._window(brand, start).positive_terms, -1.0
            else:
                continue
            add = tally.add
            for token, pull in zip(tokens, (sign * pulls).tolist(), strict=True):
                if pull > _MIN_PULL and is_term(token) and token != brand:
                    add(token, pull)

    def refresh_gauges(self, now: float) -> None:
        """Recompute the sliding-window gauges and close finished windows (the worker calls this every
        2 s, with the lag, also when idle)."""
        self._close(now)
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
        self._close(now)
        if everything:
            for brand, start in sorted(self._windows):
                self._record(brand, start, self._windows.pop((brand, start)))
        records, self._ready = self._ready, []
        return records

    def _close(self, now: float) -> None:
        """Score every window that ended by ``now`` against the baselines, then turn it into a record."""
        current = int(now // self.window_seconds) * self.window_seconds
        if self._learned_until is not None and self._learned_until < current:
            first = max(self._learned_until, current - _MAX_GAP_WINDOWS * self.window_seconds)
            for start in range(first, current, self.window_seconds):
                self._learn(start)
            self._learned_until = current
        for brand, start in sorted(key for key in self._windows if key[1] < current):
            self._record(brand, start, self._windows.pop((brand, start)))

    def _learn(self, start: int) -> None:
        m = self.metrics
        for brand, baseline in self._baselines.items():
            window = self._windows.get((brand, start))
            counts = window.counts if window is not None else [0, 0, 0]
            deviation = baseline.observe(counts[_NEGATIVE], sum(counts))
            self.deviations[brand] = deviation
            m.brand_negative_share.labels(brand).set(deviation.share)
            m.brand_negative_share_baseline.labels(brand).set(baseline.share_mean)
            m.brand_negative_share_zscore.labels(brand).set(deviation.zscore)
            m.brand_negative_volume_baseline.labels(brand).set(baseline.volume_mean)
            m.brand_negative_volume_ratio.labels(brand).set(deviation.volume_ratio)
            m.brand_baseline_windows.labels(brand).set(baseline.windows)
            for label, n in zip(LABELS, counts, strict=True):
                m.brand_last_window_posts.labels(brand, label).set(n)

    def _record(self, brand: str, start: int, window: _Window) -> None:
        counts = window.counts
        if not self.publish or not sum(counts):  # terms alone (no post counted) make no record
            return
        document: dict[str, object] = {
            "brand": brand,
            "window_start": utc_rfc3339(start),
            "window_end": utc_rfc3339(start + self.window_seconds),
            "window_seconds": self.window_seconds,
            "member": self.member,
            "negative": counts[0],
            "neutral": counts[1],
            "positive": counts[2],
            "total": sum(counts),
            "net_sentiment": round(net_sentiment(counts), 6),
            "top_negative_terms": window.negative_terms.strongest(),
            "top_positive_terms": window.positive_terms.strongest(),
        }
        key = f"{brand}|{utc_rfc3339(start)}|{self.member}".encode()
        self._ready.append((key, orjson.dumps(document)))
