"""Parent benchmark; prints one JSON object.

    python bench/bench_parent.py --db sqlite        # or --db postgres
    python bench/bench_parent.py --db sqlite --only planning
    python bench/bench_parent.py --db postgres --only cycle --repeat 5   # median of 5 runs

Parts:
* ``cycle``: one real ``cascade serve-parent`` process; 16 concurrent clients (asyncio, a
  minimal keep-alive HTTP/1.1 client so the load generator is not the bottleneck; plain AK-SK,
  16 nodes) each loop claim -> task-status executing -> upload 20 articles
  -> report-completion until no work is left. Reports allocations/s and claim latency.
  ``--repeat N`` runs it N times, each on a fresh database and parent, and reports the run
  with the median throughput, every run's figures and ``reference_ms`` measured right after
  each run: the shared development machine changes speed within minutes, so one run says
  little (``bench/README.md``).
* ``wake``: a client long-polls ``claim-task?wait=30``; an API ``dispatch-task`` creates one
  allocation; latency from sending the dispatch to receiving the claim answer.
* ``planning``: in-process ``dispatch`` of one task of 100,000 feeds over 1,000 online nodes:
  wall time, then peak Python allocations (tracemalloc) on a second, forced dispatch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import tracemalloc
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from sqlalchemy import create_engine, insert, text  # noqa: E402

from bench.machine import StealMeter, machine_report, reference_ms  # noqa: E402
from cascade_cli import auth  # noqa: E402
from cascade_cli.clock import SystemClock  # noqa: E402
from cascade_cli.config import load_settings  # noqa: E402
from cascade_cli.protocol import MessageTaskIn  # noqa: E402
from cascade_cli.store import migrate, tasks  # noqa: E402
from cascade_cli.store.engine import Store  # noqa: E402
from cascade_cli.store.models import Feed, Node  # noqa: E402
from tests.parent_http.procs import ParentProc, cli, write_config  # noqa: E402

PG_ADMIN = os.environ.get("CASCADE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
P = "/api/v1/cascade"


def cpu_seconds(pid: int) -> float | None:
    """User+system CPU time of a process (Linux): a figure that other load on the machine
    disturbs much less than wall-clock throughput."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_cpu(db: Db) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving the benchmark's database, where the
    server runs on this machine (its processes are readable); empty otherwise. The parent's
    own CPU leaves out the database's share of the work, which on PostgreSQL is about half."""
    if db.name is None:
        return {}
    admin = create_engine(PG_ADMIN)
    try:
        with admin.connect() as c:
            pids = list(c.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :d"),
                                  {"d": db.name}).scalars())
    finally:
        admin.dispose()
    found = {pid: cpu_seconds(pid) for pid in pids}
    return {pid: cpu for pid, cpu in found.items() if cpu is not None}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


class Db:
    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.name = None
        if kind == "sqlite":
            self.url = f"sqlite:///{folder / 'bench.db'}"
        else:
            self.name = f"cascade_bench_{uuid.uuid4().hex[:10]}"
            admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{self.name}"'))
            admin.dispose()
            self.url = PG_ADMIN.rsplit("/", 1)[0] + f"/{self.name}"

    def drop(self) -> None:
        if self.name:
            admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            admin.dispose()


def _bulk_nodes(store: Store, n: int, capacity: int, now: Any,
                online: bool = True) -> list[dict[str, str]]:
    creds, rows = [], []
    for i in range(n):
        c = auth.generate_credentials()
        stored = auth.stored_secret_for(c.api_secret) if n <= 100 else None
        rows.append({"id": uuid.uuid4().hex, "name": f"bench-{i}", "description": "",
                     "api_key": c.api_key,
                     "secret_hash": stored.secret_hash if stored else auth.hash_secret(
                         c.api_secret),
                     "public_key": stored.public_key if stored else None,
                     "enabled": True, "max_capacity": capacity,
                     "last_heartbeat_at": now if online else None,
                     "created_at": now, "updated_at": now})
        creds.append({"api_key": c.api_key, "api_secret": c.api_secret})
    with store.session() as s:
        s.execute(insert(Node), rows)
    return creds


