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

Terms and example posts come from a **sample** of each brand window's negative and positive posts:
the ``BRAND_TERMS_SAMPLE_POSTS`` with the smallest :func:`sample_ranks` of their id (a bottom-k
sample). A worker explains only the posts that may still be among them (:meth:`Partials.sample`) and
sends each one's terms and text; the stage keeps the k smallest. So the published terms and examples
are the same whatever the batching and however many workers, and a worker explains about
``k (1 + ln(n / k))`` of a window side's ``n`` posts.

A post's window is ``floor(event_time / REPUTATION_WINDOW_SECONDS)``, its event time being its
``created_at``, else its Kafka record timestamp: never the time it was scored.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from schemas import LABELS
from sentiment_model.word_pulls import WordPulls
from worker.terms import MIN_PULL, is_term

_NEGATIVE, _POSITIVE = LABELS.index("negative"), LABELS.index("positive")
EXAMPLE_TEXT_CHARS = 280  # a sampled post's text is cut there (its terms come from all of it)
POST_TERMS = 16  # a sampled post's strongest terms that travel with it
_KEPT_GROUPS = 20_000  # (brand, window, side) samples a worker remembers


def sample_ranks(post_ids: Sequence[str]) -> npt.NDArray[np.int64]:
    """Each post's place in its window's sample: the crc32 of its id's UTF-8 (ties broken by the id)."""
    encoded = [post_id.encode("utf-8", "surrogatepass") for post_id in post_ids]
    return np.fromiter(map(zlib.crc32, encoded), np.int64, len(encoded))


