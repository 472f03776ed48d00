"""The HTTP API with a real trained model: readiness, scoring, validation, limits, auth, metrics."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.context import context_of
from api.main import create_app
from schemas import LABELS
from schemas.api import MAX_BATCH_TEXTS
from sentiment_model import ModelError, Predictor, ScoredBatch
from sentiment_model.resolve import file_sha256
from tests.api_harness import KEY, serving, settings

TEXTS = [
    "I love this phone, best purchase ever!",
    "worst customer service I have ever had, never again",
    "the meeting is moved to 3pm tomorrow",
    "so happy with the new update :) thank you",
    "my order arrived broken and nobody answers",
    "Apple announces its quarterly results on Thursday",
]


class CountingPredictor(Predictor):
    """A real predictor that records the size of every model call."""

    calls: list[int]

    def predict(self, texts: Sequence[str]) -> ScoredBatch:
        self.calls.append(len(texts))
        return super().predict(texts)


def load_counting(path: Path) -> CountingPredictor:
    predictor = CountingPredictor.load(path)
    assert isinstance(predictor, CountingPredictor)
    predictor.calls = []
    return predictor


@pytest.fixture(scope="module")
def model_dir(small_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small model plus a published-style metrics.json beside it."""
    folder = tmp_path_factory.mktemp("api-model")
    shutil.copy(small_model, folder / "sentiment_ft.ftz")
    (folder / "metrics.json").write_text(json.dumps({"test": {"macro_recall": 0.61, "accuracy": 0.6}}))
    return folder


@pytest.fixture(scope="module")
def direct(small_model: Path) -> Predictor:
    """The same model, loaded directly: the reference the API must agree with."""
    return Predictor.load(small_model)


@pytest.fixture(scope="module")
def app(model_dir: Path) -> FastAPI:
    return create_app(settings(model_path=model_dir / "sentiment_ft.ftz"), predictor_loader=load_counting)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with serving(app) as client:
        yield client


def model_calls(app: FastAPI) -> list[int]:
    loaded = context_of(app).model.loaded
    assert loaded is not None and isinstance(loaded.predictor, CountingPredictor)
    return loaded.predictor.calls


