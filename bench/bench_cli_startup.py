"""How long ``cascade --help`` takes: wall and CPU time of a fresh interpreter, median of N.

    python bench/bench_cli_startup.py [-n 20] [-- ARGS...]   (default ARGS: --help)

The CPU time (user + system of the child) is the steadier number on a busy machine; the
target for ``cascade --help`` is under 0.4 s. ``python -X importtime -m cascade_cli --help``
shows where the time goes; ``tests/foundation/test_cli_startup.py`` keeps the heavy packages
out of the start-up.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

# As an installed package runs: with bytecode (the warm-up run writes it, to a cache of its
# own, whatever PYTHONDONTWRITEBYTECODE the shell has).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV.update(COLUMNS="100", PYTHONPYCACHEPREFIX=tempfile.mkdtemp(prefix="cascade-bench-pyc-"))


def run_once(args: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # From a neutral folder: ``-m`` puts the working directory first on sys.path, so run from
    # another checkout it would time that checkout's code, not the interpreter's install.
    subprocess.run([sys.executable, "-m", "cascade_cli", *args], check=True,
                   stdout=subprocess.DEVNULL, env=ENV, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="runs (default 20)")
    parser.add_argument("args", nargs="*", default=["--help"])
    opts = parser.parse_args()
    run_once(opts.args)  # warm the file cache and the bytecode
    walls, cpus = zip(*(run_once(opts.args) for _ in range(opts.n)), strict=True)
    print(f"cascade {' '.join(opts.args)}: median wall {statistics.median(walls):.3f} s, "
          f"median CPU {statistics.median(cpus):.3f} s, min wall {min(walls):.3f} s "
          f"({opts.n} runs)")


if __name__ == "__main__":
    main()
