"""Deployment files agree with the code: Dockerfiles, docker-compose.yml, deploy/k8s, GitHub workflows.

No Docker daemon needed. Every environment variable a deployment file sets must be a real setting of the
process it configures (so a typo fails here, not silently in production), every port and topic must equal
the code's default, and every path a file mounts must exist.
"""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import functools
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from pydantic_settings import BaseSettings

from api.settings import ApiSettings
from reputation.settings import StageSettings
from schemas import LABELS
from training import train as train_cli
from training.data import SPLITS, load_split
from training.export_tweeteval import export
from worker.kafka import ClientConfigError
from worker.kafka.config import env_properties
from worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "k8s"
FIRST_PARTY = frozenset({"schemas", "sentiment_model", "training", "worker", "api", "reputation"})
#: Read by Python, huggingface_hub or the shell rather than by our settings classes.
LIBRARY_ENV = frozenset({"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "HF_HOME", "HF_HUB_OFFLINE"})
SECRET_WORDS = ("TOKEN", "KEY", "PASSWORD", "SECRET", "CREDENTIAL")
APP_UID = 10001


def default(settings: type[BaseSettings], field: str) -> Any:
    """A settings field's declared default."""
    return settings.model_fields[field].default


WORKER_METRICS_PORT = default(WorkerSettings, "metrics_port")
STAGE_METRICS_PORT = default(StageSettings, "metrics_port")
API_PORT = default(ApiSettings, "api_port")
SHUTDOWN_TIMEOUT = default(WorkerSettings, "shutdown_timeout_seconds")


def setting_names(settings: type[BaseSettings]) -> frozenset[str]:
    """Environment variable names of a settings class (env_prefix "", so the upper-cased field names)."""
    assert settings.model_config.get("env_prefix", "") == ""
    return frozenset(name.upper() for name in settings.model_fields)


def env_names_read_in(package: str) -> frozenset[str]:
    """Variables the package reads directly (os.environ / os.getenv with a literal name)."""
    pattern = re.compile(r"""os\.(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Z0-9_]+)["']""")
    return frozenset(
        name for path in (REPO / package).rglob("*.py") for name in pattern.findall(path.read_text("utf-8"))
    )


#: What each process reads. Worker: also any KAFKA_* (librdkafka passthrough), checked separately.
ALLOWED_ENV = {
    "worker": setting_names(WorkerSettings) | LIBRARY_ENV,
    "api": setting_names(ApiSettings) | LIBRARY_ENV,
    "training": env_names_read_in("training") | LIBRARY_ENV,
    "reputation": setting_names(StageSettings) | LIBRARY_ENV,
}
SETTINGS: dict[str, type[BaseSettings]] = {
    "worker": WorkerSettings,
    "api": ApiSettings,
    "reputation": StageSettings,
}
SETTING_NAMES = setting_names(WorkerSettings) | setting_names(ApiSettings) | setting_names(StageSettings)
KAFKA_CLIENTS = ("worker", "reputation")  # take any KAFKA_* (librdkafka passthrough)


def unknown_env_names(kind: str, names: Iterable[str]) -> list[str]:
    """Names the process of ``kind`` would silently ignore (typos), plus invalid librdkafka passthroughs."""
    bad = [
        name
        for name in names
        if name not in ALLOWED_ENV[kind] and not (kind in KAFKA_CLIENTS and name.startswith("KAFKA_"))
    ]
    if kind in KAFKA_CLIENTS:
        bad += invalid_librdkafka_properties({name: "1" for name in names if name.startswith("KAFKA_")})
    return sorted(bad)


def invalid_librdkafka_properties(env: Mapping[str, str]) -> list[str]:
    """KAFKA_* variables a deployment sets that the worker would not pass to librdkafka: skipped by the
    environment rule (not a property) or stopping the start (a near miss of one)."""
    bad = []
    for name, value in env.items():
        try:
            bad += env_properties({name: value}).skipped
        except ClientConfigError:
            bad.append(name)
    return bad


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No setting leaks in from the machine running the tests (CI sets KAFKA_BOOTSTRAP_SERVERS, say)."""
    for name in list(os.environ):
        if name in SETTING_NAMES or name.startswith("KAFKA_"):
            monkeypatch.delenv(name)
    yield monkeypatch


def settings_from(
    settings: type[BaseSettings], env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The settings object the process would build from ``env`` (its setting variables only: PATH stays)."""
    for name, value in env.items():
        if name in SETTING_NAMES or name.startswith("KAFKA_"):
            monkeypatch.setenv(name, value)
    return settings()


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text("utf-8"))
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def seconds(duration: str | int) -> float:
    """``30s``, ``1m30s``, ``45`` -> seconds."""
    if isinstance(duration, int):
        return float(duration)
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, f"unreadable duration {duration!r}"
    return int(parts[1] or 0) * 60.0 + int(parts[2] or 0)


# --- Dockerfiles ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    stage: int
    keyword: str
    args: str


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with their stage number (continuations joined, comments dropped)."""
    instructions: list[Instruction] = []
    stage, pending = -1, ""
    for raw in path.read_text("utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, args = pending.partition(" ")
        keyword = keyword.upper()
        stage += keyword == "FROM"
        instructions.append(Instruction(stage, keyword, args.strip()))
        pending = ""
    return instructions


@dataclass(frozen=True)
class Image:
    kind: str
    path: Path
    instructions: list[Instruction]

    @property
    def final(self) -> list[Instruction]:
        last = max(i.stage for i in self.instructions)
        return [i for i in self.instructions if i.stage == last]

    def args(self, keyword: str, final_only: bool = True) -> list[str]:
        return [i.args for i in (self.final if final_only else self.instructions) if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """ENV of the runtime stage (``K=V`` form only)."""
        out: dict[str, str] = {}
        for args in self.args("ENV"):
            for token in shlex.split(args):
                name, sep, value = token.partition("=")
                assert sep, f"{self.path.name}: use ENV NAME=value, not {args!r}"
                out[name] = value
        return out


ENTRY_MODULES = {"worker": "worker", "api": "api", "training": "training.train", "reputation": "reputation"}


@functools.cache
def dockerfile(kind: str) -> Image:
    """``Dockerfile.<kind>``, parsed."""
    path = REPO / f"Dockerfile.{kind}"
    return Image(kind, path, parse_dockerfile(path))


@pytest.fixture(params=sorted(ENTRY_MODULES))
def image(request: pytest.FixtureRequest) -> Image:
    return dockerfile(str(request.param))


def test_dockerfile_base_images_are_pinned_and_multi_stage(image: Image) -> None:
    froms = image.args("FROM", final_only=False)
    assert len(froms) >= 2, f"{image.path.name}: builder and runtime stages expected"
    stages = {m[1] for f in froms if (m := re.search(r"\bAS\s+(\S+)", f, re.IGNORECASE))}
    for line in froms:
        ref = line.split()[0]
        if ref in stages:
            continue
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", ref), (
            f"{image.path.name}: FROM {ref} is not an exact python 3.11 slim patch release"
        )
    # The runtime stage starts from the base image, not from the builder: no compilers in the image.
    assert image.final[0].args.split()[0].startswith("python:3.11.")
    assert any("gcc" in run for run in image.args("RUN", final_only=False))
    assert not any("gcc" in run for run in image.args("RUN"))
    assert any(args.startswith("--from=builder /opt/venv ") for args in image.args("COPY"))


def test_dockerfile_runs_as_fixed_non_root_uid(image: Image) -> None:
    users = image.args("USER")
    assert users, f"{image.path.name}: no USER in the runtime stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) == APP_UID, f"{image.path.name}: USER {users[-1]}"
    assert any(f"--uid {APP_UID}" in run for run in image.args("RUN"))


def test_dockerfile_has_no_baked_secrets(image: Image) -> None:
    names = [
        token.partition("=")[0]
        for keyword in ("ENV", "ARG")
        for args in image.args(keyword, final_only=False)
        for token in shlex.split(args)
    ]
    assert names
    assert not [n for n in names if any(word in n.upper() for word in SECRET_WORDS)]
    text = image.path.read_text("utf-8")
    assert not re.search(r"hf_[A-Za-z0-9]{20,}", text), "something that looks like a Hugging Face token"


def test_dockerfile_env_names_are_real_settings(image: Image, clean_env: pytest.MonkeyPatch) -> None:
    env = image.env()
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert unknown_env_names(image.kind, env) == []
    if image.kind in SETTINGS:
        s = settings_from(SETTINGS[image.kind], env, clean_env)
        if image.kind == "worker":
            assert (s.metrics_host, s.metrics_port) == ("0.0.0.0", WORKER_METRICS_PORT)
        elif image.kind == "reputation":
            assert (s.metrics_host, s.metrics_port) == ("0.0.0.0", STAGE_METRICS_PORT)
        else:
            assert (s.api_host, s.api_port) == ("0.0.0.0", API_PORT)


def test_dockerfile_port_and_healthcheck(image: Image) -> None:
    expose = image.args("EXPOSE")
    health = image.args("HEALTHCHECK")
    assert len(health) == 1, f"{image.path.name}: one HEALTHCHECK expected"
    if image.kind == "training":
        assert expose == []
        assert health == ["NONE"]  # a one-shot job
        return
    port, path = {
        "worker": (WORKER_METRICS_PORT, "/healthz"),
        "reputation": (STAGE_METRICS_PORT, "/healthz"),
    }.get(image.kind, (API_PORT, "/health"))
    assert expose == [str(port)]
    cmd = json.loads(health[0].split(" CMD ", 1)[1])
    assert cmd[:2] == ["python", "-c"], "slim images have no curl"
    assert f"http://127.0.0.1:%s{path}'" in cmd[2] and f"'{port}'" in cmd[2]


def test_dockerfile_entry_point(image: Image) -> None:
    entry = image.args("ENTRYPOINT")
    assert len(entry) == 1
    assert json.loads(entry[0]) == ["python", "-m", ENTRY_MODULES[image.kind]]


def first_party_imports(files: Iterable[Path]) -> set[str]:
    """Top-level first-party packages imported anywhere in ``files`` (lazy imports included)."""
    found: set[str] = set()
    for path in files:
        if path.suffix != ".py":  # a compiled extension (sentiment_model._fast*) imports nothing of ours
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                else []
            )
            found |= {n.split(".")[0] for n in names} & FIRST_PARTY
    return found


def test_dockerfile_copies_every_package_the_entry_point_needs(image: Image) -> None:
    # The modules `python -m <entry>` really loads, then every import inside them, lazy ones too.
    entry = ENTRY_MODULES[image.kind]
    spec = importlib.util.find_spec(entry)
    assert spec is not None, f"{entry} is not importable"
    if spec.submodule_search_locations is not None:  # a package: -m runs its __main__
        entry += ".__main__"
    probe = (
        f"import sys, {entry}; "
        "print('\\n'.join(m.__file__ for n, m in list(sys.modules.items()) "
        f"if n.split('.')[0] in {sorted(FIRST_PARTY)} and getattr(m, '__file__', None)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    needed = first_party_imports(Path(f) for f in loaded)
    assert {entry.split(".")[0], "sentiment_model", "schemas"} <= needed
    sources = {
        src.rstrip("/")
        for args in image.args("COPY", final_only=False)
        if "--from" not in args
        for src in shlex.split(args)[:-1]
    }
    assert needed <= sources, f"{image.path.name} misses {sorted(needed - sources)}"
    assert {"pyproject.toml", "README.md"} <= sources  # README.md: pyproject's `readme`
    ignored = dockerignore()
    for src in sources:
        assert (REPO / src).exists(), f"{image.path.name}: COPY {src} does not exist"
        assert not any(fnmatch.fnmatch(src, pattern) for pattern in ignored), f"{src} is .dockerignored"


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text("utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_keeps_local_state_and_tests_out() -> None:
    ignored = set(dockerignore())
    assert {".git", ".venv", "models", "mlruns", "data", "tests", ".env", "*.ftz"} <= ignored
    assert not {"README.md", "pyproject.toml", "setup.py", "worker", "api", "training"} & ignored


# --- docker-compose.yml --------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose interpolation with no host variables set: ``${X:-d}`` -> ``d``; a bare ``${X}`` is refused."""

    def substitute(match: re.Match[str]) -> str:
        assert match[2] is not None, f"{match[0]} has no default: the file would need a host variable"
        return match[2]

    return _VARIABLE.sub(substitute, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(REPO / "docker-compose.yml")


def services(compose: Mapping[str, Any]) -> dict[str, Any]:
    result = compose["services"]
    assert isinstance(result, dict)
    return result


def service_env(service: Mapping[str, Any]) -> dict[str, str | None]:
    """A service's environment; None means "passed through from the host when set"."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, None) for item in raw)
    return {str(k): None if v is None else interpolate(str(v)) for k, v in raw.items()}


def container_env(compose: Mapping[str, Any], name: str) -> dict[str, str]:
    """What the process sees with no host variables: the image's ENV, then the service's environment."""
    env = dockerfile(name).env() if name in ENTRY_MODULES else {}
    env.update({k: v for k, v in service_env(services(compose)[name]).items() if v is not None})
    return env


def kafka_init_topics(compose: Mapping[str, Any]) -> dict[str, tuple[int, dict[str, str]]]:
    """Topic -> (partitions, configs) from the kafka-init script."""
    script = " ".join(str(part) for part in services(compose)["kafka-init"]["command"])
    topics: dict[str, tuple[int, dict[str, str]]] = {}
    for line in script.splitlines():
        if "--create" not in line:
            continue
        assert "--if-not-exists" in line, f"not idempotent: {line}"
        tokens = shlex.split(line)
        opts = {tokens[i]: tokens[i + 1] for i in range(len(tokens) - 1) if tokens[i].startswith("--")}
        configs = dict(tokens[i + 1].split("=", 1) for i in range(len(tokens) - 1) if tokens[i] == "--config")
        topics[opts["--topic"]] = (int(opts["--partitions"]), configs)
    return topics


def test_compose_has_the_services(compose: dict[str, Any]) -> None:
    svc = services(compose)
    always = ("kafka", "kafka-init", "worker", "reputation", "api", "prometheus", "alertmanager", "grafana")
    assert {*always, "training"} <= set(svc)
    assert svc["training"]["profiles"] == ["training"]  # plain `up` never trains
    for name in always:
        assert "profiles" not in svc[name], f"{name} must start with plain `docker compose up`"
    for name, service in svc.items():
        if "build" in service:
            assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        else:
            image = service["image"]
            assert re.search(r":v?\d+\.\d+\.\d+$", image), f"{name}: {image} is not an exact version"


def test_compose_worker_is_scalable(compose: dict[str, Any]) -> None:
    worker = services(compose)["worker"]
    # `docker compose up --scale worker=N` needs no fixed name and no host port.
    assert not {"container_name", "ports", "hostname"} & set(worker)
    assert seconds(worker["stop_grace_period"]) > SHUTDOWN_TIMEOUT
    assert worker["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", ["worker", "api", "training", "reputation"])
def test_compose_env_names_are_real_settings(compose: dict[str, Any], name: str) -> None:
    env = service_env(services(compose)[name])
    assert env
    assert unknown_env_names(name, env) == []
    # An empty value is not "unset": MODEL_PATH="" would be Path("."), HF_TOKEN="" an empty token.
    assert not [k for k, v in env.items() if v == ""]


def test_compose_worker_settings(compose: dict[str, Any], clean_env: pytest.MonkeyPatch) -> None:
    s = settings_from(WorkerSettings, container_env(compose, "worker"), clean_env)
    assert (s.metrics_host, s.metrics_port) == ("0.0.0.0", WORKER_METRICS_PORT)
    assert (s.model_path, s.hf_token, s.model_revision) == (None, None, None)
    assert (s.input_topic, s.output_topic, s.dlq_topic, s.consumer_group) == tuple(
        default(WorkerSettings, f) for f in ("input_topic", "output_topic", "dlq_topic", "consumer_group")
    )
    assert s.brand_list == ["acme", "globex", "initech", "umbrella"]
    kafka = service_env(services(compose)["kafka"])
    advertised = [a.split("://", 1)[1] for a in str(kafka["KAFKA_ADVERTISED_LISTENERS"]).split(",")]
    assert s.kafka_bootstrap_servers in advertised
    assert s.kafka_properties() == {}


def test_compose_api_settings(compose: dict[str, Any], clean_env: pytest.MonkeyPatch) -> None:
    api = services(compose)["api"]
    s = settings_from(ApiSettings, container_env(compose, "api"), clean_env)
    assert (s.api_host, s.api_port, s.model_path, s.api_key) == ("0.0.0.0", API_PORT, None, None)
    assert api["ports"] == [f"{API_PORT}:{API_PORT}"]


def test_compose_kafka_is_kraft_without_auto_create(compose: dict[str, Any]) -> None:
    kafka = services(compose)["kafka"]
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", kafka["image"])
    assert services(compose)["kafka-init"]["image"] == kafka["image"]
    env = service_env(kafka)
    assert set(str(env["KAFKA_PROCESS_ROLES"]).split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(env)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "EXTERNAL://localhost:9094" in str(env["KAFKA_ADVERTISED_LISTENERS"])
    assert kafka["ports"] == ["9094:9094"]
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])
    assert services(compose)["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_compose_topics_match_the_worker(compose: dict[str, Any]) -> None:
    topics = kafka_init_topics(compose)
    for field in ("input_topic", "output_topic", "dlq_topic"):
        assert default(WorkerSettings, field) in topics, f"kafka-init does not create the {field}"
    assert topics["mentions"][0] == 6
    assert topics["sentiment"][0] == 6
    assert 1 <= topics["mentions.dlq"][0] <= 3
    assert topics["reputation"][1].get("cleanup.policy") == "compact"
    # The stage's changelog is co-partitioned with its input: partition p holds partition p's state.
    assert topics["reputation.state"][1].get("cleanup.policy") == "compact"
    assert topics["reputation.state"][0] == topics["reputation.partials"][0]


def test_compose_reputation_stage_settings(compose: dict[str, Any], clean_env: pytest.MonkeyPatch) -> None:
    s = settings_from(StageSettings, container_env(compose, "reputation"), clean_env)
    w = settings_from(WorkerSettings, container_env(compose, "worker"), clean_env)
    assert (s.metrics_host, s.metrics_port) == ("0.0.0.0", STAGE_METRICS_PORT)
    assert s.reputation_partials_topic == w.reputation_partials_topic
    assert s.reputation_window_seconds == w.reputation_window_seconds
    topics = kafka_init_topics(compose)
    assert {s.reputation_partials_topic, s.reputation_state_topic, s.reputation_topic} <= set(topics)
    assert s.transactional_id, "a fixed TRANSACTIONAL_ID: a restart fences the crashed instance at once"


def bind_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Host path (relative to the repo) -> container path, for ``./`` bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith("./"):
            out[source[2:]] = target
    return out


def test_compose_observability_mounts_exist(compose: dict[str, Any]) -> None:
    """The Prometheus and Grafana files are mounted from deploy/; they must exist and point at our ports."""
    prometheus, grafana = services(compose)["prometheus"], services(compose)["grafana"]
    assert bind_mounts(prometheus) == {"deploy/prometheus": "/etc/prometheus"}
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert prometheus["ports"] == ["9090:9090"] and grafana["ports"] == ["3000:3000"]
    assert bind_mounts(grafana) == {
        "deploy/grafana/provisioning": "/etc/grafana/provisioning",
        "deploy/grafana/dashboards": "/var/lib/grafana/dashboards",
    }
    config = REPO / "deploy/prometheus/prometheus.yml"
    assert config.is_file(), f"{config} is missing"
    # Prometheus reaches the worker replicas and the API by compose service name on the code's ports.
    targets = set()
    for job in load_yaml(config)["scrape_configs"]:
        targets |= {t for c in job.get("static_configs", []) for t in c["targets"]}
        targets |= {f"{n}:{c['port']}" for c in job.get("dns_sd_configs", []) for n in c["names"]}
    assert {f"worker:{WORKER_METRICS_PORT}", f"api:{API_PORT}"} <= targets
    for kind in ("datasources", "dashboards"):
        folder = REPO / "deploy/grafana/provisioning" / kind
        assert sorted(folder.glob("*.y*ml")), f"no provisioning file in {folder}"
    datasources = " ".join(
        p.read_text("utf-8") for p in (REPO / "deploy/grafana/provisioning").rglob("*.y*ml")
    )
    assert "http://prometheus:9090" in datasources
    providers = [
        provider
        for path in (REPO / "deploy/grafana/provisioning/dashboards").glob("*.y*ml")
        for provider in load_yaml(path)["providers"]
    ]
    assert "/var/lib/grafana/dashboards" in {p["options"]["path"] for p in providers}
    assert sorted((REPO / "deploy/grafana/dashboards").glob("*.json")), "no Grafana dashboard"


def test_compose_alertmanager_gets_prometheus_alerts(compose: dict[str, Any]) -> None:
    """Prometheus sends to the Alertmanager service, which reads deploy/alertmanager/alertmanager.yml."""
    alertmanager = services(compose)["alertmanager"]
    assert bind_mounts(alertmanager) == {"deploy/alertmanager": "/etc/alertmanager"}
    assert (REPO / "deploy/alertmanager/alertmanager.yml").is_file()
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in alertmanager["command"]
    assert alertmanager["ports"] == ["9093:9093"]
    assert "alertmanager-data:/alertmanager" in alertmanager["volumes"]
    config = load_yaml(REPO / "deploy/prometheus/prometheus.yml")
    (target,) = [
        t for am in config["alerting"]["alertmanagers"] for c in am["static_configs"] for t in c["targets"]
    ]
    assert target == "alertmanager:9093"
    # the brand alerts' links open the API's host port
    api_port = services(compose)["api"]["ports"][0].split(":")[0]
    assert config["global"]["external_labels"]["api_base_url"] == f"http://localhost:{api_port}"


def train_flags() -> set[str]:
    """Every option string of ``python -m training.train``."""
    out = io.StringIO()
    with pytest.raises(SystemExit) as stop, contextlib.redirect_stdout(out):
        train_cli.parse_args(["--help"])
    assert stop.value.code == 0
    return set(re.findall(r"(?<![\w-])(--[a-z][a-zA-Z0-9-]*)", out.getvalue()))


def test_compose_training_service(compose: dict[str, Any]) -> None:
    training = services(compose)["training"]
    env = service_env(training)
    mounts = {interpolate(str(v)).split(":")[1]: interpolate(str(v)) for v in training["volumes"]}
    # TWEETEVAL_DIR on the host (as the Makefile uses it), else the shared copy beside the repo.
    data = f"../shared/data/tweeteval-sentiment:{env['TWEETEVAL_DIR']}:ro"
    assert mounts[str(env["TWEETEVAL_DIR"])] == data
    assert any(str(v).startswith("${TWEETEVAL_DIR:-") for v in training["volumes"])
    assert mounts[str(env["OUTPUT_DIR"])] == f"models:{env['OUTPUT_DIR']}"
    workdir = dockerfile("training").args("WORKDIR")[-1]
    assert mounts[f"{workdir}/mlruns"] == f"mlruns:{workdir}/mlruns"  # the default --mlflow-dir
    args = [interpolate(str(a)) for a in training["command"]]
    assert {a for a in args if a.startswith("--")} <= train_flags()
    assert train_cli.parse_args(args).autotune_duration == 0


def test_compose_mlflow_ui_matches_the_training_client(compose: dict[str, Any]) -> None:
    mlflow = services(compose)["mlflow"]
    args = dockerfile("training").args("ARG", final_only=False)
    pinned = dict(a.split("=", 1) for a in args)["MLFLOW_VERSION"]
    assert mlflow["image"] == f"ghcr.io/mlflow/mlflow:v{pinned}"
    extra = load_pyproject()["project"]["optional-dependencies"]["training"]
    spec = next(d for d in extra if d.startswith("mlflow-skinny"))
    assert pinned in SpecifierSet(spec.removeprefix("mlflow-skinny"))
    store = f"{dockerfile('training').args('WORKDIR')[-1]}/mlruns"
    assert f"sqlite:///{store}/mlflow.db" in mlflow["command"]
    assert f"mlruns:{store}" in mlflow["volumes"]
    assert "training" not in mlflow.get("profiles", [])  # never races training's sqlite migration


def load_pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))


def compose_cli() -> list[str] | None:
    """``docker compose`` (v2 plugin) or ``docker-compose`` (v1), whichever this machine has."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_cli_accepts_the_file() -> None:
    """The Compose implementation itself validates the file (offline: `config` needs no daemon)."""
    cli = compose_cli()
    if cli is None:
        pytest.fail(
            "no `docker compose` or `docker-compose` found: install one (apt-get install docker-compose)"
        )
    # With none of the host variables the file reads, so the defaults are what gets validated.
    text = (REPO / "docker-compose.yml").read_text("utf-8")
    host_vars = set(re.findall(r"\$\{(\w+)", text)) | SETTING_NAMES
    env = {k: v for k, v in os.environ.items() if k not in host_vars}
    result = subprocess.run(
        [*cli, "--profile", "training", "--profile", "mlflow", "config", "--quiet"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


# --- deploy/k8s ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object, from the files kustomization.yaml lists."""
    kustomization = load_yaml(K8S / "kustomization.yaml")
    listed = kustomization["resources"]
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(listed) == on_disk
    assert "secret.example.yaml" not in listed  # applying it would overwrite the real token
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for name in listed:
        for doc in yaml.safe_load_all((K8S / name).read_text("utf-8")):
            if doc:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


DEPLOYMENTS = {"sentiment-worker": "worker", "sentiment-api": "api", "reputation-stage": "reputation"}


def pod_env(k8s: Mapping[tuple[str, str], dict[str, Any]], container: Mapping[str, Any]) -> dict[str, str]:
    """ConfigMap keys and literal env of a container; secret references map to a placeholder."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(k8s[("ConfigMap", source["configMapRef"]["name"])]["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "from-a-secret")
    return env


def test_k8s_deployments_are_probed_and_non_root(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    deployments = {name for kind, name in k8s if kind == "Deployment"}
    assert deployments == set(DEPLOYMENTS) | {"alertmanager"}
    for name in deployments:
        pod = k8s[("Deployment", name)]["spec"]["template"]["spec"]
        # No KAFKA_PORT=tcp://... and friends from a Service named kafka (the worker would skip them anyway).
        assert pod["enableServiceLinks"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == APP_UID
        for container in pod["containers"]:
            assert "livenessProbe" in container, f"{name}/{container['name']}"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert {"requests", "limits"} <= set(container["resources"])
            assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("deployment", sorted(DEPLOYMENTS))
def test_k8s_env_and_config_maps_are_real_settings(
    k8s: dict[tuple[str, str], dict[str, Any]], deployment: str, clean_env: pytest.MonkeyPatch
) -> None:
    kind = DEPLOYMENTS[deployment]
    (container,) = k8s[("Deployment", deployment)]["spec"]["template"]["spec"]["containers"]
    env = pod_env(k8s, container)
    assert unknown_env_names(kind, env) == []
    secret = load_yaml(K8S / "secret.example.yaml")
    for item in container.get("env", []):
        if "fieldRef" in item.get("valueFrom", {}):  # the pod's own name, e.g. a TRANSACTIONAL_ID
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        elif "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
            assert ref["optional"] is True
    s = settings_from(SETTINGS[kind], {k: v for k, v in env.items() if v != "from-a-secret"}, clean_env)
    if kind == "worker":
        assert (s.metrics_host, s.metrics_port) == ("0.0.0.0", WORKER_METRICS_PORT)
        assert s.consumer_group == default(WorkerSettings, "consumer_group")
    elif kind == "reputation":
        assert (s.metrics_host, s.metrics_port) == ("0.0.0.0", STAGE_METRICS_PORT)
        assert s.reputation_group == default(StageSettings, "reputation_group")
    else:
        assert (s.api_host, s.api_port) == ("0.0.0.0", API_PORT)


def test_k8s_worker(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    template = k8s[("Deployment", "sentiment-worker")]["spec"]["template"]
    pod = template["spec"]
    (container,) = pod["containers"]
    assert pod["terminationGracePeriodSeconds"] > SHUTDOWN_TIMEOUT
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(WORKER_METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }
    assert container["ports"] == [{"name": "metrics", "containerPort": WORKER_METRICS_PORT}]
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": WORKER_METRICS_PORT}


def test_k8s_api_and_service(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    (container,) = k8s[("Deployment", "sentiment-api")]["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": API_PORT}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    service = k8s[("Service", "sentiment-api")]["spec"]
    (port,) = service["ports"]
    assert port["port"] == API_PORT and ports[port["targetPort"]] == API_PORT
    assert service["selector"] == k8s[("Deployment", "sentiment-api")]["spec"]["selector"]["matchLabels"]


def test_k8s_keda_scales_the_worker_on_its_group_lag(
    k8s: dict[tuple[str, str], dict[str, Any]], compose: dict[str, Any]
) -> None:
    scaled = k8s[("ScaledObject", "sentiment-worker")]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "sentiment-worker"
    (trigger,) = scaled["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["consumerGroup"] == default(WorkerSettings, "consumer_group")
    assert meta["topic"] == default(WorkerSettings, "input_topic")
    assert meta["bootstrapServers"] == k8s[("ConfigMap", "worker-config")]["data"]["KAFKA_BOOTSTRAP_SERVERS"]
    assert int(meta["lagThreshold"]) > 0
    # More consumers than partitions would sit idle.
    partitions = kafka_init_topics(compose)[default(WorkerSettings, "input_topic")][0]
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= partitions


def test_k8s_alertmanager(k8s: dict[tuple[str, str], dict[str, Any]], compose: dict[str, Any]) -> None:
    """The compose Alertmanager's config and image, in a Deployment behind a Service."""
    shipped = (REPO / "deploy/alertmanager/alertmanager.yml").read_text("utf-8")
    config_map = k8s[("ConfigMap", "alertmanager-config")]["data"]
    assert config_map == {"alertmanager.yml": shipped}, (
        "deploy/k8s/alertmanager-config.yaml must hold deploy/alertmanager/alertmanager.yml verbatim"
    )
    deployment = k8s[("Deployment", "alertmanager")]["spec"]
    pod = deployment["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == services(compose)["alertmanager"]["image"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "alertmanager-config"
    assert f"--config.file={mounts['config']}/alertmanager.yml" in container["args"]
    assert f"--storage.path={mounts['storage']}" in container["args"]
    assert "emptyDir" in volumes["storage"]
    assert deployment["replicas"] == 1  # more need cluster peers, else each notifies
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}
    service = k8s[("Service", "alertmanager")]["spec"]
    (port,) = service["ports"]
    assert port["port"] == 9093 and port["targetPort"] == "http"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 9093}
    assert service["selector"] == deployment["selector"]["matchLabels"]


def test_k8s_secret_example_is_a_placeholder() -> None:
    secret = load_yaml(K8S / "secret.example.yaml")
    assert secret["kind"] == "Secret" and "data" not in secret
    assert set(secret["stringData"]) == {"HF_TOKEN", "API_KEY"}
    assert all(value.startswith("replace-") for value in secret["stringData"].values())


# --- GitHub workflows ----------------------------------------------------------------------------------


def workflow(name: str) -> dict[str, Any]:
    data: dict[Any, Any] = load_yaml(REPO / ".github/workflows" / name)
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def steps(wf: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for job_name, job in wf["jobs"].items():
        for step in job["steps"]:
            yield job_name, step


def test_ci_workflow_runs_make_test_and_builds_the_images() -> None:
    wf = workflow("ci.yml")
    assert {"push", "pull_request"} <= set(wf["on"])
    test_job = wf["jobs"]["test"]
    runs = [s.get("run", "") for s in test_job["steps"]]
    assert any(r.strip() == "make test" for r in runs)
    assert any("apt-get install" in r and "prometheus" in r for r in runs)
    assert any("python -m training.export_tweeteval" in r for r in runs)
    assert test_job["env"]["TWEETEVAL_DIR"].endswith("/../shared/data/tweeteval-sentiment")
    # the SASL/ACL broker's prerequisites (tests/sasl_broker.py skips without them)
    assert test_job["env"]["BROKER_DIST_TGZ"].endswith("/kafka_2.13-4.1.0.tgz")
    assert any(s.get("uses", "").startswith("actions/setup-java@") for s in test_job["steps"])
    assert any("sha512sum" in r and '-o "$BROKER_DIST_TGZ"' in r for r in runs)
    (python,) = [s for s in test_job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
    assert python["with"]["python-version"] == "3.11"
    images = wf["jobs"]["images"]
    assert set(images["strategy"]["matrix"]["image"]) == set(ENTRY_MODULES)
    (build,) = [s for s in images["steps"] if s.get("uses", "").startswith("docker/build-push-action@")]
    assert build["with"]["push"] is False
    assert build["with"]["file"] == "Dockerfile.${{ matrix.image }}"
    for _, step in steps(wf):
        if "uses" in step:
            assert re.search(r"@v\d+$", step["uses"]), f"unpinned action {step['uses']}"


def test_train_workflow_gates_and_reports() -> None:
    wf = workflow("train.yml")
    assert wf["on"]["schedule"][0]["cron"]
    assert set(wf["on"]["workflow_dispatch"]["inputs"]) == {"autotune_duration", "min_f1"}
    ((_, step),) = [(j, s) for j, s in steps(wf) if "python -m training.train" in s.get("run", "")]
    command = step["run"].split("python -m training.train", 1)[1].split("\n\n")[0]
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-zA-Z0-9-]*)", command.split("code=$?")[0]))
    assert {"--push", "--min-f1", "--autotune-duration"} <= flags <= train_flags()
    assert step["env"]["HF_TOKEN"] == "${{ secrets.HF_TOKEN }}"
    assert f"{train_cli.EXIT_GATE_REFUSED})" in step["run"]  # the gate's exit code is reported by name
    (upload,) = [s for _, s in steps(wf) if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["if"] == "always()"
    assert {"artifacts/model/", "mlruns/"} <= set(upload["with"]["path"].split())
    assert wf["jobs"]["train"]["env"]["OUTPUT_DIR"] == "artifacts/model"
    # Inputs reach the shell through the environment, never pasted in (script injection).
    assert not [s for _, s in steps(wf) if "${{ inputs." in s.get("run", "")]


# --- CI data export -------------------------------------------------------------------------------------


def test_export_tweeteval_writes_the_layout_the_loader_reads(tmp_path: Path, data_dir: Path) -> None:
    rows = {
        "train": (["  good day ", "bad\nnight", "meh\r"], [2, 0, 1]),
        "val": (["fine"], [1]),
        "test": (["awful", "great"], [0, 2]),
    }
    assert export(tmp_path, rows) == {"train": 3, "val": 1, "test": 2}
    train = load_split("train", tmp_path)
    assert train.texts == ["good day", "bad night", "meh"]
    assert train.labels.tolist() == [2, 0, 1]
    assert {p.name for p in tmp_path.iterdir()} == {
        f"{s}_{k}.txt" for s in SPLITS for k in ("text", "labels")
    } | {"mapping.txt"}
    # Same mapping file as the shared cardiffnlp copy the tests normally read.
    assert (tmp_path / "mapping.txt").read_text("utf-8") == (data_dir / "mapping.txt").read_text("utf-8")
    assert len(LABELS) == 3


def test_env_check_catches_typos() -> None:
    """The checks above can fail: a misspelt setting, another process's setting, an unknown Kafka property."""
    assert unknown_env_names("worker", ["METRICS_HOTS", "API_PORT", "KAFKA_BOOTSRAP_SERVERS"]) == [
        "API_PORT",
        "KAFKA_BOOTSRAP_SERVERS",
        "METRICS_HOTS",
    ]
    assert unknown_env_names("worker", ["KAFKA_SECURITY_PROTOCOL", "METRICS_HOST"]) == []
    assert unknown_env_names("worker", ["KAFKA_SECURTY_PROTOCOL", "KAFKA_HOME"]) == [
        "KAFKA_HOME",
        "KAFKA_SECURTY_PROTOCOL",
    ]
    assert unknown_env_names("api", ["METRICS_HOST"]) == ["METRICS_HOST"]
    assert unknown_env_names("training", ["TWEETEVAL_DIR", "OUTPUT_DIR", "TWEETEVAL"]) == ["TWEETEVAL"]
