"""Kafka's refusals named as what they are, on a real broker with SASL/PLAIN and ACLs (tests/sasl_broker.py).

One broker for the module; each user lacks one ACL the worker needs (PREFIXED patterns, so each case has
its own group and transactional id). Each case is one worker process, asserted on its exit code and log.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType
from confluent_kafka.admin import ResourceType as Kind

from api.main import create_app
from tests.api_harness import serving, settings
from tests.kafka_harness import WorkerProcess, produce, read_all
from tests.sasl_broker import Grant, SaslBroker, missing_prerequisite, sasl_broker
from tests.test_worker_e2e import posts
from training.data import Dataset
from worker.kafka import AuthenticationFailedError, AuthorizationFailedError, TlsFailedError
from worker.kafka.refusals import Identity, refusal

INPUT, OUTPUT, DLQ, GROUP = "mentions", "sentiment", "mentions.dlq", "sentiment-worker"
POSTS = 300

EVERYTHING = [
    Grant(Kind.TOPIC, INPUT, AclOperation.READ),
    Grant(Kind.TOPIC, OUTPUT, AclOperation.WRITE),
    Grant(Kind.TOPIC, DLQ, AclOperation.WRITE),
    Grant(Kind.GROUP, GROUP, AclOperation.READ),
    Grant(Kind.TRANSACTIONAL_ID, GROUP, AclOperation.WRITE),
]


def lacking(grant: Grant, *, describe: bool = True) -> list[Grant]:
    """Every ACL the worker needs but ``grant`` (Describe on its resource stays, unless ``describe`` is
    False)."""
    kept = [g for g in EVERYTHING if g != grant]
    return [*kept, Grant(grant.kind, grant.prefix, AclOperation.DESCRIBE)] if describe else kept


USERS = {
    "scorer": EVERYTHING,
    "revoked": EVERYTHING,  # loses Write on the output while running
    "rotated": EVERYTHING,  # logs in with SCRAM; its password changes while running
    "no-read": lacking(EVERYTHING[0]),
    "no-mentions": lacking(EVERYTHING[0], describe=False),
    "no-write": lacking(EVERYTHING[1]),
    "no-group": lacking(EVERYTHING[3], describe=False),
    "no-txn": lacking(EVERYTHING[4]),
}


# --- the mapping alone (no broker) -------------------------------------------------------------------------

SCORER = Identity.of(
    {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "scorer",
        "sasl.password": "s3cret",
    }
)


def test_identity_says_who_never_the_password() -> None:
    assert str(SCORER) == "user 'scorer' (SASL mechanism SCRAM-SHA-512 over SASL_SSL)"
    assert str(Identity.of({"security.protocol": "SSL"})) == "this client (SSL, no SASL login)"
    kerberos = Identity.of({"security.protocol": "SASL_PLAINTEXT", "sasl.kerberos.principal": "svc/host"})
    assert str(kerberos) == "user 'svc/host' (SASL mechanism GSSAPI over SASL_PLAINTEXT)"


@pytest.mark.parametrize(
    ("code", "context", "kind", "words"),
    [
        (KafkaError._AUTHENTICATION, {}, AuthenticationFailedError, "refused the login of user 'scorer'"),
        (KafkaError._SSL, {}, TlsFailedError, "TLS with the Kafka broker failed for user 'scorer'"),
        (
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            {"operation": "Read", "topic": "mentions"},
            AuthorizationFailedError,
            "not authorized to Read topic 'mentions'",
        ),
        (
            KafkaError.GROUP_AUTHORIZATION_FAILED,
            {"operation": "Read", "topic": "mentions", "group": "g1"},
            AuthorizationFailedError,
            "not authorized to Read group 'g1'",
        ),
        (
            KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            {"operation": "Write", "transactional_id": "t1"},
            AuthorizationFailedError,
            "not authorized to Write transactional id 't1'",
        ),
    ],
)
def test_each_refusal_code_has_its_own_type_and_names_the_resource(
    code: int, context: dict[str, str], kind: type[Exception], words: str
) -> None:
    refused = refusal(KafkaError(code), SCORER, **context)
    assert isinstance(refused, kind) and words in str(refused) and "s3cret" not in str(refused)


def test_other_errors_are_not_refusals() -> None:
    for code in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError.REQUEST_TIMED_OUT):
        assert refusal(KafkaError(code), SCORER, operation="Read", topic="mentions") is None


# --- on the SASL broker ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, val_split: Dataset) -> Iterator[SaslBroker]:
    """The SASL broker with the module's users, ACLs and topics, and POSTS posts in the input topic."""
    reason = missing_prerequisite()
    if reason is not None:
        pytest.skip(reason)
    with sasl_broker(tmp_path_factory.mktemp("sasl-broker"), USERS) as running:
        outputs = [f"{OUTPUT}.{case}" for case in ("at-least-once", "exactly-once", "revoked", "rotated")]
        running.create_topics([INPUT, OUTPUT, DLQ, f"{INPUT}.revoked", f"{INPUT}.rotated", *outputs])
        for user, grants in USERS.items():
            running.grant(user, grants)
        items = posts(val_split, POSTS)
        admin = running.client_config("admin")
        produce(admin["bootstrap.servers"], INPUT, [(None, orjson.dumps(p)) for p in items], admin)
        yield running


