"""Crisis detection per brand and the terms that explain a window, on real tweets scored by a real
fastText model (and the stand-in token pulls of sentiment_model/fasttext_scorer.py, for models only
fastText scores, read from that model's own weights): the detector alone (reputation.detector), the
path of a post in process (the worker's partials, worker.partials, combined and judged by the stage's
state, reputation.state), and a real worker writing its partials to a real broker."""

from __future__ import annotations

import random
import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from reputation.detector import Baseline, DetectorOptions, Judgement, judge
from reputation.settings import StageSettings
from reputation.state import StageState
from schemas import LABELS
from schemas.timestamps import utc_rfc3339
from sentiment_model import Predictor, normalize
from sentiment_model.fasttext_scorer import FastTextScorer, TokenPull
from tests.kafka_harness import REPO, WorkerProcess, produce, read_all, unique
from tests.worker_harness import create_topics
from training.data import Dataset, load_split
from worker.demo import board
from worker.demo.posts import CRISIS_MOOD, CRISIS_PHRASES, CRISIS_SHARE, PostStream
from worker.partials import Partials
from worker.terms import TermTally, is_term

BRANDS = ("acme", "globex", "initech")
NAMES = (*BRANDS, "other")  # the bounded brand labels, in the worker's order
WINDOW = 60
OPTIONS = DetectorOptions(half_life_windows=50, warmup_posts=300)


@pytest.fixture(scope="module")
def predictor(small_model: Path) -> Predictor:
    return Predictor.load(small_model)


@pytest.fixture(scope="module")
def calm_pool(data_dir: Path, predictor: Predictor) -> dict[str, list[str]]:
    """Normalised train tweets the small model never saw (it trained on the first 6,000), by the label
    the model gives them."""
    rows = load_split("train", data_dir)
    texts = rows.texts[6_000:30_000]
    lines = [normalize(t) for t in texts]
    labels = predictor.predict_normalized(lines).labels
    pool: dict[str, list[str]] = {label: [] for label in LABELS}
    for line, label in zip(lines, labels, strict=True):
        pool[label].append(line)
    return pool


class Reputation:
    """The surviving path in process: each batch's partial aggregates (worker.partials, as the worker's
    observer feeds them), applied to the stage's state (reputation.state), windows closed on event time."""

    def __init__(self, options: DetectorOptions = OPTIONS, window: int = WINDOW) -> None:
        self.partials = Partials(NAMES, window, 10, "mentions")
        self.state = StageState(window, 0.0, options)

    def feed(self, predictor: Predictor, posts: list[tuple[str, str]], at: float) -> None:
        """One batch of ``(bounded brand label, normalised line)`` that happened at ``at``."""
        lines = [line for _, line in posts]
        label_ids = predictor.predict_normalized(lines).label_ids
        brand_ids = np.array([NAMES.index(brand) for brand, _ in posts], np.intp)
        events = np.full(len(posts), at)
        starts = self.partials.window_starts(events)
        self.partials.observe(brand_ids, label_ids, starts, events, np.zeros(len(posts), np.int64))
        ids = [f"{at}-{i}" for i in range(len(posts))]
        chosen = self.partials.sample(brand_ids, label_ids, starts, ids).tolist()  # as the observer does
        self.partials.observe_terms(
            brand_ids[chosen],
            label_ids[chosen],
            starts[chosen],
            predictor.word_pulls([lines[i] for i in chosen]),
            ids=[ids[i] for i in chosen],
            texts=[lines[i] for i in chosen],
        )
        for _key, value, _partition in self.partials.drain():
            self.state.apply(0, value)

    def close(self, until: float) -> dict[str, tuple[Judgement, dict[str, Any]]]:
        """Input scored up to event time ``until``: the windows that closed, per brand."""
        progress = {"type": "progress", "source": "mentions/0", "event_time": until, "sources": 1}
        self.state.apply(0, orjson.dumps(progress))
        return {c.brand: (c.judgement, orjson.loads(c.value)) for c in self.state.close(0)}


