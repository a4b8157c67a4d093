"""Instructions per full cycle in the parent's store layer; prints one JSON object.

    python bench/bench_instructions.py --db postgres      # or --db sqlite
    python bench/bench_instructions.py --db postgres --cycles 600

Wall-clock figures on a shared 2-core machine move by tens of percent within minutes
(``bench/README.md``); an instruction count does not. This runs the store functions of one
full cycle (claim, task-status executing, upload of 20 articles, completion: what the four
node requests run, without HTTP or batching) in-process, under ``valgrind --tool=callgrind``,
twice: with N and with 2N cycles. The difference divided by N cancels start-up, imports and
set-up, and leaves the instructions the parent itself executes per cycle (the database
server's are not counted). Repeat runs agree to about 0.1%, so a change of 1% is visible.
It also reports the bytes the parent read and wrote per cycle through system calls (on
SQLite its WAL and database file traffic, which instructions do not see).
Needs valgrind (Debian: ``apt install valgrind``); a run takes about two minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _io() -> dict[str, int]:
    """Bytes this process has read and written through system calls (``/proc/self/io``):
    for SQLite, its WAL and database file traffic, which instructions do not count."""
    try:
        with open("/proc/self/io") as f:
            fields = dict(line.split(": ") for line in f.read().splitlines())
    except OSError:
        return {}
    return {"rchar": int(fields["rchar"]), "wchar": int(fields["wchar"])}


def cycles(kind: str, n: int, setup: int) -> None:
    """The measured program: a database with ``setup`` allocations, then ``n`` full cycles.
    Both measured runs set up the same number, so the set-up cancels out. Prints the I/O
    counters as its last line."""
    sys.path.insert(0, str(REPO))
    from bench.bench_parent import Db, _bulk_feeds, _bulk_nodes
    from cascade_cli.clock import SystemClock
    from cascade_cli.config import load_settings
    from cascade_cli.domain.dispatch import dispatch
    from cascade_cli.protocol import (
        MessageTaskIn,
        ReportCompletionIn,
        TaskStatusIn,
        UploadArticlesIn,
    )
    from cascade_cli.store import allocations, nodes, tasks
    from cascade_cli.store.engine import Store
    from tests.parent_http.procs import cli, write_config

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = Db(kind, folder)
        try:
            config = write_config(folder, db.url, batch_size=1, lease_ttl=600)
            cli(config, "init")
            settings = load_settings(config, environ={})
            store = Store.from_url(db.url)
            clock = SystemClock()
            key = _bulk_nodes(store, 1, 4, clock.now())[0]["api_key"]
            feeds = _bulk_feeds(store, setup, clock.now())
            with store.session() as s:
                task = tasks.create_task(s, clock.now(), MessageTaskIn(name="b", mps_id=feeds))
            with store.session() as s:
                dispatch(s, clock.now(), settings, task_id=task.id)
            if kind == "postgres":
                with store.engine.connect() as c:
                    c.exec_driver_sql("ANALYZE")
                    c.commit()

            def node(s: Any) -> Any:  # as a batch of one request finds its node
                nodes.read_ahead(s, [key])
                return nodes.find_row_by_key(s, key)

            for _ in range(n):
                with store.session() as s:
                    now = clock.now()
                    claimed = allocations.claim(s, now, node(s), settings)
                    pkg = allocations.package(s, claimed[0], now)
                aid, epoch, feed = pkg["allocation_id"], pkg["epoch"], pkg["feeds"][0]["id"]
                with store.session() as s:
                    allocations.set_status(s, clock.now(), node(s), TaskStatusIn(
                        allocation_id=aid, status="executing", epoch=epoch), settings)
                body = UploadArticlesIn.model_validate({
                    "allocation_id": aid, "epoch": epoch, "articles": [
                        {"feed_id": feed, "title": f"article {i}", "url": f"https://e/{aid}/{i}",
                         "content": "x" * 500, "publish_time": 1700000000 + i}
                        for i in range(20)]})
                with store.session() as s:
                    allocations.upload_articles(s, clock.now(), node(s), body, settings)
                body = ReportCompletionIn.model_validate({
                    "allocation_id": aid, "epoch": epoch, "article_count": 20,
                    "results": [{"feed_id": feed, "status": "success", "article_count": 20}]})
                with store.session() as s:
                    allocations.report_completion(s, clock.now(), node(s), body, settings)
            store.dispose()
        finally:
            db.drop()
    print(json.dumps(_io()))


def _instructions(kind: str, n: int, setup: int, folder: Path) -> tuple[int, dict[str, int]]:
    out = folder / f"callgrind.{n}.out"
    run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                          sys.executable, __file__, "--db", kind, "--run", str(n),
                          "--setup", str(setup)],
                         capture_output=True, text=True, cwd=REPO, timeout=1800)
    found = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode != 0 or not found:
        raise RuntimeError(f"the measured run failed ({run.returncode}): {run.stderr[-2000:]}")
    io = json.loads(run.stdout.strip().splitlines()[-1])
    return int(found.group(1)), io


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--cycles", type=int, default=300, help="N (default 300)")
    ap.add_argument("--run", type=int, help=argparse.SUPPRESS)  # the measured program
    ap.add_argument("--setup", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run is not None:
        cycles(args.db, args.run, args.setup or args.run)
        return 0
    if shutil.which("valgrind") is None:
        print(json.dumps({"error": "valgrind is not installed (apt install valgrind)"}))
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        setup = 2 * args.cycles
        small, small_io = _instructions(args.db, args.cycles, setup, folder)
        large, large_io = _instructions(args.db, 2 * args.cycles, setup, folder)
    io = {f"{name}_bytes_per_cycle": round((large_io[name] - small_io[name]) / args.cycles)
          for name in large_io if name in small_io}
    print(json.dumps({
        "db": args.db, "cycles": args.cycles,
        "instructions_per_cycle": round((large - small) / args.cycles),
        # read(2)/write(2) traffic of the parent process: on SQLite its database and WAL
        # I/O (page reads that missed its cache, WAL frames, checkpoints)
        **io,
        "method": "callgrind, (I(2N) - I(N)) / N, in-process store functions of claim, "
                  "executing, upload of 20 articles and completion; the parent's side only",
        "python": sys.version.split()[0], "cpu_count": os.cpu_count()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
