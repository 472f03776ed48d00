"""A peer for the worker benchmark: the Quix Streams app a user writes for the same job.

One fastText call per message, Quix's own JSON (de)serialisers, its default at-least-once checkpointing.
No contract, dead letters, lexicon or metrics. Runs in its own interpreter (``make bench-peers`` builds
``.venv-quix``: Quix Streams 3.28 needs confluent-kafka < 2.13, the worker runs a newer one), so it
imports nothing from this project. Configured by the worker's env variables.
"""

import atexit
import os
import shutil
import tempfile
from typing import Any

import fasttext
from quixstreams import Application

env = os.environ
if env.get("BROKER_LACKS_DESCRIBE_CONFIGS"):
    # librdkafka's mock cluster does not answer DescribeConfigs, which Quix asks of every topic it is
    # given; report what the metadata says (partitions, replicas) instead. Not needed on a real broker.
    from quixstreams.models.topics.admin import TopicAdmin
    from quixstreams.models.topics.topic import TopicConfig

    def inspect_topics(admin: TopicAdmin, names: list[str], timeout: float = 30) -> dict[str, Any]:
        cluster = admin.list_topics(timeout=timeout)
        return {
            name: TopicConfig(len(cluster[name].partitions), len(cluster[name].partitions[0].replicas))
            if name in cluster
            else None
            for name in names
        }

    TopicAdmin.inspect_topics = inspect_topics

state = tempfile.mkdtemp(prefix="quix-state-")  # a stateless app: keep Quix's state folder out of the repo
atexit.register(shutil.rmtree, state, True)
model = fasttext.load_model(env["MODEL_PATH"])


def score(post: dict[str, Any]) -> dict[str, Any]:
    """The sentiment result of one post."""
    (label,), probability = model.predict(post["text"].lower().replace("\n", " "), k=1)
    return {"id": post["id"], "label": label.removeprefix("__label__"), "score": float(probability[0])}


app = Application(
    broker_address=env["KAFKA_BOOTSTRAP_SERVERS"],
    consumer_group=env["CONSUMER_GROUP"],
    auto_offset_reset="earliest",
    auto_create_topics=False,
    state_dir=state,
)
mentions = app.topic(env["INPUT_TOPIC"], value_deserializer="json")
sentiment = app.topic(env["OUTPUT_TOPIC"], value_serializer="json")
app.dataframe(mentions).apply(score).to_topic(sentiment)

if __name__ == "__main__":
    app.run()