def worker_env(broker: SaslBroker, small_model: Path, user: str, case: str, **extra: str) -> dict[str, str]:
    return {
        **broker.env(user),
        "MODEL_PATH": str(small_model),
        "INPUT_TOPIC": INPUT,
        "OUTPUT_TOPIC": OUTPUT,
        "DLQ_TOPIC": DLQ,
        "CONSUMER_GROUP": f"{GROUP}-{case}",
        "TRANSACTIONAL_ID": f"{GROUP}-{case}",
        "COMMIT_INTERVAL_SECONDS": "0.5",
        **extra,
    }


def assert_no_password(broker: SaslBroker, *logs: str) -> None:
    for log in logs:
        assert not any(password in log for password in broker.passwords.values())
        assert "wrong-" not in log


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_the_right_user_scores(
    broker: SaslBroker,
    small_model: Path,
    workers: list[WorkerProcess],
    tmp_path: Path,
    guarantee: str,
) -> None:
    output = f"{OUTPUT}.{guarantee.replace('_', '-')}"
    env = worker_env(
        broker, small_model, "scorer", guarantee, OUTPUT_TOPIC=output, PROCESSING_GUARANTEE=guarantee
    )
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    workers.append(worker)
    admin = broker.client_config("admin")
    results = read_all(
        admin["bootstrap.servers"], output, POSTS, timeout=90, distinct=lambda r: r.value(), settings=admin
    )
    assert len({orjson.loads(r.value())["id"] for r in results}) == POSTS
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.tail(30)
    assert "stopped cleanly" in worker.log
    assert "no topic 'reputation.partials' (not authorized to Describe it)" in worker.log
    assert_no_password(broker, worker.log)


REFUSALS = [
    pytest.param(
        "no-read",
        "at_least_once",
        f"not authorized to Read topic '{INPUT}' (its ACLs allow DESCRIBE); "
        f"grant Read on topic '{INPUT}' to User:no-read",
        id="read",
    ),
    pytest.param(
        "no-mentions",
        "at_least_once",
        f"not authorized to Describe topic '{INPUT}' (TOPIC_AUTHORIZATION_FAILED)",
        id="describe",
    ),
    pytest.param(
        "no-write",
        "at_least_once",
        f"not authorized to Write topic '{OUTPUT}' (its ACLs allow DESCRIBE)",
        id="write",
    ),
    pytest.param(
        "no-group",
        "at_least_once",
        f"not authorized to Read group '{GROUP}-group' (GROUP_AUTHORIZATION_FAILED); "
        f"grant Read on group '{GROUP}-group' to User:no-group",
        id="group",
    ),
    pytest.param(
        "no-txn",
        "exactly_once",
        f"not authorized to Write transactional id '{GROUP}-txn' (TRANSACTIONAL_ID_AUTHORIZATION_FAILED)",
        id="txn",
    ),
]


@pytest.mark.parametrize(("user", "guarantee", "cause"), REFUSALS)
def test_a_missing_acl_stops_the_start_naming_it(
    broker: SaslBroker,
    small_model: Path,
    workers: list[WorkerProcess],
    tmp_path: Path,
    user: str,
    guarantee: str,
    cause: str,
) -> None:
    case = {"no-group": "group", "no-txn": "txn"}.get(user, user)
    env = worker_env(broker, small_model, user, case, PROCESSING_GUARANTEE=guarantee)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    workers.append(worker)
    code = worker.wait(60)
    log = worker.log
    assert code == 4, log[-3000:]
    refusal = f"cannot start: Kafka refused user '{user}' (SASL mechanism PLAIN over SASL_PLAINTEXT): "
    assert refusal + cause in log
    assert "Traceback" not in log and "does not exist" not in log
    assert_no_password(broker, log)


