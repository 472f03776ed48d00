"""What the API knows of the reputation topic: each brand's latest windows, in bounded memory.

The topic is compacted and keyed ``brand|window_start``: a record replaces the window of its key, a
tombstone removes it. A brand keeps its ``max_windows`` newest windows (an older window arriving late
is dropped); at most ``max_brands`` brands are kept, and a new brand beyond that evicts the brand whose
latest window is the oldest (a brand nobody posts about any more). Written by the follower thread,
read by the request handlers: every access holds the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from pydantic import ValidationError

from schemas.brands import BrandDetail, BrandLatest, BrandList, BrandWindow
from schemas.reputation import ExamplePost, TermPull, WindowFigures

log = logging.getLogger(__name__)

#: Complaint and praise terms, and example posts, come from this many of a brand's latest windows.
LATEST_WINDOWS = 3
TOP_TERMS = 10
_LOG_EVERY_SECONDS = 60.0
_FIGURES = set(WindowFigures.model_fields)
_LATEST = set(BrandLatest.model_fields)


class BrandBook:
    """Each brand's newest windows (see the module docstring); thread-safe."""

    def __init__(self, max_brands: int, max_windows: int, examples: int) -> None:
        self.max_brands = max_brands
        self.max_windows = max_windows
        self.examples = examples
        self._brands: dict[str, dict[datetime, BrandWindow]] = {}
        self._lock = threading.Lock()
        self.bad_records = 0
        self.evicted_brands = 0
        self._logged_at = -_LOG_EVERY_SECONDS

    # --- written by the follower ---------------------------------------------------------------------------
    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the reputation topic (``value`` None: a tombstone of ``key``'s window)."""
        if value is None:
            self._forget(key)
            return
        try:
            window = BrandWindow.model_validate_json(value)
        except ValidationError as exc:
            self.bad_records += 1
            self._warn(f"a reputation record that is not a window ({self.bad_records} so far): {exc}")
            return
        window.negative_examples = window.negative_examples[: self.examples]  # bounded, whatever is sent
        window.positive_examples = window.positive_examples[: self.examples]
        with self._lock:
            windows = self._brands.get(window.brand)
            if windows is None:
                if len(self._brands) >= self.max_brands and not self._evict_for(window):
                    return
                windows = self._brands[window.brand] = {}
            windows[window.window_start] = window
            if len(windows) > self.max_windows:
                del windows[min(windows)]  # the oldest; the new window itself when it was late

    def _evict_for(self, newcomer: BrandWindow) -> bool:
        stalest = min(self._brands, key=lambda brand: max(self._brands[brand]))
        if max(self._brands[stalest]) >= newcomer.window_start:
            return False  # every kept brand is more recent than the newcomer: keep them
        del self._brands[stalest]
        self.evicted_brands += 1
        self._warn(
            f"more than BRAND_PAGE_MAX_BRANDS={self.max_brands} brands: forgot {stalest!r}, the brand with "
            f"the oldest latest window ({self.evicted_brands} evicted so far)"
        )
        return True

    def _forget(self, key: bytes | None) -> None:
        brand, _, start = (key or b"").decode(errors="replace").rpartition("|")
        try:
            when = datetime.fromisoformat(start.replace("Z", "+00:00"))
        except ValueError:
            return
        with self._lock:
            windows = self._brands.get(brand)
            if windows is not None:
                windows.pop(when, None)
                if not windows:
                    del self._brands[brand]

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_SECONDS:
            self._logged_at = now
            log.warning(message)

    # --- read by the endpoints -----------------------------------------------------------------------------
    def brands(self) -> BrandList:
        """Every brand's latest window, by brand name."""
        with self._lock:
            latest = [windows[max(windows)] for _, windows in sorted(self._brands.items())]
        return BrandList(brands=[BrandLatest.model_validate(w.model_dump(include=_LATEST)) for w in latest])

    def brand(self, name: str) -> BrandDetail | None:
        """The brand's recent windows, terms and examples; None for a brand not on the topic."""
        with self._lock:
            windows = self._brands.get(name)
            if not windows:
                return None
            ordered = [windows[start] for start in sorted(windows)]
        recent = ordered[-LATEST_WINDOWS:][::-1]  # newest first
        figures = [WindowFigures.model_validate(w.model_dump(include=_FIGURES)) for w in ordered]
        return BrandDetail(
            brand=name,
            alert=ordered[-1].alert,
            latest=figures[-1],
            windows=figures,
            top_negative_terms=_strongest(w.top_negative_terms for w in recent),
            top_positive_terms=_strongest(w.top_positive_terms for w in recent),
            negative_examples=self._examples(w.negative_examples for w in recent),
            positive_examples=self._examples(w.positive_examples for w in recent),
        )

    def _examples(self, per_window: Iterable[list[ExamplePost]]) -> list[ExamplePost]:
        out: list[ExamplePost] = []
        seen: set[str] = set()
        for examples in per_window:
            for example in examples:
                if example.id not in seen and len(out) < self.examples:
                    seen.add(example.id)
                    out.append(example)
        return out


def _strongest(per_window: Iterable[list[TermPull]]) -> list[TermPull]:
    """The terms of several windows summed (pull and count), strongest first."""
    pull: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for terms in per_window:
        for term in terms:
            pull[term.term] += term.pull
            count[term.term] += term.count
    best = sorted(pull, key=lambda t: (-pull[t], t))[:TOP_TERMS]
    return [TermPull(term=t, pull=round(pull[t], 6), count=count[t]) for t in best]
