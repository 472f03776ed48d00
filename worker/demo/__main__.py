"""``make demo``: the whole pipeline on one machine, with a live per-brand sentiment table.

1. Get a model: the Hub (or its cache) when reachable, else train one from TweetEval (``training.demo``).
2. Kafka: ``KAFKA_BOOTSTRAP_SERVERS`` when set, else the embedded mock cluster; create the topics.
3. Start ``--workers`` worker processes (one consumer group), the reputation stage and the API, and wait
   until they are ready.
4. Stream brand mentions into the input topic at ``--rate`` posts/s, read results and dead letters back,
   and redraw the table every second; call the API now and then.
5. On Ctrl-C or after ``--duration``: stop producing, wait for the last results, stop the workers
   (SIGTERM: drain and commit), the API, the broker. Exit 0 only when every valid post got a result and
   every bad one a dead letter.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType

import confluent_kafka as ck
import orjson
from prometheus_client.parser import text_string_to_metric_families

from sentiment_model import ResolvedModel
from sentiment_model.resolve import LOCAL_REPO
from worker.demo.board import Board, BrandDeviation
from worker.demo.posts import DEFAULT_MOODS, Post, PostStream
from worker.demo.processes import Child, port_or_free
from worker.kafka import KafkaLayerError
from worker.kafka.admin import ensure_topics
from worker.kafka.config import client_config
from worker.kafka.mock_cluster import MockCluster
from worker.settings import WorkerSettings

log = logging.getLogger("demo")

DEMO_DIR = Path(os.environ.get("DEMO_MODEL_DIR", "models/demo"))
DEMO_PARTITIONS = 4  # what the mock cluster auto-creates; also used for CreateTopics on a real cluster
#: The stage's gauges the board shows, and the field of BrandDeviation.from_stage each fills.
_STAGE_GAUGES = {
    "reputation_zscore": "zscore",
    "reputation_negative_volume_ratio": "ratio",
    "reputation_negative_share": "share",
    "reputation_negative_share_baseline": "baseline",
    "reputation_window_posts": "posts",
    "reputation_alert": "alert",
}
#: The stage's topics (on a given cluster too: the stage resumes from its group's offsets and state).
STAGE_TOPICS = ("reputation.partials", "reputation.state", "reputation")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (each with an environment default, so ``make demo`` needs none)."""
    parser = argparse.ArgumentParser(prog="python -m worker.demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=float(os.environ.get("DEMO_DURATION", "0")),
        help="seconds to stream; 0 (default) streams until Ctrl-C",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=float(os.environ.get("DEMO_RATE", "200")),
        help="posts per second (default 200)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("DEMO_WORKERS", "2")),
        help="worker processes in the consumer group (default 2)",
    )
    parser.add_argument(
        "--bad-share",
        type=float,
        default=0.01,
        help="share of deliberately bad records, to show the dead-letter topic (default 0.01)",
    )
    parser.add_argument(
        "--crisis-brand",
        default=os.environ.get("DEMO_CRISIS_BRAND", "acme"),
        help="brand whose mood turns sharply negative part-way through (scripted crisis); '' for none",
    )
    parser.add_argument(
        "--crisis-after",
        type=float,
        default=float(os.environ.get("DEMO_CRISIS_AFTER", "60")),
        help="seconds of calm stream before the crisis starts (default 60)",
    )
    parser.add_argument(
        "--window-seconds",
        type=int,
        default=int(os.environ.get("DEMO_WINDOW_SECONDS", "5")),
        help="the workers' reputation window (REPUTATION_WINDOW_SECONDS; default 5, production 60)",
    )
    parser.add_argument(
        "--warmup-posts",
        type=int,
        default=int(os.environ.get("DEMO_WARMUP_POSTS", "200")),
        help="posts each brand's baseline learns in the stage before it can alert (default 200)",
    )
    parser.add_argument(
        "--refresh",
        type=float,
        default=None,
        help="seconds between tables (default 1 on a terminal, 5 otherwise)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; see the module docstring."""
    try:
        return _run(argv)
    except KafkaLayerError as exc:  # a misspelt KAFKA_* variable, an unreachable or refusing cluster
        log.error("cannot start: %s", exc)
        return 2


def _run(argv: list[str] | None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from training.demo import get_model  # training code only when the demo runs, not on worker import

    model = get_model()
    settings = WorkerSettings(
        brands=os.environ.get("BRANDS") or ",".join(DEFAULT_MOODS),
        reputation_window_seconds=args.window_seconds,
    )
    stop = _install_stop_handler()
    with ExitStack() as stack:
        bootstrap = stack.enter_context(_broker(settings))
        embedded = "KAFKA_BOOTSTRAP_SERVERS" not in os.environ
        kafka = client_config(bootstrap, settings.kafka_properties(), {})
        topics = [settings.input_topic, settings.output_topic, settings.dlq_topic, *STAGE_TOPICS]
        ensure_topics(kafka, topics, DEMO_PARTITIONS, create_topics_api=not embedded)
        workers, api, api_port = _start_services(stack, settings, bootstrap, model, args.workers)
        stage = _start_stage(stack, settings, bootstrap, args.warmup_posts)
        return Demo(settings, kafka, workers, api, api_port, args, stop, stage).run()
    return 1  # pragma: no cover - the with block returns


@contextmanager
def _broker(settings: WorkerSettings) -> Iterator[str]:
    """The configured cluster, else the embedded one for the lifetime of the demo."""
    if "KAFKA_BOOTSTRAP_SERVERS" in os.environ:
        log.info("using the Kafka cluster at %s", settings.kafka_bootstrap_servers)
        yield settings.kafka_bootstrap_servers
        return
    with MockCluster() as cluster:
        log.info(
            "started an embedded Kafka-protocol broker (librdkafka mock cluster) at %s",
            cluster.bootstrap_servers,
        )
        yield cluster.bootstrap_servers


def _model_env(model: ResolvedModel) -> dict[str, str]:
    """Point the children at exactly the model the demo resolved."""
    if model.repo == LOCAL_REPO:
        return {"MODEL_PATH": str(model.path.resolve())}
    return {"HF_MODEL_REPO": model.repo, "MODEL_REVISION": model.revision or "main"}


def _start_services(
    stack: ExitStack, settings: WorkerSettings, bootstrap: str, model: ResolvedModel, count: int
) -> tuple[list[Child], Child, int]:
    """Workers and the API, started together and awaited until ready (stopped by ``stack``)."""
    logs = DEMO_DIR / "logs"
    common = {
        **_model_env(model),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "BRANDS": settings.brands,
        "REPUTATION_WINDOW_SECONDS": str(settings.reputation_window_seconds),
    }
    workers = []
    for i in range(count):
        port = port_or_free(9108 + i)
        env = {**common, "METRICS_HOST": "127.0.0.1", "METRICS_PORT": str(port)}
        worker = Child(f"worker-{i + 1}", "worker", env, logs / f"worker-{i + 1}.log", port).start()
        stack.callback(worker.stop, settings.shutdown_timeout_seconds + 5)
        workers.append(worker)
    api_port = port_or_free(7860)
    api_env = {
        **common,
        "API_HOST": "127.0.0.1",
        "API_PORT": str(api_port),
        "ACCESS_LOG": "false",
        "REPUTATION_TOPIC": STAGE_TOPICS[2],  # the brand page follows the stage's judgements
        "BRAND_PAGE_REFRESH_SECONDS": "2",
    }
    api = Child("api", "api", api_env, logs / "api.log", api_port).start()
    stack.callback(api.stop, 10)
    for worker in workers:
        worker.wait_ready(f"http://127.0.0.1:{worker.port}/healthz", 90)
        # In the group before the first posts. The embedded mock cluster can stall a SyncGroup for about
        # 40 s when members join one after another (4 workers in CI took over 60 s once).
        worker.wait_for_log("assigned partitions", 150)
    api.wait_ready(f"http://127.0.0.1:{api_port}/ready", 90)
    log.info("%d worker(s) and the API are up; logs in %s", count, logs)
    log.info("brand page: http://127.0.0.1:%d/ (open it in a browser)", api_port)
    return workers, api, api_port


def _start_stage(stack: ExitStack, settings: WorkerSettings, bootstrap: str, warmup_posts: int) -> Child:
    """The reputation stage (``python -m reputation``), awaited until it owns its partitions."""
    port = port_or_free(9110)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REPUTATION_WINDOW_SECONDS": str(settings.reputation_window_seconds),
        "REPUTATION_WARMUP_POSTS": str(warmup_posts),
        "TRANSACTIONAL_ID": "demo-reputation-stage",
        "METRICS_HOST": "127.0.0.1",
        "METRICS_PORT": str(port),
    }
    stage = Child("reputation", "reputation", env, DEMO_DIR / "logs" / "reputation.log", port).start()
    stack.callback(stage.stop, settings.shutdown_timeout_seconds + 5)
    stage.wait_ready(f"http://127.0.0.1:{port}/healthz", 60)
    stage.wait_for_log("state restored", 60)
    log.info("the reputation stage is up (metrics on http://127.0.0.1:%d/metrics)", port)
    return stage


def _install_stop_handler() -> threading.Event:
    """First Ctrl-C/SIGTERM: stop gracefully. A second one: give up waiting (KeyboardInterrupt)."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


class Demo:
    """The streaming part: a producer thread, readers of the results and dead letters, the table."""

    def __init__(
        self,
        settings: WorkerSettings,
        kafka: dict[str, object],
        workers: list[Child],
        api: Child,
        api_port: int,
        args: argparse.Namespace,
        stop: threading.Event,
        stage: Child,
    ) -> None:
        self.settings, self.kafka, self.workers, self.api, self.stage = settings, kafka, workers, api, stage
        self.api_port, self.args, self.stop = api_port, args, stop
        self.run_id = uuid.uuid4().hex[:8]
        self.board = Board(known_brands=frozenset(settings.brand_list))
        self.done_producing = threading.Event()
        self.last_text = ""
        self.api_line = "API: waiting for a first post"
        data_dir = os.environ.get("TWEETEVAL_DIR")
        self.stream = PostStream(
            settings.brand_list, self.run_id, Path(data_dir) if data_dir else None, bad_share=args.bad_share
        )
        self.tty = sys.stdout.isatty()
        self.refresh = args.refresh or (1.0 if self.tty else 5.0)
        self.reputation_topic = STAGE_TOPICS[2]
        self.crisis_brand = args.crisis_brand.lower() or None
        if self.crisis_brand:
            self.board.crisis_line = (
                f"scripted crisis: {self.crisis_brand}'s mood turns sharply negative after "
                f"{args.crisis_after:.0f}s (an outage)"
            )

    def run(self) -> int:
        """Stream until stopped, then drain and report. Returns the exit code."""
        reader = self._reader()  # positioned before the first post is produced
        producer = threading.Thread(target=self._produce, name="demo-producer", daemon=True)
        producer.start()
        started = time.monotonic()
        deadline = started + self.args.duration if self.args.duration > 0 else float("inf")
        next_draw = time.monotonic()
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                self._read(reader)
                self._maybe_start_crisis(started)
                if not all(w.alive() for w in self.workers):
                    dead = next(w for w in self.workers if not w.alive())
                    print(f"\n{dead.name} exited unexpectedly; its log ends with:\n{dead.tail()}", flush=True)
                    return 1
                if time.monotonic() >= next_draw:
                    self._call_api()
                    self._draw()
                    next_draw = time.monotonic() + self.refresh
            self.stop.set()
            producer.join(10)
            self._drain(reader)
        finally:
            reader.close()
        codes = [w.stop(self.settings.shutdown_timeout_seconds + 5) for w in self.workers]
        codes.append(self.stage.stop(self.settings.shutdown_timeout_seconds + 5))
        self._draw(final=True)
        return self._verdict(codes)

    def _maybe_start_crisis(self, started: float) -> None:
        """Script the crisis once ``--crisis-after`` seconds have passed (the producer picks it up)."""
        if not self.crisis_brand or self.stream.crisis_brand is not None:
            return
        if time.monotonic() - started >= self.args.crisis_after:
            self.stream.start_crisis(self.crisis_brand)
            self.board.crisis_line = (
                f"scripted crisis: {self.crisis_brand} in crisis since {self.args.crisis_after:.0f}s "
                "(an outage)"
            )

    def _produce(self) -> None:
        """Produce posts at the configured rate (batched per tick; the producer is asynchronous)."""
        producer = ck.Producer(
            {**self.kafka, "enable.idempotence": True, "linger.ms": 20, "compression.type": "lz4"}
        )
        interval = 0.05
        owed = 0.0
        while not self.stop.is_set():
            owed += self.args.rate * interval
            while owed >= 1:
                owed -= 1
                self._send(producer, next(self.stream))
            producer.poll(0)
            time.sleep(interval)
        left = producer.flush(30)
        if left:
            log.error("%d posts were not acknowledged by the broker", left)
        self.done_producing.set()

    def _send(self, producer: ck.Producer, post: Post) -> None:
        while True:
            try:
                producer.produce(self.settings.input_topic, post.value, post.key)
                break
            except BufferError:  # queue full: wait for deliveries, never drop
                producer.poll(0.1)
        self.board.produced += 1
        if post.bad_kind is not None:
            self.board.produced_bad += 1
        else:
            self.last_text = orjson.loads(post.value)["text"]

    def _reader(self) -> ck.Consumer:
        """A consumer of the result and dead-letter topics, from their current ends (no group offsets)."""
        consumer = ck.Consumer(
            {
                **self.kafka,
                "group.id": f"demo-reader-{self.run_id}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        assignment = []
        topics = [self.settings.output_topic, self.settings.dlq_topic]
        for topic in [*topics, self.reputation_topic]:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            for partition in metadata.partitions:
                _, high = consumer.get_watermark_offsets(ck.TopicPartition(topic, partition), timeout=10)
                assignment.append(ck.TopicPartition(topic, partition, high))
        consumer.assign(assignment)
        return consumer

    def _read(self, consumer: ck.Consumer) -> None:
        prefix = f"{self.run_id}-".encode()
        for record in consumer.consume(1000, 0.2):
            if record.error() is None and record.topic() == self.reputation_topic:
                self.board.add_window(orjson.loads(record.value() or b"{}"))  # terms of a closed window
                continue
            if record.error() is not None or not (record.key() or b"").startswith(prefix):
                continue  # another run's records, on a shared cluster
            if record.topic() == self.settings.output_topic:
                self.board.add_result(orjson.loads(record.value() or b"{}"))
            else:
                reason = dict(record.headers() or []).get("dlq.reason") or b"?"
                self.board.add_dead_letter(reason.decode() if isinstance(reason, bytes) else reason)

    def _drain(self, consumer: ck.Consumer, timeout: float = 20.0) -> None:
        """After the last post: read until every post is accounted for, or ``timeout``."""
        self.done_producing.wait(35)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._accounted() < self.board.produced:
            self._read(consumer)

    def _accounted(self) -> int:
        return self.board.results + sum(self.board.dead_letters.values())

    def _call_api(self) -> None:
        """Score the latest post through the API too, to show the sidecar answering."""
        if not self.last_text:
            return
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}/predict",
            data=orjson.dumps({"text": self.last_text}),
            headers={"Content-Type": "application/json"},
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                answer = orjson.loads(response.read())
            took = (time.perf_counter() - started) * 1000
            self.api_line = (
                f"API /predict ({took:.0f} ms): {answer['label']} {answer['score']:.2f}  "
                f"{self.last_text[:60]!r}"
            )
        except OSError as exc:
            self.api_line = f"API /predict failed: {exc}"

    def _lag(self) -> int | None:
        """Consumer lag summed over the workers' /metrics; the stage's per-brand gauges go to the board."""
        total = 0.0
        for worker in self.workers:
            text = _scrape(worker.port)
            if text is None:
                return None
            for family in text_string_to_metric_families(text):
                if family.name == "sentiment_consumer_lag_records":
                    total += sum(sample.value for sample in family.samples)
        text = _scrape(self.stage.port)
        if text is not None:
            per_brand: dict[str, dict[str, float]] = {}
            for family in text_string_to_metric_families(text):
                field = _STAGE_GAUGES.get(family.name)
                for sample in family.samples if field else []:
                    per_brand.setdefault(sample.labels["brand"], {})[str(field)] = sample.value
            self.board.set_deviations({b: BrandDeviation.from_stage(g) for b, g in per_brand.items()})
        return int(total)

    def _draw(self, final: bool = False) -> None:
        lag = self._lag() if not final else None
        header = [
            f"Online Reputation demo (run {self.run_id}) - {len(self.workers)} worker(s), "
            f"{self.args.rate:.0f} posts/s into {self.settings.input_topic!r}"
            + ("  [final]" if final else "  [Ctrl-C to stop]"),
        ]
        workers = ", ".join(f"http://127.0.0.1:{w.port}/metrics" for w in self.workers)
        footer = [
            self.api_line,
            f"consumer lag: {lag if lag is not None else '-'} records",
            f"brand page http://127.0.0.1:{self.api_port}/   API docs http://127.0.0.1:{self.api_port}/docs",
            f"worker metrics {workers}",
        ]
        text = self.board.render(header, footer)
        if self.tty and not final:
            sys.stdout.write("\x1b[H\x1b[J" + text + "\n")
        else:
            sys.stdout.write(text + "\n\n")
        sys.stdout.flush()

    def _verdict(self, worker_codes: list[int | None]) -> int:
        valid = self.board.produced - self.board.produced_bad
        bad = self.board.produced_bad
        dead = sum(self.board.dead_letters.values())
        problems = []
        if self.board.produced == 0:
            problems.append("no post was produced")
        if self.board.results != valid:
            problems.append(f"{valid} valid posts produced but {self.board.results} scored")
        if dead != bad:
            problems.append(f"{bad} bad records produced but {dead} dead-lettered")
        if any(code != 0 for code in worker_codes):
            problems.append(f"worker and stage exit codes {worker_codes} (expected all 0)")
        if problems:
            print("demo FAILED: " + "; ".join(problems), flush=True)
            return 1
        print(
            f"demo OK: all {valid} valid posts scored, all {bad} bad records dead-lettered, "
            "workers and stage stopped cleanly",
            flush=True,
        )
        return 0


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