def test_a_wrong_password_is_named_a_refused_login(
    broker: SaslBroker, small_model: Path, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    env = {**worker_env(broker, small_model, "scorer", "password"), "KAFKA_SASL_PASSWORD": "wrong-password"}
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    workers.append(worker)
    assert worker.wait(60) == 3
    log = worker.log
    assert (
        "cannot start: Kafka refused the login of user 'scorer' (SASL mechanism PLAIN over SASL_PLAINTEXT): "
        in log
    )
    assert "Authentication failed: Invalid username or password" in log
    assert "KAFKA_SASL_PASSWORD" in log and "KAFKA_BOOTSTRAP_SERVERS" not in log
    assert_no_password(broker, log)


def test_a_revoked_acl_while_running_is_named_the_same_way(
    broker: SaslBroker,
    small_model: Path,
    workers: list[WorkerProcess],
    tmp_path: Path,
    val_split: Dataset,
) -> None:
    source, output = f"{INPUT}.revoked", f"{OUTPUT}.revoked"
    admin = broker.client_config("admin")
    bootstrap = admin["bootstrap.servers"]
    produce(bootstrap, source, [(None, orjson.dumps(p)) for p in posts(val_split, 100)], admin)
    env = worker_env(broker, small_model, "revoked", "revoked", INPUT_TOPIC=source, OUTPUT_TOPIC=output)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    workers.append(worker)
    assert (
        len(read_all(bootstrap, output, 100, timeout=90, distinct=lambda r: r.value(), settings=admin)) >= 100
    )
    client = broker.admin()
    revoke = AclBindingFilter(
        Kind.TOPIC,
        OUTPUT,
        ResourcePatternType.PREFIXED,
        "User:revoked",
        "*",
        AclOperation.WRITE,
        AclPermissionType.ALLOW,
    )
    for future in client.delete_acls([revoke]).values():
        assert len(future.result(30)) == 1
    more = posts(val_split, 20, start=100)
    produce(bootstrap, source, [(None, orjson.dumps(p)) for p in more], admin)
    assert worker.wait(90) == 4, worker.tail(30)
    assert (
        "stopping without committing past the failure: Kafka refused user 'revoked' (SASL mechanism PLAIN "
        f"over SASL_PLAINTEXT): not authorized to Write topic '{output}' (TOPIC_AUTHORIZATION_FAILED); "
        f"grant Write on topic '{output}' to User:revoked" in worker.log
    )
    assert_no_password(broker, worker.log)


def test_tls_to_a_listener_without_it_is_named_a_failed_handshake(
    broker: SaslBroker, small_model: Path, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    env = {**worker_env(broker, small_model, "scorer", "tls"), "KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    workers.append(worker)
    assert worker.wait(60) == 5
    log = worker.log
    assert (
        "cannot start: TLS with the Kafka broker failed for user 'scorer' (SASL mechanism PLAIN over "
        "SASL_SSL): " in log
    )
    assert "SSL handshake failed" in log and "check KAFKA_SECURITY_PROTOCOL" in log
    assert_no_password(broker, log)


def test_a_password_changed_while_running_is_named_a_refused_login(
    broker: SaslBroker,
    small_model: Path,
    workers: list[WorkerProcess],
    tmp_path: Path,
    val_split: Dataset,
) -> None:
    """The broker makes clients log in again every 10 s (connections.max.reauth.ms): the next login after
    the change is refused."""
    source, output = f"{INPUT}.rotated", f"{OUTPUT}.rotated"
    admin = broker.client_config("admin")
    bootstrap = admin["bootstrap.servers"]
    produce(bootstrap, source, [(None, orjson.dumps(p)) for p in posts(val_split, 100)], admin)
    first, second = "rotated-first-5f1c", "rotated-second-9d2e"
    broker.set_scram_password("rotated", first)
    env = {
        **worker_env(broker, small_model, "rotated", "rotated", INPUT_TOPIC=source, OUTPUT_TOPIC=output),
        **broker.env("rotated", first, mechanism="SCRAM-SHA-256"),
    }
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    workers.append(worker)
    results = read_all(bootstrap, output, 100, timeout=90, distinct=lambda r: r.value(), settings=admin)
    assert len({r.value() for r in results}) >= 100
    broker.set_scram_password("rotated", second)
    assert worker.wait(60) == 3, worker.tail(30)
    log = worker.log
    assert (
        "stopping without committing past the failure: Kafka refused the login of user 'rotated' "
        "(SASL mechanism SCRAM-SHA-256 over SASL_PLAINTEXT): " in log
    )
    assert "invalid credentials" in log
    assert first not in log and second not in log
    assert_no_password(broker, log)


def test_the_brand_page_says_which_acl_it_lacks(
    broker: SaslBroker, small_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's reputation reader needs Describe and Read on its topic, and no group ACL: without either,
    GET /brands says which (503 ``refused``), and scoring goes on. (The topic holds posts, not windows:
    a reader allowed to read it answers 200 with no brand.)"""
    cases = {
        "no-mentions": "not authorized to Describe topic 'mentions'",
        "no-read": "not authorized to Read topic 'mentions'",
        "no-group": None,
    }
    for user, says in cases.items():
        for name in [n for n in os.environ if n.startswith("KAFKA_")]:
            monkeypatch.delenv(name)
        for name, value in broker.env(user).items():
            monkeypatch.setenv(name, value)
        api = settings(
            model_path=small_model,
            kafka_bootstrap_servers=broker.bootstrap,
            reputation_topic=INPUT,
            brand_page_kafka_timeout_seconds=5.0,
        )
        with serving(create_app(api)) as client:
            deadline = time.monotonic() + 30
            while (body := client.get("/brands").json()).get("status") not in ("refused", None):
                assert time.monotonic() < deadline, body
                time.sleep(0.1)
            if says is None:
                assert body == {"brands": []}
                body = {"detail": ""}
            else:
                assert says in body["detail"] and f"User:{user}" in body["detail"], body
            assert client.post("/predict", json={"text": "fine"}).status_code == 200
        assert_no_password(broker, body["detail"])
