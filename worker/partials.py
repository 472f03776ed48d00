"""Partial aggregates: what one batch counted per brand and event-time window, for the reputation stage.

An observer of the worker loop: :meth:`Partials.observe` takes the scored batch as columns, and
:meth:`Partials.drain` hands back the records the worker produces to ``REPUTATION_PARTIALS_TOPIC``
inside the same checkpoint as the batch's results (one transaction under exactly-once), so the stage
counts each post exactly once and the worker keeps no window state. Record formats are in
:mod:`reputation.state`: one ``partial`` per (brand label, window) with posts, keyed by the brand
label, and one ``progress`` record per input partition of the batch to every partials partition (the
stage's watermark).

An assigned input partition that is caught up (its position at its end) and had no posts for
``REPUTATION_IDLE_SECONDS`` (processing time) is declared **idle** by :meth:`Partials.idle`: one
progress record with ``"idle": true``, so it stops holding the stage's windows open (Flink's source
idleness); its next post makes it active again.

A post's window is ``floor(event_time / REPUTATION_WINDOW_SECONDS)``, its event time being its
``created_at``, else its Kafka record timestamp: never the time it was scored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import orjson

from schemas import LABELS
from worker.terms import MIN_PULL, TermTally, is_term

_NEGATIVE, _POSITIVE = LABELS.index("negative"), LABELS.index("positive")


class Partials:
    """Per batch: label counts per (brand label, window) and the terms that pulled them."""

    def __init__(
        self, brand_names: Sequence[str], window_seconds: int, top_terms: int, source_topic: str
    ) -> None:
        self.brand_names = list(brand_names)
        self.window = window_seconds
        self.top_terms = top_terms
        self.source_topic = source_topic
        self.output_partitions = 1  # of the partials topic (set at start)
        self.input_partitions = 1  # of the input topic (set at start)
        self._reached: dict[int, float] = {}  # input partition -> largest event time scored
        self._counts: dict[tuple[int, int], list[int]] = {}
        self._terms: dict[tuple[int, int], tuple[TermTally, TermTally]] = {}
        self._progress: set[int] = set()
        self._quiet_since: dict[int, float] = {}  # assigned input partition -> last post (monotonic)
        self._idle: set[int] = set()  # input partitions declared idle and quiet since
        self._idle_checked = float("-inf")

    def window_starts(self, event_seconds: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """Each post's window start (unix seconds)."""
        return (np.floor(event_seconds / self.window) * self.window).astype(np.int64)

    def observe(
        self,
        brand_ids: npt.NDArray[np.intp],
        label_ids: npt.NDArray[np.intp],
        starts: npt.NDArray[np.int64],
        event_seconds: npt.NDArray[np.float64],
        partitions: npt.NDArray[np.int64],
    ) -> None:
        """One batch's valid posts, row i for post i (brand index into ``brand_names``, label id)."""
        if not len(label_ids):
            return
        windows, inverse = np.unique(starts, return_inverse=True)
        width = len(self.brand_names) * 3
        cells = inverse * width + brand_ids * 3 + label_ids
        counts = np.bincount(cells, minlength=len(windows) * width)
        for cell in np.flatnonzero(counts).tolist():
            window, rest = divmod(cell, width)
            brand, label = divmod(rest, 3)
            key = (brand, int(windows[window]))
            self._counts.setdefault(key, [0, 0, 0])[label] += int(counts[cell])
        for partition in np.unique(partitions).tolist():
            reached = float(event_seconds[partitions == partition].max())
            if reached > self._reached.get(partition, float("-inf")):
                self._reached[partition] = reached
            self._progress.add(partition)
            self._quiet_since.pop(partition, None)  # restarts at the next idle check
            self._idle.discard(partition)

    def idle(
        self, caught_up: Callable[[], Mapping[int, bool]], now: float, timeout: float
    ) -> list[tuple[bytes, bytes, int | None]]:
        """Progress records declaring idle the assigned input partitions caught up (``caught_up()``:
        assigned partition -> position at its end) with no posts for ``timeout`` seconds of ``now``
        (monotonic). Checked at most once a second; each quiet spell is declared once."""
        if now - self._idle_checked < 1.0:
            return []
        self._idle_checked = now
        assigned = caught_up()
        for gone in set(self._quiet_since) - set(assigned):  # revoked: the next owner's timer runs
            del self._quiet_since[gone]
            self._idle.discard(gone)
        out: list[tuple[bytes, bytes, int | None]] = []
        for source, done in sorted(assigned.items()):
            since = self._quiet_since.setdefault(source, now)
            if not done:
                self._quiet_since[source] = now
            elif source not in self._idle and now - since >= timeout:
                self._idle.add(source)
                out.extend(self._progress_records(source, idle=True))
        return out

    def observe_terms(
        self,
        brand_ids: Sequence[int],
        label_ids: Sequence[int],
        starts: Sequence[int],
        tokens_per_post: Sequence[Sequence[str]],
        pull_per_post: Sequence[npt.NDArray[np.floating]],
    ) -> None:
        """Sampled posts' explanations (see :mod:`worker.terms` for what a term's pull is)."""
        if not self.top_terms:
            return
        for brand, label, start, tokens, pulls in zip(
            brand_ids, label_ids, starts, tokens_per_post, pull_per_post, strict=True
        ):
            if label not in (_NEGATIVE, _POSITIVE):
                continue
            key = (brand, start)
            if key not in self._terms:
                self._terms[key] = (TermTally(self.top_terms), TermTally(self.top_terms))
            tally = self._terms[key][0 if label == _NEGATIVE else 1]
            sign = 1.0 if label == _NEGATIVE else -1.0
            name = self.brand_names[brand]
            for token, pull in zip(tokens, (sign * pulls).tolist(), strict=True):
                if pull > MIN_PULL and is_term(token) and token != name:
                    tally.add(token, pull)

    def drain(self) -> list[tuple[bytes, bytes, int | None]]:
        """``(key, value, partition)`` of what was observed since the last drain (None: by key)."""
        out: list[tuple[bytes, bytes, int | None]] = []
        for (brand, start), counts in sorted(self._counts.items()):
            name = self.brand_names[brand]
            terms = self._terms.get((brand, start))
            document = {
                "type": "partial",
                "brand": name,
                "window_start": start,
                "window_seconds": self.window,
                "counts": counts,
                "negative_terms": _entries(terms[0]) if terms else [],
                "positive_terms": _entries(terms[1]) if terms else [],
            }
            out.append((name.encode(), orjson.dumps(document), None))
        for source in sorted(self._progress):
            out.extend(self._progress_records(source, idle=False))
        self._counts.clear()
        self._terms.clear()
        self._progress.clear()
        return out

    def _progress_records(self, source: int, idle: bool) -> list[tuple[bytes, bytes, int | None]]:
        document: dict[str, object] = {
            "type": "progress",
            "source": f"{self.source_topic}/{source}",
            "event_time": self._reached.get(source),
            "sources": self.input_partitions,
        }
        if idle:
            document["idle"] = True
        value = orjson.dumps(document)
        return [(b"\x00progress", value, partition) for partition in range(self.output_partitions)]


def _entries(tally: TermTally) -> list[list[object]]:
    ranked = sorted(tally.terms.items(), key=lambda item: -item[1][0])[: 3 * tally.top]
    return [[term, round(pull, 4), int(count)] for term, (pull, count) in ranked]
