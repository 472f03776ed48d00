"""The alert's path from rule to receiver, with the real parts: the shipped alert rules in a real
``prometheus``, the shipped routes and inhibition in a real Alertmanager, and a webhook receiver here.

- ``amtool`` accepts deploy/alertmanager/alertmanager.yml; every shipped rule routes, with its own labels,
  to the receiver meant for it, and the inhibition names alerts that exist;
- live: the real metric classes (the reputation stage's ``StageMetrics`` fed by ``reputation.detector.judge``
  over a scripted stream, the worker's ``WorkerMetrics``) are scraped by Prometheus, which sends to
  Alertmanager, which posts to the webhook. A crisis of one brand gives exactly one notification, for
  that brand, with the numbers and the link to its page; a calm brand gives none; with the workers
  stopped, a brand's crisis is held back and the operators get WorkerDown instead, and the brand's
  notification follows once the workers are back.

Only timing differs from what ships: every duration (``for``, ``group_wait``, ...) divided by
``TIME_SCALE``, scrapes and evaluations every second, receivers' URLs pointed at the local webhook.
promtool and prometheus come from Debian's ``prometheus``, amtool and alertmanager from
``prometheus-alertmanager`` (``make sysdeps``).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from reputation.detector import Baseline, DetectorOptions, Judgement, judge
from reputation.metrics import StageMetrics
from tests.kafka_harness import REPO, free_port
from tests.test_observability import (
    ALERTS,
    PROMETHEUS_CONFIG,
    Prometheus,
    alert_rules,
    exported_series,
    http_json,
    metric_names,
    stop_process,
    wait_for,
)
from worker.metrics import Heartbeat, MetricsServer, WorkerMetrics

ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
#: Every shipped duration is divided by this: the brand rules' `for: 90s` (1.5 windows of 60 s) becomes
#: 3 s, so the scripted stream closes its windows every 60 / TIME_SCALE seconds.
TIME_SCALE = 30
WINDOW_SECONDS = 60 / TIME_SCALE
BRAND_RECEIVER, OPERATORS = "brand-team", "operators"
BRAND_ALERTS = {"BrandSentimentDrop", "BrandNegativeSpike"}
API_BASE_URL = "http://localhost:7860"  # prometheus.yml's external label, as shipped


# --- the tools -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    promtool: str
    prometheus: str
    amtool: str
    alertmanager: str

    def amtool_run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.amtool, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=REPO
        )


@pytest.fixture(scope="module")
def tools() -> Tools:
    """The four binaries from PATH (Debian names Alertmanager ``prometheus-alertmanager``); the tests fail,
    never skip, without them, as tests/test_observability.py does."""
    found = {
        "promtool": shutil.which("promtool"),
        "prometheus": shutil.which("prometheus"),
        "amtool": shutil.which("amtool"),
        "alertmanager": shutil.which("alertmanager") or shutil.which("prometheus-alertmanager"),
    }
    missing = sorted(name for name, path in found.items() if path is None)
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not on PATH: run `make sysdeps` (Debian's prometheus and "
            "prometheus-alertmanager packages) or put Prometheus 2.x and Alertmanager 0.25+ on PATH"
        )
    return Tools(**{name: str(path) for name, path in found.items()})


# --- durations -------------------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def scaled_seconds(duration: str) -> float:
    """A Prometheus/Alertmanager duration (``1m30s``), in seconds divided by TIME_SCALE."""
    parts = _DURATION_PART.findall(duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"unreadable duration {duration!r}"
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in parts) / TIME_SCALE


def scaled(duration: str) -> str:
    """A duration divided by TIME_SCALE, in milliseconds (``2m`` -> ``4000ms``)."""
    return f"{round(scaled_seconds(duration) * 1000)}ms"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text("utf-8"))


# --- static checks ---------------------------------------------------------------------------------------


def test_amtool_accepts_the_config_and_routes_every_rule_to_its_audience(tools: Tools) -> None:
    check = tools.amtool_run("check-config", ALERTMANAGER_CONFIG)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout
    for rule in alert_rules():
        brand = rule["labels"].get("team") == "brand"
        assert brand == (rule["alert"] in BRAND_ALERTS), rule["alert"]
        labels = [f"alertname={rule['alert']}", *(f"{k}={v}" for k, v in rule["labels"].items())]
        labels += ["brand=acme"] if brand else ["job=worker", "instance=w1:9108"]
        route = tools.amtool_run(
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_CONFIG}",
            f"--verify.receivers={BRAND_RECEIVER if brand else OPERATORS}",
            *labels,
        )
        assert route.returncode == 0, (rule["alert"], route.stdout + route.stderr)

    config = load_yaml(ALERTMANAGER_CONFIG)
    (inhibit,) = config["inhibit_rules"]
    assert inhibit["target_matchers"] == ['team="brand"'] and not inhibit.get("equal")
    (source,) = inhibit["source_matchers"]
    names = re.fullmatch(r'alertname=~"([^"]+)"', source)
    assert names, source
    sources = set(names[1].split("|"))
    assert {"WorkerDown", "WorkersAbsent", "BrokerUnreachable", "ConsumerLagSecondsHigh"} <= sources
    assert sources <= {rule["alert"] for rule in alert_rules()} - BRAND_ALERTS, "inhibited by unknown alerts"


_COMMENTED_YAML = re.compile(r"^(\s*)# ((?:- )?[a-z_]+:(?: .*)?|\s+(?:- )?[A-Za-z_]+:(?: .*)?)$")


def test_the_commented_slack_and_email_examples_are_valid(tools: Tools, tmp_path: Path) -> None:
    """Uncommented, the examples in alertmanager.yml are a config amtool accepts."""
    lines = ALERTMANAGER_CONFIG.read_text("utf-8").splitlines()
    uncommented = [m[1] + m[2] if (m := _COMMENTED_YAML.match(line)) else line for line in lines]
    path = tmp_path / "alertmanager.yml"
    path.write_text("\n".join(uncommented) + "\n")
    config = load_yaml(path)
    (brand_team,) = [r for r in config["receivers"] if r["name"] == BRAND_RECEIVER]
    assert {"webhook_configs", "slack_configs", "email_configs"} <= set(brand_team)
    assert {"smtp_smarthost", "smtp_from", "slack_api_url_file"} <= set(config["global"])
    check = tools.amtool_run("check-config", path)
    assert check.returncode == 0, check.stdout + check.stderr


def test_brand_annotations_quote_exported_series_and_link_the_brand_page() -> None:
    stage = exported_series()
    for rule in alert_rules():
        if rule["alert"] not in BRAND_ALERTS:
            continue
        annotations = rule["annotations"]
        assert {"negative_share", "baseline_share", "zscore", "volume_ratio", "brand_page"} <= set(
            annotations
        )
        queries = {q for text in annotations.values() for q in re.findall(r'printf "([^"]*%q[^"]*)"', text)}
        assert queries and all(re.fullmatch(r"max\(\w+\{brand=%q\}\)", q) for q in queries), queries
        quoted = set().union(*(metric_names(q) for q in queries))
        assert len(quoted) == len(queries) and quoted <= set(stage), quoted - set(stage)
        assert annotations["brand_page"] == "{{ $externalLabels.api_base_url }}/brands/{{ $labels.brand }}"


# --- the live parts --------------------------------------------------------------------------------------


@dataclass
class Notification:
    receiver: str  # the path the webhook was posted to
    body: dict[str, Any]
    at: float

    @property
    def alertnames(self) -> set[str]:
        return {alert["labels"]["alertname"] for alert in self.body["alerts"]}


class Webhook:
    """A webhook receiver on 127.0.0.1 that keeps every notification posted to it."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.notifications.append(Notification(self.path.strip("/"), body, time.monotonic()))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def received(self, receiver: str, status: str = "firing") -> list[Notification]:
        with self.lock:
            return [n for n in self.notifications if n.receiver == receiver and n.body["status"] == status]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


