"""The reputation stage's costs: worker throughput with partial aggregates on and off, and the stage's own
throughput (partials/s and the posts they stand for).

``KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:59092 python -m bench.reputation_bench [--posts 100000] [--rounds 3]``

The posts are TweetEval train tweets about four brands, their ``created_at`` spread over an hour (60
windows of 60 s), preloaded once into a topic of 4 partitions. Each round runs one worker (at-least-once,
the small no-vectors model unless ``--model-path``) over all of them with partials off, then on, in a
fresh group, and measures the first..last result as bench/worker_bench.py does. Then the stage reads the
partials of the last "on" round in a fresh group (exactly-once, its changelog included): the time from
its first to its last committed input offset.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import confluent_kafka as ck
import orjson

from bench.worker_bench import run_phase
from schemas.timestamps import utc_rfc3339
from tests.kafka_harness import produce, read_all
from training.data import load_split
from worker.kafka.admin import ensure_topics
from worker.kafka.errors import TopicNotFoundError

REPO = Path(__file__).resolve().parent.parent
T0 = 1_800_000_000


def create_topics(bootstrap: str, *topics: str) -> None:
    """Topics of 4 partitions; the broker may list a topic it just created a moment later."""
    for attempt in range(5):
        try:
            ensure_topics({"bootstrap.servers": bootstrap}, topics, partitions=4)
            return
        except TopicNotFoundError:
            if attempt == 4:
                raise
            time.sleep(1)


def posts(n: int, data_dir: Path) -> list[tuple[bytes, bytes]]:
    texts = load_split("train", data_dir).texts
    brands = ["acme", "globex", "initech", "umbrella"]
    out = []
    for i in range(n):
        doc = {
            "id": f"p{i}",
            "text": texts[i % len(texts)],
            "brand": brands[i % 4],
            "created_at": utc_rfc3339(T0 + 3600.0 * i / n),
        }
        out.append((f"p{i}".encode(), orjson.dumps(doc)))
    return out


def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([ck.TopicPartition(topic, p) for p in range(4)], timeout=10)
        return sum(max(0, tp.offset) for tp in tps)
    finally:
        consumer.close()


def high(bootstrap: str, topic: str) -> int:
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        return sum(
            consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=10)[1] for p in range(4)
        )
    finally:
        consumer.close()


def synthetic_partials(n: int, window: int) -> list[tuple[bytes, bytes]]:
    """``n`` partial records as workers write them (4 brands, 20-post partials with one sampled post,
    windows advancing), with a progress record after every 10: what a busy group of workers sends,
    produced by key."""
    out: list[tuple[bytes, bytes]] = []
    brands = ["acme", "globex", "initech", "umbrella"]
    for i in range(n):
        start = T0 + (i // 400) * window
        doc = {"type": "partial", "brand": brands[i % 4], "window_start": start, "window_seconds": window,
               "counts": [6, 8, 6], "negative_sample": [{"rank": i, "id": f"p{i}", "text": "app down again",
               "terms": [["down", 1.5, 1], ["app", 0.5, 1]]}]}  # fmt: skip
        out.append((brands[i % 4].encode(), orjson.dumps(doc)))
        if i % 10 == 9:
            progress = {"type": "progress", "source": "mentions/0", "event_time": float(start), "sources": 1}
            out.append((b"\x00progress", orjson.dumps(progress)))
    return out


def stage_phase(bootstrap: str, partials: str, n_partials: int, window: int) -> tuple[float, str]:
    """Run the stage over ``partials`` in a fresh group; partials/s from its first to last commit."""
    run = uuid.uuid4().hex[:8]
    state, reputation, group = f"bench-state-{run}", f"bench-reputation-{run}", f"bench-stage-{run}"
    create_topics(bootstrap, state, reputation)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REPUTATION_PARTIALS_TOPIC": partials,
        "REPUTATION_STATE_TOPIC": state,
        "REPUTATION_TOPIC": reputation,
        "REPUTATION_GROUP": group,
        "REPUTATION_WINDOW_SECONDS": str(window),
        "METRICS_PORT": "0",
        "LOG_LEVEL": "WARNING",
    }
    log = tempfile.NamedTemporaryFile(prefix="bench-stage-", suffix=".log", delete=False)  # noqa: SIM115 - kept for the user to read
    process = subprocess.Popen(
        [sys.executable, "-m", "reputation"], cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=log
    )
    first: tuple[float, int] | None = None
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = committed(bootstrap, group, partials)
            now = time.monotonic()
            if done and first is None:
                first = (now, done)
            if done >= n_partials and first is not None:
                if done == first[1]:  # all in its first commit: count from its start instead
                    first = (started, 0)
                return (done - first[1]) / max(now - first[0], 1e-9), log.name
            if process.poll() is not None:
                raise SystemExit(f"the stage exited early; see {log.name}")
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(60)
    raise SystemExit(f"the stage did not finish; see {log.name}")


def latency_phase(bootstrap: str, model: Path, data_dir: Path, rate: int, seconds: int) -> list[float]:
    """Posts stamped now at ``rate``/s for ``seconds`` through one worker and the stage (2 s windows, 2 s
    grace): per ``reputation`` record, its broker timestamp minus its window's end plus the grace."""
    run = uuid.uuid4().hex[:8]
    names = {n: f"bench-{n}-{run}" for n in ("in", "out", "dlq", "partials", "state", "reputation")}
    create_topics(bootstrap, *names.values())
    common = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "REPUTATION_WINDOW_SECONDS": "2", "METRICS_PORT": "0"}
    common |= {"REPUTATION_PARTIALS_TOPIC": names["partials"], "LOG_LEVEL": "WARNING"}
    worker_env = common | {
        "INPUT_TOPIC": names["in"],
        "OUTPUT_TOPIC": names["out"],
        "DLQ_TOPIC": names["dlq"],
        "CONSUMER_GROUP": f"bench-{run}",
        "MODEL_PATH": str(model),
        "MODEL_POLL_INTERVAL_SECONDS": "0",
        "BRANDS": "acme,globex,initech,umbrella",
    }
    stage_env = common | {
        "REPUTATION_STATE_TOPIC": names["state"],
        "REPUTATION_TOPIC": names["reputation"],
        "REPUTATION_GROUP": f"bench-stage-{run}",
        "REPUTATION_GRACE_SECONDS": "2",
    }
    children = [
        subprocess.Popen([sys.executable, "-m", module], cwd=REPO, env={**os.environ, **env})
        for module, env in (("worker", worker_env), ("reputation", stage_env))
    ]
    texts = load_split("train", data_dir).texts
    producer = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    try:
        time.sleep(8)  # both joined their groups
        started = time.monotonic()
        i = 0
        while time.monotonic() - started < seconds:
            for _ in range(rate // 20):
                doc = {"id": f"l{i}", "text": texts[i % len(texts)], "brand": ("acme", "globex")[i % 2],
                       "created_at": utc_rfc3339(time.time())}  # fmt: skip
                producer.produce(names["in"], orjson.dumps(doc), f"l{i}".encode())
                i += 1
            producer.poll(0)
            time.sleep(0.05)
        producer.flush(30)
        time.sleep(8)  # the last windows close
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(60)
    delays = []
    for message in read_all(bootstrap, names["reputation"], 1, timeout=30, settle=3.0):
        doc = orjson.loads(message.value() or b"{}")
        end = datetime.fromisoformat(doc["window_end"].replace("Z", "+00:00")).timestamp()
        delays.append(message.timestamp()[1] / 1000 - (end + 2.0))
    if not delays:
        raise SystemExit(f"no reputation record; topics {names}")
    return delays


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model-path", type=Path)
    parser.add_argument("--window", type=int, default=60)
    parser.add_argument("--latency-rate", type=int, default=1000, help="posts/s of the latency phase")
    parser.add_argument(
        "--stage-partials", type=int, default=200_000, help="synthetic partials for the stage"
    )
    parser.add_argument("--only-latency", action="store_true")
    parser.add_argument("--only-stage", action="store_true", help="only the stage over synthetic partials")
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        parser.error("set KAFKA_BOOTSTRAP_SERVERS (an Apache Kafka broker: the stage uses transactions)")
    data_dir = Path(os.environ.get("TWEETEVAL_DIR", REPO.parent / "shared/data/tweeteval-sentiment"))
    if args.only_stage:
        report_stage(bootstrap, args.stage_partials, args.window)
        return 0
    model = args.model_path
    if model is None:
        from tests.conftest import train_small_model

        model = train_small_model(load_split("train", data_dir), Path(tempfile.mkdtemp()))
    if args.only_latency:
        report_latency(bootstrap, model, data_dir, args.latency_rate)
        return 0
    run = uuid.uuid4().hex[:8]
    source = f"bench-mentions-{run}"
    create_topics(bootstrap, source, f"bench-dlq-{run}")
    produce(bootstrap, source, posts(args.posts, data_dir), {"compression.type": "lz4", "linger.ms": 50})
    rates: dict[str, list[float]] = {"off": [], "on": []}
    partials = ""
    terms = os.environ.get("BRAND_TOP_TERMS")
    for round_ in range(args.rounds):
        for mode in ("off", "on"):
            out, partials_topic = (
                f"bench-out-{uuid.uuid4().hex[:8]}",
                f"bench-partials-{uuid.uuid4().hex[:8]}",
            )
            create_topics(bootstrap, out, partials_topic)
            env = {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "INPUT_TOPIC": source,
                "OUTPUT_TOPIC": out,
                "DLQ_TOPIC": f"bench-dlq-{run}",
                "CONSUMER_GROUP": f"bench-{uuid.uuid4().hex[:8]}",
                "MODEL_PATH": str(model),
                "MODEL_POLL_INTERVAL_SECONDS": "0",
                "BRANDS": "acme,globex,initech,umbrella",
                "REPUTATION_WINDOW_SECONDS": str(args.window),
                "REPUTATION_PARTIALS_TOPIC": partials_topic if mode == "on" else "",
                "METRICS_PORT": "0",
                "BATCH_SIZE": "2000",
                "KAFKA_LINGER_MS": "20",
                "LOG_LEVEL": "WARNING",
                **({"BRAND_TOP_TERMS": terms} if terms else {}),
            }
            phase = run_phase(f"partials-{mode}", "worker", env, args.posts, bootstrap)
            rates[mode].append(phase.rate)
            print(f"round {round_ + 1} partials {mode}: {phase.rate:,.0f} posts/s", flush=True)
            if mode == "on":
                partials = partials_topic
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    print(
        f"worker, median of {args.rounds}: off {off:,.0f} posts/s, on {on:,.0f} posts/s ({on / off - 1:+.1%})"
    )
    n_partials = high(bootstrap, partials)
    print(f"{n_partials:,} partial and progress records for {args.posts:,} posts (batches of 2,000)")
    report_stage(bootstrap, args.stage_partials, args.window)
    report_latency(bootstrap, model, data_dir, args.latency_rate)
    return 0


def report_stage(bootstrap: str, n_partials: int, window: int) -> None:
    synthetic = f"bench-partials-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, synthetic)
    records = synthetic_partials(n_partials, window)
    producer = ck.Producer({"bootstrap.servers": bootstrap, "compression.type": "lz4", "linger.ms": 50})
    for key, value in records:  # progress to every partition, as the workers send it
        for partition in range(4) if key == b"\x00progress" else (None,):
            while True:
                try:
                    if partition is None:
                        producer.produce(synthetic, value, key)
                    else:
                        producer.produce(synthetic, value, key, partition=partition)
                    break
                except BufferError:
                    producer.poll(0.1)
    assert producer.flush(120) == 0
    records += [r for r in records if r[0] == b"\x00progress"] * 3  # counted as the stage reads them
    rate, log = stage_phase(bootstrap, synthetic, len(records), window)
    print(
        f"stage: {len(records):,} records ({n_partials:,} partials of 20 posts): {rate:,.0f} "
        f"records/s, {rate * n_partials / len(records) * 20:,.0f} posts/s; log {log}"
    )


def report_latency(bootstrap: str, model: Path, data_dir: Path, rate: int) -> None:
    delays = sorted(latency_phase(bootstrap, model, data_dir, rate, 30))
    p50, p95 = delays[len(delays) // 2], delays[int(len(delays) * 0.95)]
    print(
        f"window end + grace -> reputation record ({len(delays)} records, {rate} posts/s, 2 s windows): "
        f"p50 {p50:.2f} s, p95 {p95:.2f} s, max {delays[-1]:.2f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
