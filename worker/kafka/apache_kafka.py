"""Apache Kafka from ``../shared/kafka``, on ports and in a folder of its own: for tests and benchmarks.

The launcher beside the repository (``../shared/kafka/kafka``, see its README) unpacks and runs Apache
Kafka 4.1 (single node, KRaft, loopback); ``BROKER_LAUNCHER`` points elsewhere. Its settings are
``BROKER_*``, never ``KAFKA_*``, which our processes hand to librdkafka.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from worker.ports import free_port

LAUNCHER = Path(
    os.environ.get("BROKER_LAUNCHER") or Path(__file__).resolve().parents[3] / "shared" / "kafka" / "kafka"
)


@dataclass
class ApacheKafka:
    """An Apache Kafka broker from ``the launcher`` on ports and in a folder of its own."""

    port: int
    folder: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self, command: str) -> str:
        # BROKER_*, not KAFKA_*: the launcher's own settings (KAFKA_* go to librdkafka in our processes).
        env = {**os.environ, "BROKER_PORT": str(self.port), "BROKER_DIR": str(self.folder)}
        done = subprocess.run([str(LAUNCHER), command], env=env, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"kafka {command} failed ({done.returncode}): {done.stderr or done.stdout}")
        return done.stdout

    def start(self) -> ApacheKafka:
        """Start it (again, on the same data after a stop or a kill)."""
        self._run("start")
        return self

    def stop(self) -> None:
        self._run("stop")
        jvm = self._jvm()
        if jvm is not None:  # the launcher lost track of it: do not leave a broker behind
            os.kill(jvm, signal.SIGKILL)

    def pid(self) -> int:
        """The broker's JVM, found by its config file (the launcher's pid file once named a short-lived
        subshell of its start script, and `kafka pid` then said "not running" of a running broker)."""
        jvm = self._jvm()
        if jvm is None:
            raise RuntimeError(f"no broker JVM running with {self.folder / 'server.properties'}")
        return jvm

    def _jvm(self) -> int | None:
        needle = f"kafka.Kafka\0{self.folder / 'server.properties'}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if needle in argv and argv.split(b"\0", 1)[0].endswith(b"java"):
                return int(entry.name)
        return None

    def kill(self) -> None:
        """``kill -9`` the broker and wait until the process is gone (a crash, not a stall)."""
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise RuntimeError(f"broker {pid} still alive 30 s after SIGKILL")

    @contextlib.contextmanager
    def frozen(self) -> Iterator[float]:
        """SIGSTOP the broker for the block (thawed whatever happens); yields the freeze's start time."""
        pid = self.pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            yield time.monotonic()
        finally:
            os.kill(pid, signal.SIGCONT)


def apache_kafka_missing() -> str | None:
    """Why ``the launcher`` cannot run here, or None when it can."""
    if not LAUNCHER.is_file():
        return f"no {LAUNCHER}"
    java = shutil.which("java")
    if java is None:
        return "no java on PATH (make sysdeps installs openjdk-17-jre-headless)"
    version = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    major = version.split('"')[1].split(".")[0] if '"' in version else "0"
    if not major.isdigit() or int(major) < 17:
        return f"java {major} on PATH, Apache Kafka 4.1 needs 17 or newer"
    return None


@contextlib.contextmanager
def apache_kafka() -> Iterator[ApacheKafka]:
    """A fresh Apache Kafka broker of this test's own, stopped and wiped afterwards."""
    with tempfile.TemporaryDirectory(prefix="kafka-") as folder:
        broker = ApacheKafka(free_port(adjacent=2), Path(folder))
        try:
            yield broker.start()
        finally:
            with contextlib.suppress(Exception):
                broker.stop()
