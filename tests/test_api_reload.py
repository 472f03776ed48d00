"""Hot reload in the API with real models: a new file is scored in shadow, then promoted or rejected.

Measured on the TweetEval val split (the models are retrained every session; fastText with 2 threads is
not deterministic, so these are ranges over 4 trainings): ``other_model`` agrees with ``small_model`` on
69.4-72.3% of all 2,000 val texts and on 64.5-66.5% of the first 200 (the texts the shadow sees here);
label-distribution JSD 0.002-0.013 (all) and 0.010-0.024 (first 200). A model trained on 95% positive rows
says positive for 99.5% of val texts: agreement 0.45, JSD 0.33 on the first 200. Bounds with a margin both
ways: promote at agreement >= 0.55 and JSD <= 0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from api.context import context_of
from api.main import create_app
from api.settings import ApiSettings
from sentiment_model import Predictor
from sentiment_model.drift import js_divergence, shares
from sentiment_model.operations import RELOAD_OUTCOMES
from sentiment_model.resolve import file_sha256
from tests.conftest import train_small_model
from training.data import Dataset, load_split

POLL_SECONDS = 0.2
SHADOW_RECORDS = 200
MIN_AGREEMENT = 0.55
MAX_LABEL_JSD = 0.1
PER_REQUEST = 20  # texts per /predict/batch: SHADOW_RECORDS is exactly 10 requests
WAIT_SECONDS = 30.0

Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


def settings(model_path: Path, **values: Any) -> ApiSettings:
    # Explicit values for everything the environment could otherwise set on the test machine.
    defaults: dict[str, Any] = {
        "api_key": None,
        "hf_model_repo": "nobody/nothing",
        "model_sha256": None,
        "model_revision": None,
        "model_path": model_path,
        "model_poll_interval_seconds": POLL_SECONDS,
        "shadow_records": SHADOW_RECORDS,
        "shadow_min_agreement": MIN_AGREEMENT,
        "shadow_max_label_jsd": MAX_LABEL_JSD,
    }
    return ApiSettings.model_validate({**defaults, **values})


@pytest.fixture(scope="module")
def skewed_model(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A real model that is nearly useless: trained on 1,900 positive rows and 50 of each other class."""
    rows = load_split("train", data_dir).head(12_000)
    positives = np.flatnonzero(rows.labels == 2)[:1_900]
    others = np.concatenate([np.flatnonzero(rows.labels == 0)[:50], np.flatnonzero(rows.labels == 1)[:50]])
    picked = np.concatenate([positives, others])
    subset = Dataset("train", [rows.texts[i] for i in picked], rows.labels[picked])
    return train_small_model(subset, tmp_path_factory.mktemp("skewed-model"))


@pytest.fixture
def served(small_model: Path, tmp_path: Path) -> Path:
    """MODEL_PATH: a copy of the small model that the tests replace."""
    path = tmp_path / "model" / "sentiment_ft.ftz"
    path.parent.mkdir()
    shutil.copy(small_model, path)
    return path


