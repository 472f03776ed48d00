"""Child processes (``python -m <module>``), each with its own log file: the demo's workers and API, and
the test harness's workers (:class:`tests.kafka_harness.WorkerProcess`)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from worker.ports import free_port

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """New session (Ctrl-C reaches the demo only, which then stops children in order) and, on Linux,
    SIGTERM when the demo dies, so a killed demo leaves no orphan worker behind."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def port_or_free(preferred: int) -> int:
    """``preferred`` when it is free on 127.0.0.1, else any free port."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
        return preferred


def http_status(url: str) -> int | None:
    """Status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@dataclass
class Child:
    """``python -m <module>`` with extra environment variables; output goes to ``log_path``."""

    name: str
    module: str
    env: Mapping[str, str]
    log_path: Path
    port: int = 0  # the HTTP port it serves (metrics or API), for readiness and links
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    append_log: bool = False  # True: restarts add to one log file; False: one run per log file
    unset: tuple[str, ...] = ()  # variables of this process's environment the child must not inherit
    cwd: Path | None = None

    def start(self) -> Child:
        """Start the process."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {name: value for name, value in os.environ.items() if name not in self.unset}
        with self.log_path.open("ab" if self.append_log else "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env={**env, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                preexec_fn=_die_with_parent,
            )
        return self

    def alive(self) -> bool:
        """Whether it is still running."""
        return self.process is not None and self.process.poll() is None

    @property
    def log(self) -> str:
        """Everything it logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 15) -> str:
        """The end of its log, for error messages."""
        return "\n".join(self.log.splitlines()[-lines:])

    def wait_ready(self, url: str, timeout: float) -> None:
        """Wait until ``url`` answers 200; a clear error with the log tail if it dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if http_status(url) == 200:
                return
            if not self.alive():
                raise RuntimeError(f"{self.name} exited during start-up; its log ends with:\n{self.tail()}")
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready at {url} after {timeout:.0f}s; log:\n{self.tail()}")

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        """Wait until its log contains ``text``."""
        deadline = time.monotonic() + timeout
        while text not in self.log:
            if not self.alive():
                code = self.process.returncode if self.process is not None else None
                raise RuntimeError(f"{self.name} exited ({code}) before logging {text!r}:\n{self.tail(40)}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} did not log {text!r} within {timeout:.0f}s:\n{self.tail(40)}"
                )
            time.sleep(0.1)

    def signal(self, signum: int) -> None:
        """Send a signal."""
        assert self.process is not None, f"{self.name} was never started"
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Wait for exit; returns the exit code."""
        assert self.process is not None, f"{self.name} was never started"
        return self.process.wait(timeout)

    def kill(self) -> None:
        """``kill -9``: no flush, no commit, no goodbye."""
        self.signal(signal.SIGKILL)
        self.wait(10)

    def stop(self, timeout: float = 0.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` for a clean exit, then SIGKILL (0: at once). Returns the exit
        code (None if it never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode
