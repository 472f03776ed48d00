"""Worker throughput against a passthrough ceiling, exactly-once throughput, latency at fixed load, RSS.

``python -m bench.worker_bench [--posts 200000] [--model-path FILE]``

One broker for all phases: ``KAFKA_BOOTSTRAP_SERVERS``, else Apache Kafka from ``../shared/kafka`` with
``--apache-kafka`` (started on ports of its own, wiped afterwards), else the embedded mock cluster.
200,000 TweetEval posts (JSON, keyed, lz4 like the outputs) are preloaded once; each phase reads them
with a group of its own, its offsets committed at the start of the topic beforehand (what a restarted or
scaled-out worker finds: a brand-new group also waits librdkafka's 100 ms back-off before it resets its
offsets), and writes its own output topic. Throughput is measured from the first output record
to the last one written (output high watermarks), so process start, model load and group join are
excluded for both; each phase also reports its start to first result (process start, imports, model
load, group join, the first batch), with the passthrough's as the floor the broker sets (on the mock
cluster its group join alone takes seconds: compare the worker with the passthrough, or use
``--apache-kafka``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import confluent_kafka as ck
import orjson

from schemas.timestamps import utc_rfc3339
from sentiment_model import Predictor, normalize_batch
from tests.kafka_harness import produce
from training.data import load_split
from worker.batch import TimestampParser, decode, encode
from worker.kafka.admin import ensure_topics
from worker.kafka.apache_kafka import ApacheKafka, apache_kafka, apache_kafka_missing
from worker.kafka.mock_cluster import MockCluster

REPO = Path(__file__).resolve().parent.parent
COMMON = {
    "KAFKA_COMPRESSION_TYPE": "lz4",
    "KAFKA_LINGER_MS": "20",
    "BATCH_SIZE": "2000",
    "COMMIT_INTERVAL_SECONDS": "1.0",
    "LOG_LEVEL": "WARNING",
}


def posts(n: int, data_dir: Path) -> list[tuple[bytes, bytes]]:
    texts = load_split("train", data_dir).texts
    brands = ["acme", "globex", "initech", "umbrella"]
    out = []
    for i in range(n):
        doc = {
            "id": f"p{i}",
            "text": texts[i % len(texts)],
            "brand": brands[i % 4],
            "source": "twitter",
            "created_at": "2026-11-26T10:15:00Z",
        }
        out.append((f"p{i}".encode(), orjson.dumps(doc)))
    return out


def create(bootstrap: str, *topics: str, mock: bool) -> None:
    """Topics of 4 partitions, like the issue's real-broker runs (the mock cluster auto-creates them)."""
    ensure_topics({"bootstrap.servers": bootstrap}, topics, partitions=4, create_topics_api=not mock)


_partitions: dict[str, list[int]] = {}


def written(consumer: ck.Consumer, topic: str) -> int:
    """Records in ``topic`` so far: the sum of its partitions' high watermarks (partitions looked up once,
    not on every 20 ms probe)."""
    try:
        if topic not in _partitions:
            found = consumer.list_topics(topic, timeout=5).topics[topic].partitions
            if not found:
                return 0
            _partitions[topic] = sorted(found)
        return sum(
            max(0, consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=5)[1])
            for p in _partitions[topic]
        )
    except ck.KafkaException:
        return 0


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads (librdkafka's included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Phase(NamedTuple):
    """What one phase measured."""

    rate: float  # records/s, first..n-th output record
    rss_mb: float  # peak RSS of the largest process
    cpu_us: float  # CPU µs per record over the same window, all processes together
    first_s: float  # process start to the first output record (import, model load, group join)


def commit_start(bootstrap: str, group: str, topic: str) -> None:
    """Commit offset 0 of every partition of ``topic`` for ``group``: the group as a restart finds it."""
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.commit(offsets=[ck.TopicPartition(topic, p, 0) for p in partitions], asynchronous=False)
    finally:
        consumer.close()


def run_phase(
    name: str,
    module: str,
    env: dict[str, str],
    n: int,
    bootstrap: str,
    copies: int = 1,
    core: int | None = None,
    interpreter: str = sys.executable,
) -> Phase:
    """Start ``copies`` processes of ``module`` (one consumer group) and measure the first..n-th output
    record. ``core``: pin the processes to that core.

    The CPU figure is what a record costs whatever the broker's pace: on the mock cluster a single
    passthrough used about half a core (0.61 CPU-s for 200,000 records in a 1.2 s window, measured),
    waiting on fetches the rest of the time, so its records/s understate what a core can pass through."""
    out = env["OUTPUT_TOPIC"]
    commit_start(bootstrap, env["CONSUMER_GROUP"], env["INPUT_TOPIC"])
    probe = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115 - kept for the user to read
    pin = ["taskset", "-c", str(core)] if core is not None else []
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [*pin, interpreter, "-m", module], cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=log
        )
        for _ in range(copies)
    ]
    first = last = None
    cpu_first = cpu_last = 0.0
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            count = written(probe, out)
            now = time.monotonic()
            if count and first is None:
                first = (now, count)
                cpu_first = sum(cpu_seconds(p.pid) for p in processes)
            if count >= n:
                last = (now, count)
                cpu_last = sum(cpu_seconds(p.pid) for p in processes)
                break
            if any(p.poll() is not None for p in processes):
                raise SystemExit(f"{name} exited early; see {log.name}")
            time.sleep(0.02)
        rss = max(peak_rss_mb(p.pid) for p in processes)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(60)
        probe.close()
    if first is None or last is None:
        raise SystemExit(f"{name} did not finish; see {log.name}")
    records = last[1] - first[1]
    return Phase(
        records / max(last[0] - first[0], 1e-9),
        rss,
        (cpu_last - cpu_first) / max(records, 1) * 1e6,
        first[0] - started,
    )


@dataclass(frozen=True)
class _Record:
    """Just enough of a confluent_kafka.Message for the worker's pure functions."""

    _value: bytes
    _key: bytes

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return self._key


def report_start(
    bootstrap: str, base: dict[str, str], sample: list[tuple[bytes, bytes]], run: str, rounds: int, mock: bool
) -> None:
    """Start to first result on a quiet broker: ``rounds`` starts each of the passthrough and the
    at-least-once worker, alternating, over 2,000 waiting posts, each group with committed offsets (a
    restart or a scaled-out pod). The throughput rounds' own figure also counts the broker still busy with
    the previous phase's 100,000 records."""
    source = f"bench-start-in-{run}"
    create(bootstrap, source, mock=mock)
    produce(bootstrap, source, sample, {"compression.type": "lz4", "linger.ms": 20})
    firsts: dict[str, list[float]] = {"passthrough": [], "worker": []}
    for number in range(rounds):
        for name, module in (("passthrough", "bench.passthrough"), ("worker", "worker")):
            env = {
                **base,
                "INPUT_TOPIC": source,
                "OUTPUT_TOPIC": f"bench-start-out-{run}-{name}-{number}",
                "CONSUMER_GROUP": f"bench-start-{run}-{name}-{number}",
            }
            create(bootstrap, env["OUTPUT_TOPIC"], mock=mock)
            firsts[name].append(run_phase(f"start {name}", module, env, 1, bootstrap).first_s)
    worker, passthrough = firsts["worker"], firsts["passthrough"]
    print(
        f"start to first result, {rounds} alternating starts, quiet broker (median): at-least-once worker "
        f"{statistics.median(worker):.2f} s (range {min(worker):.2f}-{max(worker):.2f}), passthrough "
        f"{statistics.median(passthrough):.2f} s (range {min(passthrough):.2f}-{max(passthrough):.2f})"
    )


def stage_costs(model: Path, sample: list[tuple[bytes, bytes]], repeats: int = 5) -> dict[str, float]:
    """Microseconds per record of each stage of the worker's hot path, in this process, on ``sample``
    (batches of 2,000 like the benchmark's worker; the median of ``repeats`` passes); "score (fastText)"
    is the same batches through fastText's own predict, for comparison (not part of the total)."""
    predictor = Predictor.load(model)
    reference = Predictor.load_fasttext(model)
    model_doc = {"repo": "local", "revision": None, "sha256": "0" * 64}
    records = [_Record(value, key) for key, value in sample]
    timestamps = TimestampParser()
    passes: dict[str, list[float]] = {}
    for _ in range(repeats):
        costs = dict.fromkeys(("decode + validate", "normalize", "score", "encode", "score (fastText)"), 0.0)
        for start in range(0, len(records), 2000):
            batch = records[start : start + 2000]
            started = time.perf_counter()
            decoded = decode(batch, [r.value() for r in batch], timestamps)
            costs["decode + validate"] += time.perf_counter() - started
            started = time.perf_counter()
            lines = normalize_batch(decoded.texts())
            costs["normalize"] += time.perf_counter() - started
            started = time.perf_counter()
            scored = predictor.predict_normalized(lines)
            costs["score"] += time.perf_counter() - started
            started = time.perf_counter()
            encode(
                decoded.documents, scored.probabilities, scored.label_ids, model_doc, utc_rfc3339(time.time())
            )
            costs["encode"] += time.perf_counter() - started
            started = time.perf_counter()
            reference.predict_normalized(lines)
            costs["score (fastText)"] += time.perf_counter() - started
        for stage, seconds in costs.items():
            passes.setdefault(stage, []).append(seconds / len(records) * 1e6)
    return {stage: statistics.median(values) for stage, values in passes.items()}


