"""The built wheel is enough to start: it carries config.example.yaml, and ``cascade config
example`` prints it from an install that has no clone beside it.

The wheel is built from a copy of the sources (``pip wheel --no-deps``, the README's command)
and installed with ``--no-deps`` into a fresh virtual environment. Its dependencies are taken
from the test's own environment through a ``.pth`` line, which keeps this test to seconds
instead of a minute of installing: what is under test is the wheel's own files and entry
point, and the fresh environment's site-packages comes first on ``sys.path``, so
``cascade_cli`` is imported from the wheel (asserted), never from the clone.
"""

from __future__ import annotations

import os
import shutil
import site
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                       timeout=300, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{args}: {r.stdout}\n{r.stderr}"
    return r


def test_wheel_ships_the_example_and_config_example_prints_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "cascade_cli", src / "cascade_cli",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, src, cwd=tmp_path)
    wheels = list(dist.glob("cascade_cli-*.whl"))
    assert len(wheels) == 1, wheels

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    py = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps",
         "--no-index", wheels[0], cwd=tmp_path)
    purelib = _run(py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                   cwd=tmp_path).stdout.strip()
    (Path(purelib) / "zz_test_deps.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n", encoding="utf-8")

    elsewhere = tmp_path / "elsewhere"  # no clone, no config.yaml here
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CASCADE_") and k != "PYTHONPATH"}
    where = _run(py, "-c", "import cascade_cli; print(cascade_cli.__file__)", cwd=elsewhere,
                 env=env).stdout.strip()
    assert where.startswith(str(venv)), where  # the wheel's copy, not the clone's

    cascade = venv / "bin" / "cascade"
    printed = _run(cascade, "config", "example", cwd=elsewhere, env=env).stdout
    assert printed == (ROOT / "cascade_cli" / "config.example.yaml").read_text(encoding="utf-8")

    _run(cascade, "config", "example", "--output", elsewhere / "config.yaml", cwd=elsewhere,
         env=env)
    assert stat.S_IMODE((elsewhere / "config.yaml").stat().st_mode) == 0o600
    assert (elsewhere / "config.yaml").read_text(encoding="utf-8") == printed