#: Posts per window and negatives: a calm brand wavers around 15 %, a crisis is 62.5 % negative.
POSTS = 120
CALM_NEGATIVES = (16, 18, 20, 17, 19, 15, 18, 21, 17, 19)
CRISIS_NEGATIVES = 75


@dataclass
class ScriptedPipeline:
    """What Prometheus scrapes: the real ``StageMetrics`` of a reputation stage judging every brand's window
    with the real detector each ``WINDOW_SECONDS``, and a worker's real ``WorkerMetrics`` whose loop beats
    (``stop_workers`` closes its port, as a dead worker does)."""

    brands: tuple[str, ...]
    stage: StageMetrics = field(default_factory=StageMetrics)
    options: DetectorOptions = field(default_factory=DetectorOptions)
    crisis: set[str] = field(default_factory=set)
    judged: dict[str, list[Judgement]] = field(default_factory=dict)
    windows: int = 0

    def __post_init__(self) -> None:
        self.baselines = {brand: Baseline() for brand in self.brands}
        self.judged = {brand: [] for brand in self.brands}
        self.worker = WorkerMetrics(self.brands)
        self.worker_port = free_port()
        self.worker_server: MetricsServer | None = None
        self.stage_server = MetricsServer(self.stage, Heartbeat(3600), "127.0.0.1", 0).start()
        self.stopping = threading.Event()
        for _ in range(20):  # history: every brand's baseline is warm before the first scrape
            self.close_window(publish=False)

    @property
    def stage_port(self) -> int:
        return self.stage_server.port

    def close_window(self, publish: bool = True) -> None:
        self.windows += 1
        for brand, baseline in self.baselines.items():
            negatives = CRISIS_NEGATIVES if brand in self.crisis else CALM_NEGATIVES[self.windows % 10]
            judgement = judge(baseline, negatives, POSTS, self.options)
            if publish:
                self.stage.judged(brand, int(time.time()), judgement)
                self.judged[brand].append(judgement)

    def start_workers(self) -> None:
        self.worker_server = MetricsServer(
            self.worker, Heartbeat(3600), "127.0.0.1", self.worker_port
        ).start()

    def stop_workers(self) -> None:
        assert self.worker_server is not None
        self.worker_server.stop()
        self.worker_server = None

    def _run(self) -> None:
        next_window = time.monotonic() + WINDOW_SECONDS
        while not self.stopping.wait(0.2):
            self.worker.loop_heartbeat.set(time.time())
            if time.monotonic() >= next_window:
                next_window += WINDOW_SECONDS
                self.close_window()

    @contextlib.contextmanager
    def running(self) -> Iterator[ScriptedPipeline]:
        self.close_window()
        self.worker.loop_heartbeat.set(time.time())
        self.start_workers()
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.stopping.set()
            thread.join(5)
            if self.worker_server is not None:
                self.stop_workers()
            self.stage_server.stop()