def calm_windows(
    pool: dict[str, list[str]], rng: random.Random, windows: int, per_window: int
) -> list[list[tuple[str, str]]]:
    """Windows of posts drawn at random from the pool (the model's own label mix), each given a random
    brand: a calm stream, every brand with the same mood, volume varying as Poisson noise does."""
    everything = [line for lines in pool.values() for line in lines]
    out = []
    for _ in range(windows):
        n = max(1, int(rng.gauss(per_window, per_window**0.5)))
        out.append([(rng.choice(NAMES), rng.choice(everything)) for _ in range(n)])
    return out


def crisis_lines(pool: dict[str, list[str]], rng: random.Random, n: int) -> list[str]:
    """The demo's scripted crisis (worker/demo/posts.py), normalised: mostly negative tweets, most of
    them with a crisis phrase."""
    out = []
    for _ in range(n):
        label = rng.choices(LABELS, CRISIS_MOOD)[0]
        text = rng.choice(pool[label])
        if label == "negative" and rng.random() < CRISIS_SHARE:
            text = f"{normalize(rng.choice(CRISIS_PHRASES).format(b='Acme'))} {text}"
        out.append(text)
    return out


def crisis_words() -> set[str]:
    """The words the crisis phrases are built from (as normalised tokens that may be terms)."""
    tokens = {t for phrase in CRISIS_PHRASES for t in normalize(phrase.format(b="Acme")).split()}
    return {t for t in tokens if is_term(t)} - {"acme"}


# --- the detector ----------------------------------------------------------------------------------------


def test_the_detector_scores_a_jump_in_share_and_volume_and_learns_it_clipped() -> None:
    baseline = Baseline()
    rng = np.random.default_rng(0)
    for _ in range(40):  # 20 % negative of 200 posts, binomial noise only
        j = judge(baseline, int(rng.binomial(200, 0.2)), 200, OPTIONS)
        assert not j.alert and abs(j.zscore) < 3.5
        if not j.warm:  # nothing moves during the warm-up
            assert (j.zscore, j.volume_ratio) == (0.0, 1.0)
    assert baseline.share == pytest.approx(0.2, abs=0.02)
    assert baseline.volume == pytest.approx(40, abs=5)
    before = baseline.share
    jump = judge(baseline, 120, 200, OPTIONS)  # 60 % negative: a crisis
    assert jump.alert and jump.zscore > 8
    assert jump.volume_ratio == pytest.approx(120 / jump.baseline_volume)
    assert jump.baseline_share == pytest.approx(before)
    # learned clipped to 3 sd above the baseline: the share moves by a fifth of what 120 negatives would
    assert baseline.share - before < 0.005
    spike = judge(baseline, 400, 1000, OPTIONS)  # five times the volume at a 40 % share
    assert spike.volume_ratio > 4
    windows = baseline.windows
    empty = judge(baseline, 0, 0, OPTIONS)
    assert (empty.zscore, empty.posts, empty.alert, empty.volume_ratio) == (0.0, 0, False, 0.0)
    assert baseline.windows == windows  # a window without posts teaches nothing