def _bulk_feeds(store: Store, n: int, now: Any, prefix: str = "B") -> list[str]:
    ids = [f"{prefix}{i}" for i in range(n)]
    with store.session() as s:
        for start in range(0, n, 5000):
            s.execute(insert(Feed), [{"id": f, "mp_name": f, "url": f"https://example.com/{f}",
                                      "kind": "rss", "status": 1, "created_at": now,
                                      "updated_at": now} for f in ids[start:start + 5000]])
    return ids


# --- full cycle ------------------------------------------------------------------------------


class RawHttp:
    """A minimal HTTP/1.1 keep-alive client over one asyncio stream.

    The load generator shares this 2-core machine with the parent; httpx costs about 1 ms of
    CPU per request, so 16 httpx clients in one process saturate a core before the parent
    does and the benchmark then measures the client. This client costs a few tens of
    microseconds per request (it only ever talks to our own server: Content-Length bodies,
    no chunking, no redirects)."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        payload = b"" if body is None else json.dumps(body).encode()
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
        self.writer.write(head.encode() + payload)
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        data = await self.reader.readexactly(length)
        return status, json.loads(data)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _client(url: str, cred: dict[str, str], stats: dict[str, Any]) -> None:
    parsed = httpx.URL(url)
    c = RawHttp(parsed.host, parsed.port or 80,
                {"Authorization": f"AK-SK {cred['api_key']}:{cred['api_secret']}"})
    try:
        while True:
            t0 = time.perf_counter()
            status, doc = await c.request("POST", P + "/claim-task")
            stats["claim_ms"].append((time.perf_counter() - t0) * 1000)
            assert status == 200, doc
            pkg = doc["data"]
            if pkg is None:
                return
            aid, epoch = pkg["allocation_id"], pkg["epoch"]
            feed = pkg["feeds"][0]["id"]
            status, doc = await c.request("PUT", P + "/task-status", {
                "allocation_id": aid, "status": "executing", "epoch": epoch})
            assert status == 200, doc
            arts = [{"feed_id": feed, "title": f"article {i}", "url": f"https://e/{aid}/{i}",
                     "content": "x" * 500, "publish_time": 1700000000 + i} for i in range(20)]
            status, doc = await c.request("POST", P + "/upload-articles", {
                "allocation_id": aid, "articles": arts, "epoch": epoch})
            assert status == 200, doc
            status, doc = await c.request("POST", P + "/report-completion", {
                "allocation_id": aid, "task_id": pkg["task_id"], "epoch": epoch,
                "article_count": 20, "results": [{"feed_id": feed, "status": "success",
                                                  "article_count": 20}]})
            assert status == 200, doc
            stats["done"] += 1
    finally:
        c.close()


def bench_cycle(kind: str, n_allocs: int, clients: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = Db(kind, folder)
        try:
            config = write_config(folder, db.url, batch_size=1, lease_ttl=600,
                                  scheduler={"enabled": False}, notify={"enabled": False})
            cli(config, "init")
            store = Store.from_url(db.url)
            now = SystemClock().now()
            creds = _bulk_nodes(store, clients, 4, now)
            ids = _bulk_feeds(store, n_allocs, now)
            with store.session() as s:
                task = tasks.create_task(s, now, MessageTaskIn(name="bench", mps_id=ids))
            from cascade_cli.domain.dispatch import dispatch

            settings = load_settings(config, environ={})
            with store.session() as s:
                created = dispatch(s, now, settings, task_id=task.id).allocations_created
            if kind == "postgres":
                # Table statistics, as autovacuum gathers them within a minute of a bulk load
                # on a running server: without them the planner takes the tables just filled
                # for empty ones, and measures plans no deployment runs for long.
                with store.engine.connect() as c:
                    c.exec_driver_sql("ANALYZE")
                    c.commit()
            store.dispose()
            with ParentProc(config, "--no-scheduler", "--no-notifier") as proc:
                stats: dict[str, Any] = {"claim_ms": [], "done": 0}

                async def main() -> float:
                    t0 = time.perf_counter()
                    await asyncio.gather(*[_client(proc.url, creds[i], stats)
                                           for i in range(clients)])
                    return time.perf_counter() - t0

                cpu0 = cpu_seconds(proc.proc.pid)
                db_cpu0 = backend_cpu(db)
                client_cpu0 = time.process_time()
                elapsed = asyncio.run(main())
                client_cpu = time.process_time() - client_cpu0
                cpu1 = cpu_seconds(proc.proc.pid)
                db_cpu1 = backend_cpu(db)
        finally:
            db.drop()
    lat = stats["claim_ms"]
    return {"allocations": created, "completed": stats["done"], "clients": clients,
            "seconds": round(elapsed, 2),
            "allocs_per_s": round(stats["done"] / elapsed, 1),
            "requests_per_s": round(stats["done"] * 4 / elapsed, 1),
            "claim_ms_p50": round(pct(lat, 50), 2), "claim_ms_p99": round(pct(lat, 99), 2),
            "server_cpu_ms_per_alloc": (round((cpu1 - cpu0) * 1000 / max(1, stats["done"]), 2)
                                        if cpu0 is not None and cpu1 is not None else None),
            "load_generator_cpu_ms_per_alloc": round(client_cpu * 1000 / max(1, stats["done"]), 2),
            # backends that started during the run count from zero
            "database_cpu_ms_per_alloc": (round(sum(cpu - db_cpu0.get(pid, 0.0)
                                                    for pid, cpu in db_cpu1.items())
                                                * 1000 / max(1, stats["done"]), 2)
                                          if db_cpu1 else None),
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def bench_cycles(kind: str, n_allocs: int, clients: int, repeat: int) -> dict[str, Any]:
    """``bench_cycle`` ``repeat`` times: the median run in full, and each run's main figures
    with the machine's speed just after it."""
    runs = []
    for i in range(repeat):
        run = bench_cycle(kind, n_allocs, clients)
        run["reference_ms"] = reference_ms()
        runs.append(run)
        if repeat > 1:
            print(f"cycle run {i + 1}/{repeat}: {run['allocs_per_s']} allocations/s "
                  f"(reference_ms {run['reference_ms']})", file=sys.stderr)
    ranked = sorted(runs, key=lambda r: r["allocs_per_s"])
    median = dict(ranked[(len(ranked) - 1) // 2])  # the lower middle of an even count
    if repeat > 1:
        keys = ("allocs_per_s", "claim_ms_p99", "server_cpu_ms_per_alloc",
                "database_cpu_ms_per_alloc", "reference_ms")
        median["runs"] = [{k: r[k] for k in keys} for r in runs]
        median["allocs_per_s_min"] = ranked[0]["allocs_per_s"]
        median["allocs_per_s_max"] = ranked[-1]["allocs_per_s"]
    return median


# --- long-poll wake-up -------------------------------------------------------------------------


def bench_wake(kind: str, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = Db(kind, folder)
        try:
            config = write_config(folder, db.url, scheduler={"enabled": False},
                                  notify={"enabled": False})
            cli(config, "init")
            token = cli(config, "token", "create").stdout.strip()
            store = Store.from_url(db.url)
            now = SystemClock().now()
            cred = _bulk_nodes(store, 1, 4, now)[0]
            ids = _bulk_feeds(store, 1, now)
            with store.session() as s:
                task = tasks.create_task(s, now, MessageTaskIn(name="wake", mps_id=ids))
            store.dispose()
            with ParentProc(config, "--no-scheduler", "--no-notifier") as proc:
                wake_from_send: list[float] = []
                wake_from_ack: list[float] = []

                async def main() -> None:
                    node_h = {"Authorization": f"AK-SK {cred['api_key']}:{cred['api_secret']}"}
                    admin_h = {"Authorization": f"Bearer {token}"}
                    async with httpx.AsyncClient(base_url=proc.url, timeout=60) as c:
                        for _ in range(rounds):
                            waiter = asyncio.create_task(c.post(
                                P + "/claim-task?wait=30", headers=node_h))
                            await asyncio.sleep(0.2)
                            t0 = time.perf_counter()
                            r = await c.post(P + "/dispatch-task", headers=admin_h,
                                             params={"task_id": task.id, "force": "true"})
                            t_ack = time.perf_counter()
                            assert r.json()["data"]["allocations_created"] == 1, r.text
                            got = await waiter
                            t_got = time.perf_counter()
                            pkg = got.json()["data"]
                            assert pkg is not None, got.text
                            wake_from_send.append((t_got - t0) * 1000)
                            wake_from_ack.append((t_got - t_ack) * 1000)
                            await c.post(P + "/report-completion", headers=node_h, json={
                                "allocation_id": pkg["allocation_id"], "results": []})

                asyncio.run(main())
        finally:
            db.drop()
    return {"rounds": rounds,
            "wake_ms_p50_from_dispatch_sent": round(pct(wake_from_send, 50), 2),
            "wake_ms_p50_after_dispatch_answered": round(pct(wake_from_ack, 50), 2),
            "wake_ms_max_from_dispatch_sent": round(max(wake_from_send), 2)}


# --- planning ---------------------------------------------------------------------------------


def bench_planning(kind: str, n_feeds: int, n_nodes: int) -> dict[str, Any]:
    from cascade_cli.domain.dispatch import dispatch

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = Db(kind, folder)
        try:
            store = Store.from_url(db.url)
            migrate.upgrade(store)
            settings = load_settings(environ={}, cwd=folder,
                                     overrides={"data_dir": str(folder / "data")})
            now = SystemClock().now()
            _bulk_nodes(store, n_nodes, 4, now)
            ids = _bulk_feeds(store, n_feeds, now)
            with store.session() as s:
                task = tasks.create_task(s, now, MessageTaskIn(name="plan", mps_id=ids))
            t0 = time.perf_counter()
            with store.session() as s:
                res = dispatch(s, now, settings, task_id=task.id)
                created = res.allocations_created
            elapsed = time.perf_counter() - t0
            tracemalloc.start()
            with store.session() as s:
                dispatch(s, now + timedelta(seconds=1), settings, task_id=task.id, force=True)
            _cur, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            store.dispose()
        finally:
            db.drop()
    import resource

    return {"feeds": n_feeds, "online_nodes": res.online_nodes, "allocations": created,
            "seconds": round(elapsed, 2), "peak_traced_mb": round(peak / 2**20, 1),
            "process_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                        / 1024, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--only", choices=["cycle", "wake", "planning"], action="append")
    ap.add_argument("--allocations", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=1,
                    help="cycle runs; the median run is reported, with every run's figures")
    ap.add_argument("--wake-rounds", type=int, default=20)
    ap.add_argument("--feeds", type=int, default=100_000)
    ap.add_argument("--nodes", type=int, default=1000)
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    parts = args.only or ["cycle", "wake", "planning"]
    out: dict[str, Any] = {"db": args.db, "cpus": os.cpu_count()}
    steal = StealMeter().start()
    if "cycle" in parts:
        out["cycle"] = bench_cycles(args.db, args.allocations, args.clients, args.repeat)
    if "wake" in parts:
        out["wake"] = bench_wake(args.db, args.wake_rounds)
    if "planning" in parts:
        out["planning"] = bench_planning(args.db, args.feeds, args.nodes)
    out["machine"] = machine_report(steal)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
