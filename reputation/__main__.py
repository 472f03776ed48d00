"""``python -m reputation``: the reputation stage.

Exit codes: 0 stopped on request after committing; 1 a runtime failure (nothing past it committed);
2 could not start (configuration, broker, topics); 3, 4, 5 Kafka refused the login, an ACL, the TLS
handshake (as for the worker).
"""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from reputation.metrics import StageMetrics
from reputation.settings import StageSettings
from reputation.stage import Stage, StageConfigError
from worker.kafka import KafkaLayerError, KafkaRefusedError
from worker.kafka.refusals import refusal_exit
from worker.metrics import Heartbeat, MetricsServer

log = logging.getLogger("reputation")

EXIT_OK, EXIT_RUNTIME, EXIT_STARTUP = 0, 1, 2


def main() -> int:
    """Load settings, serve metrics, run the stage until stopped."""
    try:
        settings = StageSettings()
    except ValidationError as exc:
        print(f"reputation-stage: invalid settings:\n{exc}", file=sys.stderr)
        return EXIT_STARTUP
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    metrics = StageMetrics()
    heartbeat = Heartbeat(settings.liveness_timeout_seconds)
    try:
        server = MetricsServer(metrics, heartbeat, settings.metrics_host, settings.metrics_port).start()
    except OSError as exc:
        log.error("cannot serve metrics on %s:%d: %s", settings.metrics_host, settings.metrics_port, exc)
        return EXIT_STARTUP
    log.info("metrics on http://%s:%d/metrics, liveness on /healthz", settings.metrics_host, server.port)
    try:
        try:
            stage = Stage(settings, metrics, heartbeat)
            stage.install_signal_handlers()
            stage.start()
        except KafkaRefusedError as exc:
            log.error("cannot start: %s", exc)
            return refusal_exit(exc)
        except (KafkaLayerError, StageConfigError, ValueError) as exc:
            log.error("cannot start: %s", exc)
            return EXIT_STARTUP
        try:
            stage.run()
        except KafkaRefusedError as exc:
            log.error("stopping without committing past the failure: %s", exc)
            return refusal_exit(exc)
        except KafkaLayerError as exc:
            log.error("stopping without committing past the failure: %s", exc)
            return EXIT_RUNTIME
    finally:
        server.stop()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
