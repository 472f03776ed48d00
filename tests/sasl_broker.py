"""A real Apache Kafka 4.1 broker with SASL (PLAIN, SCRAM-SHA-256) and ACLs (StandardAuthorizer), for the
refusal tests.

Single node in KRaft mode on loopback: a SASL_PLAINTEXT listener for clients, a PLAINTEXT controller
listener (principal ANONYMOUS, a super user like ``admin``). PLAIN users and their passwords live in the
listener's JAAS line, SCRAM ones in the cluster metadata; ACLs and SCRAM passwords are set through the
Admin API as ``admin``. Needs Java 17+ and the
distribution ``../shared/kafka/kafka_2.13-4.1.0.tgz`` (``BROKER_DIST_TGZ`` elsewhere).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import confluent_kafka as ck
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from tests.kafka_harness import REPO, free_port

DIST_TGZ = Path(os.environ.get("BROKER_DIST_TGZ") or REPO.parent / "shared/kafka/kafka_2.13-4.1.0.tgz")


@dataclass(frozen=True)
class Grant:
    """One ALLOW ACL on every resource of ``kind`` whose name starts with ``prefix``."""

    kind: ResourceType
    prefix: str
    operation: AclOperation


@dataclass
class SaslBroker:
    """A running broker: its bootstrap address and the users' passwords."""

    bootstrap: str
    passwords: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path

    def client_config(
        self, user: str, password: str | None = None, mechanism: str = "PLAIN"
    ) -> dict[str, str]:
        """librdkafka properties of a client logged in as ``user`` (PLAIN: the JAAS users; SCRAM-SHA-256:
        users given a password with :meth:`set_scram_password`)."""
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism,
            "sasl.username": user,
            "sasl.password": self.passwords[user] if password is None else password,
        }

    def env(self, user: str, password: str | None = None, mechanism: str = "PLAIN") -> dict[str, str]:
        """The same as ``KAFKA_*`` variables, as an operator would set them for the worker."""
        return {
            f"KAFKA_{key.upper().replace('.', '_')}": value
            for key, value in self.client_config(user, password, mechanism).items()
        }

    def set_scram_password(self, user: str, password: str) -> None:
        """Create or change ``user``'s SCRAM-SHA-256 password (as ``admin``, through the Admin API)."""
        admin = self.admin()
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096)
        upsert = UserScramCredentialUpsertion(user, info, password.encode())
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(30)

    def admin(self) -> AdminClient:
        """An Admin client logged in as the super user."""
        return AdminClient(self.client_config("admin"))

    def create_topics(self, topics: Iterable[str], partitions: int = 2) -> None:
        """Create topics as ``admin`` and wait for them."""
        admin = self.admin()  # held until the futures resolve: destroying it fails them
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics]
        )
        for future in futures.values():
            future.result(30)

    def grant(self, user: str, grants: Iterable[Grant]) -> None:
        """Create ALLOW ACLs for ``user`` (PREFIXED patterns) and wait for them."""
        bindings = [
            AclBinding(
                g.kind,
                g.prefix,
                ResourcePatternType.PREFIXED,
                f"User:{user}",
                "*",
                g.operation,
                AclPermissionType.ALLOW,
            )
            for g in grants
        ]
        admin = self.admin()
        for future in admin.create_acls(bindings).values():
            future.result(30)


def missing_prerequisite() -> str | None:
    """Why the broker cannot run here (no Java 17+, no distribution), or None."""
    java = shutil.which("java")
    if java is None:
        return "no java on PATH (the SASL broker is Apache Kafka 4.1: Java 17 or newer)"
    if not DIST_TGZ.is_file():
        return f"no Kafka distribution at {DIST_TGZ} (set BROKER_DIST_TGZ)"
    return None


def _jaas_line(passwords: dict[str, str]) -> str:
    users = " ".join(f'user_{name}="{password}"' for name, password in passwords.items())
    return (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="admin" password="{passwords["admin"]}" {users};'
    )


def _server_properties(port: int, controller_port: int, data: Path, passwords: dict[str, str]) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
            f"listeners=SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{port}",
            "inter.broker.listener.name=SASL_PLAINTEXT",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256",
            "sasl.mechanism.inter.broker.protocol=PLAIN",
            f"listener.name.sasl_plaintext.plain.sasl.jaas.config={_jaas_line(passwords)}",
            # SCRAM users and passwords live in the cluster metadata (set_scram_password).
            "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # ANONYMOUS: the broker's own requests to the controller, over the loopback PLAINTEXT listener.
            "super.users=User:admin;User:ANONYMOUS",
            "allow.everyone.if.no.acl.found=false",
            # Clients log in again every 10 s (KIP-368): a changed SCRAM password takes effect while running.
            "connections.max.reauth.ms=10000",
            f"log.dirs={data}",
            "auto.create.topics.enable=false",
            "num.partitions=2",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=2",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=2",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "num.network.threads=2",
            "num.io.threads=2",
            "",
        ]
    )


@contextlib.contextmanager
def sasl_broker(folder: Path, users: Iterable[str], timeout: float = 120.0) -> Iterator[SaslBroker]:
    """Unpack, format and start the broker in ``folder``; ``admin`` plus ``users`` may log in, each with a
    random password. Stopped (SIGTERM, then SIGKILL) on exit."""
    with tarfile.open(DIST_TGZ) as archive:
        archive.extractall(folder, filter="data")
    (home,) = folder.glob("kafka_*")
    passwords = {name: uuid.uuid4().hex for name in ("admin", *users)}
    port, controller_port = free_port(), free_port()
    config = folder / "server.properties"
    config.write_text(_server_properties(port, controller_port, folder / "data", passwords), "utf-8")
    java_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")},
        "KAFKA_HEAP_OPTS": "-Xmx512M -Xms256M",
        "KAFKA_JMX_OPTS": " ",  # non-empty: no JMX remote port
        "LOG_DIR": str(folder / "logs"),
    }
    # A Kafka Uuid: 16 random bytes, URL-safe base64 (one not starting with "-", which reads as an option).
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    formatted = subprocess.run(
        [home / "bin/kafka-storage.sh", "format", "--standalone", "-t", cluster_id, "-c", config],
        env=java_env,
        capture_output=True,
        text=True,
    )
    if formatted.returncode != 0:
        output = formatted.stdout + formatted.stderr
        raise RuntimeError(f"formatting the SASL broker's storage failed:\n{output}")
    log_path = folder / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [home / "bin/kafka-server-start.sh", config],
            env=java_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    broker = SaslBroker(f"127.0.0.1:{port}", passwords, process, log_path)
    try:
        _wait_ready(broker, timeout)
        yield broker
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_ready(broker: SaslBroker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    admin = broker.admin()
    while True:
        if broker.process.poll() is not None:
            tail = "\n".join(broker.log_path.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"the SASL broker exited ({broker.process.returncode}):\n{tail}")
        try:
            if admin.list_topics(timeout=2).brokers:
                return
        except ck.KafkaException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the SASL broker did not answer within {timeout:.0f}s ({broker.log_path})")
        time.sleep(0.5)
