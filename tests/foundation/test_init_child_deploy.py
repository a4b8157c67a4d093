"""``cascade init --child`` as an operator deploying a child uses it, in real processes: a
parent URL guessed from the listen address is warned about, parent.public_url is used when
set, the pasted block carries the node's capacity, and ``--output`` writes the child's
config.yaml with mode 0600 (doctor fails a config file holding a secret that others can
read)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cascade_cli.config import load_settings

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


@pytest.fixture
def cascade(tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADE_")}
    env["COLUMNS"] = "100"

    def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "cascade"), "--config", str(config), *args],
                              cwd=tmp_path, capture_output=True, text=True, env=env,
                              timeout=60, stdin=subprocess.DEVNULL)

    return run


def _block(stdout: str) -> dict:
    start = stdout.index("cascade:\n")
    end = stdout.index("\n\n", start)
    return yaml.safe_load(stdout[start:end])


def test_guessed_url_warns_and_the_block_carries_the_capacity(tmp_path: Path,
                                                             cascade) -> None:
    cfg = tmp_path / "parent.yaml"
    cfg.write_text("data_dir: ./state\n", encoding="utf-8")
    r = cascade(cfg, "init", "--child", "edge-1", "--capacity", "4")
    assert r.returncode == 0, r.stderr
    warning = " ".join(r.stderr.split())
    assert "warning: the child's parent_api_url is http://127.0.0.1:8001" in warning
    assert "parent.public_url" in warning and "--parent-url URL" in warning
    block = _block(r.stdout)
    assert block["child"] == {"capacity": 4}
    assert block["cascade"]["parent_api_url"] == "http://127.0.0.1:8001"

    # The pasted block is a whole child configuration: it loads, capacity included.
    child_cfg = tmp_path / "child.yaml"
    child_cfg.write_text(yaml.safe_dump(block), encoding="utf-8")
    settings = load_settings(child_cfg, environ={})
    assert settings.child.capacity == 4 and settings.cascade.node_type == "child"


def test_public_url_and_output_file_mode_0600(tmp_path: Path, cascade) -> None:
    cfg = tmp_path / "parent.yaml"
    cfg.write_text("data_dir: ./state\nparent:\n  public_url: https://cascade.example.org\n",
                   encoding="utf-8")
    out = tmp_path / "edge-2.yaml"
    r = cascade(cfg, "init", "--child", "edge-2", "--capacity", "3", "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    data = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert data["cascade"]["parent_api_url"] == "https://cascade.example.org"
    assert data["child"] == {"capacity": 3}
    assert data["cascade"]["api_secret"] not in r.stdout + r.stderr  # only in the file

    # An existing file is never overwritten, and no node is created without its file.
    again = cascade(cfg, "init", "--child", "edge-3", "--output", str(out))
    assert again.returncode == 2 and "exists" in again.stderr, again.stderr
    listed = json.loads(cascade(cfg, "list-credentials", "--json").stdout)["list"]
    assert [n["name"] for n in listed] == ["edge-2"]
    assert listed[0]["max_capacity"] == 3
