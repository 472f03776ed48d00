"""Hard wall-clock deadlines for fastText: each fit runs in a child process that is ended at its deadline.

fastText offers no deadline of its own: autotune's final re-training with the settings it picked (a heavy
char n-gram model) once ran many minutes past its budget (issue #13), inside
``fasttext::Autotune::train``, and a training thread in C++ cannot be interrupted from
Python. A child process can always be ended, and when it dies (a segfault, an abort) the parent learns
it at once from the closed pipe instead of waiting.

The child is forked, so it starts in milliseconds with the parent's data already in memory (nothing is
pickled on the way in; only the small result comes back through the pipe). Its temporary files go into a
folder the parent owns and deletes afterwards, so a child killed mid-write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from training.fasttext_train import TrainingError

T = TypeVar("T")

#: fork: the child shares the parent's loaded data and any test double of fastText; see the module doc.
_CONTEXT = multiprocessing.get_context("fork")
#: linux/prctl.h: deliver a signal to this process when its parent dies.
_PR_SET_PDEATHSIG = 1
#: How long an ended child may take to go (SIGTERM), before SIGKILL.
_GRACE_SECONDS = 3.0


class JobError(TrainingError):
    """A job in a child process did not deliver a result."""


class DeadlineExceeded(JobError):
    """The job was still running at its deadline and was ended."""


class ChildDied(JobError):
    """The child process ended without a result (killed by a signal, or exited)."""


@dataclass(frozen=True)
class TimeLimit:
    """When the command must be done, as ``time.monotonic()`` instants.

    ``search_end`` is the end of the search budget; ``hard_end`` the end of the whole command (budget plus
    margin); the last ``finish_reserve`` seconds before it are kept for quantizing, measuring and logging
    the chosen model, so no fit may run past :attr:`fits_end`.
    """

    search_end: float
    hard_end: float
    finish_reserve: float

    @classmethod
    def from_now(
        cls, budget: float, margin: float, finish_reserve: float, started: float | None = None
    ) -> TimeLimit:
        """A search budget of ``budget`` seconds from now, in a limit of ``budget`` + ``margin`` seconds
        counted from ``started`` (default: now): the time spent before the search (loading data, starting
        MLflow) comes out of the margin, not out of the search."""
        now = time.monotonic()
        start = now if started is None else started
        return cls(now + budget, start + budget + margin, finish_reserve)

    @property
    def fits_end(self) -> float:
        """The last instant a fit may still be running."""
        return self.hard_end - self.finish_reserve

    def left(self, until: float | None = None) -> float:
        """Seconds from now until ``until`` (default :attr:`fits_end`), never negative."""
        return max(0.0, (self.fits_end if until is None else until) - time.monotonic())


def run_with_deadline(job: Callable[..., T], args: tuple[Any, ...], seconds: float, what: str) -> T:
    """``job(*args)`` in a child process; its return value, or a :class:`JobError` by ``seconds``.

    The job's own exceptions come back as :class:`TrainingError` with their message. A child still
    running at the deadline is ended (:class:`DeadlineExceeded`); one that dies first is reported at once
    (:class:`ChildDied`, naming the signal). ``what`` names the job in those messages.
    """
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="sentiment-job-"))
    receive, send = _CONTEXT.Pipe(duplex=False)
    child = _CONTEXT.Process(target=_child_main, args=(send, scratch, job, args), daemon=True)
    try:
        child.start()
        send.close()  # the child holds the only write end now: its death closes the pipe
        if not receive.poll(max(0.0, seconds)):
            raise DeadlineExceeded(f"{what} was still running at its {seconds:.0f}s deadline and was ended")
        try:
            status, payload = receive.recv()
        except EOFError:
            child.join(_GRACE_SECONDS)  # it closed the pipe by dying: collect its exit status
            raise ChildDied(
                f"{what} died after {time.monotonic() - started:.1f}s without a result "
                f"({_exit_reason(child.exitcode)})"
            ) from None
    finally:
        receive.close()
        _end(child)
        shutil.rmtree(scratch, ignore_errors=True)
    if status == "error":
        raise TrainingError(str(payload))
    return payload  # type: ignore[no-any-return]


def _child_main(send: Connection, scratch: Path, job: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """In the child: run the job and send ``("ok", result)`` or ``("error", message)``."""
    _die_with_parent()
    # Ctrl-C reaches the whole process group; the parent ends its child itself (a fit in C++ would not
    # see the KeyboardInterrupt anyway until it finished).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tempfile.tempdir = str(scratch)
    try:
        result: tuple[str, Any] = ("ok", job(*args))
    except Exception as exc:
        result = ("error", str(exc) if isinstance(exc, TrainingError) else f"{type(exc).__name__}: {exc}")
    send.send(result)
    send.close()


def _die_with_parent() -> None:
    """Ask Linux to kill this child when the parent dies (e.g. SIGKILL), so no fit outlives the command."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _end(child: multiprocessing.process.BaseProcess) -> None:
    """Make sure the child is gone: SIGTERM, then SIGKILL after a grace period."""
    if child.pid is None:  # never started
        return
    if child.is_alive():
        child.join(0.5)  # one that has just sent its result is exiting on its own
    if child.is_alive():
        child.terminate()
        child.join(_GRACE_SECONDS)
    if child.is_alive():
        child.kill()
    child.join()
    child.close()


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
