"""``cascade allocations --watch`` in a real terminal of 100 columns (tmux): the table and
its footer stay readable - one line per allocation, every column there, redrawn in place."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.parent_http.procs import REPO

pytestmark = pytest.mark.slow


def _tmux(sock: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True,
                          timeout=20, check=True).stdout


def test_allocations_watch_is_readable_at_100_columns(home: Path) -> None:
    if shutil.which("tmux") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is missing (.ci/run installs it)")
        pytest.skip("tmux is not installed")
    script = home.parent / "watch.sh"
    script.write_text("\n".join([
        "#!/bin/sh",
        f"cd {shlex.quote(str(home.parent))}",
        f"export CASCADE_CONFIG={shlex.quote(str(home))}",
        f"export PYTHONPATH={shlex.quote(str(REPO))}",
        "unset COLUMNS LINES NO_COLOR",
        f"{shlex.quote(sys.executable)} -m cascade_cli allocations --watch --interval 0.3 "
        "--count 40",
        "sleep 30",
    ]) + "\n")
    script.chmod(0o755)
    sock = f"cascade-test-{os.getpid()}"
    _tmux(sock, "new-session", "-d", "-s", "watch", "-x", "100", "-y", "30", str(script))
    try:
        deadline = time.monotonic() + 30
        screen = ""
        refreshes = 0
        while time.monotonic() < deadline:
            screen = _tmux(sock, "capture-pane", "-p", "-t", "watch")
            if "failed feeds" in screen:
                refreshes += 1
                if refreshes >= 4:  # the table has been redrawn a few times
                    break
            time.sleep(0.3)
        assert "failed feeds" in screen, screen
        lines = screen.splitlines()
        assert all(len(line) <= 100 for line in lines)
        header = next(ln for ln in lines if re.match(r"^\s*id\s+task\s", ln))
        for col in ("id", "task", "node", "status", "feeds", "try", "articles", "when",
                    "error"):
            assert re.search(rf"\b{col}\b", header), (col, header)
        rows = [ln for ln in lines if re.match(r"^[0-9a-f]{8}\s+morning\s+c1\s+completed", ln)]
        assert len(rows) == 2, screen  # one line each, nothing folded
        assert sum("completed (1/2 failed)" in ln for ln in rows) == 1, screen
        assert sum("ago" in ln for ln in rows) == 2, screen
        assert screen.count("Allocations (2 of 2)") == 1, screen  # redrawn in place
        footer = next(ln for ln in lines if "failed feeds" in ln)
        assert "pending 0" in footer and "failed feeds 1" in footer, footer
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True, timeout=20)
