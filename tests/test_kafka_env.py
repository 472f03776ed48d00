"""The environment rule for KAFKA_* variables (worker/kafka/config.py), alone and in a running worker."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from tests.kafka_harness import WorkerProcess, produce, read_all, unique
from tests.test_worker_e2e import create_worker_topics, posts
from training.data import Dataset
from worker.kafka import ClientConfigError
from worker.kafka.config import env_properties, known, resembles
from worker.kafka.librdkafka_properties import PROPERTY_NAMES

#: What a Kafka installation sets, as in Apache Kafka's bin/kafka-run-class.sh and the official images.
INSTALLATION = {
    "KAFKA_HOME": "/opt/kafka",
    "KAFKA_HEAP_OPTS": "-Xmx1G -Xms1G",
    "KAFKA_OPTS": "-Djava.security.auth.login.config=/etc/kafka/jaas.conf",
    "KAFKA_JMX_OPTS": "-Dcom.sun.management.jmxremote",
    "KAFKA_LOG4J_OPTS": "-Dlog4j.configuration=file:/opt/kafka/config/log4j.properties",
}
#: What Kubernetes puts in every pod of a namespace holding a Service named ``kafka`` (port 9092).
SERVICE_LINKS = {
    "KAFKA_SERVICE_HOST": "10.96.12.34",
    "KAFKA_SERVICE_PORT": "9092",
    "KAFKA_SERVICE_PORT_TCP_CLIENT": "9092",
    "KAFKA_PORT": "tcp://10.96.12.34:9092",
    "KAFKA_PORT_9092_TCP": "tcp://10.96.12.34:9092",
    "KAFKA_PORT_9092_TCP_PROTO": "tcp",
    "KAFKA_PORT_9092_TCP_PORT": "9092",
    "KAFKA_PORT_9092_TCP_ADDR": "10.96.12.34",
}

#: Values that cannot appear in a log by chance (9092 and tcp are parts of the names too).
DISTINCT_VALUES = ["/opt/kafka", "-Xmx1G", "jaas.conf", "jmxremote", "log4j.properties", "10.96.12.34"]


def test_the_probe_asks_the_installed_librdkafka() -> None:
    assert known("security.protocol") and known("linger.ms")  # linger.ms: an alias
    assert known("auto.offset.reset")  # a topic property, set through the global configuration
    assert not known("home") and not known("securty.protocol")


def test_every_suggested_name_is_a_property_of_the_installed_librdkafka() -> None:
    unknown = sorted(name for name in PROPERTY_NAMES if not known(name))
    assert unknown == [], "regenerate worker/kafka/librdkafka_properties.py for this librdkafka"
    assert len(PROPERTY_NAMES) > 150


def test_client_settings_pass_and_the_rest_is_skipped() -> None:
    environ = {
        **INSTALLATION,
        **SERVICE_LINKS,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_USERNAME": "scorer",
        "KAFKA_LINGER_MS": "20",
        "KAFKA_BOOTSTRAP_SERVERS": "broker:9092",  # ours: a setting, not a passthrough
        "KAFKA_CLUSTER_NAME": "eu-prod",  # someone else's variable, like no property
        "KAFKA_FETCH_WAIT_MAX_MS": "",  # empty: unset
        "PATH": "/usr/bin",
    }
    result = env_properties(environ)
    assert result.properties == {
        "security.protocol": "SASL_SSL",
        "sasl.username": "scorer",
        "linger.ms": "20",
    }
    assert result.skipped == tuple(sorted([*INSTALLATION, *SERVICE_LINKS, "KAFKA_CLUSTER_NAME"]))


def test_the_warning_names_the_variables_never_their_values(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="worker.kafka"):
        env_properties({**INSTALLATION, **SERVICE_LINKS}).warn_skipped()
    (record,) = caplog.records
    message = record.getMessage()
    assert all(name in message for name in [*INSTALLATION, *SERVICE_LINKS])
    assert not any(value in message for value in DISTINCT_VALUES)


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("KAFKA_SECURTY_PROTOCOL", "security.protocol"),
        ("KAFKA_SASL_PASWORD", "sasl.password"),
        ("KAFKA_SSL_CA_LOCATON", "ssl.ca.location"),
        ("KAFKA_AUTO_OFFSET_RESTE", "auto.offset.reset"),
    ],
)
def test_a_near_miss_stops_the_start_naming_the_property(variable: str, meant: str) -> None:
    with pytest.raises(ClientConfigError) as raised:
        env_properties({variable: "s3cret-value"})
    message = str(raised.value)
    assert variable in message and repr(meant) in message
    assert "KAFKA_" + meant.upper().replace(".", "_") in message
    assert "s3cret-value" not in message


def test_kafka_installation_variables_resemble_no_property() -> None:
    for variable in [*INSTALLATION, *SERVICE_LINKS]:
        assert resembles(variable[len("KAFKA_") :].lower().replace("_", ".")) is None, variable


# --- in a running worker ---------------------------------------------------------------------------------


def test_worker_scores_with_kafka_installation_and_service_link_variables(
    kafka: str, small_model: Path, val_split: Dataset, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "MODEL_PATH": str(small_model),
        "INPUT_TOPIC": unique("mentions"),
        "OUTPUT_TOPIC": unique("sentiment"),
        "DLQ_TOPIC": unique("dlq"),
        "CONSUMER_GROUP": unique("group"),
        "COMMIT_INTERVAL_SECONDS": "0.5",
        "KAFKA_LINGER_MS": "7",  # a client setting among them still reaches librdkafka
        **INSTALLATION,
        **SERVICE_LINKS,
    }
    items = posts(val_split, 300)
    create_worker_topics(kafka, env)
    produce(kafka, env["INPUT_TOPIC"], [(None, orjson.dumps(p)) for p in items])
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    workers.append(worker)
    results = read_all(kafka, env["OUTPUT_TOPIC"], len(items), timeout=90, distinct=lambda r: r.value())
    assert len({r.value() for r in results}) == len(items)
    log = worker.log
    warnings = [line for line in log.splitlines() if "not passed to the Kafka client" in line]
    assert len(warnings) == 1 and " WARNING " in warnings[0]
    assert all(name in warnings[0] for name in [*INSTALLATION, *SERVICE_LINKS])
    assert not any(value in log for value in DISTINCT_VALUES)
    assert "'linger.ms': '7'" in log


def test_worker_stops_at_start_on_a_misspelt_client_property(
    kafka: str, small_model: Path, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "MODEL_PATH": str(small_model),
        "KAFKA_SECURTY_PROTOCOL": "SASL_SSL",
        "KAFKA_HOME": "/opt/kafka",
    }
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    workers.append(worker)
    assert worker.wait(60) == 2
    assert (
        "cannot start: KAFKA_SECURTY_PROTOCOL: librdkafka has no property 'securty.protocol'; "
        "did you mean 'security.protocol' (KAFKA_SECURITY_PROTOCOL)?" in worker.log
    )
    assert "Traceback" not in worker.log