def scrape(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


# --- readiness -------------------------------------------------------------------------------------------


def assert_unavailable(client: TestClient, reason: str) -> None:
    assert client.get("/health").status_code == 200
    for method, path, body in (
        ("GET", "/ready", None),
        ("GET", "/model", None),
        ("POST", "/predict", {"text": "I love it"}),
        ("POST", "/predict/batch", {"texts": ["I love it"]}),
    ):
        response = client.request(method, path, json=body)
        assert response.status_code == 503, path
        answer = response.json()
        assert answer["detail"] == reason
        assert "label" not in answer and "results" not in answer
    metrics = scrape(client)
    assert sample(metrics, "sentiment_model_ready") == 0.0
    assert not any(name == "sentiment_model_info" for name, _ in metrics)


def test_missing_model_file_is_not_ready_but_alive(tmp_path: Path) -> None:
    missing = tmp_path / "missing.ftz"
    with serving(create_app(settings(model_path=missing))) as client:
        assert client.get("/ready").json()["status"] == "failed"
        assert_unavailable(client, f"MODEL_PATH={missing} does not exist or is not a file")


def test_corrupt_model_file_is_not_ready_but_alive(tmp_path: Path, small_model: Path) -> None:
    corrupt = tmp_path / "sentiment_ft.ftz"
    corrupt.write_bytes(small_model.read_bytes()[: small_model.stat().st_size // 2])
    with pytest.raises(ModelError):
        Predictor.load(corrupt)
    with serving(create_app(settings(model_path=corrupt))) as client:
        assert client.get("/ready").json()["status"] == "failed"
        # The project's reader checks every size against the bytes there: always the same clear reason.
        reason = client.get("/ready").json()["detail"]
        assert re.fullmatch(rf"model file {re.escape(str(corrupt))} is truncated or corrupt: .+", reason), (
            reason
        )
        assert_unavailable(client, reason)


def test_loading_model_answers_503_then_becomes_ready(small_model: Path) -> None:
    release = threading.Event()

    def slow_loader(path: Path) -> Predictor:
        assert release.wait(60)
        return Predictor.load(path)

    app = create_app(settings(model_path=small_model), predictor_loader=slow_loader)
    with TestClient(app) as client:
        response = client.get("/ready")
        assert response.status_code == 503
        assert response.json() == {"detail": "the model is still loading", "status": "loading"}
        assert response.headers["retry-after"] == "5"
        assert client.get("/health").json() == {"status": "ok"}
        predict = client.post("/predict", json={"text": "I love it"})
        assert predict.status_code == 503 and "label" not in predict.json()
        release.set()
        assert context_of(app).model.wait(60)
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["model"]["sha256"] == file_sha256(small_model)
        assert client.post("/predict", json={"text": "I love it"}).status_code == 200


# --- scoring ---------------------------------------------------------------------------------------------


def test_ready_and_health(client: TestClient, model_dir: Path) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "model": {"repo": "local", "revision": None, "sha256": file_sha256(model_dir / "sentiment_ft.ftz")},
    }


def test_predict_matches_the_predictor(client: TestClient, direct: Predictor, model_dir: Path) -> None:
    expected = direct.predict(TEXTS)
    for text, label, score, scores in zip(
        TEXTS, expected.labels, expected.scores, expected.score_dicts(), strict=True
    ):
        response = client.post("/predict", json={"text": text})
        assert response.status_code == 200
        answer = response.json()
        assert answer["label"] == label
        assert answer["score"] == pytest.approx(score)
        assert answer["scores"] == pytest.approx(scores)
        assert answer["model"] == {
            "repo": "local",
            "revision": None,
            "sha256": file_sha256(model_dir / "sentiment_ft.ftz"),
        }


def test_batch_keeps_order_and_uses_one_model_call(
    app: FastAPI, client: TestClient, direct: Predictor
) -> None:
    texts = TEXTS * 5 + list(reversed(TEXTS))
    expected = direct.predict(texts)
    calls = model_calls(app)
    calls.clear()
    response = client.post("/predict/batch", json={"texts": texts})
    assert response.status_code == 200
    answer = response.json()
    assert [r["label"] for r in answer["results"]] == expected.labels
    assert [r["score"] for r in answer["results"]] == pytest.approx(expected.scores)
    assert answer["model"]["repo"] == "local"
    assert calls == [len(texts)]


def test_model_info(client: TestClient, model_dir: Path) -> None:
    response = client.get("/model")
    assert response.status_code == 200
    info = response.json()
    assert info["repo"] == "local" and info["revision"] is None
    assert info["file"] == "sentiment_ft.ftz"
    assert info["sha256"] == file_sha256(model_dir / "sentiment_ft.ftz")
    assert info["labels"] == list(LABELS)
    assert info["metrics"] == {"test": {"macro_recall": 0.61, "accuracy": 0.6}}
    assert info["loaded_at"].endswith("Z")


def test_model_info_without_metrics_file(small_model: Path, tmp_path: Path) -> None:
    lone = tmp_path / "sentiment_ft.ftz"
    shutil.copy(small_model, lone)
    with serving(create_app(settings(model_path=lone))) as client:
        assert client.get("/model").json()["metrics"] is None


def test_root_redirects_to_docs(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code in (302, 307)
    assert response.headers["location"] == "/docs"
    assert client.get("/docs").status_code == 200


# --- validation and limits -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/predict", {"text": ""}, "'text' must not be empty or whitespace only"),
        ("/predict", {"text": " \n\t "}, "'text' must not be empty or whitespace only"),
        ("/predict", {"text": 42}, "'text' must be a string"),
        ("/predict", {"text": None}, "'text' must be a string"),
        ("/predict", {}, "'text' is required"),
        ("/predict", {"text": "ok", "extra": 1}, "'extra' is not an accepted field"),
        ("/predict", {"text": "x" * 10_001}, "'text' is too long: at most 10,000 characters"),
        ("/predict", ["I love it"], "the body must be a JSON object"),
        ("/predict/batch", {"texts": []}, "'texts' needs at least 1 item"),
        ("/predict/batch", {"texts": "I love it"}, "'texts' must be a list of strings"),
        ("/predict/batch", {"texts": ["fine", " "]}, "'texts[1]' must not be empty or whitespace only"),
        ("/predict/batch", {"texts": ["ok"] * (MAX_BATCH_TEXTS + 1)}, "at most 1,000 are accepted"),
    ],
)
def test_invalid_bodies_get_a_readable_422(client: TestClient, path: str, body: object, says: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 422
    answer = response.json()
    assert answer["detail"].startswith("Invalid request: ")
    assert says in answer["detail"]
    assert answer["errors"] and all({"loc", "msg", "type"} <= set(e) for e in answer["errors"])


@pytest.mark.parametrize(
    ("content", "content_type", "says"),
    [
        (b'{"text": "unterminated', "application/json", "the body is not valid JSON"),
        (b"", "application/json", "the body is missing"),
        (b'{"text": "I love it"}', "text/plain", "must be JSON, sent with Content-Type: application/json"),
        (b"text=I+love+it", "application/x-www-form-urlencoded", "Content-Type: application/json"),
        (b"\xff\xfe not utf-8", "application/json", "the body is not valid JSON"),
    ],
)
def test_unparseable_bodies_get_a_readable_422(
    client: TestClient, content: bytes, content_type: str, says: str
) -> None:
    response = client.post("/predict", content=content, headers={"content-type": content_type})
    assert response.status_code == 422
    assert says in response.json()["detail"]


def test_bodies_over_the_limit_get_413(small_model: Path) -> None:
    app = create_app(settings(model_path=small_model, max_body_bytes=2_000))
    with serving(app) as client:
        fits = client.post("/predict", json={"text": "I love it " * 150})
        assert fits.status_code == 200
        declared = client.post("/predict", json={"text": "I love it " * 300})
        assert declared.status_code == 413
        assert "2,000-byte limit" in declared.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
            yield b'{"text": "'
            for _ in range(50):
                yield b"I love it " * 10
            yield b'"}'

        streamed = client.post(
            "/predict/batch", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.request.headers.get("transfer-encoding") == "chunked"
        assert streamed.status_code == 413
        assert "2,000-byte limit" in streamed.json()["detail"]
        metrics = scrape(client)
        assert (
            sample(metrics, "sentiment_requests_total", endpoint="/predict", method="POST", status="413") == 1
        )
        assert sample(metrics, "sentiment_request_errors_total", endpoint="/predict/batch", status="413") == 1


def test_fastapi_body_limit_still_answers_a_bare_413() -> None:
    """Why api/body_limit.py stays: FastAPI's built-in limit answers a declared over-limit body with
    Starlette's plain text, even with a 413 handler of our own. When this fails, use FastAPI's limit."""
    app = FastAPI(max_body_size=10)

    async def worded(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": "the body is over 10 bytes"}, status_code=413)

    async def echo(request: Request) -> Response:
        return Response(await request.body())

    app.add_exception_handler(413, worded)
    app.add_api_route("/echo", echo, methods=["POST"])
    response = TestClient(app).post("/echo", content=b"x" * 100)
    assert (response.status_code, response.text) == (413, "Content Too Large")


# --- API key ---------------------------------------------------------------------------------------------


def test_api_key_guards_scoring_routes_only(small_model: Path) -> None:
    with serving(create_app(settings(model_path=small_model, api_key=KEY))) as client:
        for headers in (
            {},
            {"X-API-Key": "wrong"},
            {"Authorization": "Bearer wrong"},
            {"Authorization": KEY},
        ):
            response = client.post("/predict", json={"text": "I love it"}, headers=headers)
            assert response.status_code == 401, headers
            assert "API key" in response.json()["detail"] and "label" not in response.json()
            assert client.post("/predict/batch", json={"texts": ["a"]}, headers=headers).status_code == 401
        for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
            assert client.post("/predict", json={"text": "I love it"}, headers=headers).status_code == 200
            assert client.post("/predict/batch", json={"texts": ["a"]}, headers=headers).status_code == 200
        for path in ("/health", "/ready", "/model", "/metrics", "/docs", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        openapi = client.get("/openapi.json").json()
        schemes = openapi["components"]["securitySchemes"]
        api_key = schemes["APIKeyHeader"]
        assert (api_key["type"], api_key["in"], api_key["name"]) == ("apiKey", "header", "X-API-Key")
        assert (schemes["HTTPBearer"]["type"], schemes["HTTPBearer"]["scheme"]) == ("http", "bearer")
        assert {"APIKeyHeader": []} in openapi["paths"]["/predict"]["post"]["security"]
        assert "security" not in openapi["paths"]["/health"]["get"]


def test_without_api_key_scoring_is_open_and_undeclared(client: TestClient) -> None:
    assert client.post("/predict", json={"text": "I love it"}).status_code == 200
    openapi = client.get("/openapi.json").json()
    assert "securitySchemes" not in openapi.get("components", {})
    assert "security" not in openapi["paths"]["/predict"]["post"]


# --- metrics ---------------------------------------------------------------------------------------------


def test_metrics_count_requests_errors_and_predictions(
    app: FastAPI, client: TestClient, direct: Predictor
) -> None:
    singles, batch = TEXTS[:3], TEXTS[2:]
    expected_single, expected_batch = (
        Counter(direct.predict(singles).labels),
        Counter(direct.predict(batch).labels),
    )
    before = scrape(client)
    for text in singles:
        assert client.post("/predict", json={"text": text}).status_code == 200
    assert client.post("/predict/batch", json={"texts": batch}).status_code == 200
    assert client.post("/predict", json={"text": ""}).status_code == 422
    assert client.post("/predict", json={"text": ""}).status_code == 422
    assert client.get("/no/such/page/12345").status_code == 404
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("sentiment_requests_total", endpoint="/predict", method="POST", status="200") == 3
    assert delta("sentiment_requests_total", endpoint="/predict/batch", method="POST", status="200") == 1
    assert delta("sentiment_requests_total", endpoint="/predict", method="POST", status="422") == 2
    assert delta("sentiment_request_errors_total", endpoint="/predict", status="422") == 2
    assert delta("sentiment_request_errors_total", endpoint="/predict", status="200") == 0
    assert delta("sentiment_requests_total", endpoint="unmatched", method="GET", status="404") == 1
    assert not any("/no/such" in value for _, labels in after for _, value in labels)
    assert delta("sentiment_request_latency_seconds_count", endpoint="/predict") == 5
    for label in LABELS:  # the seed's name; ``endpoint`` keeps it apart from the worker's series
        singly = delta("sentiment_predictions_total", sentiment=label, endpoint="/predict")
        batched = delta("sentiment_predictions_total", sentiment=label, endpoint="/predict/batch")
        assert (singly, batched) == (expected_single[label], expected_batch[label]), label
    loaded = context_of(app).model.loaded
    assert loaded is not None
    ref = loaded.ref
    assert sample(after, "sentiment_model_info", repo=ref.repo, revision="", sha256=ref.sha256) == 1
    assert sample(after, "sentiment_model_ready") == 1


def test_apps_have_separate_registries(small_model: Path) -> None:
    first, second = create_app(settings(model_path=small_model)), create_app(settings(model_path=small_model))
    assert context_of(first).metrics.registry is not context_of(second).metrics.registry


# --- concurrency -----------------------------------------------------------------------------------------


def test_concurrent_requests_all_succeed_with_correct_labels(small_model: Path, direct: Predictor) -> None:
    texts = [f"{TEXTS[i % len(TEXTS)]} #{i}" for i in range(50)]
    expected = direct.predict(texts).labels
    # Its own app: the lifespan (and so the batcher) belongs to the event loop that serves the requests.
    app = create_app(settings(model_path=small_model), predictor_loader=load_counting)

    async def run() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            assert await asyncio.to_thread(context_of(app).model.wait, 120)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
                return await asyncio.gather(*(http.post("/predict", json={"text": t}) for t in texts))

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 50
    assert [r.json()["label"] for r in responses] == expected
    calls = model_calls(app)
    assert sum(calls) == 50 and len(calls) < 50  # concurrent texts were joined into shared model calls


def test_big_batch_does_not_stall_the_event_loop(small_model: Path) -> None:
    app = create_app(settings(model_path=small_model, max_body_bytes=2_000_000))
    texts = [
        f"{TEXTS[i % len(TEXTS)]} " * 20 for i in range(MAX_BATCH_TEXTS)
    ]  # ~1 MB, well over the inline budget

    async def run() -> tuple[float, float]:
        async with app.router.lifespan_context(app):
            assert await asyncio.to_thread(context_of(app).model.wait, 120)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=60) as http:
                started = time.perf_counter()
                batch = asyncio.create_task(http.post("/predict/batch", json={"texts": texts}))
                await asyncio.sleep(0.005)  # the batch request is parsed and its model call has started
                health = await http.get("/health")
                health_done = time.perf_counter() - started
                response = await batch
                assert health.status_code == 200 and response.status_code == 200
                assert len(response.json()["results"]) == MAX_BATCH_TEXTS
                return health_done, time.perf_counter() - started

    health_done, batch_done = asyncio.run(run())
    assert health_done < batch_done
