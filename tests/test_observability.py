"""What deploy/ ships for observability, checked with the real tools against the real processes.

- the Prometheus config and alert rules pass ``promtool check``, and the rules' unit tests
  (deploy/prometheus/alerts_test.yml) pass ``promtool test rules`` and cover every alert;
- every metric and label the alerts and the Grafana dashboard query is one the code exports;
- a real ``prometheus`` scrapes a real worker (against the session's Kafka) and a real API, reads back
  exactly the counters they expose, evaluates every alert rule without error, and answers every dashboard
  query.

promtool and prometheus come from Debian/Ubuntu's ``prometheus`` package, installed here when missing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import orjson
import pytest
import yaml

from api.metrics import ApiMetrics
from api.model_state import ModelState
from reputation.metrics import StageMetrics
from sentiment_model import Predictor
from sentiment_model.resolve import file_sha256
from tests.conftest import publish_model
from tests.kafka_harness import (
    REPO,
    StageProcess,
    WorkerProcess,
    free_port,
    metric_sum,
    produce,
    scrape,
    unique,
)
from tests.worker_harness import create_topics
from training.data import Dataset
from worker.metrics import WorkerMetrics

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "online-reputation.json"

#: Series Prometheus itself creates, which rules and panels may query, with their label names: ``up`` for
#: every target, ``ALERTS`` for every pending or firing alert (with the rule's labels).
PROMETHEUS_SERIES: dict[str, set[str]] = {
    "up": set(),
    "ALERTS": {"alertname", "alertstate", "severity", "team", "brand"},
}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
#: Grafana variables and what the live test substitutes for them ($brand: every brand, as "All" does).
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$window": "1h", "$brand": ".+"}

METRIC_NAME = re.compile(r"\b(?:sentiment|reputation)_[a-z0-9_]+\b")
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


# --- the tools -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrometheusTools:
    promtool: str
    prometheus: str

    def promtool_run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.promtool, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=REPO
        )


@pytest.fixture(scope="session")
def prometheus_tools() -> PrometheusTools:
    """promtool and prometheus from PATH: ``make test`` installs Debian's ``prometheus`` (its sysdeps
    target); the tests fail, never skip, without them."""
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    if promtool is None or prometheus is None:
        pytest.fail(
            "promtool and prometheus are not on PATH: run `make sysdeps` (Debian's prometheus package) "
            "or install Prometheus 2.x so both binaries are on PATH"
        )
    return PrometheusTools(promtool, prometheus)


# --- what the code exports -------------------------------------------------------------------------------

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


def exported_series() -> dict[str, set[str]]:
    """Every series name the worker, the reputation stage and the API export, with the label names each
    carries.

    Names come from each metric family and its type (a counter ``x`` is scraped as ``x_total`` and
    ``x_created``); label names from the samples, or, for labelled metrics that have no child yet, from the
    metric object (``_labelnames``: private, but unchanged across prometheus_client releases)."""
    worker = WorkerMetrics(["acme"])
    worker.set_model("someone/model", "main", "0" * 64)
    api = ApiMetrics(ModelState())  # not loaded: its sentiment_model_info has no sample, the worker's has
    labels: dict[str, set[str]] = {}
    described: set[str] = set()
    for registry in (worker.registry, StageMetrics().registry, api.registry):
        for collector in list(registry._collector_to_names):
            labelnames = getattr(collector, "_labelnames", None)
            if labelnames is None:
                continue
            for family in collector.collect():
                for suffix in _SUFFIXES[family.type]:
                    extra = {"le"} if suffix == "_bucket" else set()
                    labels.setdefault(family.name + suffix, set()).update(labelnames, extra)
                    described.add(family.name + suffix)
        for family in registry.collect():
            for suffix in _SUFFIXES[family.type]:
                labels.setdefault(family.name + suffix, set())
            for sample in family.samples:
                labels.setdefault(sample.name, set()).update(sample.labels)
                described.add(sample.name)
    # Custom collectors (prometheus_client's ProcessCollector) export counters without a _created series.
    for name in {n for n in set(labels) - described if n.endswith("_created")}:
        del labels[name]
    unknown = set(labels) - described
    assert not unknown, f"label names unknown for {unknown}: a custom collector without samples?"
    return labels


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    return exported_series()


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression refers to: every ``sentiment_*`` or ``reputation_*`` identifier,
    plus any identifier directly followed by a ``{...}`` selector (so ``up{...}`` or a misspelt name is
    caught too)."""
    return set(METRIC_NAME.findall(expr)) | {name for name, _ in SELECTOR.findall(expr)}


