"""The container image, the compose file and the systemd units that ship in the repository.

Without the tools: the Dockerfile copies only files that exist, runs as a non-root user and
has a health check whose command really tells a live parent from a dead one; the compose file
parses and wires a parent on PostgreSQL, two children and the feed server with health checks;
its setup script runs for real (against PostgreSQL, twice: it must be safe to rerun).
With the tools: ``docker build`` when a Docker engine answers ``docker info`` (skipped with that
reason otherwise, also under CI: a machine without an engine cannot build images), and
``systemd-analyze verify`` on the units when systemd-analyze exists.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cascade_cli.cli.main import app
from cascade_cli.store import nodes as node_store
from cascade_cli.store import tasks as task_store
from cascade_cli.store.engine import Store

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
SETUP = ROOT / "deploy" / "compose" / "setup.sh"
UNITS = ROOT / "deploy" / "systemd"
BIN = Path(sys.executable).parent


# --- Dockerfile -----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_copies_existing_files_and_runs_unprivileged() -> None:
    steps = dockerfile_instructions()
    copies = [args for word, args in steps if word == "COPY" and "--from" not in args]
    assert copies
    ignored = [line.strip() for line in
               (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.startswith("#")]
    for args in copies:
        *sources, _dest = args.split()
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: no such file in the build context"
            assert src not in ignored, f"COPY {src} is excluded by .dockerignore"
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    assert any(word == "HEALTHCHECK" for word, _ in steps)
    entry = next(args for word, args in steps if word == "ENTRYPOINT")
    assert json.loads(entry) == ["cascade"]
    assert json.loads(next(args for word, args in steps if word == "CMD")) == ["serve-parent"]
    # The extras it installs exist in pyproject.toml.
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for extra in re.findall(r"cascade-cli\[([a-z,]+)\]", DOCKERFILE.read_text()):
        for name in extra.split(","):
            assert re.search(rf"^{name} = \[", pyproject, re.M), name


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200 if self.path in ("/healthz", "/metrics") else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def healthcheck_argv() -> list[str]:
    """The image's HEALTHCHECK command, with this interpreter for the image's python."""
    args = next(a for w, a in dockerfile_instructions() if w == "HEALTHCHECK")
    argv = json.loads(args[args.index("CMD") + 3:].strip())
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def healthcheck_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADE_")}
    return {**env, "CASCADE_DATA_DIR": str(tmp_path / "data"), **extra}


def test_dockerfile_healthcheck_command_tells_up_from_down(health_server: int,
                                                           tmp_path: Path) -> None:
    argv = [*healthcheck_argv(), "--role", "parent"]  # PID 1 here is not a container's
    env = healthcheck_env(tmp_path, CASCADE_PARENT__PORT=str(health_server))
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 0 and "healthy (parent)" in r.stdout, r.stdout + r.stderr
    with socket_closed_port() as port:
        env["CASCADE_PARENT__PORT"] = str(port)
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30,
                           cwd=tmp_path)
        assert r.returncode == 1 and "unhealthy (parent)" in r.stderr, r.stdout + r.stderr


def test_dockerfile_healthcheck_is_healthy_for_a_live_child(health_server: int,
                                                            tmp_path: Path) -> None:
    """A 'docker run ... run-child' container: the role comes from the main process's
    command line; no parent port is probed (a child serves none), the child process must
    live, and its /metrics must answer when child.metrics_port is set."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                              "run-child"])
    try:
        argv = [*healthcheck_argv(), "--pid", str(child.pid)]
        env = healthcheck_env(tmp_path)

        def probe(**extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(argv, env={**env, **extra}, capture_output=True, text=True,
                                  timeout=30, cwd=tmp_path)

        r = probe()
        assert r.returncode == 0 and "healthy (child)" in r.stdout, r.stdout + r.stderr
        assert probe(CASCADE_CHILD__METRICS_PORT=str(health_server)).returncode == 0
        with socket_closed_port() as port:
            r = probe(CASCADE_CHILD__METRICS_PORT=str(port))
            assert r.returncode == 1 and "/metrics" in r.stderr, r.stdout + r.stderr
    finally:
        child.kill()
        child.wait(10)
    argv.extend(["--role", "child"])  # its command line is gone with it
    r = probe()
    assert r.returncode == 1 and f"process {child.pid} is gone" in r.stderr, r.stderr


class socket_closed_port:  # noqa: N801 - used as a context manager
    """A port on which nothing listens (bound without listen, so no one else takes it)."""

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


# --- compose ----------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def test_compose_wires_parent_on_postgres_two_children_and_feeds() -> None:
    c = compose()
    services = c["services"]
    assert set(services) == {"db", "feeds", "setup", "parent", "child-1", "child-2"}
    for name in ("db", "feeds", "parent", "child-1", "child-2"):
        hc = services[name].get("healthcheck", {})
        assert hc.get("test") and not hc.get("disable"), f"{name} has no health check"
    build = services["parent"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert services["parent"]["environment"]["CASCADE_DATABASE_URL"].startswith("postgresql://")
    assert services["parent"]["command"] == ["serve-parent"]
    assert services["parent"]["depends_on"]["setup"]["condition"] == \
        "service_completed_successfully"
    configs = set()
    for name in ("child-1", "child-2"):
        child = services[name]
        assert child["command"] == ["run-child"]
        assert child["depends_on"]["parent"]["condition"] == "service_healthy"
        assert "child-config:/config:ro" in child["volumes"]
        assert "parent-data:/data" not in child["volumes"]  # no admin secret on a child
        configs.add(child["environment"]["CASCADE_CONFIG"])
        assert child["healthcheck"]["test"][:2] == ["CMD", "cascade"]
    assert configs == {"/config/child-1.yaml", "/config/child-2.yaml"}
    assert services["feeds"]["entrypoint"][:3] == ["python", "-m", "cascade_cli.demo.server"]
    for service in services.values():
        for volume in service.get("volumes", []):
            src = volume.split(":")[0]
            if src.startswith("."):
                assert (COMPOSE.parent / src).exists(), volume
            else:
                assert src in c["volumes"], volume
        if service.get("image", "").startswith("cascade"):
            assert service.get("user") in (None, "cascade", "10001")  # the image's user


def test_compose_child_health_check_fails_without_a_parent(tmp_path: Path) -> None:
    """The children's health check, run as compose runs it: a parent that does not answer
    makes it fail (a check that only skipped would call a cut-off child healthy)."""
    test = compose()["services"]["child-1"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "cascade"]
    cfg = tmp_path / "child-1.yaml"
    with socket_closed_port() as port:
        cfg.write_text(yaml.safe_dump({"cascade": {
            "enabled": True, "node_type": "child", "parent_api_url": f"http://127.0.0.1:{port}",
            "api_key": "CN" + "a1" * 16, "api_secret": "CS" + "b2" * 20}}), encoding="utf-8")
        cfg.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADE_")}
        env.update({"CASCADE_CONFIG": str(cfg), "CASCADE_DATA_DIR": str(tmp_path / "data")})
        r = subprocess.run([str(BIN / "cascade"), *test[2:]], capture_output=True, text=True,
                           timeout=60, env=env, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "child.tcp" in r.stdout and " failed" in r.stdout, r.stdout


@pytest.mark.slow
def test_setup_script_runs_and_reruns_on_postgres(tmp_path: Path, pg_url: str) -> None:
    """The compose 'setup' service's script, run here against PostgreSQL as the container
    would run it (same environment variables; /config and /data are folders here)."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADE_")}
    env.update({"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
                "CASCADE_DATABASE_URL": pg_url, "CASCADE_DATA_DIR": str(tmp_path / "data"),
                "CASCADE_PARENT__PUBLIC_URL": "http://parent:8001",
                "CHILD_CONFIG_DIR": str(config_dir), "FEEDS_URL": "http://feeds:8900",
                "COLUMNS": "100"})
    for attempt in (1, 2):
        r = subprocess.run(["sh", str(SETUP)], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=180, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, f"run {attempt}:\n{r.stdout}\n{r.stderr}"
    for name in ("child-1", "child-2"):
        path = config_dir / f"{name}.yaml"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert data["cascade"]["parent_api_url"] == "http://parent:8001"
        assert data["cascade"]["node_type"] == "child" and data["child"]["capacity"] == 2
    store = Store.from_url(pg_url)
    try:
        with store.session() as session:
            assert sorted(n.name for n in node_store.list_nodes(session)) == \
                ["child-1", "child-2"]
            task = task_store.get_task(session, "demo")
            assert len(task.mps_id) == 10 and task.cron_exp == "*/5 * * * *"
    finally:
        store.dispose()


# --- systemd ----------------------------------------------------------------------------------


def units() -> list[Path]:
    return sorted(UNITS.glob("*.service"))


def unit_settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
             "ProtectHome": "yes", "PrivateDevices": "yes"}


def test_units_are_hardened_and_run_cascade() -> None:
    found = {p.name for p in units()}
    assert {"cascade-parent.service", "cascade-child@.service"} <= found, found
    for path in units():
        s = unit_settings(path)
        for key, value in HARDENING.items():
            assert s.get(key) == [value], (path.name, key, s.get(key))
        assert s.get("DynamicUser") == ["yes"] or s.get("User"), path.name
        assert s.get("ReadWritePaths") or s.get("StateDirectory"), path.name
        exec_start = shlex.split(s["ExecStart"][0])
        assert exec_start[0].endswith("/cascade"), exec_start
        assert exec_start[-1] in ("serve-parent", "run-child"), exec_start
        # The command line parses (the CLI accepts its options; in-process, it is not output).
        r = CliRunner().invoke(app, [*exec_start[1:], "--help"])
        assert r.exit_code == 0, (path.name, r.output)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not "
                    "installed here")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own parser: unknown keys, bad values and a missing ExecStart binary fail.
    ExecStart names /opt/cascade/venv/bin/cascade; the copies verified here name this test's
    installed cascade instead (when that path does not exist here), nothing else changed."""
    names = []
    for path in units():
        text = path.read_text(encoding="utf-8")
        binary = shlex.split(unit_settings(path)["ExecStart"][0])[0]
        if not Path(binary).exists():
            text = text.replace(f"ExecStart={binary} ", f"ExecStart={BIN / 'cascade'} ")
        (tmp_path / path.name).write_text(text, encoding="utf-8")
        name = path.name.replace("@.service", "@edge-1.service")
        if name != path.name:
            (tmp_path / name).symlink_to(path.name)
        names.append(name)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *[str(tmp_path / n)
                                                                   for n in names]],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    complaints = [line for line in (r.stdout + r.stderr).splitlines() if "cascade" in line]
    assert r.returncode == 0 and not complaints, r.stdout + r.stderr


# --- Docker, when an engine answers -----------------------------------------------------------


def _docker_engine() -> str | None:
    """None when an engine answers, else the reason to skip."""
    if not shutil.which("docker"):
        return "docker is not installed"
    r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or not r.stdout.strip():
        return "no Docker engine answers 'docker info' (client only)"
    return None


@pytest.mark.slow
@pytest.mark.timeout(1500)  # a first build downloads the base image and every wheel
def test_docker_image_builds_and_runs(tmp_path: Path) -> None:
    reason = _docker_engine()
    if reason:
        pytest.skip(reason)
    tag = "cascade:test"
    build = subprocess.run(["docker", "build", "-t", tag, str(ROOT)], capture_output=True,
                           text=True, timeout=1200)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    example = subprocess.run(["docker", "run", "--rm", tag, "config", "example"],
                             capture_output=True, text=True, timeout=120)
    assert example.returncode == 0, example.stderr
    assert example.stdout == (ROOT / "cascade_cli" / "config.example.yaml").read_text(
        encoding="utf-8")
    user = subprocess.run(["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"],
                          capture_output=True, text=True, timeout=120)
    assert user.stdout.strip() not in ("", "0"), user.stdout


def _docker_compose() -> str | None:
    """None when the compose plugin answers, else the reason to skip."""
    if not shutil.which("docker"):
        return "docker is not installed"
    r = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        return f"'docker compose version' fails: {(r.stderr or r.stdout).strip()[:200]}"
    return None


@pytest.mark.slow
def test_docker_compose_config_is_valid() -> None:
    """Compose's own parser on the shipped file: unknown keys, bad anchors or interpolation
    fail here. It needs the compose plugin, not an engine."""
    reason = _docker_compose()
    if reason:
        pytest.skip(reason)
    r = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.timeout(1500)  # builds the image when the other test has not
def test_docker_serve_parent_turns_healthy(tmp_path: Path) -> None:
    """The image as a parent (SQLite in a fresh volume): its own HEALTHCHECK reports
    'healthy' (health checks every 2 s here instead of the image's 30 s)."""
    reason = _docker_engine()
    if reason:
        pytest.skip(reason)
    tag = "cascade:test"
    build = subprocess.run(["docker", "build", "-t", tag, str(ROOT)], capture_output=True,
                           text=True, timeout=1200)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    name = f"cascade-health-{os.getpid()}"
    volume = f"{name}-data"
    init = subprocess.run(["docker", "run", "--rm", "-v", f"{volume}:/data", tag, "init"],
                          capture_output=True, text=True, timeout=300)
    assert init.returncode == 0, init.stdout + init.stderr
    try:
        started = subprocess.run(
            ["docker", "run", "-d", "--name", name, "-v", f"{volume}:/data",
             "--health-interval", "2s", "--health-start-period", "60s", tag, "serve-parent"],
            capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stderr
        status = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = subprocess.run(
                ["docker", "inspect", "--format", "{{.State.Health.Status}}", name],
                capture_output=True, text=True, timeout=60).stdout.strip()
            if status in ("healthy", "unhealthy"):
                break
            time.sleep(2)
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True,
                              timeout=60)
        assert status == "healthy", f"{status}\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=120)
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True,
                       timeout=120)