def test_few_posts_need_a_larger_jump() -> None:
    """The z-score's denominator carries the window's own sampling noise, n p (1 - p)."""
    learned = Baseline()
    for _ in range(10):
        judge(learned, 200, 1000, OPTIONS)
    z = {posts: judge(Baseline.from_json(learned.to_json()), posts * 4 // 10, posts, OPTIONS).zscore
         for posts in (10, 1000)}  # fmt: skip
    assert z[10] < 2 < 10 < z[1000]


def test_a_calm_stream_of_real_tweets_raises_few_alarms_and_a_scripted_crisis_is_caught(
    predictor: Predictor, calm_pool: dict[str, list[str]]
) -> None:
    """A calm stream (real tweets, random brands, the model's labels), then the demo's crisis for acme,
    through the worker's partials and the stage's state. A page is two alerting windows in a row (the
    rule's `for`)."""
    rng = random.Random(7)
    reputation = Reputation()
    t0 = 1_800_000_000.0
    calm = calm_windows(calm_pool, rng, windows=150, per_window=240)  # about 60 posts per brand a window
    alerts = pages = judged = 0
    previous: dict[str, bool] = {}
    for i, posts in enumerate(calm):
        reputation.feed(predictor, posts, t0 + i * WINDOW + 1)
        closed = reputation.close(t0 + (i + 1) * WINDOW)
        assert set(closed) == set(NAMES)
        for brand, (j, _) in closed.items():
            judged += j.warm
            alerts += j.alert
            pages += j.alert and previous.get(brand, False)
            previous[brand] = j.alert
    assert judged > 0.9 * len(calm) * len(NAMES)  # warm within a few windows: 300 posts
    # one-sided z > 3 under a normal model: 0.13 % of windows; allow for the baseline being learned
    assert alerts <= 0.01 * judged, alerts
    assert pages == 0

    start = len(calm)
    for k in range(3):  # the crisis: acme's posts follow the script, the others stay calm
        posts = [(b, line) for b, line in calm_windows(calm_pool, rng, 1, 240)[0] if b != "acme"]
        posts += [("acme", line) for line in crisis_lines(calm_pool, rng, 60)]
        reputation.feed(predictor, posts, t0 + (start + k) * WINDOW + 1)
        closed = reputation.close(t0 + (start + k + 1) * WINDOW)
        acme, record = closed["acme"]
        assert acme.alert and acme.zscore > board.DROP_ZSCORE and acme.posts >= board.DROP_MIN_POSTS, acme
        assert acme.share > acme.baseline_share + 0.3
        assert record["alert"] and record["total"] == acme.posts == 60
        for brand in ("globex", "initech", "other"):
            assert not closed[brand][0].alert, (brand, k)


# --- the terms -------------------------------------------------------------------------------------------


def test_token_pulls_agree_with_the_models_own_log_odds(small_model: Path, val_split: Dataset) -> None:
    """The stand-in reads the model right: u . h equals log p_neg - log p_pos on unsaturated lines."""
    predictor = Predictor.load_fasttext(small_model)
    assert isinstance(predictor.scorer, FastTextScorer)
    model = predictor.scorer.model
    pull = TokenPull(model)
    assert pull.direction is not None
    lines = [normalize(t) for t in val_split.texts[:400]]
    probabilities = predictor.predict_normalized(lines).probabilities
    checked = 0
    for line, p in zip(lines, probabilities, strict=True):
        if min(p[0], p[2]) < 1e-3:
            continue
        h = model.get_sentence_vector(line)
        assert float(h @ pull.direction) == pytest.approx(np.log(p[0]) - np.log(p[2]), abs=0.05)
        checked += 1
    assert checked > 50
    (neg_words, neg_pulls), (pos_words, pos_pulls) = predictor.word_pulls(
        ["this is the worst service , i hate it", "love it , great"]
    ).lines()
    assert [len(neg_words), len(pos_words)] == [len(neg_pulls), len(pos_pulls)] == [9, 4]
    assert neg_pulls[neg_words.index("worst")] > 0 > pos_pulls[pos_words.index("love")]
    # the same columns through the worker's term pass: each post keeps the words that pulled it its way
    lines = ["this is the worst service , i hate it", "love it , great"]
    partials = Partials(list(NAMES), WINDOW, 10, "mentions")
    labels = np.array([LABELS.index("negative"), LABELS.index("positive")])
    partials.observe_terms(
        np.zeros(2, np.intp), labels, np.zeros(2, np.int64), predictor.word_pulls(lines), ["n", "p"], lines
    )
    (negative,), (positive,) = partials._samples[(0, 0)]
    assert "worst" in [term for term, _, _ in negative["terms"]]
    assert "love" in [term for term, _, _ in positive["terms"]]
    assert all(pull > 0 for _, pull, _ in negative["terms"] + positive["terms"])


def test_a_scripted_crisis_is_explained_by_the_words_it_was_built_from(
    predictor: Predictor, calm_pool: dict[str, list[str]]
) -> None:
    rng = random.Random(3)
    reputation = Reputation()
    t0 = 1_800_000_000.0
    posts = [(b, line) for b, line in calm_windows(calm_pool, rng, 1, 600)[0] if b != "acme"]
    posts += [("acme", line) for line in crisis_lines(calm_pool, rng, 200)]
    rng.shuffle(posts)
    for start in range(0, len(posts), 100):
        reputation.feed(predictor, posts[start : start + 100], t0 + 1)
    records = {brand: record for brand, (_, record) in reputation.close(t0 + WINDOW).items()}
    assert set(records) == set(NAMES)
    negative = [t["term"] for t in records["acme"]["top_negative_terms"]]
    expected = crisis_words()
    assert len(negative) == 10 and len(records["acme"]["top_positive_terms"]) <= 10
    assert negative[0] in expected, negative
    assert len(expected & set(negative[:5])) >= 3, (negative, expected)
    for brand, window in records.items():
        assert window["total"] == window["negative"] + window["neutral"] + window["positive"]
        for term in [*window["top_negative_terms"], *window["top_positive_terms"]]:
            assert is_term(term["term"]) and term["term"] != brand, term
            assert not re.fullmatch(r"__\w+__|url|@user|\W+", term["term"]), term
        pulls = [t["pull"] for t in window["top_negative_terms"]]
        assert pulls == sorted(pulls, reverse=True)
    # the calm brands are not explained by the crisis
    for brand in ("globex", "initech"):
        calm_terms = {t["term"] for t in records[brand]["top_negative_terms"][:3]}
        assert len(calm_terms & expected) <= 1, (brand, calm_terms)


def test_term_tallies_stay_bounded_and_keep_the_heavy_hitters() -> None:
    tally = TermTally(top=10)
    for i in range(50_000):
        tally.add(f"rare{i}", 0.01)
        if i % 10 == 0:
            tally.add("outage", 1.0)
        assert len(tally.terms) <= 1000
    top = tally.strongest()
    assert top[0] == {"term": "outage", "pull": pytest.approx(5000.0), "count": 5000}
    assert len(top) == 10


def test_terms_leave_out_stop_words_masks_lexicon_tokens_and_punctuation() -> None:
    for token in (
        "the",
        "not",
        "dont",
        "url",
        "URL",
        "@user",
        "__lexneg__",
        "__lexpos__",
        "!",
        "...",
        "2024",
        ":)",
        "f",
    ):
        assert not is_term(token), token
    for token in ("outage", "refund", "down", "can't-stand", "wifi5"):
        assert is_term(token), token


# --- the thresholds the demo shows are the alert rules' --------------------------------------------------


def test_the_demo_board_uses_the_alert_rules_and_the_stages_thresholds() -> None:
    """BrandSentimentDrop is the stage's own verdict (its thresholds are the stage's settings, once);
    BrandNegativeSpike's thresholds are the rule's. The board's legend numbers are both."""
    rules = {
        rule["alert"]: rule["expr"]
        for group in yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    drop, spike = rules["BrandSentimentDrop"], rules["BrandNegativeSpike"]
    assert re.fullmatch(r"max by \(brand\) \(reputation_alert\) > 0", drop.strip()), drop
    assert StageSettings.model_fields["reputation_alert_zscore"].default == board.DROP_ZSCORE
    assert StageSettings.model_fields["reputation_alert_min_posts"].default == board.DROP_MIN_POSTS
    assert re.search(rf"\)\s*>\s*{board.SPIKE_RATIO:g}\s*$", spike), spike
    assert re.search(rf">=\s*{board.SPIKE_MIN_NEGATIVES}\b", spike), spike


# --- end to end: a real worker writes its partials to a real broker ---------------------------------------


def test_a_real_workers_partials_count_each_post_in_its_event_time_window_and_explain_a_crisis(
    tmp_path: Path, kafka: str, small_model: Path, data_dir: Path, workers: list[WorkerProcess]
) -> None:
    """A real worker scores the demo's stream with acme in its scripted crisis, the posts' created_at
    spread over ten 2 s windows. The partials it writes (in its checkpoints) add up, per brand, window
    and label, to a recount of its results by created_at; the stage's state, fed those partials, puts
    the crisis phrases' words at the top of acme's negative terms."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "INPUT_TOPIC": unique("mentions"),
        "OUTPUT_TOPIC": unique("sentiment"),
        "DLQ_TOPIC": unique("dlq"),
        "REPUTATION_PARTIALS_TOPIC": unique("partials"),
        "CONSUMER_GROUP": unique("group"),
        "MODEL_PATH": str(small_model),
        "BRANDS": ",".join(BRANDS),
        "REPUTATION_WINDOW_SECONDS": "2",
        "MODEL_POLL_INTERVAL_SECONDS": "0",
        "BATCH_SIZE": "200",
    }
    topics = ("INPUT_TOPIC", "OUTPUT_TOPIC", "DLQ_TOPIC", "REPUTATION_PARTIALS_TOPIC")
    create_topics(kafka, *(env[t] for t in topics))
    stream = PostStream(list(BRANDS), unique("run"), data_dir, bad_share=0, seed=11)
    stream.start_crisis("acme")
    t0 = 1_800_000_000
    posts = []
    for i in range(2000):
        post = next(stream)
        doc = orjson.loads(post.value)
        doc["created_at"] = utc_rfc3339(t0 + 2 * (i % 10) + 0.25 + 0.3 * (i % 5))
        posts.append((post.key, orjson.dumps(doc)))
    produce(kafka, env["INPUT_TOPIC"], posts)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    workers.append(worker)
    results = read_all(kafka, env["OUTPUT_TOPIC"], len(posts), timeout=90, distinct=lambda r: r.key())
    worker.signal(15)
    assert worker.wait(30) == 0, worker.log

    recount: Counter[tuple[str, int, int]] = Counter()  # (brand label, window start, label id)
    for r in {r.key(): r for r in results}.values():
        doc = orjson.loads(r.value())
        brand = str(doc.get("brand") or "").lower()
        start = int(datetime.fromisoformat(doc["created_at"]).timestamp()) // 2 * 2
        recount[(brand if brand in BRANDS else "other", start, LABELS.index(doc["label"]))] += 1
    records = read_all(kafka, env["REPUTATION_PARTIALS_TOPIC"], 1, timeout=30, settle=3.0)
    counted: Counter[tuple[str, int, int]] = Counter()
    state = StageState(2, 0.0, StageSettings().detector)
    for record in records:
        doc = orjson.loads(record.value())
        if doc["type"] == "partial":
            assert record.key() == doc["brand"].encode()
            for label, n in enumerate(doc["counts"]):
                counted[(doc["brand"], doc["window_start"], label)] += n
        state.apply(0, record.value())
    assert counted == +recount
    assert {start for _, start, _ in recount} == {t0 + 2 * w for w in range(10)}

    for source in list(state.partitions[0].sources):  # every input partition scored to the end
        progress = {"type": "progress", "source": source, "event_time": t0 + 60.0, "sources": 4}
        state.apply(0, orjson.dumps(progress))
    pull: Counter[str] = Counter()
    for closed in state.close(0):
        if closed.brand == "acme":
            for term in orjson.loads(closed.value)["top_negative_terms"]:
                pull[term["term"]] += term["pull"]
    top = [term for term, _ in pull.most_common(5)]
    expected = crisis_words()
    assert top and top[0] in expected, (top, expected)
    assert len(expected & set(top)) >= 3, (top, expected)
