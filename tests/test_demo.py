"""``make demo`` as a real command: embedded broker, workers, API, live table, clean stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from tests.kafka_harness import REPO, read_all, unique
from tests.worker_harness import create_topics

CONFIGURED_BRANDS = ("acme", "globex", "initech", "umbrella")


def demo_env(tmp_path: Path, small_model: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.update(
        MODEL_PATH=str(small_model),
        TWEETEVAL_DIR=str(data_dir),
        DEMO_MODEL_DIR=str(tmp_path / "demo"),
        **extra,
    )
    return env


def final_table(output: str) -> str:
    assert "[final]" in output, output[-3000:]
    return output[output.rindex("[final]") :]


def counts(table: str) -> tuple[int, int, int, int]:
    """(produced, bad on purpose, scored, dead-lettered) from the table's totals line."""
    found = re.search(
        r"posts produced (\d+) \(bad on purpose: (\d+)\)\s+scored (\d+) .*dead-lettered (\d+)", table
    )
    assert found, table
    produced, bad, scored, dead = (int(g) for g in found.groups())
    return produced, bad, scored, dead


def test_demo_streams_posts_through_the_embedded_broker(
    tmp_path: Path, small_model: Path, data_dir: Path
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "worker.demo", "--duration", "8", "--rate", "150", "--bad-share", "0.05"],
        env=demo_env(tmp_path, small_model, data_dir),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "embedded Kafka-protocol broker" in output
    table = final_table(output)
    produced, bad, scored, dead = counts(table)
    assert produced >= 500 and bad > 0
    assert scored == produced - bad and dead == bad
    for brand in (*CONFIGURED_BRANDS, "other"):
        assert re.search(rf"^{brand}\s+\d+\s+\d+%", table, re.MULTILINE), table
    assert "API /predict (" in output  # the API answered the demo's calls
    assert "demo OK" in output
    worker_log = (tmp_path / "demo" / "logs" / "worker-1.log").read_text()
    assert "stopped cleanly" in worker_log
    assert re.search(r"brand page: http://127\.0\.0\.1:\d+/", output), output[-4000:]
    api_log = (tmp_path / "demo" / "logs" / "api.log").read_text()
    assert "reputation topic: following topic 'reputation'" in api_log, api_log[-4000:]


def test_demo_uses_a_given_cluster_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path, small_model: Path, data_dir: Path, kafka: str
) -> None:
    topics = {
        "INPUT_TOPIC": unique("demo-in"),
        "OUTPUT_TOPIC": unique("demo-out"),
        "DLQ_TOPIC": unique("dlq"),
    }
    create_topics(kafka, *topics.values())
    env = demo_env(
        tmp_path,
        small_model,
        data_dir,
        KAFKA_BOOTSTRAP_SERVERS=kafka,
        CONSUMER_GROUP=unique("demo"),
        **topics,
    )
    log = tmp_path / "demo.out"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.demo", "--workers", "1", "--rate", "100", "--refresh", "1"],
            env=env,
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while not any(int(n) > 0 for n in re.findall(r"\bscored (\d+) ", log.read_text())):
            assert process.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        process.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends
        code = process.wait(90)
    finally:
        if process.poll() is None:
            process.kill()
    output = log.read_text()
    assert code == 0, output[-4000:]
    assert "embedded" not in output  # the given cluster was used, no mock started
    _, bad, scored, dead = counts(final_table(output))
    assert "demo OK" in output
    results = read_all(kafka, topics["OUTPUT_TOPIC"], scored, timeout=30, distinct=lambda r: r.key())
    assert len({r.key() for r in results}) == scored
    assert all(orjson.loads(r.value())["label"] in ("negative", "neutral", "positive") for r in results)
    assert dead == bad


def test_demo_scripts_a_crisis_and_the_board_shows_deviation_alert_and_complaints(
    tmp_path: Path, small_model: Path, data_dir: Path
) -> None:
    """acme's mood turns sharply negative part-way through, with 4 workers sharing its posts: the stage's
    z-score rises past the alert threshold, the board shows BrandSentimentDrop's condition met, and acme's
    complaint terms are the crisis's."""
    from sentiment_model import normalize
    from worker.demo.board import DROP_ZSCORE
    from worker.demo.posts import CRISIS_PHRASES
    from worker.terms import is_term

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.demo",
            *("--duration", "50", "--crisis-brand", "acme", "--crisis-after", "26"),
            *("--window-seconds", "2", "--workers", "4", "--rate", "300"),
            *("--refresh", "2", "--bad-share", "0.01"),
        ],
        env=demo_env(tmp_path, small_model, data_dir),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "demo OK" in output
    # acme's rows, table after table: last window's negative share, baseline, z, volume ratio, condition
    row = re.compile(
        r"^acme .*?(\d+)%\s+(\d+)%\s+([-+]\d+\.\d)\s+(\d+\.\d)\s+(ok|DROP SPIKE|DROP|SPIKE)", re.MULTILINE
    )
    crisis_at = output.index("acme in crisis since")
    calm = [m for m in row.finditer(output) if m.start() < crisis_at]
    crisis = [m for m in row.finditer(output) if m.start() > crisis_at]
    assert calm and crisis, output[-4000:]
    assert all(abs(float(m.group(3))) < DROP_ZSCORE and m.group(5) == "ok" for m in calm[-2:]), calm
    peak = max(crisis, key=lambda m: float(m.group(3)))
    assert float(peak.group(3)) > DROP_ZSCORE and "DROP" in peak.group(5), peak.group(0)
    assert int(peak.group(1)) > int(peak.group(2)) + 20  # the window's negative share far above baseline
    assert "alert conditions met during the run: acme: DROP" in output
    table = final_table(output)
    complaints = re.search(r"^acme\s+- (.+?)\s{3}\+", table, re.MULTILINE)
    assert complaints, table
    phrases = (normalize(phrase.format(b="Acme")).split() for phrase in CRISIS_PHRASES)
    crisis_words = {token for tokens in phrases for token in tokens if is_term(token)}
    shown = set(complaints.group(1).split(", "))
    assert len(shown & crisis_words) >= 2, (shown, crisis_words)