def check_expr(expr: str, exported: dict[str, set[str]]) -> list[str]:
    """Problems of one expression: unknown metrics, matchers on labels the metric lacks, grouping by labels
    none of its metrics has."""
    problems = []
    known = {**exported, **PROMETHEUS_SERIES}
    names = metric_names(expr)
    problems += [f"{name}: not exported by the worker or the API" for name in sorted(names - known.keys())]
    for name, matchers in SELECTOR.findall(expr):
        allowed = known.get(name, set()) | TARGET_LABELS
        problems += [
            f"{name}{{{label}...}}: {name} has no label {label!r} (has {sorted(allowed)})"
            for label in MATCHER_LABEL.findall(matchers)
            if label not in allowed
        ]
    grouping_allowed = TARGET_LABELS.union(*(known.get(name, set()) for name in names))
    for group in GROUPING.findall(expr):
        problems += [
            f"by/on ({label}): no metric in the expression has that label"
            for label in (part.strip() for part in group.split(","))
            if label and label not in grouping_allowed
        ]
    return problems


# --- the files -------------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule]


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Top-level panels plus those nested in collapsed rows."""
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the panels and every templating query."""
    exprs = [t["expr"] for p in all_panels(dashboard) for t in p.get("targets", []) if t.get("expr")]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


# --- (a) promtool check ----------------------------------------------------------------------------------


def test_promtool_accepts_the_config_and_the_rules(prometheus_tools: PrometheusTools) -> None:
    # check config resolves rule_files relative to the config file, so it checks alerts.yml too
    config = prometheus_tools.promtool_run("check", "config", PROMETHEUS_CONFIG)
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout + config.stderr
    rules = prometheus_tools.promtool_run("check", "rules", ALERTS)
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_scrape_config_matches_the_compose_services() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["global"]["scrape_interval"] == config["global"]["evaluation_interval"] == "15s"
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"worker", "reputation", "api", "prometheus"}
    assert jobs["reputation"]["static_configs"] == [{"targets": ["reputation:9110"]}]
    # every scaled worker replica: one A record per container behind the service name
    assert jobs["worker"]["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": 9108, "refresh_interval": "15s"}
    ]
    assert jobs["worker"].get("metrics_path", "/metrics") == "/metrics"
    assert jobs["api"]["static_configs"] == [{"targets": ["api:7860"]}]
    assert jobs["api"].get("metrics_path", "/metrics") == "/metrics"


# --- (b) alert rules -------------------------------------------------------------------------------------


def test_alert_unit_tests_pass(prometheus_tools: PrometheusTools) -> None:
    result = prometheus_tools.promtool_run("test", "rules", ALERTS_TEST)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    alerts = {rule["alert"] for rule in alert_rules()}
    assert {
        "WorkerDown",
        "WorkersAbsent",
        "ConsumerLagSecondsHigh",
        "DeadLetterRateHigh",
        "NoResultsProduced",
        "ApiErrorRateHigh",
        "ApiLatencyHigh",
        "ModelNotReady",
    } <= alerts
    cases = [case for test in load_yaml(ALERTS_TEST)["tests"] for case in test["alert_rule_test"]]
    fires = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert alerts - fires == set(), "alerts without a test where they fire"
    assert alerts - quiet == set(), "alerts without a test where they must stay quiet"
    assert (fires | quiet) - alerts == set(), "tests of alerts that do not exist"
    for case in cases:
        for expected in case.get("exp_alerts") or []:
            assert expected["exp_labels"]["severity"] in ("critical", "warning"), case


def test_alerts_are_actionable() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert "Runbook:" in rule["annotations"]["description"], rule["alert"]