class Alertmanager:
    """A real Alertmanager on 127.0.0.1."""

    def __init__(self, port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.port, self.process, self.log_path = port, process, log_path
        self.url = f"http://127.0.0.1:{port}"

    def died(self) -> str | None:
        if self.process.poll() is None:
            return None
        return (
            f"alertmanager exited ({self.process.returncode}):\n{self.log_path.read_text(errors='replace')}"
        )

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        matchers = "&".join(f'filter={k}="{v}"' for k, v in labels.items())
        status, body = http_json(f"{self.url}/api/v2/alerts?{matchers}")
        assert status == 200, body
        alerts: list[dict[str, Any]] = body
        return alerts


def alertmanager_config(folder: Path, webhook: Webhook) -> Path:
    """The shipped config with its timing divided by TIME_SCALE and each receiver posting to the webhook
    at /<receiver name>."""
    config = load_yaml(ALERTMANAGER_CONFIG)
    config["global"]["resolve_timeout"] = scaled(config["global"]["resolve_timeout"])
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        for key in ("group_wait", "group_interval", "repeat_interval"):
            if key in route:
                route[key] = scaled(route[key])
    for receiver in config["receivers"]:
        (webhook_config,) = receiver["webhook_configs"]
        webhook_config["url"] = f"{webhook.url}/{receiver['name']}"
    path = folder / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def prometheus_config(folder: Path, pipeline: ScriptedPipeline, alertmanager_port: int, port: int) -> Path:
    """The shipped config and rules: scrapes and evaluations every second, every rule's ``for`` divided by
    TIME_SCALE (expressions, labels and annotations as shipped), local targets, the local Alertmanager."""
    rules = load_yaml(ALERTS)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = scaled(rule["for"])
    rules_path = folder / "alerts.yml"
    rules_path.write_text(yaml.safe_dump(rules, sort_keys=False))

    config = load_yaml(PROMETHEUS_CONFIG)
    config["global"] = {**config["global"], "scrape_interval": "1s", "evaluation_interval": "1s"}
    assert config["global"]["external_labels"] == {"api_base_url": API_BASE_URL}
    config["rule_files"] = [str(rules_path)]
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    alertmanagers["static_configs"] = [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]
    targets = {"worker": pipeline.worker_port, "reputation": pipeline.stage_port, "prometheus": port}
    config["scrape_configs"] = [job for job in config["scrape_configs"] if job["job_name"] in targets]
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [f"127.0.0.1:{targets[job['job_name']]}"]}]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
        return bool(response.status == 200)


