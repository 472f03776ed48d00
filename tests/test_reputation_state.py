"""The reputation stage without Kafka: the detector (a pure function of counts) and the stage's state
(event-time windows, watermark, grace, late posts, changelog round trip)."""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest

from reputation.detector import Baseline, DetectorOptions, judge
from reputation.state import BadRecordError, StageState
from sentiment_model.word_pulls import WordPulls
from worker.partials import Partials

OPTIONS = DetectorOptions(half_life_windows=200, warmup_posts=300, alert_zscore=3.0, alert_min_posts=30)


def test_a_brand_without_a_baseline_never_pages_whatever_its_volume() -> None:
    baseline = Baseline()
    verdicts = [judge(baseline, 9, 10, OPTIONS) for _ in range(30)]  # 290 posts: still warming up
    verdicts += [judge(baseline, 95, 100, OPTIONS)]  # 300 posts learned before this window
    assert not any(v.alert or v.warm for v in verdicts[:30])
    assert verdicts[-1].warm and not verdicts[-1].alert  # 95 % negative is what it learned


def test_small_windows_weigh_by_their_posts_and_a_20_point_shift_pages() -> None:
    """Nights of a few posts with wild shares and days of 150 posts at 40 %: the pooled share stays near
    40 %, the robust dispersion near 1, and a day window at 62 % of 140 posts alerts."""
    rng = np.random.default_rng(3)
    baseline = Baseline()
    for hour in range(24 * 6):
        day = 8 <= hour % 24 < 20
        n = int(rng.poisson(150 if day else 4))
        k = int(rng.binomial(n, 0.4)) if day else int(rng.integers(0, n + 1))
        verdict = judge(baseline, k, n, OPTIONS)
        assert not verdict.alert, (hour, n, k, verdict)
    assert baseline.share == pytest.approx(0.4, abs=0.03)
    assert baseline.dispersion() < 1.6
    assert judge(baseline, 87, 140, OPTIONS).alert  # 62 %
    assert not judge(baseline, 12, 20, OPTIONS).alert  # 60 % of a window below the minimum posts


def test_a_sustained_shift_under_the_z_threshold_pages_on_its_evidence_and_a_window_at_baseline_ends_it() -> (
    None
):
    baseline = Baseline()
    rng = np.random.default_rng(4)
    for _ in range(60):  # calm: 100 posts at 40 %
        assert not judge(baseline, int(rng.binomial(100, 0.4)), 100, OPTIONS).alert
    shifted = [judge(baseline, 56, 100, OPTIONS) for _ in range(4)]  # +16 points: z 2.3-2.7 each
    assert all(v.zscore < 3 for v in shifted), shifted
    assert [v.alert for v in shifted] == [False, False, True, True]  # 3.6 nats of evidence a window
    assert shifted[1].evidence < 8 <= shifted[2].evidence
    calm = judge(baseline, 40, 100, OPTIONS)
    assert not calm.alert and calm.evidence == 0
    off = DetectorOptions(half_life_windows=200, alert_evidence=0)
    assert not judge(baseline, 56, 100, off).alert


def partial(brand: str, start: int, counts: list[int], window: int = 10) -> bytes:
    return orjson.dumps(
        {"type": "partial", "brand": brand, "window_start": start, "window_seconds": window, "counts": counts}
    )


def progress(source: str, reached: float, sources: int = 2) -> bytes:
    return orjson.dumps({"type": "progress", "source": source, "event_time": reached, "sources": sources})


def test_windows_close_on_the_slowest_inputs_event_time_plus_grace_and_late_posts_are_counted() -> None:
    state = StageState(10, 10.0, OPTIONS)
    assert state.apply(0, partial("acme", 1000, [1, 2, 3])) == 0
    state.apply(0, progress("in/0", 1035.0))
    assert state.close(0) == []  # the second input partition has not reported: no watermark
    state.apply(0, progress("in/1", 1015.0))  # watermark 1015 - 10 = 1005: [1000, 1010) still open
    assert state.close(0) == []
    assert state.apply(0, partial("acme", 1000, [0, 1, 0])) == 0  # late but inside the grace period
    state.apply(0, progress("in/1", 1021.0))  # watermark 1011
    (closed,) = state.close(0)
    record = orjson.loads(closed.value)
    assert closed.key == b"acme|1970-01-01T00:16:40Z"
    assert (record["negative"], record["neutral"], record["positive"], record["total"]) == (1, 3, 3, 7)
    assert state.apply(0, partial("acme", 1000, [4, 0, 0])) == 4  # past the grace period: late
    assert state.close(0) == []


