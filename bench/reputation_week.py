"""The crisis detector on a synthetic week per brand: detections and false alarms per brand-week.

``python -m bench.reputation_week [--weeks 200] [--window-hours 1]``

Each brand-week is a week of hourly windows (``--window-hours``) of posts whose negatives are drawn
with some over-dispersion (each window's share wanders around the brand's level, sd 3 points), with a
day/night cycle in volume (peak at 15:00, 5 % of it at 03:00):

- ``steady``: 140 posts an hour at the peak, 35 % negative;
- ``quiet``: 15 posts an hour at the peak (nights of one post or none), 30 % negative;
- ``newcomer``: first mentioned on day 4 at noon, then 60 posts an hour at the peak, 40 % negative;
- ``drift``: 120 posts an hour, negative share drifting from 25 % to 40 % over the week (no crisis);
- ``shift``: 140 posts an hour, 42 % negative, 65 % on day 6 from 08:00 to 20:00 (+23 points);
- ``shift20``: the same with 62 % (+20 points, the issue's figure).

A window is *flagged* when the detector says alert; a *page* is two flagged windows in a row (the alert
rule's ``for``). *Detected*: a page by the shift's second window of 100+ posts; a *false page*: a page that
starts outside the shift (per brand-week); a page begun in the shift that goes on after it *outlived* it.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections import Counter
from collections.abc import Callable

import numpy as np

from reputation.detector import Baseline, DetectorOptions, judge

BRANDS = ("steady", "quiet", "newcomer", "drift", "shift", "shift20")
SHIFTED = {"shift": 0.65, "shift20": 0.62}


def volume_at(hour: float, peak: float) -> float:
    """Day/night cycle: ``peak`` at 15:00, 5 % of it at 03:00."""
    return peak * (0.05 + 0.95 * (0.5 + 0.5 * math.cos(2 * math.pi * (hour % 24 - 15) / 24)))


def week(brand: str, rng: np.random.Generator, window_hours: float) -> list[tuple[int, int, bool]]:
    """``(posts, negatives, in_shift)`` per window of one brand-week."""
    out = []
    windows = int(7 * 24 / window_hours)
    for w in range(windows):
        hour = w * window_hours
        share, peak, shifted = 0.35, 140.0, False
        if brand == "quiet":
            share, peak = 0.30, 15.0
        elif brand == "newcomer":
            share, peak = 0.40, 60.0 if hour >= 3 * 24 + 12 else 0.0
        elif brand == "drift":
            share, peak = 0.25 + 0.15 * hour / (7 * 24), 120.0
        elif brand in SHIFTED:
            share = 0.42
            if 5 * 24 + 8 <= hour < 5 * 24 + 20:
                share, shifted = SHIFTED[brand], True
        n = int(rng.poisson(volume_at(hour, peak) * window_hours))
        p = float(np.clip(rng.normal(share, 0.03), 0.01, 0.99))
        out.append((n, int(rng.binomial(n, p)), shifted))
    return out


def detector(window_hours: float, evidence: float = 8.0) -> Callable[[int, int], bool]:
    """The stage's detector at its defaults (``evidence``: REPUTATION_ALERT_EVIDENCE, 0 = z alone)."""
    baseline = Baseline()
    options = DetectorOptions(half_life_windows=24 / window_hours, alert_evidence=evidence)
    return lambda k, n: judge(baseline, k, n, options).alert


def score(
    weeks: int, window_hours: float, make: Callable[[float], Callable[[int, int], bool]]
) -> dict[str, Counter[str]]:
    """Per brand: windows flagged outside the shift, and false pages: pages (two flagged windows in a row,
    what the alert rule's `for` fires on) that start outside the shift. For the shifted brands, whether a
    page fired by the shift's second window of 100+ posts, and the windows a page begun in the shift goes
    on after it ended (one notification, resolved late)."""
    rng = np.random.default_rng(2026)
    tally: dict[str, Counter[str]] = {brand: Counter() for brand in BRANDS}
    for _ in range(weeks):
        for brand in BRANDS:
            detector = make(window_hours)
            big_shift_windows = 0
            detected = previous = paging = crisis_page = False
            for n, k, shifted in week(brand, rng, window_hours):
                flagged = detector(k, n) if n else False
                page = flagged and previous
                starts = page and not paging
                previous, paging = flagged, page
                if shifted:
                    big_shift_windows += n >= 100
                    detected |= page and big_shift_windows <= 2
                    crisis_page = page
                else:
                    tally[brand]["flagged"] += flagged
                    tally[brand]["pages"] += starts
                    crisis_page = crisis_page and page
                    tally[brand]["outlived"] += crisis_page
            tally[brand]["detected"] += detected
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weeks", type=int, default=200)
    parser.add_argument("--window-hours", type=float, default=1.0)
    args = parser.parse_args()
    print(f"{args.weeks} synthetic weeks, {args.window_hours:g} h windows")
    print(
        "| detector | brand | shift paged within 2 windows | false pages / brand-week "
        "| windows a page outlived the shift | windows flagged |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, evidence in (("z and evidence (defaults)", 8.0), ("z alone (EVIDENCE=0)", 0.0)):
        tally = score(args.weeks, args.window_hours, functools.partial(detector, evidence=evidence))
        for brand, counts in tally.items():
            shift = brand in SHIFTED
            detected = f"{counts['detected'] / args.weeks:.1%}" if shift else "-"
            outlived = f"{counts['outlived'] / args.weeks:.2f}" if shift else "-"
            pages, flagged = counts["pages"] / args.weeks, counts["flagged"] / args.weeks
            print(f"| {name} | {brand} | {detected} | {pages:.2f} | {outlived} | {flagged:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
