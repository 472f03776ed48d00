"""Kafka's refusals named as what they are: who was refused, which resource, which operation.

librdkafka reports a failed login or TLS handshake only to the error callback and keeps reconnecting, so
a wrong password looked like an unreachable broker; an authorization failure arrives as an error code on
whatever call hit it. Every client of the Kafka layer turns both into :class:`KafkaRefusedError` here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaError

from worker.kafka.errors import (
    AuthenticationFailedError,
    AuthorizationFailedError,
    KafkaRefusedError,
    TlsFailedError,
)

log = logging.getLogger("worker.kafka")

_AUTHORIZATION = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "topic",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "group",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "transactional id",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "cluster",
}


@dataclass(frozen=True)
class Identity:
    """Who a client is to the cluster, from its configuration (never the password)."""

    protocol: str
    mechanism: str | None
    user: str | None

    @classmethod
    def of(cls, config: Mapping[str, object]) -> Identity:
        """Read ``security.protocol``, ``sasl.mechanism`` (librdkafka's default: GSSAPI) and the user:
        ``sasl.username``, else the Kerberos principal or the OAuth client id."""
        protocol = str(config.get("security.protocol", "plaintext")).upper()
        if not protocol.startswith("SASL"):
            return cls(protocol, None, None)
        mechanism = str(config.get("sasl.mechanism", config.get("sasl.mechanisms", "GSSAPI"))).upper()
        names = ("sasl.username", "sasl.kerberos.principal", "sasl.oauthbearer.client.id")
        user = next((str(config[name]) for name in names if config.get(name)), None)
        return cls(protocol, mechanism, user)

    def __str__(self) -> str:
        if self.mechanism is None:
            return f"this client ({self.protocol}, no SASL login)"
        who = f"user {self.user!r}" if self.user else "the client"
        return f"{who} (SASL mechanism {self.mechanism} over {self.protocol})"

    @property
    def principal(self) -> str:
        """The ACL principal as kafka-acls.sh spells it, or a placeholder."""
        return f"User:{self.user}" if self.user else "the client's principal"


def refusal(
    error: KafkaError,
    who: Identity,
    *,
    operation: str = "",
    topic: str | None = None,
    group: str | None = None,
    transactional_id: str | None = None,
) -> KafkaRefusedError | None:
    """The refusal ``error`` is, named for the operator; None when it is not one.

    ``operation`` is what the call needed (Read, Write, Describe); ``topic``, ``group`` and
    ``transactional_id`` name the resources the call touched, when the error itself does not."""
    code = error.code()
    if code == KafkaError._AUTHENTICATION:
        return AuthenticationFailedError(
            f"Kafka refused the login of {who}: {error.str()}; check KAFKA_SASL_USERNAME and "
            "KAFKA_SASL_PASSWORD (or the client certificate)"
        )
    if code == KafkaError._SSL:
        return tls_failed(who, error.str())
    resource = _AUTHORIZATION.get(code)
    if resource is None:
        return None
    name = {"topic": topic, "group": group, "transactional id": transactional_id}.get(resource) or ""
    if resource == "cluster":
        operation, name = operation or "IdempotentWrite", "kafka-cluster"
    subject = f"{resource} {name!r}" if name else f"a {resource}"
    return AuthorizationFailedError(
        f"Kafka refused {who}: not authorized to {operation or 'use'} {subject} ({error.name()}); "
        f"grant {operation or 'it'} on {subject} to {who.principal}",
        resource=resource,
        name=name,
        operation=operation,
    )


def tls_failed(who: Identity, detail: str) -> TlsFailedError:
    """A failed TLS handshake, with what to check."""
    return TlsFailedError(
        f"TLS with the Kafka broker failed for {who}: {detail}; check KAFKA_SECURITY_PROTOCOL (SSL or "
        "SASL_SSL only for a TLS listener), KAFKA_SSL_CA_LOCATION (the CA that signed the brokers' "
        "certificates) and the broker address"
    )


class ErrorWatch:
    """A client's ``error_cb``: keeps the first refusal (raised by :meth:`raise_if_refused`) and logs the
    other errors, as librdkafka itself does when no callback is set, each kind at most every
    ``_LOG_EVERY_SECONDS`` (a refused handshake is retried within milliseconds). Served by the client's
    poll/consume/flush calls."""

    # A handshake the broker hangs up on is reported as a transport error, not as _SSL: a TLS client on a
    # plaintext listener. It is a refusal only at start, after this many in a row with nothing else
    # working; while running, one may be a broker restarting.
    HANDSHAKES_REFUSED = 3
    _LOG_EVERY_SECONDS = 30.0

    def __init__(self, config: Mapping[str, object], ignored: frozenset[int] = frozenset()) -> None:
        self.who = Identity.of(config)
        self.ignored = ignored  # error codes that mean nothing to this client
        self.refused: KafkaRefusedError | None = None
        self._handshakes_failed = 0
        self._last_handshake = ""
        self._logged: dict[int, float] = {}

    def __call__(self, error: KafkaError) -> None:
        if error.code() in self.ignored:
            return
        refused = refusal(error, self.who)
        if refused is not None:
            self.refused = self.refused or refused
            return
        if error.code() == KafkaError._TRANSPORT and "SSL_HANDSHAKE" in error.str():
            self._handshakes_failed += 1
            self._last_handshake = error.str()
        now = time.monotonic()
        if now - self._logged.get(error.code(), -self._LOG_EVERY_SECONDS) >= self._LOG_EVERY_SECONDS:
            self._logged[error.code()] = now
            log.warning("kafka client: %s", error.str())

    def raise_if_refused(self, starting: bool = False) -> None:
        """Raise the refusal seen, if any; ``starting``: nothing has worked yet, so repeated hang-ups
        during the TLS handshake count as a failed handshake too."""
        if self.refused is not None:
            raise self.refused
        if starting and self._handshakes_failed >= self.HANDSHAKES_REFUSED:
            raise tls_failed(self.who, self._last_handshake)


#: Exit codes of a refusal, the same for every process: an operator's fix differs for each.
EXIT_AUTHENTICATION, EXIT_AUTHORIZATION, EXIT_TLS = 3, 4, 5


def refusal_exit(exc: KafkaRefusedError, otherwise: int = 2) -> int:
    """The exit code of a refusal (``otherwise`` for one of no known kind)."""
    if isinstance(exc, AuthenticationFailedError):
        return EXIT_AUTHENTICATION
    if isinstance(exc, AuthorizationFailedError):
        return EXIT_AUTHORIZATION
    return EXIT_TLS if isinstance(exc, TlsFailedError) else otherwise
