"""The demo's live per-brand sentiment table, counted from the output and dead-letter topics."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime

from schemas import LABELS

_BAR_WIDTH = 20

# The alert rules' thresholds (deploy/prometheus/alerts.yml; tests/test_crisis.py checks they agree), so
# the board shows when a rule's condition is met without running Prometheus.
DROP_ZSCORE = 3.0  # BrandSentimentDrop: negative share this many standard deviations above the baseline
DROP_MIN_POSTS = 30  # ... in a window with at least this many posts
SPIKE_RATIO = 3.0  # BrandNegativeSpike: this many times the usual negative posts per window
SPIKE_MIN_NEGATIVES = 20  # ... and at least this many negative posts


@dataclass
class BrandTally:
    """Results of one brand: counts per label."""

    counts: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """Posts scored."""
        return sum(self.counts.values())

    @property
    def net(self) -> float:
        """Net sentiment, (positive - negative) / total, in [-1, 1]."""
        return (self.counts["positive"] - self.counts["negative"]) / self.total if self.total else 0.0


@dataclass
class Board:
    """Everything the demo shows, fed with results and dead letters as they are read back."""

    known_brands: frozenset[str] = frozenset()  # others are counted as "other", as the worker's metrics do
    produced: int = 0
    produced_bad: int = 0
    brands: dict[str, BrandTally] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)
    result_ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    revisions: Counter[str] = field(default_factory=Counter)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    started: float = field(default_factory=time.monotonic)

    def add_result(self, result: dict[str, object]) -> None:
        """Count one result record (duplicates, possible under at-least-once, are counted once)."""
        post_id = str(result["id"])
        if post_id in self.result_ids:
            self.duplicates += 1
            return
        self.result_ids.add(post_id)
        brand = str(result.get("brand") or "").lower()
        brand = brand if brand in self.known_brands else "other"
        self.brands.setdefault(brand, BrandTally()).counts[str(result["label"])] += 1
        model = result.get("model")
        if isinstance(model, dict):
            self.revisions[str(model.get("revision") or model.get("repo"))[:12]] += 1
        created, processed = result.get("created_at"), result.get("processed_at")
        if isinstance(created, str) and isinstance(processed, str):
            delta = datetime.fromisoformat(processed) - datetime.fromisoformat(created)
            self.latencies.append(delta.total_seconds())

    def add_dead_letter(self, reason: str) -> None:
        """Count one dead-lettered record by reason."""
        self.dead_letters[reason] += 1

    @property
    def results(self) -> int:
        """Distinct posts with a result."""
        return len(self.result_ids)

    def latency_quantile(self, q: float) -> float | None:
        """A quantile of recent post-to-result latencies, in seconds."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def render(self, header: list[str], footer: list[str]) -> str:
        """The table as text (no colours: it must read the same in a CI log)."""
        lines = [*header, ""]
        lines.append(f"{'brand':<10} {'posts':>7} {'neg':>6} {'neu':>6} {'pos':>6} {'net':>6}  mood")
        for brand in sorted(self.brands, key=lambda b: (b == "other", -self.brands[b].total, b)):
            tally = self.brands[brand]
            shares = [tally.counts[label] / tally.total for label in LABELS]
            lines.append(
                f"{brand:<10} {tally.total:>7} "
                + " ".join(f"{share:>6.0%}" for share in shares)
                + f" {tally.net:>+6.2f}  {_mood_bar(tally.net)}"
            )
        elapsed = max(time.monotonic() - self.started, 1e-9)
        p50, p99 = self.latency_quantile(0.5), self.latency_quantile(0.99)
        lines += [
            "",
            f"posts produced {self.produced} (bad on purpose: {self.produced_bad})   "
            f"scored {self.results} ({self.results / elapsed:.0f}/s)   "
            f"dead-lettered {sum(self.dead_letters.values())}   duplicates {self.duplicates}",
            "dead letters by reason: "
            + (", ".join(f"{r} {n}" for r, n in sorted(self.dead_letters.items())) or "none yet"),
            "post-to-result latency: "
            + (
                f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
                if p50 is not None and p99 is not None
                else "-"
            ),
            "scored by model revision: "
            + (", ".join(f"{r} ({n})" for r, n in self.revisions.items()) or "-"),
            *footer,
        ]
        return "\n".join(lines)


def _mood_bar(net: float) -> str:
    """A bar left of the middle for negative net sentiment, right of it for positive."""
    half = _BAR_WIDTH // 2
    cells = round(abs(net) * half)
    if net < 0:
        return " " * (half - cells) + "-" * cells + "|" + " " * half
    return " " * half + "|" + "+" * cells