def test_alerts_only_use_exported_metrics(exported: dict[str, set[str]]) -> None:
    used: set[str] = set()
    for rule in alert_rules():
        assert check_expr(rule["expr"], exported) == [], rule["alert"]
        used |= metric_names(rule["expr"])
    assert {"sentiment_consumer_lag_seconds", "sentiment_model_ready", "up"} <= used
    # the unit tests feed the same names (else a firing test would prove nothing about real series)
    series = [s["series"] for test in load_yaml(ALERTS_TEST)["tests"] for s in test["input_series"]]
    for selector in series:
        assert check_expr(selector, exported) == [], selector


# --- (c) the Grafana dashboard and its provisioning ------------------------------------------------------


def test_grafana_provisioning() -> None:
    datasources = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert [(d["uid"], d["type"], d["url"], d["isDefault"]) for d in datasources] == [
        ("prometheus", "prometheus", "http://prometheus:9090", True)
    ]
    providers = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yml")["providers"]
    assert [(p["type"], p["options"]["path"]) for p in providers] == [("file", "/var/lib/grafana/dashboards")]


def test_dashboard_is_well_formed() -> None:
    dashboard = load_dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == [
        "Brand reputation",
        "Crisis detection",
        "Pipeline health",
        "Model & API",
        "Model drift & hot-reload",
    ]
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[x, y] = panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "prometheus", panel["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["brand"]["datasource"]["uid"] == "prometheus"
    assert "label_values(sentiment_predictions_total, brand)" in json.dumps(variables["brand"]["query"])
    # every variable a query uses is defined (or Grafana's own)
    used = {v for expr in dashboard_queries(dashboard) for v in re.findall(r"\$\{?(\w+)", expr)}
    assert used - set(variables) - {"__rate_interval", "__interval", "__range"} == set()


def test_dashboard_only_queries_exported_metrics(exported: dict[str, set[str]]) -> None:
    dashboard = load_dashboard()
    queries = dashboard_queries(dashboard)
    used: set[str] = set()
    for expr in queries:
        assert check_expr(expr, exported) == [], expr
        used |= metric_names(expr)
    assert used, "no metric found in the dashboard: the extraction is broken"
    # the panels the issue asks for are there
    for name in (
        "sentiment_predictions_total",
        "sentiment_records_consumed_total",
        "sentiment_results_produced_total",
        "sentiment_dead_letters_total",
        "sentiment_consumer_lag_records",
        "sentiment_consumer_lag_seconds",
        "sentiment_event_to_result_seconds_bucket",
        "sentiment_batch_processing_seconds_bucket",
        "sentiment_batch_size_records_bucket",
        "sentiment_model_info",
        "sentiment_model_ready",
        "sentiment_requests_total",
        "sentiment_request_errors_total",
        "sentiment_request_latency_seconds_bucket",
        "reputation_zscore",
        "reputation_negative_share_baseline",
        "reputation_negative_volume_ratio",
        "ALERTS",
    ):
        assert name in used, name


def documented_metrics(section: str) -> dict[str, set[str]]:
    """``{metric: label names}`` from the table of ``section`` (a ``## `` heading) in docs/metrics.md."""
    text = (REPO / "docs" / "metrics.md").read_text()
    after = text[text.index(f"## {section}\n") :]
    table = after[after.index("| metric") :]
    table = table[: table.index("\n\n")] if "\n\n" in table else table
    rows = re.findall(r"^\| `(\w+)` \|([^|]*)\|", table, re.M)
    return {name: set(re.findall(r"`(\w+)`", labels)) for name, labels in rows}


def exported_metrics(registry: Any) -> dict[str, set[str]]:
    """``{metric: label names}`` of what ``registry`` exports (process_* aside)."""
    exported: dict[str, set[str]] = {}
    for collector in list(registry._collector_to_names):
        for family in collector.collect():
            if family.name.startswith(("process_", "python_")):
                continue
            name = family.name + ("_total" if family.type == "counter" else "")
            exported[name] = exported.get(name, set()) | set(getattr(collector, "_labelnames", ()))
    return exported


def test_the_metrics_document_lists_what_each_process_exports() -> None:
    api = exported_metrics(ApiMetrics(ModelState()).registry)
    api["sentiment_model_info"] = {"repo", "revision", "sha256"}  # no sample before a model loads
    assert documented_metrics("API") == api
    assert documented_metrics("Worker") == exported_metrics(WorkerMetrics(["acme"]).registry)
    assert documented_metrics("Reputation stage") == exported_metrics(StageMetrics().registry)


def test_extraction_catches_mistakes(exported: dict[str, set[str]]) -> None:
    """The checks above would notice a wrong name, suffix or label."""
    assert check_expr("rate(sentiment_request_errors_total[5m])", exported) == []
    assert check_expr("rate(sentiment_request_errors[5m])", exported)  # counter without _total
    assert check_expr("sentiment_request_latency_seconds", exported)  # histogram without _bucket
    assert check_expr('sentiment_requests_total{code="500"}', exported)  # the label is status
    assert check_expr("sum by (brand) (rate(sentiment_requests_total[1m]))", exported)
    assert check_expr('kafka_consumergroup_lag{topic="x"}', exported)  # not ours


# --- (d) a real Prometheus scraping a real worker and a real API -----------------------------------------


def http_json(url: str, data: dict[str, Any] | None = None, timeout: float = 10) -> tuple[int, Any]:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_for(what: str, check: Callable[[], bool], timeout: float, alive: Callable[[], str | None]) -> None:
    """Poll ``check`` until true; fail early when ``alive`` returns a reason a process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        died = alive()
        if died:
            raise AssertionError(f"{died} while waiting for {what}")
        with contextlib.suppress(OSError, ValueError):
            if check():
                return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@dataclass
class LocalServer:
    """A child process serving HTTP on 127.0.0.1, with its log."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    name = "server"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def died(self) -> str | None:
        if self.process.poll() is None:
            return None
        return f"{self.name} exited ({self.process.returncode}):\n{self.log_path.read_text(errors='replace')}"


class Prometheus(LocalServer):
    """A real ``prometheus`` on 127.0.0.1."""

    name = "prometheus"

    def api(self, path: str, **params: str) -> Any:
        status, body = http_json(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        assert status == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        result: list[dict[str, Any]] = data["result"]
        return result

    def values(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """``{sorted labels (without __name__): value}``."""
        return {
            tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__")): float(r["value"][1])
            for r in self.query(expr)
        }

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None


@contextlib.contextmanager
def running_prometheus(
    tools: PrometheusTools,
    folder: Path,
    worker_port: int,
    api_port: int,
    rules: Path | None = None,
    stage_port: int | None = None,
) -> Iterator[Prometheus]:
    """The shipped config with the compose targets swapped for local ports, scraping and evaluating every
    second, with the shipped alert rules loaded (or ``rules``); the reputation job only with a stage."""
    port = free_port()
    config = load_yaml(PROMETHEUS_CONFIG)
    config["global"] = {**config["global"], "scrape_interval": "1s", "evaluation_interval": "1s"}
    config.pop("alerting", None)  # no Alertmanager here (tests/test_alerting.py has one)
    config["rule_files"] = (
        [str(rules)] if rules else [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    )
    targets = {"worker": worker_port, "api": api_port, "prometheus": port, "reputation": stage_port}
    config["scrape_configs"] = [job for job in config["scrape_configs"] if targets[job["job_name"]]]
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs", None)  # no DNS here: the worker job gets a static target instead
        job["static_configs"] = [{"targets": [f"127.0.0.1:{targets[job['job_name']]}"]}]
    config_path = folder / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    check = tools.promtool_run("check", "config", config_path)
    assert check.returncode == 0, check.stdout + check.stderr
    log_path = folder / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                tools.prometheus,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=folder,
        )
    prometheus = Prometheus(port, process, log_path)
    try:
        wait_for(
            "prometheus to be ready",
            lambda: urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2).status == 200,
            30,
            prometheus.died,
        )
        yield prometheus
    finally:
        stop_process(process)


class ApiProcess(LocalServer):
    """``python -m api`` on 127.0.0.1."""

    name = "the API"


@contextlib.contextmanager
def running_api(model: Path, folder: Path) -> Iterator[ApiProcess]:
    """``python -m api`` on 127.0.0.1 with the given model file."""
    port = free_port()
    env = {
        **os.environ,
        "MODEL_PATH": str(model),
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "HF_HUB_OFFLINE": "1",
        "LOG_LEVEL": "WARNING",
    }
    for name in ("API_KEY", "MODEL_SHA256"):
        env.pop(name, None)
    log_path = folder / "api.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "api"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
        )
    api = ApiProcess(port, process, log_path)
    try:
        yield api
    finally:
        stop_process(process)


def brand_posts(dataset: Dataset, n: int) -> list[dict[str, object]]:
    """Posts about configured brands (one spelt in capitals), an unconfigured one, and none."""
    brands = ["acme", "globex", "ACME", "initech", None]
    out: list[dict[str, object]] = []
    for i in range(n):
        post: dict[str, object] = {"id": f"p{i}", "text": dataset.texts[i % len(dataset)]}
        if brands[i % len(brands)] is not None:
            post["brand"] = brands[i % len(brands)]
        out.append(post)
    return out


POISON = [b"{not json", b"[1, 2]", b'{"id": "x"}', b"\xff\xfe", b'{"id": "", "text": "t"}']
API_TEXTS = [
    "I love this phone, best purchase ever!",
    "worst customer service I have ever had, never again",
    "the meeting is moved to 3pm tomorrow",
    "so happy with the new update :) thank you",
]


def test_prometheus_scrapes_the_real_worker_and_api(
    prometheus_tools: PrometheusTools,
    kafka: str,
    small_model: Path,
    val_split: Dataset,
    tmp_path: Path,
) -> None:
    # Published as training does it, with metrics.json (drift reference) beside the model file.
    small_model = publish_model(small_model, tmp_path / "published", val_split)
    topics = {name: unique(name.lower()) for name in ("INPUT_TOPIC", "OUTPUT_TOPIC", "DLQ_TOPIC")}
    producer = ck.Producer({"bootstrap.servers": kafka})
    for topic in topics.values():  # the mock cluster creates topics on a metadata request
        producer.list_topics(topic, timeout=10)
    worker = WorkerProcess(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "MODEL_PATH": str(small_model),
            "BRANDS": "acme,globex",
            "COMMIT_INTERVAL_SECONDS": "0.5",
            "CONSUMER_GROUP": unique("group"),
            **topics,
        },
        tmp_path / "worker.log",
    )
    items = brand_posts(val_split, 240)
    expected_labels = Predictor.load(small_model).predict([str(p["text"]) for p in items]).labels
    expected: Counter[tuple[str, str]] = Counter()
    for post, label in zip(items, expected_labels, strict=True):
        brand = str(post.get("brand", "")).lower()
        expected[label, brand if brand in ("acme", "globex") else "other"] += 1

    with contextlib.ExitStack() as stack:
        stack.callback(worker.stop)
        worker.start()
        api = stack.enter_context(running_api(small_model, tmp_path))
        prometheus = stack.enter_context(
            running_prometheus(prometheus_tools, tmp_path, worker.metrics_port, api.port)
        )

        def died() -> str | None:
            if worker.process is not None and worker.process.poll() is not None:
                return f"the worker exited ({worker.process.returncode}):\n{worker.log}"
            return api.died() or prometheus.died()

        # Prometheus applies discovered targets every 5 s: wait for a first scrape of every target, so the
        # counters are seen before the traffic and rate() has something to measure
        wait_for("a first scrape of every target", lambda: prometheus.scalar("count(up == 1)") == 3, 30, died)
        wait_for("the worker to join its group", lambda: "assigned partitions" in worker.log, 60, died)
        wait_for("the API to be ready", lambda: http_json(f"{api.url}/ready")[0] == 200, 60, died)

        # traffic: posts through Kafka, texts through the API (one invalid body: a 422)
        records = [(None, orjson.dumps(p)) for p in items] + [(b"bad", value) for value in POISON]
        produce(kafka, topics["INPUT_TOPIC"], records)
        api_labels: Counter[str] = Counter()

        def predict(text: str) -> None:
            status, body = http_json(f"{api.url}/predict", {"text": text})
            assert status == 200, body
            api_labels[body["label"]] += 1

        # The API creates a request series on its first request, already at 1: rate() cannot see that
        # first step. A second wave after a scrape gives the request panels a rate to show.
        predict(API_TEXTS[0])
        assert http_json(f"{api.url}/predict", {"text": ""})[0] == 422
        status, body = http_json(f"{api.url}/predict/batch", {"texts": API_TEXTS})
        assert status == 200, body
        api_labels.update(result["label"] for result in body["results"])
        wait_for(
            "a scrape of the first API requests",
            lambda: prometheus.scalar('sum(sentiment_requests_total{endpoint=~"/predict.*"})') == 3,
            30,
            died,
        )
        predict(API_TEXTS[1])
        assert http_json(f"{api.url}/predict", {"text": ""})[0] == 422

        # the worker's own view first: every post counted
        wait_for(  # the poison may come in a later batch than the last post
            "the worker to count every post and every dead letter",
            lambda: (
                metric_sum(scrape(worker.metrics_port), "sentiment_predictions_total") == len(items)
                and metric_sum(scrape(worker.metrics_port), "sentiment_dead_letters_total") == len(POISON)
            ),
            60,
            died,
        )
        own = scrape(worker.metrics_port)

        # ... then Prometheus's: the same numbers, read back through its HTTP API
        wait_for(
            "prometheus to scrape the final counts",
            lambda: (
                prometheus.scalar('sum(sentiment_predictions_total{job="worker"})') == len(items)
                and prometheus.scalar('sum(sentiment_predictions_total{job="api"})') == len(API_TEXTS) + 2
                and prometheus.scalar("sum(sentiment_dead_letters_total)") == len(POISON)
            ),
            30,
            died,
        )
        through_prometheus = prometheus.values('sentiment_predictions_total{job="worker"}')
        assert len(through_prometheus) == 9  # 3 labels x (acme, globex, other): bounded by construction
        for labels, value in through_prometheus.items():
            series = dict(labels)
            sentiment, brand = series["sentiment"], series["brand"]
            assert series["instance"] == f"127.0.0.1:{worker.metrics_port}"
            assert value == metric_sum(own, "sentiment_predictions_total", sentiment=sentiment, brand=brand)
            assert value == expected[sentiment, brand], (sentiment, brand)
        assert sum(through_prometheus.values()) == len(items)
        for name in ("sentiment_records_consumed_total", "sentiment_results_produced_total"):
            assert prometheus.scalar(f'sum({name}{{job="worker"}})') == metric_sum(own, name), name
        assert prometheus.scalar("sum(sentiment_results_produced_total)") == len(items)

        api_series = prometheus.values('sum by (sentiment) (sentiment_predictions_total{job="api"})')
        assert {dict(k)["sentiment"]: v for k, v in api_series.items()} == {
            label: float(api_labels[label]) for label in ("negative", "neutral", "positive")
        }
        # the API's series carry the scoring route, never a brand: a brand panel counts the worker only
        assert prometheus.scalar('sum(sentiment_predictions_total{brand=~".+"})') == len(items)
        assert prometheus.scalar('sum(sentiment_request_errors_total{job="api", status="422"})') == 2
        sha = file_sha256(small_model)
        assert prometheus.values("count by (job, sha256) (sentiment_model_info)") == {
            (("job", "api"), ("sha256", sha)): 1.0,
            (("job", "worker"), ("sha256", sha)): 1.0,
        }
        assert prometheus.scalar("sentiment_model_ready") == 1
        assert prometheus.values("up") == {
            (("instance", f"127.0.0.1:{port}"), ("job", job)): 1.0
            for job, port in (
                ("worker", worker.metrics_port),
                ("api", api.port),
                ("prometheus", prometheus.port),
            )
        }

        # what the processes really expose is what the static checks assume
        live_names = set(own) | set(scrape(api.port))
        assert {name for name, _ in live_names} <= set(exported_series())

        # every alert rule loaded and evaluates without error against the real series
        alerts = {rule["alert"] for rule in alert_rules()}

        def rules_evaluated() -> bool:
            rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
            return {r["name"] for r in rules} == alerts and all(
                r["lastEvaluation"] > "2000" and r["health"] != "unknown" for r in rules
            )

        wait_for("every rule to be evaluated", rules_evaluated, 30, died)
        time.sleep(1.5)  # evaluated at least once more after the last scrape we waited for
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        assert [(r["name"], r["health"], r.get("lastError", "")) for r in rules] == [
            (r["name"], "ok", "") for r in rules
        ]
        # and a healthy pipeline raises nothing (API latency depends on this machine's load: not judged)
        active = {(r["name"], r["state"]) for r in rules if r["state"] != "inactive"}
        assert {(name, state) for name, state in active if name != "ApiLatencyHigh"} == set()

        # every dashboard query runs and, but for the 5xx ratios (no 5xx here), gives at least one number
        assert sorted(prometheus.api("label/brand/values", **{"match[]": "sentiment_predictions_total"})) == [
            "acme",
            "globex",
            "other",
        ]
        without_data = []
        checked = 0
        for expr in dashboard_queries(load_dashboard()):
            if expr.startswith("label_values(") or "reputation_" in expr:
                continue  # the stage's panels: no stage here (the crisis test below scrapes one)
            concrete = expr
            for variable, substitute in GRAFANA_VARIABLES.items():
                concrete = concrete.replace(variable, substitute)
            assert "$" not in concrete, concrete
            values = [float(r["value"][1]) for r in prometheus.query(concrete)]
            if not any(math.isfinite(v) for v in values) and 'status=~"5.."' not in concrete:
                without_data.append(f"{concrete} -> {values}")
            checked += 1
        assert without_data == [], "dashboard queries without data after real traffic"
        assert checked >= 25


