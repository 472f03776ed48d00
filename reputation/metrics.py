"""The stage's metrics: one series per brand, exported by whichever instance owns the brand."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from reputation.detector import Judgement


class StageMetrics:
    """Every metric the stage exports, in its own registry; ``brand`` is the workers' bounded label."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.partials = Counter("reputation_partials", "Partial aggregates consumed", registry=r)
        self.posts = Counter("reputation_posts", "Posts counted into windows", registry=r)
        self.late_posts = Counter(
            "reputation_late_posts", "Posts whose window had closed (past the grace period)", registry=r
        )
        self.bad_records = Counter("reputation_bad_records", "Records that are not partials", registry=r)
        self.windows = Counter("reputation_windows", "Windows closed and published", registry=r)
        self.checkpoints = Counter("reputation_checkpoints", "Transactions committed", registry=r)
        self.restored_records = Counter(
            "reputation_restored_records", "Changelog records read back into state", registry=r
        )
        self.watermark = Gauge(
            "reputation_watermark_timestamp_seconds",
            "Event time up to which windows are closed (max over owned partitions)",
            registry=r,
        )
        self.loop_heartbeat = Gauge(
            "reputation_loop_heartbeat_timestamp_seconds", "Unix time of the last loop turn", registry=r
        )
        brand = ["brand"]
        self.negative_share = Gauge(
            "reputation_negative_share", "Negative share of the last closed window", brand, registry=r
        )
        self.baseline_share = Gauge(
            "reputation_negative_share_baseline", "The brand's pooled baseline share", brand, registry=r
        )
        self.zscore = Gauge("reputation_zscore", "z-score of the last window", brand, registry=r)
        self.volume_ratio = Gauge(
            "reputation_negative_volume_ratio", "Negatives against the usual per window", brand, registry=r
        )
        self.window_posts = Gauge(
            "reputation_window_posts", "Posts in the last closed window", brand, registry=r
        )
        self.alert = Gauge(
            "reputation_alert",
            "1: the last window crossed the thresholds",
            brand,
            registry=r,
        )
        self.window_end = Gauge(
            "reputation_window_end_timestamp_seconds", "End of the last closed window", brand, registry=r
        )

    def judged(self, brand: str, end: int, j: Judgement) -> None:
        """A brand's window closed: its gauges follow."""
        self.negative_share.labels(brand).set(j.share)
        self.baseline_share.labels(brand).set(j.baseline_share)
        self.zscore.labels(brand).set(j.zscore)
        self.volume_ratio.labels(brand).set(j.volume_ratio)
        self.window_posts.labels(brand).set(j.posts)
        self.alert.labels(brand).set(1.0 if j.alert else 0.0)
        self.window_end.labels(brand).set(end)
        self.windows.inc()

    def forget(self, brands: list[str]) -> None:
        """Brands now owned by another instance: their series go with them."""
        for gauge in (
            self.negative_share,
            self.baseline_share,
            self.zscore,
            self.volume_ratio,
            self.window_posts,
            self.alert,
            self.window_end,
        ):
            for brand in brands:
                with contextlib.suppress(KeyError):
                    gauge.remove(brand)

    def exposition(self) -> bytes:
        """Prometheus text format."""
        return generate_latest(self.registry)
