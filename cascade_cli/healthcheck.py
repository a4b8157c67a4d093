"""The container image's HEALTHCHECK, for either role of the one image.

``python -m cascade_cli.healthcheck`` finds the role from the container's main process
(PID 1 runs ``cascade serve-parent`` or ``cascade run-child``; ``--role`` overrides it):

- parent: ``GET /healthz`` on 127.0.0.1 and ``parent.port`` answers 200;
- child: the main process is alive and not a zombie, and - when ``child.metrics_port`` is
  set - its ``/metrics`` answers 200 (served from inside the child process). A child has no
  other HTTP port, so before this a child container probed the parent's port and turned
  unhealthy. Whether the child reaches its parent is a network question that
  ``cascade doctor --role child --check child.tcp,child.http,child.credentials`` answers (the
  compose file uses that); this check stays local and cheap.

Exit 0 healthy, 1 unhealthy, with one line saying why (``docker inspect`` shows it).
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from pathlib import Path

from cascade_cli.config import load_settings
from cascade_cli.errors import ConfigError

# Listening on every address: probe loopback, which every such listener answers.
_WILDCARDS = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104 - compared, not bound


def role_of(pid: int) -> str:
    """``child`` when the process runs ``run-child``, else ``parent`` (the image's CMD)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "parent"
    return "child" if b"run-child" in argv else "parent"


def process_alive(pid: int) -> str | None:
    """None when ``pid`` runs, else why not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return f"process {pid} is gone"
    state = stat.rsplit(")", 1)[-1].split()[0]  # the name in (...) may hold spaces
    return f"process {pid} is a zombie" if state in ("Z", "X") else None


def http_ok(url: str) -> str | None:
    """None when ``url`` answers 200 within 4 s, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:  # noqa: S310 - our own URL
            return None if resp.status == 200 else f"{url} answered {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{url}: {getattr(exc, 'reason', None) or exc}"


def check(role: str, pid: int) -> str | None:
    """None when healthy, else the reason."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        return f"configuration: {exc}"
    if role == "parent":
        host = settings.parent.host
        host = "127.0.0.1" if host in _WILDCARDS else host.strip("[]")
        host = f"[{host}]" if ":" in host else host
        return http_ok(f"http://{host}:{settings.parent.port}/healthz")
    problem = process_alive(pid)
    if problem is None and settings.child.metrics_port:
        host = settings.child.metrics_host
        host = "127.0.0.1" if host in _WILDCARDS else host
        host = f"[{host}]" if ":" in host else host
        problem = http_ok(f"http://{host}:{settings.child.metrics_port}/metrics")
    return problem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cascade_cli.healthcheck",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--role", choices=("parent", "child"),
                        help="Default: from the main process's command line.")
    parser.add_argument("--pid", type=int, default=1,
                        help="The main process (default 1, a container's entrypoint).")
    args = parser.parse_args(argv)
    role = args.role or role_of(args.pid)
    problem = check(role, args.pid)
    if problem:
        print(f"unhealthy ({role}): {problem}", file=sys.stderr)
        return 1
    print(f"healthy ({role})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
