"""``python -m worker`` / ``sentiment-worker``.

Exit codes: 0 stopped on request (SIGTERM/SIGINT) after committing what the broker acknowledged; 1 a
runtime failure (a delivery or model error persisted, or the broker stayed unreachable past
BROKER_OUTAGE_BUDGET_SECONDS: nothing past it was committed); 2 could not start (configuration, broker,
topic, model); 3 Kafka refused the login (SASL authentication); 4 Kafka refused an operation (a topic,
group or transactional-id ACL is missing); 5 the TLS handshake with Kafka failed. A refusal has the same
exit code and wording at start and while running (a rotated password, a revoked ACL).
"""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from pydantic import ValidationError

from sentiment_model import ModelError, Predictor, ResolvedModel, resolve_model
from worker.app import Worker
from worker.kafka import KafkaLayerError, KafkaRefusedError
from worker.kafka.refusals import refusal_exit
from worker.metrics import Heartbeat, MetricsServer, WorkerMetrics
from worker.settings import WorkerSettings

log = logging.getLogger("worker")

EXIT_OK, EXIT_RUNTIME, EXIT_STARTUP = 0, 1, 2


def load_model(settings: WorkerSettings) -> tuple[Predictor, ResolvedModel]:
    """The model the settings name, read and checked (:class:`ModelError` if it cannot serve)."""
    model = resolve_model(settings)
    return Predictor.load(model.path), model


def main() -> int:
    """Load settings and model, serve metrics, run the worker until stopped."""
    try:
        settings = WorkerSettings()
    except ValidationError as exc:
        print(f"sentiment-worker: invalid settings:\n{exc}", file=sys.stderr)
        return EXIT_STARTUP
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log.info(
        "starting: group %s, %s -> %s (dead letters: %s), %s, batches of up to %d",
        settings.consumer_group,
        settings.input_topic,
        settings.output_topic,
        settings.dlq_topic,
        settings.processing_guarantee,
        settings.batch_size,
    )
    loader = ThreadPoolExecutor(1, thread_name_prefix="model-load")
    loading = loader.submit(load_model, settings)  # meanwhile, the broker is checked and joined
    loader.shutdown(wait=False)
    metrics = WorkerMetrics(settings.brand_list)
    heartbeat = Heartbeat(settings.liveness_timeout_seconds)
    try:
        server = MetricsServer(metrics, heartbeat, settings.metrics_host, settings.metrics_port).start()
    except OSError as exc:
        log.error("cannot serve metrics on %s:%d: %s", settings.metrics_host, settings.metrics_port, exc)
        return EXIT_STARTUP
    log.info("metrics on http://%s:%d/metrics, liveness on /healthz", settings.metrics_host, server.port)

    try:
        try:
            worker = Worker(settings, metrics, heartbeat)
            worker.install_signal_handlers()
            worker.start(loading)
        except ModelError as exc:
            log.error("cannot start: %s", exc)
            return EXIT_STARTUP
        except KafkaRefusedError as exc:
            log.error("cannot start: %s", exc)
            return refusal_exit(exc)
        # ValueError: a malformed KAFKA_CONFIG_FILE; KafkaLayerError: client config, broker, topics.
        except (KafkaLayerError, ValueError) as exc:
            log.error("cannot start: %s", exc)
            if loading.done() and isinstance(loading.exception(), ModelError):
                log.error("cannot start: %s", loading.exception())
            return EXIT_STARTUP
        try:
            worker.run()
        except KafkaRefusedError as exc:
            log.error("stopping without committing past the failure: %s", exc)
            return refusal_exit(exc)
        except (KafkaLayerError, ModelError) as exc:
            log.error("stopping without committing past the failure: %s", exc)
            return EXIT_RUNTIME
    finally:
        server.stop()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