@contextlib.contextmanager
def server(argv: list[str], log_path: Path, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        yield process
    finally:
        stop_process(process)


def humanize_percentage(value: float) -> str:
    """Prometheus' ``humanizePercentage``: Go's ``%.4g`` of the percentage."""
    return f"{value * 100:.4g}%"


def numbers(j: Judgement) -> dict[str, str]:
    """The annotations a brand alert must carry for a judged window."""
    return {
        "negative_share": humanize_percentage(j.share),
        "baseline_share": humanize_percentage(j.baseline_share),
        "zscore": f"{j.zscore:.1f}",
        "volume_ratio": f"{j.volume_ratio:.1f}",
        "window_posts": str(j.posts),
    }


def test_a_crisis_reaches_the_brand_team_once_and_waits_while_the_pipeline_is_broken(
    tools: Tools, tmp_path: Path
) -> None:
    pipeline = ScriptedPipeline(("acme", "globex", "initech"))
    with contextlib.ExitStack() as stack:
        webhook = Webhook()
        stack.callback(webhook.close)
        stack.enter_context(pipeline.running())

        am_port = free_port()
        am_config = alertmanager_config(tmp_path, webhook)
        check = tools.amtool_run("check-config", am_config)
        assert check.returncode == 0, check.stdout + check.stderr
        am_process = stack.enter_context(
            server(
                [
                    tools.alertmanager,
                    f"--config.file={am_config}",
                    f"--storage.path={tmp_path / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                    "--log.level=warn",
                ],
                tmp_path / "alertmanager.log",
                tmp_path,
            )
        )
        alertmanager = Alertmanager(am_port, am_process, tmp_path / "alertmanager.log")

        prom_port = free_port()
        prom_config = prometheus_config(tmp_path, pipeline, am_port, prom_port)
        check = subprocess.run(
            [tools.promtool, "check", "config", str(prom_config)], capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, check.stdout + check.stderr
        prom_process = stack.enter_context(
            server(
                [
                    tools.prometheus,
                    f"--config.file={prom_config}",
                    f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--log.level=warn",
                ],
                tmp_path / "prometheus.log",
                tmp_path,
            )
        )
        prometheus = Prometheus(prom_port, prom_process, tmp_path / "prometheus.log")

        def died() -> str | None:
            return alertmanager.died() or prometheus.died()

        started = time.monotonic()
        wait_for("alertmanager to be ready", lambda: ready(alertmanager.url), 30, died)
        wait_for("prometheus to be ready", lambda: ready(prometheus.url), 30, died)
        wait_for("a scrape of every target", lambda: prometheus.scalar("count(up == 1)") == 3, 30, died)
        wait_for(
            "prometheus to find its alertmanager",
            lambda: bool(prometheus.api("alertmanagers")["activeAlertmanagers"]),
            30,
            died,
        )
        wait_for(
            "every brand's judged window",
            lambda: prometheus.scalar("count(reputation_window_posts)") == 3,
            30,
            died,
        )

        # 1. a calm pipeline raises nothing; then acme's crisis: one notification, for acme, numbers and link
        time.sleep(2 * WINDOW_SECONDS)
        assert webhook.notifications == []
        assert prometheus.query("ALERTS") == []
        pipeline.crisis.add("acme")
        crisis_started = time.monotonic()
        wait_for("acme's notification", lambda: len(webhook.received(BRAND_RECEIVER)) >= 1, 30, died)
        took = time.monotonic() - crisis_started
        (acme,) = webhook.received(BRAND_RECEIVER)
        assert acme.body["groupLabels"] == {"brand": "acme"}
        assert acme.alertnames == BRAND_ALERTS  # both rules, one message
        crisis_numbers = [numbers(j) for j in pipeline.judged["acme"] if j.alert]
        for alert in acme.body["alerts"]:
            assert alert["labels"]["brand"] == "acme" and alert["labels"]["team"] == "brand"
            annotations = alert["annotations"]
            assert annotations["brand_page"] == f"{API_BASE_URL}/brands/acme"
            assert f"{API_BASE_URL}/brands/acme" in annotations["description"]
            quoted = {key: annotations[key] for key in crisis_numbers[0]}
            assert quoted in crisis_numbers, (quoted, crisis_numbers)
            assert quoted["negative_share"] in annotations["summary"]
            assert float(quoted["zscore"]) >= 3 and float(quoted["volume_ratio"]) > 3
        (drop,) = [a for a in acme.body["alerts"] if a["labels"]["alertname"] == "BrandSentimentDrop"]
        assert drop["annotations"]["summary"] == (
            f"acme: {drop['annotations']['negative_share']} of posts negative, against a usual "
            f"{drop['annotations']['baseline_share']} (z = {drop['annotations']['zscore']})"
        )

        # 2. the workers stop: the operators hear WorkerDown, acme's alerts and initech's new crisis wait
        pipeline.stop_workers()
        wait_for("the operators' notification", lambda: bool(webhook.received(OPERATORS)), 30, died)
        (down,) = webhook.received(OPERATORS)
        assert down.alertnames == {"WorkerDown"}
        assert [a["labels"]["instance"] for a in down.body["alerts"]] == [f"127.0.0.1:{pipeline.worker_port}"]
        pipeline.crisis.add("initech")

        def initech_held_back() -> bool:
            alerts = alertmanager.alerts(brand="initech")
            return {a["labels"]["alertname"] for a in alerts} == BRAND_ALERTS and all(
                a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"] for a in alerts
            )

        wait_for("initech's alerts to reach alertmanager, inhibited", initech_held_back, 30, died)
        assert all(a["status"]["inhibitedBy"] for a in alertmanager.alerts(brand="acme"))
        (brand_route,) = load_yaml(ALERTMANAGER_CONFIG)["route"]["routes"]
        time.sleep(scaled_seconds(brand_route["group_wait"]) + 2)  # a notification would be out by now
        assert [n.body["groupLabels"] for n in webhook.received(BRAND_RECEIVER)] == [{"brand": "acme"}]

        # 3. the workers are back: initech's crisis, still on, is sent; acme's is not sent again
        pipeline.start_workers()
        healed = time.monotonic()
        wait_for(
            "initech's notification after the workers are back",
            lambda: len(webhook.received(BRAND_RECEIVER)) >= 2,
            30,
            died,
        )
        initech = webhook.received(BRAND_RECEIVER)[1]
        assert initech.body["groupLabels"] == {"brand": "initech"} and initech.at > healed
        assert initech.alertnames == BRAND_ALERTS
        assert all(a["annotations"]["brand_page"].endswith("/brands/initech") for a in initech.body["alerts"])

        # over the whole run: one notification per brand in crisis, none for the calm brand, no resolution
        # notices (the crises go on), and the operators heard of WorkerDown alone
        assert not any(j.alert for j in pipeline.judged["globex"])
        assert [n.body["groupLabels"]["brand"] for n in webhook.received(BRAND_RECEIVER)] == [
            "acme",
            "initech",
        ]
        assert webhook.received(BRAND_RECEIVER, "resolved") == []
        assert {name for n in webhook.notifications if n.receiver == OPERATORS for name in n.alertnames} == {
            "WorkerDown"
        }
        assert {n.receiver for n in webhook.notifications} <= {BRAND_RECEIVER, OPERATORS}
        print(
            f"acme's notification {took:.1f}s into its crisis ({WINDOW_SECONDS:.0f}s windows, every duration"
            f" / {TIME_SCALE}); initech's {initech.at - healed:.1f}s after the workers were back;"
            f" {time.monotonic() - started:.1f}s in all"
        )