class Partials:
    """Per batch: label counts per (brand label, window) and the terms that pulled them."""

    def __init__(
        self,
        brand_names: Sequence[str],
        window_seconds: int,
        top_terms: int,
        source_topic: str,
        sample_posts: int = 20,
    ) -> None:
        self.brand_names = list(brand_names)
        self.window = window_seconds
        self.top_terms = top_terms
        self.sample_posts = sample_posts
        self.source_topic = source_topic
        self.output_partitions = 1  # of the partials topic (set at start)
        self.input_partitions = 1  # of the input topic (set at start)
        self._reached: dict[int, float] = {}  # input partition -> largest event time scored
        self._counts: dict[tuple[int, int], list[int]] = {}
        self._samples: dict[tuple[int, int], tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        self._kept: dict[tuple[int, int, int], list[tuple[int, str]]] = {}  # sample ranks sent, ascending
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

    def sample(
        self,
        brand_ids: npt.NDArray[np.intp],
        label_ids: npt.NDArray[np.intp],
        starts: npt.NDArray[np.int64],
        ids: Sequence[str],
    ) -> npt.NDArray[np.intp]:
        """Which of a batch's posts to explain (indices, ascending): per brand, window and side, those
        that may be among the ``sample_posts`` of the window with the smallest :func:`sample_ranks`.
        Whatever the batching and the number of workers, the stage ends up with exactly those."""
        if not self.top_terms:
            return np.empty(0, np.intp)
        polar = np.flatnonzero((label_ids == _NEGATIVE) | (label_ids == _POSITIVE))
        if not polar.size:
            return np.empty(0, np.intp)
        ranks = sample_ranks([ids[i] for i in polar.tolist()])
        windows, window_of = np.unique(starts[polar], return_inverse=True)
        sides = len(self.brand_names) * 2
        groups = window_of.reshape(-1) * sides + brand_ids[polar] * 2 + (label_ids[polar] == _POSITIVE)
        order = np.lexsort((ranks, groups))  # by group, then rank
        firsts = np.flatnonzero(np.diff(groups[order], prepend=-1))
        sizes = np.diff(firsts, append=order.size)
        # this batch's k-th smallest rank per group: no post above it can be in the window's sample
        cutoffs = ranks[order][firsts + np.minimum(sizes, self.sample_posts) - 1]
        local = ranks[order] <= np.repeat(cutoffs, sizes)
        members = order[local]
        per_group = np.add.reduceat(local, firsts).tolist()
        member_ranks, member_posts = ranks[members].tolist(), polar[members].tolist()
        window_starts = windows.tolist()
        chosen: list[int] = []
        at = 0
        for group, n in zip(groups[order][firsts].tolist(), per_group, strict=True):
            window, side = divmod(group, sides)
            key = (side // 2, window_starts[window], _POSITIVE if side % 2 else _NEGATIVE)
            candidates = [(member_ranks[j], ids[member_posts[j]]) for j in range(at, at + n)]
            merged = sorted({*self._kept.get(key, []), *candidates})[: self.sample_posts]
            self._kept[key] = merged
            chosen.extend(member_posts[at + j] for j, c in enumerate(candidates) if c <= merged[-1])
            at += n
        if len(self._kept) > _KEPT_GROUPS:  # oldest windows first: forgetting only costs explanations
            for key in sorted(self._kept, key=lambda k: k[1])[: len(self._kept) - _KEPT_GROUPS // 2]:
                del self._kept[key]
        return np.array(sorted(chosen), np.intp)

    def observe_terms(
        self,
        brand_ids: npt.NDArray[np.intp],
        label_ids: npt.NDArray[np.intp],
        starts: npt.NDArray[np.int64],
        pulls: WordPulls,
        ids: Sequence[str],
        texts: Sequence[str],
    ) -> None:
        """Explained posts (those :meth:`sample` chose, row i for post i; see :mod:`worker.terms` for what
        a term's pull is) join their window's sample with their strongest terms and ``texts`` as
        received. Columns throughout: a post's Python work is building its record."""
        if not self.top_terms or not len(ids):
            return
        n, words = len(ids), pulls.words
        line_of = np.repeat(np.arange(n), pulls.per_line)
        sign = np.where(label_ids == _NEGATIVE, 1.0, np.where(label_ids == _POSITIVE, -1.0, 0.0))
        toward = pulls.pulls * sign[line_of]  # the pull towards the post's own side
        allowed = np.fromiter(map(is_term, words), bool, len(words))
        texts_of_words = np.array(words, dtype=str)
        own_name = np.full(n, -1, np.intp)  # the word that is the post's brand's name, if any
        for brand in np.unique(brand_ids).tolist():
            found = np.flatnonzero(texts_of_words == self.brand_names[brand])
            own_name[brand_ids == brand] = found[0] if found.size else -1
        index = pulls.word_index
        keep = (toward > MIN_PULL) & allowed[index] & (index != own_name[line_of])
        pairs, inverse = np.unique(line_of[keep] * len(words) + index[keep], return_inverse=True)
        summed = np.bincount(inverse.reshape(-1), weights=toward[keep], minlength=pairs.size)
        occurrences = np.bincount(inverse.reshape(-1), minlength=pairs.size)
        pair_line, pair_word = np.divmod(pairs, len(words))
        alphabetical = np.argsort(np.argsort(texts_of_words, kind="stable"), kind="stable")
        order = np.lexsort((alphabetical[pair_word], -summed, pair_line))  # per post: strongest first
        firsts = np.searchsorted(pair_line[order], np.arange(n))
        strongest = order[np.arange(order.size) - firsts[pair_line[order]] < POST_TERMS]
        bounds = np.searchsorted(pair_line[strongest], np.arange(n + 1)).tolist()
        terms = list(
            zip(
                [words[w] for w in pair_word[strongest].tolist()],
                np.round(summed[strongest], 6).tolist(),
                occurrences[strongest].tolist(),
                strict=True,
            )
        )
        ranks = sample_ranks(ids).tolist()
        for i, (brand, label, start) in enumerate(
            zip(brand_ids.tolist(), label_ids.tolist(), starts.tolist(), strict=True)
        ):
            if label not in (_NEGATIVE, _POSITIVE):
                continue
            post = {
                "rank": ranks[i],
                "id": ids[i],
                "text": texts[i][:EXAMPLE_TEXT_CHARS],
                "terms": terms[bounds[i] : bounds[i + 1]],
            }
            if (brand, start) not in self._samples:
                self._samples[(brand, start)] = ([], [])
            self._samples[(brand, start)][0 if label == _NEGATIVE else 1].append(post)

    def drain(self) -> list[tuple[bytes, bytes, int | None]]:
        """``(key, value, partition)`` of what was observed since the last drain (None: by key)."""
        out: list[tuple[bytes, bytes, int | None]] = []
        for (brand, start), counts in sorted(self._counts.items()):
            name = self.brand_names[brand]
            negative, positive = self._samples.get((brand, start), ([], []))
            document = {
                "type": "partial",
                "brand": name,
                "window_start": start,
                "window_seconds": self.window,
                "counts": counts,
                "sample_posts": self.sample_posts,
                "negative_sample": negative,
                "positive_sample": positive,
            }
            out.append((name.encode(), orjson.dumps(document), None))
        for source in sorted(self._progress):
            out.extend(self._progress_records(source, idle=False))
        self._counts.clear()
        self._samples.clear()
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
