"""librdkafka configuration: our settings, plus KAFKA_* variables and config-file entries passed through.

The environment rule, the same for every process that reads ``KAFKA_*``: a variable is passed to
librdkafka when its derived property (``KAFKA_SASL_MECHANISM`` -> ``sasl.mechanism``) is one the installed
librdkafka knows. Any other is skipped and named (never its value) in one warning: Kafka installations
set ``KAFKA_HOME``, ``KAFKA_HEAP_OPTS``, ``KAFKA_OPTS``, ...; Kubernetes sets ``KAFKA_PORT=tcp://...``,
``KAFKA_SERVICE_HOST``, ... in every pod of a namespace holding a Service named ``kafka``. A near miss of
a real property (``KAFKA_SECURTY_PROTOCOL``) is a configuration error naming the property it resembles.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import confluent_kafka as ck

from worker.kafka.errors import ClientConfigError
from worker.kafka.librdkafka_properties import PROPERTY_NAMES

log = logging.getLogger("worker.kafka")

# Variables our settings own; other KAFKA_* variables follow the environment rule.
OWNED_VARIABLES = frozenset({"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CONFIG_FILE"})
# Kubernetes service links of a Service named kafka or kafka-*: never client settings, whatever they resemble.
_SERVICE_LINK = re.compile(
    r"KAFKA(_[A-Z0-9_]+)?_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_[A-Z]+(_[A-Z]+)?)?)"
)
# A derived property this similar (difflib ratio) to a real one is a misspelling, not someone else's variable.
_NEAR_MISS_RATIO = 0.85
_PROBE_SENTINEL = "online-reputation.probe"
_SECRET_MARKERS = ("password", "secret", "jaas", "token", "key.pem", "private.key", "credentials")


@dataclass(frozen=True)
class EnvProperties:
    """What the environment rule made of the ``KAFKA_*`` variables."""

    properties: dict[str, str]
    skipped: tuple[str, ...]  # variable names, sorted

    def warn_skipped(self) -> None:
        """The one warning naming the skipped variables (never their values)."""
        if self.skipped:
            log.warning(
                "not passed to the Kafka client (not librdkafka properties): %s", ", ".join(self.skipped)
            )


def property_name(variable: str) -> str:
    """``KAFKA_SASL_MECHANISM`` -> ``sasl.mechanism``."""
    return variable[len("KAFKA_") :].lower().replace("_", ".")


@cache
def known(prop: str) -> bool:
    """Whether the installed librdkafka has the property ``prop`` (aliases too).

    Asked of librdkafka itself, so it matches the installed version and build. The configuration is
    parsed in order and a sentinel property follows ``prop``: librdkafka stops at the first unknown
    name, so no client is ever created (about 20 µs).
    """
    try:
        ck.Producer({prop: "", _PROBE_SENTINEL: ""})
    except ck.KafkaException as exc:
        message = exc.args[0].str()
        return not (message.startswith("No such configuration property") and f'"{prop}"' in message)
    except (TypeError, ValueError):  # confluent-kafka checks the type of a few properties it handles itself
        return True
    return True  # pragma: no cover - the sentinel always fails


def resembles(prop: str) -> str | None:
    """The real property ``prop`` is a near miss of, if any."""
    close = difflib.get_close_matches(prop, PROPERTY_NAMES, n=1, cutoff=_NEAR_MISS_RATIO)
    return close[0] if close else None


def env_properties(environ: Mapping[str, str]) -> EnvProperties:
    """Apply the environment rule to ``environ``; :class:`ClientConfigError` for a near miss."""
    properties: dict[str, str] = {}
    skipped: list[str] = []
    for name, value in environ.items():
        if not name.startswith("KAFKA_") or name in OWNED_VARIABLES or value == "":
            continue
        prop = property_name(name)
        if not _SERVICE_LINK.fullmatch(name) and known(prop):
            properties[prop] = value
            continue
        meant = None if _SERVICE_LINK.fullmatch(name) else resembles(prop)
        if meant is not None:
            variable = "KAFKA_" + meant.upper().replace(".", "_")
            raise ClientConfigError(
                f"{name}: librdkafka has no property {prop!r}; did you mean {meant!r} ({variable})?"
            )
        skipped.append(name)
    return EnvProperties(properties, tuple(sorted(skipped)))


def client_properties(config_file: Path | None, environ: Mapping[str, str]) -> dict[str, str]:
    """What every process passes to librdkafka: ``config_file``'s properties, then the ``KAFKA_*``
    variables the environment rule keeps (the skipped ones named in one WARNING, a near miss raised)."""
    from_file = properties_from_file(config_file) if config_file else {}
    from_env = env_properties(environ)
    from_env.warn_skipped()
    return {**from_file, **from_env.properties}


def properties_from_file(path: Path) -> dict[str, str]:
    """Java-style ``key=value`` properties (``#`` comments), as most Kafka tooling writes them."""
    properties: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}:{number}: expected key=value, got {line!r}")
        properties[key.strip()] = value.strip()
    return properties


def client_config(
    bootstrap_servers: str, extra: Mapping[str, str], overrides: Mapping[str, object]
) -> dict[str, object]:
    """Merge, lowest precedence first: passthrough properties, then the worker's own required settings."""
    return {"bootstrap.servers": bootstrap_servers, **extra, **overrides}


def is_secret(key: str) -> bool:
    """Whether a property's value must never be logged."""
    return any(marker in key.lower() for marker in _SECRET_MARKERS)


def redact(config: Mapping[str, object]) -> dict[str, object]:
    """A copy safe for logs: secret values replaced, callables shown by name."""
    safe: dict[str, object] = {}
    for key, value in config.items():
        if is_secret(key):
            safe[key] = "***"
        elif callable(value):
            safe[key] = f"<{getattr(value, '__name__', 'callable')}>"
        else:
            safe[key] = value
    return safe
