"""An embedded Kafka-protocol broker: librdkafka's mock cluster, hosted in a process of its own.

For the demo and the tests on machines without Kafka or Docker. Clients reach it over TCP on
127.0.0.1 like any cluster; topics auto-create with 4 partitions on first use (the mock does not
support CreateTopics). Measured limits: it dropped the oldest records of a partition once it held about
10,000 in one run, and its transactions are incomplete (tests/test_mock_cluster.py): it is for demos and
tests, not for soaking or for proving exactly-once. Its group coordinator answers a follower's SyncGroup
that arrives before the leader's with INVALID_REQUEST (a real broker holds it until the leader's
assignment is in); the follower rejoins and the mock then held that rejoin for about 41 s (librdkafka's
``debug=cgrp`` log; 3 of 33 two-worker starts on the benchmark): a rare, timing-dependent stall.
``python -m worker.kafka.mock_cluster`` prints the bootstrap servers on its first line and serves until its
stdin closes or it is terminated.

All its brokers live in that one process, so :meth:`MockCluster.freeze` (SIGSTOP) is a real broker stall
for its clients: connections stay open and nothing answers, as in a long GC pause or a network blip.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from types import TracebackType

import confluent_kafka as ck

READY_TIMEOUT_SECONDS = 30.0


def serve(num_brokers: int = 3) -> None:
    """Start the brokers, print their addresses, block until stdin closes or SIGTERM."""
    host = ck.Producer({"test.mock.num.brokers": num_brokers, "bootstrap.servers": "", "log_level": 3})
    brokers = host.list_topics(timeout=10).brokers.values()
    print(",".join(f"{b.host}:{b.port}" for b in brokers), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def stop_when_stdin_closes() -> None:  # the parent died or closed the pipe: no orphan brokers
        sys.stdin.read()
        stop.set()

    threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
    stop.wait()


class MockCluster:
    """Context manager: a mock cluster in a child process; ``bootstrap_servers`` once entered."""

    def __init__(self, num_brokers: int = 3) -> None:
        self.num_brokers = num_brokers
        self.bootstrap_servers = ""
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> MockCluster:
        """Start the child and wait for its address line."""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "worker.kafka.mock_cluster", str(self.num_brokers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if not line:
            self.stop()
            raise RuntimeError("the mock Kafka cluster did not start")
        self.bootstrap_servers = line
        return self

    @property
    def pid(self) -> int:
        """The broker process (SIGSTOP/SIGCONT of it is a real broker stall; affinity pins it)."""
        if self._process is None:
            raise RuntimeError("the mock cluster is not running")
        return self._process.pid

    def freeze(self) -> None:
        """Stall every broker (SIGSTOP): clients see no answer until :meth:`thaw`."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """Let the brokers run again (SIGCONT)."""
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the child (closing stdin asks it to exit; terminate if it does not)."""
        if self._process is None:
            return
        self.thaw()  # a frozen process would neither read its stdin nor handle SIGTERM
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
        self._process = None

    def __enter__(self) -> MockCluster:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
