"""The installed command as a user runs it: a real process, from another folder, with
CASCADE_CONFIG, through both ``python -m cascade_cli`` and the ``cascade`` script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _cascade_script() -> str:
    script = BIN / "cascade"
    if script.exists():
        return str(script)
    found = shutil.which("cascade")
    if not found:
        pytest.fail("the 'cascade' console script is not installed (pip install -e .)")
    return found


ENTRY_POINTS = {
    "python -m cascade_cli": [sys.executable, "-m", "cascade_cli"],
    "cascade script": [_cascade_script()],
}


@pytest.fixture
def run(tmp_path: Path, parent_dir: Path):  # type: ignore[no-untyped-def]
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADE_")
           or k.startswith("CASCADE_TEST_")}
    env.update({"CASCADE_CONFIG": str(parent_dir / "config.yaml"), "COLUMNS": "250",
                "PYTHONPATH": ""})

    def invoke(entry: str, *args: str, extra_env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ENTRY_POINTS[entry], *args], cwd=elsewhere, capture_output=True,
                              text=True, timeout=60, env={**env, **(extra_env or {})},
                              stdin=subprocess.DEVNULL)

    return invoke


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_init_child_then_list_credentials_in_real_processes(run, entry, parent_dir) -> None:
    r = run(entry, "init")
    assert r.returncode == 0, r.stderr
    assert (parent_dir / "state" / "cascade.db").exists()  # beside the config, not in cwd
    assert not (parent_dir.parent / "cwd" / "data").exists()

    r = run(entry, "init", "--child", "proc-1", "--json")
    assert r.returncode == 0, r.stderr
    creds = json.loads(r.stdout)
    assert creds["node_name"] == "proc-1"

    r = run(entry, "init", "--child", "proc-2")
    assert r.returncode == 0, r.stderr
    assert "api_secret:" in r.stdout and "cascade:\n  enabled: true" in r.stdout

    listed = run(entry, "list-credentials", "--json")
    assert listed.returncode == 0, listed.stderr
    names = [v["name"] for v in json.loads(listed.stdout)["list"]]
    assert names == ["proc-1", "proc-2"]

    table = run(entry, "list-credentials")
    assert table.returncode == 0
    line = next(ln for ln in table.stdout.splitlines() if " proc-1 " in ln)
    assert creds["api_key"] in line and "never seen" in line
    for out in (listed, table):
        assert creds["api_secret"] not in out.stdout + out.stderr
        assert "hmac-sha256" not in out.stdout + out.stderr


def test_both_entry_points_print_the_same_help(run) -> None:
    a = run("python -m cascade_cli", "--help")
    b = run("cascade script", "--help")
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout
    for command in ("init", "list-credentials", "serve-parent", "run-child", "dispatch",
                    "allocations", "doctor", "nodes"):
        assert command in a.stdout
    assert "Exit codes" in a.stdout


@pytest.mark.parametrize(("args", "extra_env", "code", "needle"), [
    (("--config", "/nonexistent/cascade.yaml", "init"), {}, 2, "config file not found"),
    (("list-credentials",), {"CASCADE_DATABASE_URL": "postgresql://127.0.0.1:1/x"}, 1,
     "database unreachable"),
    (("nodes", "show", "ghost"), {}, 1, "node not found: ghost"),
    (("init", "--child", "x"), {"CASCADE_CASCADE__HEARTBEAT_INTERVAL": "abc"}, 2,
     "cascade.heartbeat_interval: must be a positive number of seconds"),
])
def test_bad_input_in_a_real_process_is_one_line(run, args, extra_env, code, needle) -> None:
    if "ghost" in args:
        run("cascade script", "init")
    r = run("cascade script", *args, extra_env=extra_env)
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], r.stderr