def predictor_kind(model: Path) -> str:
    """Which scorer the worker uses for ``model``."""
    return f"{Predictor.load(model).scorer_name} scorer"


def latency_phase(
    env: dict[str, str], bootstrap: str, rate: int, seconds: int, data_dir: Path
) -> list[float]:
    """Offer ``rate`` posts/s for ``seconds``; event-to-result latency as seen by a downstream reader."""
    texts = load_split("val", data_dir).texts
    reader = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
        }
    )
    reader.subscribe([env["OUTPUT_TOPIC"]])
    process = subprocess.Popen(
        [sys.executable, "-m", "worker"],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latencies: list[float] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            # What is queued, else the first record within 0.1 s: consume(1000, 0.1) alone waits for 1,000
            # records or the whole 0.1 s, which added up to 100 ms to what this phase measures.
            records = reader.consume(1000, 0) or reader.consume(1, 0.1)
            for record in records:
                if record.error() is None:
                    created = datetime.fromisoformat(orjson.loads(record.value() or b"{}")["created_at"])
                    latencies.append(time.time() - created.timestamp())

    producer = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    # The load starts once the worker answers: a warm-up post's result has come back (model load and
    # group join are not part of event-to-result latency; a fixed sleep let a slow start count as such).
    producer.produce(env["INPUT_TOPIC"], orjson.dumps({"id": "warm-up", "text": "hello"}), b"warm-up")
    producer.flush(30)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(r.error() is None for r in reader.consume(100, 0.5)):
        pass
    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    started = time.monotonic()
    for i in range(rate * seconds):
        due = started + i / rate
        while time.monotonic() < due:
            time.sleep(0.0005)
        stamp = utc_rfc3339(datetime.now(UTC), "milliseconds")
        doc = {"id": f"l{i}", "text": texts[i % len(texts)], "created_at": stamp}
        producer.produce(env["INPUT_TOPIC"], orjson.dumps(doc), f"l{i}".encode())
        producer.poll(0)
    producer.flush(30)
    time.sleep(5)
    stop.set()
    thread.join()
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    reader.close()
    return latencies


def quix_interpreter() -> str | None:
    """The Quix Streams peer's interpreter: ``QUIX_PYTHON``, else ``.venv-quix`` (``make bench-peers``)."""
    chosen = os.environ.get("QUIX_PYTHON") or str(REPO / ".venv-quix/bin/python")
    try:
        probe = subprocess.run([chosen, "-c", "import quixstreams, fasttext"], capture_output=True)
    except OSError:
        return None
    return chosen if probe.returncode == 0 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts", type=int, default=200_000)
    parser.add_argument("--model-path", type=Path)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--latency-seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3, help="passthrough/worker rounds, each core setting")
    parser.add_argument(
        "--start-rounds", type=int, default=9, help="alternating starts of the start-time phase"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("TWEETEVAL_DIR", REPO.parent / "shared/data/tweeteval-sentiment")),
    )
    parser.add_argument(
        "--apache-kafka",
        action="store_true",
        help="run every phase on Apache Kafka from ../shared/kafka instead of the embedded mock cluster",
    )
    args = parser.parse_args()
    brokers = contextlib.ExitStack()
    apache: ApacheKafka | None = None
    if args.apache_kafka and not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        missing = apache_kafka_missing()
        if missing is not None:
            parser.error(f"--apache-kafka: {missing}")
        apache = brokers.enter_context(apache_kafka())
    model = args.model_path
    if model is None:
        folder = Path(tempfile.mkdtemp(prefix="bench-model-"))
        print("training the default-recipe model (no search) for the benchmark ...", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "training.train",
                "--data-dir",
                str(args.data_dir),
                "--autotune-duration",
                "0",
                "--output-dir",
                str(folder),
                "--mlflow-dir",
                str(folder / "mlruns"),
            ],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        model = folder / "sentiment_ft.ftz"
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or (apache.bootstrap if apache else None)
    cluster = None if external else MockCluster().start()
    bootstrap = external or (cluster.bootstrap_servers if cluster else "")
    try:
        run = uuid.uuid4().hex[:8]
        source = f"bench-in-{run}"
        create(bootstrap, source, f"bench-dlq-{run}", mock=cluster is not None)
        kind = "Apache Kafka (../shared/kafka)" if apache else "external" if external else "mock cluster"
        print(
            f"broker: {kind}; preloading {args.posts:,} posts ...",
            flush=True,
        )
        # lz4 and big batches: the mock cluster keeps only about 5 MB per partition
        preloaded = posts(args.posts, args.data_dir)
        produce(
            bootstrap,
            source,
            preloaded,
            {"compression.type": "lz4", "linger.ms": 20, "batch.size": 1_000_000},
        )
        base = {
            **COMMON,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "INPUT_TOPIC": source,
            "MODEL_PATH": str(model),
            "DLQ_TOPIC": f"bench-dlq-{run}",
            "METRICS_PORT": "0",
            "BRANDS": "acme,globex",
        }
        broker_pid = cluster.pid if cluster is not None else apache.pid() if apache is not None else None
        if broker_pid is not None:  # the broker on core 1, so that "pinned to core 0" means one whole core
            os.sched_setaffinity(broker_pid, {1})
        eos = {"PROCESSING_GUARANTEE": "exactly_once"}
        quix = quix_interpreter()
        if quix is None:
            print("Quix Streams peer skipped: no interpreter with quixstreams (run `make bench-peers`)")
        quix_env = {"BROKER_LACKS_DESCRIBE_CONFIGS": "1"} if cluster is not None else {}
        # The ratios to the passthrough come from rounds: passthrough, at-least-once and exactly-once back to
        # back, once per round, each round's ratios reported and their median. This machine's pace moves
        # by minutes (every CPU-bound process slowed at once in 5 of 16 runs of 2026-12-06); a round
        # compares processes that ran within a minute of each other.
        trio: tuple[tuple[str, str, dict[str, str]], ...] = (
            ("passthrough", "bench.passthrough", {}),
            ("alo", "worker", {}),
            ("eos", "worker", eos),
        )
        schedule: list[tuple[str, str, dict[str, str], int, int | None]] = []
        for core in (None, 0):
            for _ in range(args.rounds):
                schedule += [(name, module, extra, 1, core) for name, module, extra in trio]
            if core is None:
                schedule += [("plain loop", "bench.plain_loop", {}, 1, None)]
                if quix is not None:
                    schedule += [("Quix Streams app", "bench.quix_app", quix_env, 1, None)]
        schedule += [("passthrough", "bench.passthrough", {}, 2, None), ("alo", "worker", {}, 2, None)]
        results: dict[tuple[str, int, int | None], list[Phase]] = {}
        for step, (name, module, extra, copies, core) in enumerate(schedule):
            interpreter = quix if module == "bench.quix_app" else sys.executable
            assert interpreter is not None  # no Quix venv: the phase is not scheduled
            env = {
                **base,
                **extra,
                "OUTPUT_TOPIC": f"bench-out-{step}-{run}",
                "CONSUMER_GROUP": f"bench-{step}-{run}",
            }
            create(bootstrap, env["OUTPUT_TOPIC"], mock=cluster is not None)
            label = f"{copies} x " * (copies > 1) + name + (f", core {core}" if core is not None else "")
            phase = run_phase(label, module, env, args.posts, bootstrap, copies, core, interpreter)
            results.setdefault((name, copies, core), []).append(phase)
            print(
                f"{label:<24} {phase.rate:>9,.0f} records/s   peak RSS {phase.rss_mb:.0f} MB   "
                f"CPU {phase.cpu_us:.1f} µs a record   first result {phase.first_s:.2f} s after start",
                flush=True,
            )

        def rounds(name: str, core: int | None = None) -> list[float]:
            """Each round's throughput of ``name`` divided by that round's passthrough."""
            ceiling = results["passthrough", 1, core]
            return [p.rate / c.rate for p, c in zip(results[name, 1, core], ceiling, strict=True)]

        def summary(ratios: list[float]) -> str:
            each = ", ".join(f"{r:.2f}" for r in ratios)
            return f"{statistics.median(ratios):.2f}" + (f" (rounds {each})" if len(ratios) > 1 else "")

        print(
            f"\nworker / passthrough, median of {args.rounds} round(s): "
            f"at-least-once {summary(rounds('alo'))}, exactly-once {summary(rounds('eos'))}\n"
            f"pinned to one core: at-least-once {summary(rounds('alo', 0))}, "
            f"exactly-once {summary(rounds('eos', 0))}"
        )
        ceiling = statistics.median(p.rate for p in results["passthrough", 1, None])
        alo = statistics.median(p.rate for p in results["alo", 1, None])
        two, two_ceiling = results["alo", 2, None][0].rate, results["passthrough", 2, None][0].rate
        print(f"2 workers / 2 passthroughs {two / two_ceiling:.2f}, / 1 passthrough {two / ceiling:.2f}")
        if cluster is not None and two < alo / 4:
            print(
                "  (far below one worker: the mock cluster held a member's rejoin for about 41 s after a "
                "SyncGroup it refused; see docs/results.md. A real broker does not.)"
            )

        def median(name: str, figure: str) -> float:
            """The median of one Phase field over ``name``'s single-process, unpinned rounds."""
            return float(statistics.median(getattr(p, figure) for p in results[name, 1, None]))

        def first(name: str) -> float:
            return median(name, "first_s")

        print(
            f"start to first result (median): at-least-once worker {first('alo'):.2f} s, "
            f"exactly-once {first('eos'):.2f} s, passthrough {first('passthrough'):.2f} s; peak RSS "
            f"(median) at-least-once {median('alo', 'rss_mb'):.0f} MB, passthrough "
            f"{median('passthrough', 'rss_mb'):.0f} MB"
        )
        peers = [name for name in ("plain loop", "Quix Streams app") if (name, 1, None) in results]
        print(
            "worker at-least-once (median) / peer: "
            + ", ".join(f"{name} {alo / results[name, 1, None][0].rate:.2f}" for name in peers)
        )

        def cpu(name: str) -> float:
            return median(name, "cpu_us")

        print(
            f"CPU per record, passthrough / worker (the per-core efficiency, whatever the broker's pace): "
            f"at-least-once {cpu('passthrough') / cpu('alo'):.2f}, "
            f"exactly-once {cpu('passthrough') / cpu('eos'):.2f}; peer / worker: "
            + ", ".join(f"{name} {cpu(name) / cpu('alo'):.2f}" for name in peers)
        )
        report_start(bootstrap, base, preloaded[:2_000], run, args.start_rounds, mock=cluster is not None)
        costs = stage_costs(model, preloaded[:20_000])
        fasttext_score = costs.pop("score (fastText)")
        total = sum(costs.values())
        print(
            "\nhot-path cost per record, one process (µs): "
            + ", ".join(f"{k} {v:.1f}" for k, v in costs.items())
        )
        print(
            f"  = {total:.1f} µs before any Kafka work: one process can score at most {1e6 / total:,.0f} "
            f"records/s ({1e6 / total / ceiling:.2f} x passthrough); scoring alone caps it at "
            f"{1e6 / costs['score'] / ceiling:.2f} x passthrough ({predictor_kind(model)}; "
            f"fastText's predict {fasttext_score:.1f} µs a record)"
        )
        # Latency with the worker's own defaults (not the throughput phases' linger and batch size).
        lat_env = {
            **{k: v for k, v in base.items() if k not in ("KAFKA_LINGER_MS", "BATCH_SIZE")},
            "CONSUMER_GROUP": f"bench-lat-{run}",
        }
        variants: list[tuple[str, dict[str, str]]] = [("worker defaults", {})]
        if cluster is not None:
            # The mock cluster answers a fetch only after fetch.wait.max.ms when it had nothing at the
            # time it was asked (measured: p50 130 ms at the default 100 ms, 49 ms at 10 ms); a real
            # broker answers as soon as data arrives (fetch.min.bytes=1), so 10 ms is the closer model.
            variants.append(("fetch.wait.max.ms 10 (mock cluster)", {"KAFKA_FETCH_WAIT_MAX_MS": "10"}))
        for number, (label, extra) in enumerate(variants):
            env = {
                **lat_env,
                **extra,
                "INPUT_TOPIC": f"bench-lat-in-{run}-{number}",
                "OUTPUT_TOPIC": f"bench-lat-out-{run}-{number}",
            }
            create(bootstrap, env["INPUT_TOPIC"], env["OUTPUT_TOPIC"], mock=cluster is not None)
            latencies = sorted(latency_phase(env, bootstrap, args.rate, args.latency_seconds, args.data_dir))
            if latencies:
                p50 = statistics.median(latencies)
                p99 = latencies[int(len(latencies) * 0.99) - 1]
                print(
                    f"event-to-result at {args.rate:,} posts/s offered for {args.latency_seconds}s, {label}: "
                    f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms over {len(latencies):,} results"
                )
    finally:
        if cluster is not None:
            cluster.stop()
        brokers.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
