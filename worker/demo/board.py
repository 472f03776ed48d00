"""The demo's live per-brand sentiment table, counted from the output and dead-letter topics."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime

from schemas import LABELS

_BAR_WIDTH = 20

# BrandSentimentDrop's condition is the stage's `reputation_alert` (its thresholds are the stage's
# settings, REPUTATION_ALERT_*: these are their defaults, for the board's legend); BrandNegativeSpike's
# thresholds are the rule's (deploy/prometheus/alerts.yml; tests/test_crisis.py checks they agree).
DROP_ZSCORE = 3.0
DROP_MIN_POSTS = 30
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
class BrandDeviation:
    """A brand's crisis gauges as the alert rules read them: the stage's judgement of its last window."""

    zscore: float = 0.0
    volume_ratio: float = 1.0
    share: float = 0.0
    baseline: float = 0.0
    posts: int = 0
    learned: int = 0
    drop: bool = False  # BrandSentimentDrop's condition is met this window
    spike: bool = False  # BrandNegativeSpike's

    @classmethod
    def from_stage(cls, gauges: dict[str, float]) -> BrandDeviation:
        """The stage's gauges of the brand (``zscore``, ``ratio``, ``share``, ``baseline``, ``posts``,
        ``alert``): one judgement over every worker's posts."""
        posts = int(gauges.get("posts", 0))
        ratio = gauges.get("ratio", 1.0)
        negatives = posts * gauges.get("share", 0.0)
        return cls(
            zscore=gauges.get("zscore", 0.0),
            volume_ratio=ratio,
            share=gauges.get("share", 0.0),
            baseline=gauges.get("baseline", 0.0),
            posts=posts,
            learned=int(gauges.get("baseline", 0.0) > 0),
            drop=gauges.get("alert", 0.0) > 0,
            spike=negatives >= SPIKE_MIN_NEGATIVES and ratio > SPIKE_RATIO,
        )

    @property
    def alert(self) -> str:
        """What the board shows in the alert column."""
        conditions = [name for name, met in (("DROP", self.drop), ("SPIKE", self.spike)) if met]
        return " ".join(conditions) or "ok"


@dataclass
class WindowTerms:
    """The terms of one brand's newest closed window, as the stage published it."""

    window_start: str = ""
    negative: dict[str, float] = field(default_factory=dict)  # term -> summed pull
    positive: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def strongest(side: dict[str, float], n: int) -> list[str]:
        """The ``n`` terms with the largest summed pull."""
        return [term for term, _ in sorted(side.items(), key=lambda item: (-item[1], item[0]))[:n]]


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
    deviations: dict[str, BrandDeviation] = field(default_factory=dict)
    terms: dict[str, WindowTerms] = field(default_factory=dict)
    crisis_line: str = ""
    alerts_seen: dict[str, set[str]] = field(default_factory=dict)  # brand -> conditions met at some point

    def add_window(self, record: dict[str, object]) -> None:
        """One record of the reputation topic (the stage's judgement of one brand window): keep the
        newest window's terms per brand."""
        brand, start = str(record["brand"]), str(record["window_start"])
        current = self.terms.get(brand)
        if current is not None and start < current.window_start:
            return  # an older window arriving late

        def side(key: str) -> dict[str, float]:
            entries = record.get(key) or []
            return {str(e["term"]): float(e["pull"]) for e in entries}  # type: ignore[attr-defined]

        self.terms[brand] = WindowTerms(start, side("top_negative_terms"), side("top_positive_terms"))

    def set_deviations(self, deviations: dict[str, BrandDeviation]) -> None:
        """The crisis gauges of the latest scrape of the stage."""
        self.deviations = deviations
        for brand, deviation in deviations.items():
            if deviation.drop or deviation.spike:
                self.alerts_seen.setdefault(brand, set()).update(deviation.alert.split())

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
        lines.append(
            f"{'brand':<10} {'posts':>7} {'neg':>6} {'neu':>6} {'pos':>6} {'net':>6}  "
            f"{'mood':<{_BAR_WIDTH + 1}}  {'window neg':>10} {'baseline':>8} {'z':>6} {'neg x':>6}  alert"
        )
        ordered = sorted(self.brands, key=lambda b: (b == "other", -self.brands[b].total, b))
        for brand in ordered:
            tally = self.brands[brand]
            shares = [tally.counts[label] / tally.total for label in LABELS]
            d = self.deviations.get(brand)
            crisis = (
                f"  {d.share:>10.0%} {d.baseline:>8.0%} {d.zscore:>+6.1f} {d.volume_ratio:>6.1f}  {d.alert}"
                + ("" if d.learned else "  (learning)")
                if d is not None
                else ""
            )
            lines.append(
                f"{brand:<10} {tally.total:>7} "
                + " ".join(f"{share:>6.0%}" for share in shares)
                + f" {tally.net:>+6.2f}  {_mood_bar(tally.net):<{_BAR_WIDTH + 1}}"
                + crisis
            )
        if self.crisis_line:
            lines += ["", self.crisis_line]
        if self.terms:
            lines += ["", "what people complain about / praise (newest closed window, top terms by pull):"]
            for brand in ordered:
                terms = self.terms.get(brand)
                if terms is None:
                    continue
                negative = ", ".join(terms.strongest(terms.negative, 6)) or "-"
                positive = ", ".join(terms.strongest(terms.positive, 4)) or "-"
                lines.append(f"{brand:<10} - {negative}   + {positive}")
        if self.alerts_seen:
            seen = "; ".join(f"{b}: {' '.join(sorted(c))}" for b, c in sorted(self.alerts_seen.items()))
            lines.append(f"alert conditions met during the run: {seen}")
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
