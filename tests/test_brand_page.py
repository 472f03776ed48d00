"""The brand endpoints and the brand page, on records the real reputation stage publishes on a real broker.

Partials go straight to the stage's input topic in its input format (what the workers would send: three
brands, 40 one-minute windows, acme in a crisis over its last three), a real ``python -m reputation``
judges them, and the API follows its output topic. The page is loaded in a real headless Chromium.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import orjson
import pytest
from fastapi.testclient import TestClient

from api.brand_book import BrandBook
from api.main import create_app
from schemas.timestamps import utc_rfc3339
from tests.api_harness import serving, settings
from tests.kafka_harness import StageProcess, free_port, produce, read_all, unique
from tests.worker_harness import create_topics
from worker.demo.processes import Child

BRANDS = ("acme", "globex", "initech")
WINDOW = 60
WINDOWS = 40
CRISIS_WINDOWS = 3
T0 = 1_800_000_000 // 3600 * 3600
KEPT_WINDOWS = 24  # BRAND_PAGE_MAX_WINDOWS for the tests: fewer than the topic holds
#: Each brand's words: (usual complaints, usual praise); acme's crisis adds its own complaints.
WORDS = {
    "acme": (["slow", "price"], ["camera", "love"]),
    "globex": (["delivery", "late"], ["service", "friendly"]),
    "initech": (["printer", "jam"], ["cheap", "reliable"]),
}
CRISIS_WORDS = ["battery", "exploded", "refund"]
#: Examples as the stage publishes them, written over acme's latest record by hand (texts as a user
#: would write them; the stage's own, from the partials' sampled posts, are checked for globex).
EXAMPLES = {
    "negative_examples": [
        {
            "id": "n1",
            "text": "My Acme phone's Battery EXPLODED on the train, I want a refund",
            "terms": ["battery", "exploded", "refund"],
        },
        {
            "id": "n2",
            "text": "second battery in a week... acme support is useless",
            "terms": ["battery", "useless"],
        },
    ],
    "positive_examples": [
        {"id": "p1", "text": "still love the acme camera though", "terms": ["love", "camera"]}
    ],
}


def sampled(brand: str, window: int, terms: list[list[Any]]) -> list[dict[str, Any]]:
    """One sampled post per term (the stage sums a window's terms over its sampled posts)."""
    return [
        {"rank": j, "id": f"{brand}-{window}-{term}", "text": str(term), "terms": [[term, pull, count]]}
        for j, (term, pull, count) in enumerate(terms)
    ]


@dataclass(frozen=True)
class StageOutput:
    """The topic the stage wrote, and its records by key (after the examples were added)."""

    kafka: str
    topic: str
    records: dict[str, dict[str, Any]]

    def latest(self, brand: str, n: int = 1) -> list[dict[str, Any]]:
        mine = sorted(
            (r for r in self.records.values() if r["brand"] == brand), key=lambda r: r["window_start"]
        )
        return mine[-n:]


def partials() -> list[tuple[bytes, bytes]]:
    """What workers would send for the scenario: one partial per brand and window, then progress past the
    last window (the stage's watermark), from the one input partition."""
    rng = random.Random(23)
    out: list[tuple[bytes, bytes]] = []
    for i in range(WINDOWS):
        for brand in BRANDS:
            crisis = brand == "acme" and i >= WINDOWS - CRISIS_WINDOWS
            negative = rng.randint(30, 34) if crisis else rng.randint(9, 14)
            counts = [negative, rng.randint(10, 16), rng.randint(2, 4) if crisis else rng.randint(10, 15)]
            complaints, praise = WORDS[brand]
            negative_terms = [[w, 2.0 + j, negative // 2] for j, w in enumerate(complaints)]
            if crisis:
                negative_terms += [[w, 12.0 - j, negative - j] for j, w in enumerate(CRISIS_WORDS)]
            partial = {
                "type": "partial",
                "brand": brand,
                "window_start": T0 + i * WINDOW,
                "window_seconds": WINDOW,
                "counts": counts,
                "negative_sample": sampled(brand, i, negative_terms),
                "positive_sample": sampled(
                    brand, i, [[w, 3.0 - j, counts[2] // 2 + 1] for j, w in enumerate(praise)]
                ),
            }
            out.append((brand.encode(), orjson.dumps(partial)))
    return out


@pytest.fixture(scope="module")
def stage_output(kafka_cluster: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> StageOutput:
    kafka, kind = kafka_cluster
    if kind == "mock":
        pytest.skip("the stage's transactions (read_committed) need a real broker")
    topics = {name: unique(name) for name in ("partials", "state", "reputation")}
    create_topics(kafka, *topics.values(), partitions=2)
    progress = orjson.dumps(
        {"type": "progress", "source": "mentions/0", "event_time": T0 + (WINDOWS + 2) * WINDOW, "sources": 1}
    )
    produce(kafka, topics["partials"], partials())
    for partition in range(2):  # progress goes to every partition, as the workers send it
        _produce_to(kafka, topics["partials"], b"\x00progress", progress, partition)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "REPUTATION_PARTIALS_TOPIC": topics["partials"],
        "REPUTATION_STATE_TOPIC": topics["state"],
        "REPUTATION_TOPIC": topics["reputation"],
        "REPUTATION_GROUP": unique("stage"),
        "TRANSACTIONAL_ID": unique("stage-tx"),
        "REPUTATION_WINDOW_SECONDS": str(WINDOW),
    }
    stage = StageProcess(env, tmp_path_factory.mktemp("stage") / "stage.log").start()
    try:
        records = read_all(kafka, topics["reputation"], WINDOWS * len(BRANDS), timeout=60)
    finally:
        stage.stop(10)
    assert "Traceback" not in stage.log, stage.log
    by_key = {r.key().decode(): orjson.loads(r.value()) for r in records}
    assert len(by_key) == WINDOWS * len(BRANDS), stage.tail(30)
    acme_latest = f"acme|{utc_rfc3339(T0 + (WINDOWS - 1) * WINDOW)}"
    by_key[acme_latest] |= EXAMPLES
    produce(kafka, topics["reputation"], [(acme_latest.encode(), orjson.dumps(by_key[acme_latest]))])
    return StageOutput(kafka, topics["reputation"], by_key)


def _produce_to(kafka: str, topic: str, key: bytes, value: bytes, partition: int) -> None:
    producer = ck.Producer({"bootstrap.servers": kafka})
    producer.produce(topic, value, key, partition=partition)
    assert producer.flush(30) == 0


def wait_for(client: TestClient, path: str, status: int, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(path)
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, response.text
            return response.json()
        time.sleep(0.1)


FIGURES = (
    "window_start",
    "window_end",
    "negative",
    "neutral",
    "positive",
    "total",
    "net_sentiment",
    "negative_share",
    "baseline_share",
    "zscore",
    "volume_ratio",
    "warm",
    "alert",
)


def figures(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc[k] for k in FIGURES}


def test_the_book_keeps_its_bounds() -> None:
    """Newest windows per brand, a new brand evicts the stalest one (never a fresher one), tombstones
    remove a window, a record that is not a window is counted and skipped."""
    book = BrandBook(max_brands=2, max_windows=3, examples=1)

    def put(brand: str, minute: int, **extra: Any) -> None:
        start, end = utc_rfc3339(T0 + 60 * minute), utc_rfc3339(T0 + 60 * minute + 60)
        doc = {**WINDOW_FIELDS, "brand": brand, "window_start": start, "window_end": end, **extra}
        book.apply(f"{brand}|{doc['window_start']}".encode(), orjson.dumps(doc))

    for minute in (5, 1, 2, 3, 0):  # out of order; 0 arrives when 3 newer ones are kept: dropped
        put("acme", minute, negative_examples=[{"id": "a", "text": "t"}, {"id": "b", "text": "u"}])
    detail = book.brand("acme")
    assert detail is not None and [w.window_start.minute for w in detail.windows] == [2, 3, 5]
    assert [e.id for e in detail.negative_examples] == ["a"]  # BRAND_PAGE_EXAMPLES per window and brand
    put("globex", 4)
    put("initech", 0)  # older than every kept brand's latest window: not kept
    assert [b.brand for b in book.brands().brands] == ["acme", "globex"]
    put("initech", 6)  # newer: evicts globex, whose latest window (4) is the oldest
    assert [b.brand for b in book.brands().brands] == ["acme", "initech"] and book.evicted_brands == 1
    book.apply(f"acme|{utc_rfc3339(T0 + 300)}".encode(), None)  # the tombstone of minute 5
    assert [w.window_start.minute for w in book.brand("acme").windows] == [2, 3]  # type: ignore[union-attr]
    book.apply(b"acme|whenever", b'{"brand": "acme"}')
    assert book.bad_records == 1 and book.brand("nobody") is None


WINDOW_FIELDS = {
    "window_seconds": 60,
    "negative": 1,
    "neutral": 1,
    "positive": 1,
    "total": 3,
    "net_sentiment": 0.0,
    "negative_share": 0.33,
    "baseline_share": 0.3,
    "dispersion": 1.0,
    "zscore": 0.1,
    "evidence": 0.0,
    "baseline_volume": 1.0,
    "volume_ratio": 1.0,
    "warm": True,
    "alert": False,
}


def test_brand_endpoints_answer_from_the_stage_records(stage_output: StageOutput, small_model: Path) -> None:
    app = create_app(
        settings(
            model_path=small_model,
            kafka_bootstrap_servers=stage_output.kafka,
            reputation_topic=stage_output.topic,
            brand_page_max_windows=KEPT_WINDOWS,
            brand_page_examples=1,
        )
    )
    with serving(app) as client:
        listed = wait_for(client, "/brands", 200)["brands"]
        assert [b["brand"] for b in listed] == list(BRANDS)
        for item in listed:
            (latest,) = stage_output.latest(item["brand"])
            assert figures(item) == figures(latest)
            assert item["top_negative_terms"] == latest["top_negative_terms"]
        assert [b["alert"] for b in listed] == [True, False, False]

        acme = client.get("/brands/acme").json()
        kept = stage_output.latest("acme", KEPT_WINDOWS)
        assert [figures(w) for w in acme["windows"]] == [figures(r) for r in kept]  # bounded, oldest first
        assert acme["alert"] is True and acme["latest"] == acme["windows"][-1]
        assert [t["term"] for t in acme["top_negative_terms"][:3]] == CRISIS_WORDS
        assert {"camera", "love"} == {t["term"] for t in acme["top_positive_terms"]}
        assert acme["negative_examples"] == EXAMPLES["negative_examples"][:1]  # BRAND_PAGE_EXAMPLES=1
        assert acme["positive_examples"] == EXAMPLES["positive_examples"]
        globex = client.get("/brands/globex").json()
        assert globex["alert"] is False  # the stage's own example: its window's strongest sampled post
        assert [(e["text"], e["terms"]) for e in globex["negative_examples"]] == [("late", ["late"])]
        assert {t["term"] for t in globex["top_negative_terms"]} == {"delivery", "late"}

        missing = client.get("/brands/nobody")
        assert missing.status_code == 404 and "no window of brand 'nobody'" in missing.json()["detail"]
        page = client.get("/brands/acme", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        assert page.headers["content-type"].startswith("text/html") and "brand-page.js" in page.text
        assert client.get("/", follow_redirects=False).headers["location"] == "/docs"  # not a browser


def test_brand_endpoints_say_what_is_wrong_with_kafka(kafka: str, small_model: Path) -> None:
    cases = {
        "not_configured": {},
        "unreachable": {"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"},
        "topic_missing": {"kafka_bootstrap_servers": kafka, "reputation_topic": unique("absent")},
    }
    apps = {
        status: create_app(settings(model_path=small_model, brand_page_kafka_timeout_seconds=1.0, **extra))
        for status, extra in cases.items()
    }
    with (
        serving(apps["not_configured"]) as a,
        serving(apps["unreachable"]) as b,
        serving(apps["topic_missing"]) as c,
    ):
        for status, client in zip(cases, (a, b, c), strict=True):
            body = wait_for_status(client, status)
            assert client.get("/brands/acme").json() == body  # the same answer for one brand
            assert client.post("/predict", json={"text": "I love it"}).status_code == 200  # scoring goes on
        assert "set KAFKA_BOOTSTRAP_SERVERS" in a.get("/brands").json()["detail"]
        assert "broker is unreachable" in b.get("/brands").json()["detail"]
        assert "does not exist" in c.get("/brands").json()["detail"]
        assert "Traceback" not in b.get("/brands").text


def wait_for_status(client: TestClient, status: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/brands")
        assert response.status_code == 503, response.text
        body: dict[str, Any] = response.json()
        if body["status"] == status or time.monotonic() > deadline:
            assert body["status"] == status, body
            return body
        time.sleep(0.1)


# --- the page in a real browser ------------------------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is missing: `make sysdeps` installs Debian's chromium")
    return found


def browse(url: str, profile: Path, *args: str, budget_ms: int = 4000) -> str:
    """Run headless Chromium on ``url`` until its scripts settled (virtual time); every host name but
    127.0.0.1 fails to resolve, so a page that needs the Internet shows it."""
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",  # the suite may run as root (CI containers)
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--virtual-time-budget={budget_ms}",
        *args,
        url,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={**os.environ, "TZ": "UTC"}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_page_in_chromium(stage_output: StageOutput, small_model: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "MODEL_PATH": str(small_model),
        "KAFKA_BOOTSTRAP_SERVERS": stage_output.kafka,
        "REPUTATION_TOPIC": stage_output.topic,
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "BRAND_PAGE_REFRESH_SECONDS": "2",
    }
    api = Child("api", "api", env, tmp_path / "api.log", port, unset=("KAFKA_CONFIG_FILE",)).start()
    base = f"http://127.0.0.1:{port}"
    try:
        api.wait_ready(f"{base}/brands", 60)
        for path in ("/", "/static/brand-page.js", "/static/brand-page.css"):
            with urllib.request.urlopen(
                urllib.request.Request(base + path, headers={"Accept": "text/html"})
            ) as r:
                text = r.read().decode()
                if path == "/":
                    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
            addresses = [a for a in _addresses(text) if a != "http://www.w3.org/2000/svg"]
            assert addresses == [], f"{path} refers to {addresses}: everything must come from the API"

        home = browse(f"{base}/", tmp_path / "profile", "--dump-dom")
        for brand in BRANDS:
            assert f'data-brand="{brand}"' in home, home
        assert 'class="card alerting" data-brand="acme" data-state="alert"' in home
        assert 'data-brand="globex" data-state="calm"' in home
        assert "acme is in trouble" in home and "battery, exploded, refund" in home
        assert "<svg" in home and "dot alert" in home

        acme = browse(f"{base}/brands/acme", tmp_path / "profile", "--dump-dom")
        assert 'id="headline"' in acme and "acme is in trouble" in acme
        complaints = acme[acme.index('id="complaints"') : acme.index('id="praise"')]
        for word in CRISIS_WORDS:
            assert f'<span class="term">{word}</span>' in complaints
        assert '<mark class="neg">Battery</mark>' in acme and '<mark class="neg">EXPLODED</mark>' in acme
        assert '<mark class="pos">camera</mark>' in acme

        shots = []
        for name, path in (("brand-page-acme.png", "/brands/acme"), ("brand-page-overview.png", "/")):
            shot = tmp_path / name
            browse(f"{base}{path}", tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,1400")
            assert shot.stat().st_size > 20_000
            shots.append(shot)
        print("\nbrand page screenshots: " + ", ".join(map(str, shots)))
    finally:
        api.stop(10)
    assert "Traceback" not in api.log, api.log


def _addresses(text: str) -> list[str]:
    return re.findall(r"""(?:https?:)?//[^\s"'`)<>]+""", text)
