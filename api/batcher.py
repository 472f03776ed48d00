"""Join concurrent requests into one model call; run big calls in a thread, small ones on the loop.

Requests append their texts to a queue and await a future; one drain task takes everything pending,
scores it with ONE predictor call, and resolves the futures. There is no timer: a call never waits for
company, so an idle server adds no latency; under load, the texts that arrived while the loop was busy
share the next call (one call for many texts costs far less than one call each).

Where that call runs was measured with ``python -m bench.api_bench`` (docs/results.md): micro-batching
beat a thread per request, and small calls on the loop beat a thread for every call.

A thread does not buy parallelism here: fastText holds the GIL for most of a call, so the loop waits
for it anyway, and pays the hand-off and GIL convoy on top. So a call whose texts are small (at most
``inline_chars`` characters in all: the default 4,000 is about the loop's own work for a dozen
requests) runs on the loop; anything bigger (a large
``/predict/batch``, 10,000-character texts) goes to the model thread, so no request can hold the loop
for long. ``inline_chars=0`` sends every call to the thread.

Each result comes with what the score function says scored the call (the API: the model), so a response
names the model that really scored it even when a hot reload swaps models between two calls. Jobs are
``live`` (client texts) or not (the ``/ready`` probe); a call puts the live texts first and tells the score
function how many there are, so only client texts reach a shadow evaluation.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from sentiment_model import ScoredBatch

log = logging.getLogger(__name__)

T = TypeVar("T")

Scorer = Callable[[list[str], int], tuple[ScoredBatch, T]]
"""Scores texts in one model call: ``score(texts, live)``, where the first ``live`` texts are client texts;
returns the scores and what scored them."""


@dataclass(slots=True)
class _Job(Generic[T]):
    texts: list[str]
    chars: int
    live: bool
    future: asyncio.Future[tuple[ScoredBatch, T]]


class MicroBatcher(Generic[T]):
    """Queue texts from many requests and score each drained group with ONE ``score`` call."""

    def __init__(self, score: Scorer[T], max_texts_per_call: int = 1_000, inline_chars: int = 4_000) -> None:
        self._score = score
        self._max_texts_per_call = max_texts_per_call
        self._inline_chars = inline_chars
        self._pending: deque[_Job[T]] = deque()
        self._drainer: asyncio.Task[None] | None = None
        # One dedicated thread: big calls run one at a time and never queue behind unrelated blocking work.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentiment-model")
        self._closed = False

    async def score(self, texts: Sequence[str], *, live: bool = True) -> tuple[ScoredBatch, T]:
        """Scores of ``texts`` (row i for text i) and what scored them; a request's texts always share one
        model call. ``live=False`` marks texts that are not client traffic (probes)."""
        if self._closed:
            raise RuntimeError("the model batcher is shut down")
        future: asyncio.Future[tuple[ScoredBatch, T]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Job(list(texts), sum(map(len, texts)), live, future))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain(), name="sentiment-model-batcher")
        return await future

    async def aclose(self) -> None:
        """Stop taking work, fail what is still queued, and release the thread."""
        self._closed = True
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
        _fail(list(self._pending), RuntimeError("the model batcher is shut down"))
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _take(self) -> list[_Job[T]]:
        """Pending jobs up to the text budget (at least one), skipping those whose caller gave up.

        Live jobs come first (a stable sort: arrival order otherwise), so the live texts are a prefix.
        """
        jobs: list[_Job[T]] = []
        count = 0
        while self._pending:
            job = self._pending[0]
            if job.future.done():  # cancelled: the client went away or a timeout fired
                self._pending.popleft()
                continue
            if jobs and count + len(job.texts) > self._max_texts_per_call:
                break
            jobs.append(self._pending.popleft())
            count += len(job.texts)
        if not all(job.live for job in jobs):
            jobs.sort(key=lambda job: not job.live)
        return jobs

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while jobs := self._take():
                texts = [text for job in jobs for text in job.texts]
                live = sum(len(job.texts) for job in jobs if job.live)
                try:
                    if sum(job.chars for job in jobs) <= self._inline_chars:
                        batch, scored_by = self._score(texts, live)
                    else:
                        batch, scored_by = await loop.run_in_executor(
                            self._executor, self._score, texts, live
                        )
                except asyncio.CancelledError:
                    _fail(jobs, RuntimeError("the model batcher is shut down"))
                    raise
                except Exception as exc:  # every caller of this call gets the error; the next call may work
                    log.exception("scoring %d texts failed", len(texts))
                    _fail(jobs, exc)
                    continue
                start = 0
                for job in jobs:
                    end = start + len(job.texts)
                    if not job.future.done():
                        job.future.set_result((ScoredBatch(batch.probabilities[start:end]), scored_by))
                    start = end
                await asyncio.sleep(0)  # let the requests just resolved, and new ones, run first
        finally:
            self._drainer = None


def _fail(jobs: list[_Job[T]], error: Exception) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)