def replace_file(target: Path, content: bytes) -> None:
    """Publish ``content`` at ``target`` the way a deploy should: write aside, then rename over."""
    staged = target.with_name(target.name + ".new")
    staged.write_bytes(content)
    os.replace(staged, target)


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of ``app`` with its lifespan running and the model loaded."""
    async with app.router.lifespan_context(app):
        assert await asyncio.to_thread(context_of(app).model.wait, 120), "model load did not settle"
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30) as http:
            yield http


async def scrape(http: httpx.AsyncClient) -> Metrics:
    response = await http.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def reloads(metrics: Metrics) -> dict[str, float]:
    """``sentiment_model_reloads_total`` by outcome; every outcome must be exported, even at 0."""
    found = {}
    for outcome in RELOAD_OUTCOMES:
        key = ("sentiment_model_reloads_total", frozenset({("outcome", outcome)}))
        assert key in metrics, f"reloads_total{{outcome={outcome!r}}} is not exported"
        found[outcome] = metrics[key]
    return found


def gauge(metrics: Metrics, name: str) -> float:
    return metrics[(name, frozenset())]


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def model_info(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/model")
    assert response.status_code == 200
    info: dict[str, Any] = response.json()
    return info


async def wait_for_candidate(http: httpx.AsyncClient, sha256: str) -> dict[str, Any]:
    """The ``candidate`` of ``/model`` once the watcher has loaded the new file."""
    found: dict[str, Any] = {}

    async def has_candidate() -> bool:
        found.update(await model_info(http))
        return found["candidate"] is not None

    await eventually(has_candidate, "the new file to become a candidate")
    assert found["candidate"]["sha256"] == sha256
    candidate: dict[str, Any] = found["candidate"]
    return candidate


async def predict_batch(http: httpx.AsyncClient, texts: list[str]) -> tuple[str, list[str]]:
    """(sha256 of the model that answered, labels) of one /predict/batch."""
    response = await http.post("/predict/batch", json={"texts": texts})
    assert response.status_code == 200, response.text
    answer = response.json()
    return answer["model"]["sha256"], [result["label"] for result in answer["results"]]


def agreement_and_jsd(first: Predictor, second: Predictor, texts: list[str]) -> tuple[float, float]:
    a, b = first.predict(texts).label_ids, second.predict(texts).label_ids
    jsd = js_divergence(
        shares(np.bincount(a, minlength=3).tolist()), shares(np.bincount(b, minlength=3).tolist())
    )
    return float(np.mean(a == b)), jsd


def watcher_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == "model-watcher"}


# --- promotion -------------------------------------------------------------------------------------------


def test_a_new_model_is_shadowed_then_promoted_atomically(
    served: Path, small_model: Path, other_model: Path, val_split: Dataset
) -> None:
    old_sha, new_sha = file_sha256(small_model), file_sha256(other_model)
    assert old_sha != new_sha
    texts = val_split.texts[: SHADOW_RECORDS + 5 * PER_REQUEST]
    old_model, new_model = Predictor.load(small_model), Predictor.load(other_model)
    old_labels, new_labels = old_model.predict(texts).labels, new_model.predict(texts).labels
    agreement, jsd = agreement_and_jsd(old_model, new_model, texts[:SHADOW_RECORDS])
    assert agreement >= MIN_AGREEMENT and jsd <= MAX_LABEL_JSD, "the bounds no longer fit the test models"
    app = create_app(settings(served))
    before = watcher_threads()
    started: set[threading.Thread] = set()

    async def scenario() -> None:
        async with serving(app) as http:
            reloader = context_of(app).reloader
            assert reloader is not None and reloader.watching  # started as soon as the model loaded
            started.update(watcher_threads() - before)
            first = await model_info(http)
            assert (first["sha256"], first["candidate"]) == (old_sha, None)
            metrics = await scrape(http)
            assert reloads(metrics) == dict.fromkeys(RELOAD_OUTCOMES, 0.0)
            assert gauge(metrics, "sentiment_shadow_records") == 0

            # No candidate yet: requests are scored by the current model only, and count for nothing.
            assert await predict_batch(http, texts[:PER_REQUEST]) == (old_sha, old_labels[:PER_REQUEST])

            replace_file(served, other_model.read_bytes())
            candidate = await wait_for_candidate(http, new_sha)
            assert candidate == {
                "repo": "local",
                "revision": None,
                "file": "sentiment_ft.ftz",
                "sha256": new_sha,
                "records": 0,
                "records_needed": SHADOW_RECORDS,
            }
            assert reloads(await scrape(http))["candidate"] == 1

            # Client texts, each request sent together with a /ready probe (never counted in shadow).
            answers: list[tuple[str, list[str]]] = []
            probes: list[str] = []
            sent = 0
            while True:
                chunk = texts[sent : sent + PER_REQUEST]
                answer, probe = await asyncio.gather(predict_batch(http, chunk), http.get("/ready"))
                assert probe.status_code == 200, probe.text
                probes.append(probe.json()["model"]["sha256"])
                answers.append(answer)
                sent += len(chunk)
                info = await model_info(http)
                if info["sha256"] == new_sha:
                    break
                assert info["candidate"]["records"] == sent, "shadow must count client texts only"
                assert gauge(await scrape(http), "sentiment_shadow_records") == sent
                assert sent < len(texts), "never promoted"
            assert sent == SHADOW_RECORDS  # decided on exactly SHADOW_RECORDS texts
            assert info["candidate"] is None
            assert info["loaded_at"] > first["loaded_at"]

            for start in range(sent, len(texts), PER_REQUEST):
                answers.append(await predict_batch(http, texts[start : start + PER_REQUEST]))
            probes.append((await http.get("/ready")).json()["model"]["sha256"])

            # Every batch is answered by the model it names, entirely: the old one up to the switch, then
            # the new one.
            switch = SHADOW_RECORDS // PER_REQUEST
            assert [sha for sha, _ in answers] == [old_sha] * switch + [new_sha] * (len(answers) - switch)
            served_labels = [label for _, labels in answers for label in labels]
            assert served_labels == old_labels[:SHADOW_RECORDS] + new_labels[SHADOW_RECORDS:]
            assert probes == sorted(probes, key=[old_sha, new_sha].index) and probes[-1] == new_sha

            metrics = await scrape(http)
            assert reloads(metrics) == {"candidate": 1, "promoted": 1, "rejected": 0, "failed": 0}
            assert gauge(metrics, "sentiment_shadow_records") == 0
            assert gauge(metrics, "sentiment_shadow_agreement_ratio") == pytest.approx(agreement)
            assert gauge(metrics, "sentiment_shadow_label_jsd") == pytest.approx(jsd)
            infos = {labels for name, labels in metrics if name == "sentiment_model_info"}
            assert infos == {frozenset({("repo", "local"), ("revision", ""), ("sha256", new_sha)})}

            # The promoted file is now the current one: later polls leave it alone.
            await asyncio.sleep(5 * POLL_SECONDS)
            assert reloads(await scrape(http))["candidate"] == 1
            assert (await model_info(http))["candidate"] is None

    asyncio.run(scenario())
    assert len(started) == 1, "one watcher per serving app"
    deadline = time.monotonic() + 5
    while any(thread.is_alive() for thread in started):
        assert time.monotonic() < deadline, "the watcher outlived the app"
        time.sleep(0.05)
    assert context_of(app).reloader is None


def test_concurrent_requests_across_the_switch_name_the_model_that_scored_them(
    served: Path, small_model: Path, other_model: Path, val_split: Dataset
) -> None:
    """Requests keep arriving while a model call runs (all calls in the model thread, at most 8 texts
    each, so a queue builds up): some are waiting when the call that promotes the candidate finishes. Each
    response must still carry the scores of exactly the model it names."""
    texts = val_split.texts[:800]
    models = {file_sha256(path): Predictor.load(path) for path in (small_model, other_model)}
    app = create_app(settings(served, inline_scoring_chars=0, max_texts_per_call=8))
    answers: list[tuple[list[str], dict[str, Any]]] = []

    async def scenario() -> None:
        async with serving(app) as http:
            replace_file(served, other_model.read_bytes())
            await wait_for_candidate(http, file_sha256(other_model))

            async def post(chunk: list[str]) -> None:
                if len(chunk) == 1:
                    response = await http.post("/predict", json={"text": chunk[0]})
                    body = response.json()
                    body["results"] = [{"label": body["label"], "scores": body["scores"]}]
                else:
                    response = await http.post("/predict/batch", json={"texts": chunk})
                    body = response.json()
                assert response.status_code == 200, response.text
                answers.append((chunk, body))

            requests = []
            for start in range(0, len(texts), 4):  # alternately 1 text and 3 texts per request
                for chunk in (texts[start : start + 1], texts[start + 1 : start + 4]):
                    requests.append(asyncio.create_task(post(chunk)))
                    await asyncio.sleep(0)
            await asyncio.gather(*requests)
            assert reloads(await scrape(http))["promoted"] == 1

    asyncio.run(scenario())
    assert len(answers) == 400
    named = {body["model"]["sha256"] for _, body in answers}
    assert named == set(models), "the switch did not happen while requests were in flight"
    for chunk, body in answers:
        expected = models[body["model"]["sha256"]].predict(chunk)
        assert [r["label"] for r in body["results"]] == expected.labels
        got = [[r["scores"][label] for label in ("negative", "neutral", "positive")] for r in body["results"]]
        assert np.allclose(got, expected.probabilities, atol=1e-6), "scored by another model than named"


# --- rejection and failure -------------------------------------------------------------------------------


def test_a_skewed_model_is_rejected_in_shadow_and_never_retried(
    served: Path,
    small_model: Path,
    skewed_model: Path,
    other_model: Path,
    val_split: Dataset,
    caplog: pytest.LogCaptureFixture,
) -> None:
    old_sha, bad_sha = file_sha256(small_model), file_sha256(skewed_model)
    texts = val_split.texts[: SHADOW_RECORDS + 3 * PER_REQUEST]
    old_model, bad_model = Predictor.load(small_model), Predictor.load(skewed_model)
    assert bad_model.predict(val_split.texts).labels.count("positive") >= 0.9 * len(val_split.texts)
    old_labels = old_model.predict(texts).labels
    agreement, jsd = agreement_and_jsd(old_model, bad_model, texts[:SHADOW_RECORDS])
    assert agreement < MIN_AGREEMENT and jsd > MAX_LABEL_JSD, "the skewed model would pass the bounds"
    app = create_app(settings(served))

    async def scenario() -> None:
        async with serving(app) as http:
            replace_file(served, skewed_model.read_bytes())
            await wait_for_candidate(http, bad_sha)
            answers = []
            for start in range(0, len(texts), PER_REQUEST):
                answers.append(await predict_batch(http, texts[start : start + PER_REQUEST]))
            assert [sha for sha, _ in answers] == [old_sha] * len(answers)
            assert [label for _, labels in answers for label in labels] == old_labels

            info = await model_info(http)
            assert (info["sha256"], info["candidate"]) == (old_sha, None)
            metrics = await scrape(http)
            assert reloads(metrics) == {"candidate": 1, "promoted": 0, "rejected": 1, "failed": 0}
            assert gauge(metrics, "sentiment_shadow_records") == 0
            assert gauge(metrics, "sentiment_shadow_agreement_ratio") == pytest.approx(agreement)
            assert gauge(metrics, "sentiment_shadow_label_jsd") == pytest.approx(jsd)
            assert (await http.get("/ready")).json()["model"]["sha256"] == old_sha

            # Still watching, but the rejected file is never evaluated again ...
            await asyncio.sleep(5 * POLL_SECONDS)
            assert reloads(await scrape(http))["candidate"] == 1
            assert (await model_info(http))["candidate"] is None
            # ... while a different new file is.
            replace_file(served, other_model.read_bytes())
            await wait_for_candidate(http, file_sha256(other_model))
            assert reloads(await scrape(http))["candidate"] == 2

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    rejections = [r for r in caplog.records if r.levelno == logging.WARNING and "rejected" in r.getMessage()]
    assert len(rejections) == 1, [r.getMessage() for r in caplog.records]
    message = rejections[0].getMessage()
    assert bad_sha[:12] in message and old_sha[:12] in message
    assert f"agreement {agreement:.3f} < {MIN_AGREEMENT}" in message
    assert f"label distribution JSD {jsd:.3f} > {MAX_LABEL_JSD}" in message


def test_a_corrupt_file_fails_to_load_and_the_current_model_keeps_serving(
    served: Path, small_model: Path, other_model: Path, val_split: Dataset
) -> None:
    old_sha = file_sha256(small_model)
    texts = val_split.texts[:PER_REQUEST]
    old_labels = Predictor.load(small_model).predict(texts).labels
    content = other_model.read_bytes()
    app = create_app(settings(served))

    async def scenario() -> None:
        async with serving(app) as http:
            replace_file(served, content[: len(content) // 2])

            async def failed() -> bool:
                return reloads(await scrape(http))["failed"] > 0

            await eventually(failed, "the truncated file to fail its load")
            assert await predict_batch(http, texts) == (old_sha, old_labels)
            await asyncio.sleep(5 * POLL_SECONDS)  # not retried while its content stays the same
            metrics = await scrape(http)
            assert reloads(metrics) == {"candidate": 0, "promoted": 0, "rejected": 0, "failed": 1}
            assert gauge(metrics, "sentiment_shadow_records") == 0
            info = await model_info(http)
            assert (info["sha256"], info["candidate"]) == (old_sha, None)
            ready = await http.get("/ready")
            assert ready.status_code == 200 and ready.json()["model"]["sha256"] == old_sha
            assert await predict_batch(http, texts) == (old_sha, old_labels)

    asyncio.run(scenario())


# --- polling off -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("off", [{"model_revision": "v1"}, {"model_poll_interval_seconds": 0}])
def test_no_watcher_when_polling_is_off(
    served: Path, small_model: Path, other_model: Path, off: dict[str, Any]
) -> None:
    old_sha = file_sha256(small_model)
    app = create_app(settings(served, **off))
    before = watcher_threads()

    async def scenario() -> None:
        async with serving(app) as http:
            assert context_of(app).reloader is None
            replace_file(served, other_model.read_bytes())
            await asyncio.sleep(5 * POLL_SECONDS)
            assert (await predict_batch(http, ["I love it"]))[0] == old_sha
            info = await model_info(http)
            assert (info["sha256"], info["candidate"]) == (old_sha, None)
            assert reloads(await scrape(http)) == dict.fromkeys(RELOAD_OUTCOMES, 0.0)
            assert watcher_threads() - before == set()

    asyncio.run(scenario())
