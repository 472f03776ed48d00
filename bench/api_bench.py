"""Throughput and latency of ``POST /predict`` against the framework's ceiling, side by side.

``python -m bench.api_bench [--model-path FILE] [--duration 10] [--connections 32]``

Starts two single-worker uvicorn servers on 127.0.0.1 (ephemeral ports, uvloop + httptools when
installed): the real app (:func:`api.main.create_app`, model from ``--model-path`` or a quick model trained
from TweetEval like the tests do), and :data:`constant_app`, a bare FastAPI app whose ``POST /predict``
returns a constant body. Each is driven in turn by ``wrk`` (a separate process, C, one thread) at a fixed
concurrency with real tweets as request bodies; requests/s, p50 and p99 are printed, with the ratio.
Targets: >= 2,000 req/s, p99 <= 10 ms, >= 0.6 x the constant endpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI

from worker.ports import free_port

REPO = Path(__file__).resolve().parent.parent
TARGET_RPS = 2_000.0
TARGET_P99_MS = 10.0
TARGET_RATIO = 0.6
#: Bodies wrk cycles through (real tweets, so normalisation and scoring do real work).
N_BODIES = 200

constant_app = FastAPI()
_CONSTANT = {
    "label": "positive",
    "score": 0.9,
    "scores": {"negative": 0.05, "neutral": 0.05, "positive": 0.9},
    "model": {"repo": "local", "revision": None, "sha256": "0" * 64},
}


@constant_app.post("/predict")
async def constant_predict() -> dict[str, object]:
    """The ceiling: routing and a JSON response, no body parsing, no model."""
    return _CONSTANT


# Pre-formats every request once; each connection then cycles through them with no per-request Lua work.
_WRK_SCRIPT = """
local bodies = {BODIES}
local requests = {}
local n = 0
init = function(args)
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format("POST", "/predict", {["Content-Type"] = "application/json"}, body)
  end
end
request = function()
  n = n % #requests + 1
  return requests[n]
end
done = function(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
    .. '"non2xx": %d, "socket_errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout))
end
"""


@dataclass(frozen=True)
class Result:
    """One wrk run."""

    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    failures: int
    cpu_us: float | None
    """Server CPU time per request: steadier than req/s on a machine shared with other work."""


def quick_model(folder: Path) -> Path:
    """Train the tests' small real model from TweetEval (a few seconds)."""
    from tests.conftest import train_small_model
    from training.data import load_split

    data = Path(os.environ.get("TWEETEVAL_DIR") or REPO.parent / "shared/data/tweeteval-sentiment")
    return train_small_model(load_split("train", data).head(6_000), folder)


def request_bodies() -> list[str]:
    """JSON bodies of real tweets (validation split; the model never trained on them)."""
    from training.data import load_split

    data = Path(os.environ.get("TWEETEVAL_DIR") or REPO.parent / "shared/data/tweeteval-sentiment")
    texts = load_split("val", data).texts[:N_BODIES]
    return [json.dumps({"text": str(text)}) for text in texts]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Server:
    """A running benchmark server."""

    url: str
    pid: int


@contextlib.contextmanager
def serve(target: str, port: int, env: dict[str, str], ready_path: str) -> Iterator[Server]:
    """Run ``uvicorn target`` (one worker) for the block; yields it once ``ready_path`` answers 200."""
    command = [
        sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--log-level", "warning", *_fast_server_options(),
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"{target} exited with {server.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + ready_path, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target} was not ready within 120 s")
            time.sleep(0.2)
        yield Server(base, server.pid)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def _fast_server_options() -> list[str]:
    options = []
    for module, option in (("uvloop", "--loop=uvloop"), ("httptools", "--http=httptools")):
        try:
            __import__(module)
        except ImportError:
            print(f"note: {module} is not installed; uvicorn falls back to the pure-Python one")
        else:
            options.append(option)
    return options


def run_wrk(name: str, server: Server, script: Path, connections: int, seconds: float) -> Result:
    """Drive ``server`` with wrk (one thread: it is fast enough, and leaves the other core to the server)."""
    url = server.url + "/predict"
    cpu_before = cpu_seconds(server.pid)
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    cpu_after = cpu_seconds(server.pid)
    line = next(line for line in done.stdout.splitlines() if line.startswith("WRK_JSON "))
    stats = json.loads(line.removeprefix("WRK_JSON "))
    cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return Result(
        name=name,
        rps=stats["requests"] / (stats["duration_us"] / 1e6),
        p50_ms=stats["p50_us"] / 1e3,
        p99_ms=stats["p99_us"] / 1e3,
        max_ms=stats["max_us"] / 1e3,
        requests=stats["requests"],
        failures=stats["non2xx"] + stats["socket_errors"],
        cpu_us=cpu / stats["requests"] * 1e6 if cpu is not None and stats["requests"] else None,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the comparison; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.api_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--model-path", type=Path, help="model file (default: train a quick one)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per server (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian/Ubuntu: apt-get install -y wrk)")

    with tempfile.TemporaryDirectory(prefix="api-bench-") as scratch:
        folder = Path(scratch)
        model_path = args.model_path or quick_model(folder)
        script = folder / "predict.lua"
        # Lua long strings take the (ASCII-only) JSON bodies verbatim, escapes and all.
        bodies = ", ".join(f"[==[{body}]==]" for body in request_bodies())
        script.write_text(_WRK_SCRIPT.replace("{BODIES}", "{" + bodies + "}"))
        results = []
        servers = [
            ("constant", "bench.api_bench:constant_app", {}, "/docs"),
            ("/predict", "api.main:app", {"MODEL_PATH": str(model_path), "API_KEY": ""}, "/ready"),
        ]
        for name, target, env, ready_path in servers:
            with serve(target, free_port(), env, ready_path) as server:
                run_wrk(name, server, script, args.connections, args.warmup)
                results.append(run_wrk(name, server, script, args.connections, args.duration))

    ceiling, real = results
    ratio = real.rps / ceiling.rps
    print(f"\n{args.connections} connections, {args.duration:g} s each, 1 uvicorn worker, wrk -t1")
    header = ("endpoint", "req/s", "p50 ms", "p99 ms", "max ms", "requests", "failed", "cpu µs/req")
    print("{:<10} {:>9} {:>8} {:>8} {:>8} {:>9} {:>7} {:>11}".format(*header))
    for r in results:
        cpu = f"{r.cpu_us:,.0f}" if r.cpu_us is not None else "n/a"
        print(
            f"{r.name:<10} {r.rps:>9,.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.max_ms:>8.2f} "
            f"{r.requests:>9,} {r.failures:>7} {cpu:>11}"
        )
    load = os.getloadavg()[0]
    print(f"ratio /predict / constant: {ratio:.2f} (load average {load:.2f} on {os.cpu_count()} CPUs)")
    missed = [
        f"{what} (target {target})"
        for what, target, ok in (
            (f"{real.rps:,.0f} req/s", f">= {TARGET_RPS:,.0f}", real.rps >= TARGET_RPS),
            (f"p99 {real.p99_ms:.2f} ms", f"<= {TARGET_P99_MS:g} ms", real.p99_ms <= TARGET_P99_MS),
            (f"ratio {ratio:.2f}", f">= {TARGET_RATIO}", ratio >= TARGET_RATIO),
            (f"{real.failures} failed requests", "0", real.failures == 0),
        )
        if not ok
    ]
    print("all targets met" if not missed else "MISSED: " + "; ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