def test_a_restored_state_goes_on_exactly_as_the_uninterrupted_one() -> None:
    rng = random.Random(5)
    records = []
    for t in range(0, 4000, 10):
        for brand in ("acme", "globex"):
            records.append(partial(brand, t - t % 100, [rng.randint(0, 9), rng.randint(0, 9), 3], window=100))
        records.append(progress("in/0", float(t), sources=1))
    whole, first = StageState(100, 100.0, OPTIONS), StageState(100, 100.0, OPTIONS)
    out_whole, out_split = [], []
    for record in records[:500]:
        first.apply(3, record)
        out_split += first.close(3)
    restored = StageState(100, 100.0, OPTIONS)
    for _partition, key, value in first.drain():
        restored.restore(3, key, value)
    for record in records[500:]:
        restored.apply(3, record)
        out_split += restored.close(3)
    for record in records:
        whole.apply(3, record)
        out_whole += whole.close(3)
    assert len(out_whole) > 60
    assert [(c.key, c.value) for c in out_split] == [(c.key, c.value) for c in out_whole]


def test_partials_count_by_event_time_and_report_progress_to_every_partition() -> None:
    partials = Partials(["acme", "other"], 60, 0, "mentions")
    partials.output_partitions, partials.input_partitions = 3, 2
    events = np.array([59.0, 60.0, 61.0, 7200.5, 30.0])
    partials.observe(
        np.array([0, 0, 1, 0, 0]),
        np.array([0, 2, 1, 0, 0]),
        partials.window_starts(events),
        events,
        np.array([0, 0, 1, 1, 0]),
    )
    records = partials.drain()
    counts = {
        (doc["brand"], doc["window_start"]): doc["counts"]
        for doc in (orjson.loads(v) for _, v, p in records if p is None)
    }
    assert counts == {("acme", 0): [2, 0, 0], ("acme", 60): [0, 0, 1], ("acme", 7200): [1, 0, 0],
                      ("other", 60): [0, 1, 0]}  # fmt: skip
    progress_records = [(orjson.loads(v), p) for _, v, p in records if p is not None]
    assert sorted((d["source"], d["event_time"], p) for d, p in progress_records) == [
        ("mentions/0", 60.0, 0), ("mentions/0", 60.0, 1), ("mentions/0", 60.0, 2),
        ("mentions/1", 7200.5, 0), ("mentions/1", 7200.5, 1), ("mentions/1", 7200.5, 2),
    ]  # fmt: skip
    assert partials.drain() == []


def test_records_that_are_not_partials_are_refused_with_the_reason() -> None:
    state = StageState(10, 10.0, OPTIONS)
    for value, reason in (
        (b"{not json", "not a partial or progress record: record: Invalid JSON"),
        (b'{"type": "gossip"}', "tag 'gossip' .* does not match any of the expected tags"),
        (partial("acme", 1000, [1, -2, 0]), r"partial\.counts\.1: Input should be greater than or equal"),
        (b'{"type": "progress", "source": "in/0", "sources": 2}', r"progress\.event_time: Field required"),
        (b'{"type": "progress", "source": "in/0", "event_time": null, "sources": 2}', "not declare idle"),
        (partial("acme", 1000, [1, 0, 0], window=60), "REPUTATION_WINDOW_SECONDS must be the same"),
    ):
        with pytest.raises(BadRecordError, match=reason):
            state.apply(0, value)
    assert state.partitions[0].brands == {}


def test_an_idle_input_partition_stops_holding_windows_open_until_it_has_posts_again() -> None:
    state = StageState(10, 10.0, OPTIONS)
    state.apply(0, partial("acme", 1000, [1, 2, 3]))
    state.apply(0, progress("in/0", 1035.0))
    assert state.close(0) == []  # in/1 never had a post and is not (yet) declared idle: it holds the window
    idle = {"type": "progress", "source": "in/1", "event_time": None, "sources": 2, "idle": True}
    state.apply(0, orjson.dumps(idle))
    assert [c.key for c in state.close(0)] == [b"acme|1970-01-01T00:16:40Z"]  # watermark 1025
    state.apply(0, progress("in/1", 1012.0))  # active again, far behind: the watermark does not go back
    assert state.apply(0, partial("acme", 1020, [1, 0, 0])) == 0  # [1020, 1030) is still open
    assert state.apply(0, partial("acme", 1010, [1, 0, 0])) == 1  # [1010, 1020) passed: late
    restored = StageState(10, 10.0, OPTIONS)
    for partition, key, value in state.drain():
        restored.restore(partition, key, value)
    assert restored.partitions[0].watermark(10.0) == state.partitions[0].watermark(10.0) == 1025.0
    state.apply(0, progress("in/0", 1050.0))
    restored.apply(0, progress("in/0", 1050.0))
    assert state.close(0) == restored.close(0) == []  # in/1 (at 1012) holds [1020, 1030) open
    for both in (state, restored):
        both.apply(0, orjson.dumps(idle))
    assert [c.value for c in state.close(0)] == [c.value for c in restored.close(0)] != []


def test_terms_and_examples_are_the_same_whatever_the_batching_and_survive_a_restore() -> None:
    """The same 3,000 posts through one worker in one batch, one worker in batches of 7, and 4 workers
    (by id) in batches of 50: the same published records, terms and examples included, also from a
    stage restored from its changelog halfway. Words pull by a fixed table, as a model's rows do."""
    rng = random.Random(8)
    words = [f"w{i}" for i in range(300)] + ["acme", "the"]
    weight = {w: rng.uniform(-1, 1) for w in words}
    posts = []
    for i in range(3000):
        tokens = rng.sample(words, 6)
        lean = sum(weight[t] for t in tokens)
        label = 0 if lean > 0.3 else 2 if lean < -0.3 else 1
        posts.append((f"id{i}", rng.randrange(2), label, 100.0 * i / 3000, tokens))

    def run(workers: int, batch: int, restore_at: int | None = None) -> dict[bytes, bytes]:
        group = [Partials(["acme", "other"], 10, 10, "in", sample_posts=5) for _ in range(workers)]
        for partials in group:  # worker w owns input partition w
            partials.input_partitions = workers
        state = StageState(10, 0.0, OPTIONS, top_terms=10)
        records: dict[bytes, bytes] = {}
        mine = [[p for p in posts if int(p[0][2:]) % workers == w] for w in range(workers)]
        for step in range(0, max(map(len, mine)), batch):
            for source, (partials, share) in enumerate(zip(group, mine, strict=True)):
                rows = share[step : step + batch]
                if not rows:
                    continue
                brands, labels = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
                events = np.array([r[3] for r in rows])
                starts = partials.window_starts(events)
                chosen = partials.sample(brands, labels, starts, [r[0] for r in rows]).tolist()
                partials.observe_terms(
                    brands[chosen],
                    labels[chosen],
                    starts[chosen],
                    WordPulls.from_tokens(
                        [rows[i][4] for i in chosen],
                        np.array([weight[t] for i in chosen for t in rows[i][4]]),
                    ),
                    ids=[rows[i][0] for i in chosen],
                    texts=[" ".join(rows[i][4]).upper() for i in chosen],
                )
                partials.observe(brands, labels, starts, events, np.full(len(rows), source, np.int64))
                for _, value, _ in partials.drain():
                    state.apply(0, value)
            if restore_at is not None and step >= restore_at:
                restored = StageState(10, 0.0, OPTIONS, top_terms=10)
                for partition, key, value in state.drain():
                    restored.restore(partition, key, value)
                state, restore_at = restored, None
            records |= {closed.key: closed.value for closed in state.close(0)}
        for source in range(workers):
            state.apply(0, progress(f"in/{source}", 1e9, sources=workers))
        return records | {closed.key: closed.value for closed in state.close(0)}

    one = run(1, 3000)
    assert len(one) == 20
    acme = orjson.loads(one[b"acme|1970-01-01T00:00:00Z"])
    assert len(acme["top_negative_terms"]) == 10 and len(acme["negative_examples"]) == 3
    example = acme["negative_examples"][0]
    assert example["text"] == example["text"].upper() and 1 <= len(example["terms"]) <= 5
    assert "acme" not in example["terms"] and "the" not in example["terms"]
    assert run(1, 7) == one
    assert run(4, 50) == one
    assert run(4, 50, restore_at=1000) == one


def test_a_posts_terms_are_its_strongest_words_towards_its_side_summed_per_word() -> None:
    """The columnar term pass against a plain per-post oracle: repeated words summed, words pulling the
    other way, stop words and the brand's own name left out, ties in pull broken alphabetically."""
    rng = random.Random(5)
    vocabulary = ["acme", "the", "down", "refund", "love", "great", "app", "slow", "zeta", "alpha"]
    vocabulary += ["url", "42"]
    posts = [[rng.choice(vocabulary) for _ in range(rng.randint(0, 40))] for _ in range(60)]
    pull_of = {word: rng.choice([-1.0, -0.25, 0.25, 0.5, 1.0]) for word in vocabulary}
    labels = np.array([rng.choice([0, 1, 2]) for _ in posts])
    partials = Partials(["acme", "other"], 10, 10, "in", sample_posts=100)
    partials.observe_terms(
        np.zeros(len(posts), np.intp),
        labels,
        np.zeros(len(posts), np.int64),
        WordPulls.from_tokens(posts, np.array([pull_of[w] for post in posts for w in post])),
        ids=[f"p{i}" for i in range(len(posts))],
        texts=[" ".join(post) for post in posts],
    )
    negative, positive = partials._samples[(0, 0)]
    got = {post["id"]: [list(term) for term in post["terms"]] for post in negative + positive}
    want = {}
    for i, (post, label) in enumerate(zip(posts, labels.tolist(), strict=True)):
        if label == 1:
            continue
        sign = 1.0 if label == 0 else -1.0
        summed: dict[str, list[float]] = {}
        for word in post:
            if sign * pull_of[word] > 0 and word not in ("acme", "the", "url", "42"):
                summed.setdefault(word, [0.0, 0])
                summed[word][0] += sign * pull_of[word]
                summed[word][1] += 1
        ranked = sorted(summed.items(), key=lambda item: (-item[1][0], item[0]))[:16]
        want[f"p{i}"] = [[word, round(pull, 6), count] for word, (pull, count) in ranked]
    assert got == want
    assert any(len({t[1] for t in terms}) < len(terms) for terms in want.values())  # ties were met