# --- (e) crisis detection: a real Prometheus evaluates the brand rules on a real worker ---------------------

#: The live test runs the shipped brand rules on 2 s windows instead of 60 s: their `for` (90 s, one and a
#: half windows) shrinks by the same factor, so "two windows in a row" still means the same thing.
CRISIS_WINDOW_SECONDS = 2
BRAND_ALERTS = ("BrandSentimentDrop", "BrandNegativeSpike")


def rules_for_windows_of(seconds: int, folder: Path) -> Path:
    """alerts.yml with the brand rules' ``for`` scaled from 60 s windows to ``seconds``, else as shipped."""
    config = load_yaml(ALERTS)
    scaled = 0
    for group in config["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in BRAND_ALERTS:
                assert rule["for"] == "90s", rule
                rule["for"] = f"{90 * seconds // 60}s"
                scaled += 1
    assert scaled == len(BRAND_ALERTS)
    path = folder / "alerts.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class PaceProducer:
    """The demo's post stream (real TweetEval tweets, each brand its own mood) at a steady rate, on a
    thread; :meth:`crisis` turns one brand into the demo's scripted crisis."""

    def __init__(self, kafka: str, topic: str, data_dir: Path, rate: float) -> None:
        from worker.demo.posts import PostStream

        self.stream = PostStream(["acme", "globex", "initech"], unique("run"), data_dir, bad_share=0, seed=5)
        self.producer = ck.Producer({"bootstrap.servers": kafka, "linger.ms": 20})
        self.topic, self.rate = topic, rate
        self.stopping = False
        self.produced = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        owed, tick = 0.0, 0.05
        while not self.stopping:
            owed += self.rate * tick
            while owed >= 1:
                owed -= 1
                post = next(self.stream)
                self.producer.produce(self.topic, post.value, post.key)
                self.produced += 1
            self.producer.poll(0)
            time.sleep(tick)
        self.producer.flush(30)

    def crisis(self, brand: str) -> None:
        self.stream.start_crisis(brand)

    def __enter__(self) -> PaceProducer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping = True
        self.thread.join(40)


def test_prometheus_fires_brand_sentiment_drop_for_the_brand_in_crisis_only(
    prometheus_tools: PrometheusTools, kafka: str, small_model: Path, data_dir: Path, tmp_path: Path
) -> None:
    """A calm stream, then the scripted crisis for acme, through two workers and the reputation stage: on
    the calm stream no brand alert fires; in the crisis BrandSentimentDrop fires for acme and nothing
    fires for any other brand."""
    topics = {name: unique(name.lower()) for name in ("INPUT_TOPIC", "OUTPUT_TOPIC", "DLQ_TOPIC")}
    stage_topics = {
        name: unique(name.lower())
        for name in ("REPUTATION_PARTIALS_TOPIC", "REPUTATION_STATE_TOPIC", "REPUTATION_TOPIC")
    }
    create_topics(kafka, *topics.values(), *stage_topics.values())
    warmup_posts = 8 * 60  # about 8 windows of acme's posts
    common = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "REPUTATION_WINDOW_SECONDS": str(CRISIS_WINDOW_SECONDS),
        "REPUTATION_PARTIALS_TOPIC": stage_topics["REPUTATION_PARTIALS_TOPIC"],
    }
    worker_env = common | topics
    worker_env |= {
        "MODEL_PATH": str(small_model),
        "BRANDS": "acme,globex,initech",
        "CONSUMER_GROUP": unique("group"),
        "MODEL_POLL_INTERVAL_SECONDS": "0",
    }
    workers = [WorkerProcess(worker_env, tmp_path / f"worker{i}.log") for i in range(2)]
    stage = StageProcess(
        common
        | stage_topics
        | {"REPUTATION_GROUP": unique("stage"), "REPUTATION_WARMUP_POSTS": str(warmup_posts)},
        tmp_path / "stage.log",
    )
    rules = rules_for_windows_of(CRISIS_WINDOW_SECONDS, tmp_path)
    with contextlib.ExitStack() as stack:
        for child in (stage, *workers):
            stack.callback(child.stop)
            child.start()
        prometheus = stack.enter_context(
            running_prometheus(
                prometheus_tools, tmp_path, workers[0].metrics_port, free_port(), rules, stage_port=stage.port
            )
        )

        def died() -> str | None:
            for child in (stage, *workers):
                if child.process is not None and child.process.poll() is not None:
                    return f"{child.name} exited ({child.process.returncode}):\n{child.log}"
            return prometheus.died()

        wait_for("the stage to join its group", lambda: "assigned partitions" in stage.log, 60, died)
        wait_for("a scrape of the stage", lambda: prometheus.scalar('up{job="reputation"}') == 1, 30, died)
        stream = stack.enter_context(PaceProducer(kafka, topics["INPUT_TOPIC"], data_dir, rate=200))
        calm_started = time.time()

        def warm() -> bool:
            return (prometheus.scalar('max(reputation_window_posts{brand="acme"})') or 0) > 0

        wait_for("the first closed windows", warm, 60, died)
        time.sleep(CRISIS_WINDOW_SECONDS * (warmup_posts // 60 + 6))  # the warm-up, then calm windows
        calm_seconds = int(time.time() - calm_started) + 1
        fired_calm = prometheus.query(
            f'max_over_time(ALERTS{{alertname=~"{"|".join(BRAND_ALERTS)}"}}[{calm_seconds}s])'
        )
        assert [
            (r["metric"]["alertname"], r["metric"]["brand"], r["metric"]["alertstate"])
            for r in fired_calm
            if r["metric"]["alertstate"] == "firing"
        ] == []
        assert prometheus.scalar('reputation_window_posts{brand="acme"}') >= 30
        assert abs(prometheus.scalar('reputation_zscore{brand="acme"}') or 0) < 3

        stream.crisis("acme")
        crisis_started = time.time()

        def acme_fires() -> bool:
            firing = prometheus.values('ALERTS{alertname="BrandSentimentDrop", alertstate="firing"}')
            return any(dict(labels).get("brand") == "acme" for labels in firing)

        wait_for("BrandSentimentDrop to fire for acme", acme_fires, 60, died)
        took = time.time() - crisis_started
        assert prometheus.scalar('reputation_zscore{brand="acme"}') > 3
        alerts = prometheus.values(f'ALERTS{{alertname=~"{"|".join(BRAND_ALERTS)}"}}')
        assert {dict(labels)["brand"] for labels in alerts} == {"acme"}, alerts
        print(
            f"BrandSentimentDrop fired for acme {took:.1f}s into the crisis, {CRISIS_WINDOW_SECONDS}s windows"
            ", 2 workers, the stage judging"
        )
