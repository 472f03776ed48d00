"""Crisis detection per brand and the terms that explain a window, in process, on real tweets scored by a
real fastText model (and the stand-in token pulls of sentiment_model/fasttext_scorer.py, for models only
fastText scores, read from that model's own weights)."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from reputation.settings import StageSettings
from schemas import LABELS
from schemas.reputation import WorkerWindow as ReputationWindow
from sentiment_model import Predictor, normalize
from sentiment_model.fasttext_scorer import FastTextScorer, TokenPull
from tests.kafka_harness import REPO, WorkerProcess, produce, read_all, unique
from tests.worker_harness import create_topics
from training.data import Dataset, load_split
from worker.demo import board
from worker.demo.posts import CRISIS_MOOD, CRISIS_PHRASES, CRISIS_SHARE, PostStream
from worker.metrics import WorkerMetrics
from worker.reputation import BrandBaseline, Reputation
from worker.terms import TermTally, is_term

BRANDS = ("acme", "globex", "initech")
WINDOW = 60


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


def feed(
    reputation: Reputation,
    predictor: Predictor,
    posts: list[tuple[str, str]],
    now: float,
) -> None:
    """One batch of ``(bounded brand label, normalised line)`` scored at ``now``, through the worker's
    own calls."""
    lines = [line for _, line in posts]
    scored = predictor.predict_normalized(lines)
    brands = [brand for brand, _ in posts]
    reputation.observe(Counter(zip(scored.labels, brands, strict=True)), now)
    tokens, pulls = predictor.word_pulls(lines)
    reputation.observe_terms(brands, scored.label_ids, tokens, pulls, now)


def calm_windows(
    pool: dict[str, list[str]], rng: random.Random, windows: int, per_window: int
) -> list[list[tuple[str, str]]]:
    """Windows of posts drawn at random from the pool (the model's own label mix), each given a random
    brand: a calm stream, every brand with the same mood, volume varying as Poisson noise does."""
    everything = [line for lines in pool.values() for line in lines]
    out = []
    for _ in range(windows):
        n = max(1, int(rng.gauss(per_window, per_window**0.5)))
        out.append([(rng.choice([*BRANDS, "other"]), rng.choice(everything)) for _ in range(n)])
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


def test_the_baseline_learns_share_and_volume_and_scores_a_jump() -> None:
    baseline = BrandBaseline(half_life_windows=10, warmup_windows=5, std_floor=0.02)
    rng = np.random.default_rng(0)
    for _ in range(40):  # 20 % negative of 200 posts, binomial noise only
        deviation = baseline.observe(int(rng.binomial(200, 0.2)), 200)
        assert abs(deviation.zscore) < 3.5
    assert baseline.share_mean == pytest.approx(0.2, abs=0.02)
    assert baseline.volume_mean == pytest.approx(40, abs=5)
    jump = baseline.observe(120, 200)  # 60 % negative: a crisis
    assert jump.zscore > 8 and jump.volume_ratio == pytest.approx(120 / jump.baseline_volume)
    assert jump.baseline_share == pytest.approx(0.2, abs=0.02)
    # the crisis window is learned clipped: the baseline moves by at most alpha * 3 sd
    assert baseline.share_mean < jump.baseline_share + baseline.alpha * 3 * 0.06
    spike = baseline.observe(400, 1000)  # five times the volume at a 40 % share
    assert spike.volume_ratio > 4


def test_nothing_moves_during_warm_up_and_an_empty_window_clears_the_deviation() -> None:
    baseline = BrandBaseline(half_life_windows=10, warmup_windows=5, std_floor=0.02)
    for i in range(5):
        deviation = baseline.observe(90 if i == 4 else 10, 100)  # a jump inside the warm-up
        assert (deviation.zscore, deviation.volume_ratio) == (0.0, 1.0)
    assert baseline.observe(90, 100).zscore > 3
    empty = baseline.observe(0, 0)
    assert (empty.zscore, empty.posts) == (0.0, 0)
    assert empty.volume_ratio == 0.0  # no negatives at all this window


def test_few_posts_need_a_larger_jump() -> None:
    """The z-score's denominator carries the window's own sampling noise, m(1 - m)/n."""
    z = {}
    for posts in (10, 1000):
        baseline = BrandBaseline(half_life_windows=10, warmup_windows=3, std_floor=0.0)
        for _ in range(10):
            baseline.observe(200, 1000)
        z[posts] = baseline.observe(int(posts * 0.4), posts).zscore
    assert z[10] < 2 < 10 < z[1000]


def test_a_calm_stream_of_real_tweets_raises_few_alarms_and_a_scripted_crisis_is_caught(
    predictor: Predictor, calm_pool: dict[str, list[str]]
) -> None:
    """A calm stream (real tweets, random brands, the model's labels), then the demo's crisis for acme.
    The alert condition is the rule's (deploy/prometheus/alerts.yml): z above the threshold in a window
    with enough posts, in two windows in a row (the rule's `for`)."""
    rng = random.Random(7)
    reputation = Reputation(WorkerMetrics(BRANDS), [300], WINDOW, "w1", warmup_windows=10)
    t0 = 1_800_000_000.0
    calm = calm_windows(calm_pool, rng, windows=150, per_window=240)  # about 60 posts per brand a window
    over = Counter[str]()
    over_twice = Counter[str]()
    learned = 0
    previous: dict[str, bool] = {}
    for i, posts in enumerate(calm):
        feed(reputation, predictor, posts, t0 + i * WINDOW + 1)
        reputation.refresh_gauges(t0 + (i + 1) * WINDOW + 0.5)  # closes window i
        if i < 11:  # the partial first window and the warm-up
            continue
        learned += 1
        for brand, deviation in reputation.deviations.items():
            alarm = deviation.zscore > board.DROP_ZSCORE and deviation.posts >= board.DROP_MIN_POSTS
            over[brand] += alarm
            over_twice[brand] += alarm and previous.get(brand, False)
            previous[brand] = alarm
    # one-sided z > 3 under a normal model: 0.13 % of windows; allow for the baseline being learned
    assert sum(over.values()) <= 0.01 * learned * 4, over
    assert sum(over_twice.values()) == 0, over_twice

    start = len(calm)
    for j in range(3):  # the crisis: acme's posts follow the script, the others stay calm
        posts = [(b, line) for b, line in calm_windows(calm_pool, rng, 1, 240)[0] if b != "acme"]
        posts += [("acme", line) for line in crisis_lines(calm_pool, rng, 60)]
        feed(reputation, predictor, posts, t0 + (start + j) * WINDOW + 1)
        reputation.refresh_gauges(t0 + (start + j + 1) * WINDOW + 0.5)
        acme = reputation.deviations["acme"]
        assert acme.zscore > board.DROP_ZSCORE and acme.posts >= board.DROP_MIN_POSTS, acme
        assert acme.share > acme.baseline_share + 0.3
        for brand in ("globex", "initech", "other"):
            assert reputation.deviations[brand].zscore < board.DROP_ZSCORE, (brand, j)
    metrics = reputation.metrics
    assert metrics.brand_negative_share_zscore.labels("acme")._value.get() == acme.zscore
    assert metrics.brand_baseline_windows.labels("acme")._value.get() == start + 2


def test_idle_windows_are_learned_as_empty_and_the_first_partial_window_is_not() -> None:
    reputation = Reputation(WorkerMetrics(BRANDS), [300], 10, "w1", warmup_windows=1)
    reputation.observe(Counter({("negative", "acme"): 5, ("neutral", "acme"): 5}), 1005.0)
    reputation.refresh_gauges(1012.0)  # the partial first window [1000, 1010) closed: not learned
    assert reputation.deviations == {}
    reputation.observe(Counter({("negative", "acme"): 5, ("neutral", "acme"): 5}), 1015.0)
    reputation.refresh_gauges(1055.0)  # [1010, 1020) learned, then three empty windows
    assert reputation.deviations["acme"].posts == 0
    assert reputation._baselines["acme"].windows == 4
    assert reputation._baselines["globex"].windows == 4  # every bounded brand label learns every window
    last = reputation.metrics.brand_last_window_posts
    assert last.labels("acme", "negative")._value.get() == 0


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
    tokens, pulls = predictor.word_pulls(["this is the worst service , i hate it", "love it , great"])
    assert [len(t) for t in tokens] == [len(p) for p in pulls] == [9, 4]
    assert pulls[0][tokens[0].index("worst")] > 0 > pulls[1][tokens[1].index("love")]


def test_a_scripted_crisis_is_explained_by_the_words_it_was_built_from(
    predictor: Predictor, calm_pool: dict[str, list[str]]
) -> None:
    rng = random.Random(3)
    reputation = Reputation(WorkerMetrics(BRANDS), [300], WINDOW, "w1")
    t0 = 1_800_000_000.0
    posts = [(b, line) for b, line in calm_windows(calm_pool, rng, 1, 600)[0] if b != "acme"]
    posts += [("acme", line) for line in crisis_lines(calm_pool, rng, 200)]
    for start in range(0, len(posts), 100):
        feed(reputation, predictor, posts[start : start + 100], t0 + 1)
    records = {
        key.decode().split("|")[0]: ReputationWindow.model_validate_json(value)
        for key, value in reputation.closed_windows(t0 + WINDOW)
    }
    assert set(records) == {*BRANDS, "other"}
    acme = records["acme"]
    negative = [t.term for t in acme.top_negative_terms]
    expected = crisis_words()
    assert len(negative) == 10 and len(acme.top_positive_terms) <= 10
    assert negative[0] in expected, negative
    assert len(expected & set(negative[:5])) >= 3, (negative, expected)
    for window in records.values():
        assert window.total == window.negative + window.neutral + window.positive
        for term in [*window.top_negative_terms, *window.top_positive_terms]:
            assert is_term(term.term) and term.term != window.brand, term
            assert not re.fullmatch(r"__\w+__|url|@user|\W+", term.term), term
        pulls = [t.pull for t in window.top_negative_terms]
        assert pulls == sorted(pulls, reverse=True)
    # the calm brands are not explained by the crisis
    for brand in ("globex", "initech"):
        calm_terms = {t.term for t in records[brand].top_negative_terms[:3]}
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


def test_windows_are_scored_and_dropped_when_the_topic_is_off() -> None:
    reputation = Reputation(WorkerMetrics(BRANDS), [300], 10, "w1", warmup_windows=1)
    reputation.publish = False
    for i in range(5):
        reputation.observe(Counter({("negative", "acme"): 3}), 1000.0 + 10 * i)
        reputation.refresh_gauges(1000.0 + 10 * i + 10)
    assert reputation._windows == {} and reputation._ready == []
    assert reputation._baselines["acme"].windows == 4  # the first (partial) window is not learned
    assert reputation.closed_windows(1100.0, everything=True) == []
    assert reputation._baselines["acme"].windows == 9  # idle windows learned as empty


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


# --- end to end: a real worker writes the terms to the reputation topic ------------------------------------


def test_the_reputation_topic_explains_a_scripted_crisis_with_its_words(
    tmp_path: Path, kafka: str, small_model: Path, data_dir: Path, workers: list[WorkerProcess]
) -> None:
    """A real worker scores the demo's stream with acme in its scripted crisis; the windows it writes to
    the reputation topic (schema-valid) put the crisis phrases' words at the top of acme's negative
    terms."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "INPUT_TOPIC": unique("mentions"),
        "OUTPUT_TOPIC": unique("sentiment"),
        "DLQ_TOPIC": unique("dlq"),
        "REPUTATION_TOPIC": unique("reputation"),
        "CONSUMER_GROUP": unique("group"),
        "MODEL_PATH": str(small_model),
        "BRANDS": ",".join(BRANDS),
        "REPUTATION_WINDOW_SECONDS": "2",
        "MODEL_POLL_INTERVAL_SECONDS": "0",
    }
    create_topics(kafka, env["INPUT_TOPIC"], env["OUTPUT_TOPIC"], env["DLQ_TOPIC"], env["REPUTATION_TOPIC"])
    stream = PostStream(list(BRANDS), unique("run"), data_dir, bad_share=0, seed=11)
    stream.start_crisis("acme")
    posts = [next(stream) for _ in range(2000)]
    produce(kafka, env["INPUT_TOPIC"], [(post.key, post.value) for post in posts])
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    workers.append(worker)
    read_all(kafka, env["OUTPUT_TOPIC"], len(posts), timeout=90, distinct=lambda r: r.key())
    worker.signal(15)  # a clean stop emits the windows still open
    assert worker.wait(30) == 0, worker.log

    records = read_all(kafka, env["REPUTATION_TOPIC"], 1, timeout=30, settle=3.0)
    windows = [ReputationWindow.model_validate_json(r.value()) for r in records]
    assert sum(w.total for w in windows) == len(posts)
    pull: dict[str, float] = {}
    for window in windows:
        if window.brand == "acme":
            for term in window.top_negative_terms:
                pull[term.term] = pull.get(term.term, 0.0) + term.pull
    top = sorted(pull, key=lambda t: -pull[t])[:5]
    expected = crisis_words()
    assert top and top[0] in expected, (top, expected)
    assert len(expected & set(top)) >= 3, (top, expected)
