"""librdkafka configuration: our settings, plus any KAFKA_* variable or config-file entry passed through."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

# Variables our settings own; every other KAFKA_* variable is a librdkafka property.
OWNED_VARIABLES = frozenset({"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CONFIG_FILE"})
_SECRET_MARKERS = ("password", "secret", "jaas", "token", "key.pem", "private.key", "credentials")


def properties_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``KAFKA_SASL_MECHANISM=PLAIN`` -> ``{"sasl.mechanism": "PLAIN"}``, for every KAFKA_* variable we
    do not own."""
    return {
        name[len("KAFKA_") :].lower().replace("_", "."): value
        for name, value in environ.items()
        if name.startswith("KAFKA_") and name not in OWNED_VARIABLES and value != ""
    }


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
