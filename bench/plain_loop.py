"""A peer for the worker benchmark: the plain confluent-kafka loop a user writes in an afternoon.

``json.loads``, ``lower()``, one batched fastText call, ``json.dumps``: no contract, no dead letters, no
lexicon, no metrics, auto-commit (at-most-once or at-least-once by luck). The worker does all of that and
should still be faster. Configured by the worker's env variables (bootstrap, topics, group, model path).
"""

from __future__ import annotations

import json
import os
import signal
import sys

import confluent_kafka as ck
import fasttext


def main() -> int:
    """Run until SIGTERM."""
    env = os.environ
    consumer = ck.Consumer(
        {
            "bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"],
            "group.id": env["CONSUMER_GROUP"],
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
        }
    )
    producer = ck.Producer(
        {"bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"], "linger.ms": 20, "compression.type": "lz4"}
    )
    model = fasttext.load_model(env["MODEL_PATH"])
    output = env["OUTPUT_TOPIC"]
    batch_size = int(env.get("BATCH_SIZE", "2000"))
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer.subscribe([env["INPUT_TOPIC"]])
    while not stopping:
        records = [r for r in consumer.consume(batch_size, 0.2) if r.error() is None]
        if not records:
            continue
        posts = [json.loads(r.value() or b"{}") for r in records]
        labels, probs = model.predict([p["text"].lower().replace("\n", " ") for p in posts], k=1)
        for record, post, label, prob in zip(records, posts, labels, probs, strict=True):
            result = {"id": post["id"], "label": label[0].removeprefix("__label__"), "score": float(prob[0])}
            producer.produce(output, json.dumps(result).encode(), record.key())
        producer.poll(0)
    producer.flush(30)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
