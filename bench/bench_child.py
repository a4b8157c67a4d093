"""Child throughput and memory benchmark. One command, JSON on standard output:

    .venv/bin/python bench/bench_child.py [--feeds 10000] [--children 4] [--concurrency 32]

Method:
* a feed server process serves ``/synthetic/<n>.xml``: realistic 20-item RSS documents
  (~17 KB, content:encoded, authors, dates), different for each n;
* **Cascade**: a real ``serve-parent`` (SQLite, temporary folder) and ``--children`` real
  ``run-child`` processes (fetch concurrency ``--concurrency``); one task over ``--feeds``
  feeds is dispatched; the clock runs from dispatch until every allocation is completed (all
  articles uploaded and stored by the parent, all completions reported);
* **plain loop** (the issue's reference): one process doing the same fetch (httpx) + parse
  (feedparser) of the same URLs one after the other, nothing else. A first run warms the feed
  server's document cache and is not counted; then one run before Cascade's and one after it
  count, and the baseline is their mean: the development machine's speed drifts by tens of
  percent within a quarter of an hour, and a baseline measured only before Cascade's run was
  seen 24% off in the flattering direction. Its CPU time is measured around the loop only
  (``time.process_time``), like Cascade's, which is measured from dispatch on already started
  processes, so neither side counts interpreter start-up or imports;
* **parallel plain loops** (a control, not the target): ``--children`` plain loops at once, each
  over its share of the URLs. On a machine with few cores, ``--children`` children + a parent +
  the feed server compete for the CPU, and the same Python code then costs more CPU seconds
  (caches, context switches). The control pays that same price, so ``cascade - parallel loops``
  isolates what Cascade itself adds from what the machine's contention adds;
* CPU seconds of each Cascade process come from /proc (utime+stime) sampled just before the
  dispatch and when the last allocation is completed; peak memory from VmHWM;
* ``phases`` gives each phase's ``reference_ms`` (``bench/machine.py``, measured just before
  and after it) and the two plain runs' CPU per feed: when they disagree by more than a few
  percent, the machine's speed changed during the benchmark and its overhead figures are
  rough.

``overhead_pct`` is Cascade's own share of the CPU work against the plain loop:
(CPU of children + parent - CPU of the plain loop) / (CPU of children + parent). It includes
heartbeats, claims, the spool, uploads, the parent storing every article, and the machine's
contention. ``overhead_children_only_pct`` leaves out the parent; ``overhead_vs_parallel_pct``
(and its children-only variant) uses the parallel loops instead. The feed server's CPU is in
none of them. Wall-clock feeds/s are reported for every run (Cascade fetches in parallel, so on
a machine with several cores it is faster than the single loop). Other load on the machine
while the benchmark runs distorts every figure: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import StealMeter, machine_report, reference_ms  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def proc_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def baseline(urls_file: str) -> None:
    """The plain loop, run in its own process; prints its JSON result."""
    import feedparser
    import httpx

    urls = Path(urls_file).read_text().split()
    articles = 0
    start = time.perf_counter()
    cpu0 = time.process_time()
    with httpx.Client(timeout=30) as http:
        for url in urls:
            r = http.get(url)
            r.raise_for_status()
            articles += len(feedparser.parse(r.content).entries)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - start
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "articles": articles,
                      "max_rss_mb": ru.ru_maxrss / 1024}))


def plain_loop(urls_file: Path) -> dict[str, Any]:
    """One plain loop in its own process (``baseline``); its JSON result."""
    out = subprocess.run([sys.executable, __file__, "--baseline", str(urls_file)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def measured(phases: dict[str, Any], name: str, work: Callable[[], dict[str, Any]]
             ) -> dict[str, Any]:
    """Run one phase between two measurements of the machine's speed."""
    ref_before = reference_ms(3)
    out = work()
    phases[name] = {"reference_ms": [ref_before, reference_ms(3)]}
    return out


def parallel_baseline(root: Path, urls: list[str], n: int) -> dict[str, Any]:
    """``n`` plain loops at once over disjoint shares of ``urls``."""
    files = []
    for i in range(n):
        f = root / f"urls-{i}.txt"
        f.write_text("\n".join(urls[i::n]))
        files.append(f)
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--baseline", str(f)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT) for f in files]
    outs = [json.loads(p.communicate()[0]) for p in procs]
    wall = time.perf_counter() - start
    cpu = sum(o["cpu_s"] for o in outs)
    return {"processes": n, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "feeds_per_s": round(len(urls) / wall, 1),
            "articles": sum(o["articles"] for o in outs)}


def start_feed_server(env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "cascade_cli.demo.server", "--synthetic"],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    port = json.loads(proc.stdout.readline())["port"]
    return proc, int(port)


def run(n_feeds: int, n_children: int, concurrency: int, keep: bool) -> dict[str, Any]:
    from cascade_cli.clock import SystemClock
    from cascade_cli.config import load_settings
    from cascade_cli.demo.runner import DemoProcesses, _free_port, _wait_healthy, _wait_online
    from cascade_cli.parent.dispatch import dispatch
    from cascade_cli.protocol import FeedIn, MessageTaskIn
    from cascade_cli.store import allocations as alloc_store
    from cascade_cli.store.engine import Store
    from cascade_cli.store.feeds import create_feed
    from cascade_cli.store.tasks import create_task

    root = Path(tempfile.mkdtemp(prefix="cascade-bench-"))
    procs = DemoProcesses(root)
    feed_proc, feed_port = start_feed_server(procs.env)
    urls = [f"http://127.0.0.1:{feed_port}/synthetic/{i}.xml" for i in range(n_feeds)]
    result: dict[str, Any] = {
        "method": "CPU seconds (user+system) of the work only, no start-up; see the module "
                  "docstring (python bench/bench_child.py --help)",
        "feeds": n_feeds, "children": n_children, "fetch_concurrency": concurrency,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()}}
    try:
        # --- plain loop ------------------------------------------------------------------
        urls_file = root / "urls.txt"
        urls_file.write_text("\n".join(urls))
        phases: dict[str, Any] = {}
        plain_loop(urls_file)  # warms the server's document cache: every run then sees the same
        before = measured(phases, "plain_loop_before", lambda: plain_loop(urls_file))
        par = measured(phases, "parallel_plain_loops",
                       lambda: parallel_baseline(root, urls, n_children))
        result["parallel_plain_loops"] = par

        # --- cascade ---------------------------------------------------------------------
        port = _free_port()
        parent_url = f"http://127.0.0.1:{port}"
        parent_cfg = root / "parent.yaml"
        parent_cfg.write_text(yaml.safe_dump({
            "data_dir": "parent-data", "database": {"url": "sqlite:///cascade.db"},
            "parent": {"host": "127.0.0.1", "port": port, "batch_size": 50,
                       "scheduler": {"enabled": False}, "notify": {"enabled": False}},
            "log": {"level": "warning"}}))
        procs.cascade("init", config=parent_cfg)
        names = [f"bench-{i + 1}" for i in range(n_children)]
        cfgs = []
        for name in names:
            creds = json.loads(procs.cascade("init", "--child", name, "--capacity", "4",
                                             "--json", config=parent_cfg).stdout)
            cfg = root / f"{name}.yaml"
            cfg.write_text(yaml.safe_dump({
                "cascade": {"enabled": True, "node_type": "child", "parent_api_url": parent_url,
                            "api_key": creds["api_key"], "api_secret": creds["api_secret"],
                            "heartbeat_interval": 5},
                "child": {"capacity": 4, "fetch_concurrency": concurrency,
                          "per_host_concurrency": concurrency, "claim_wait": 5,
                          "spool_path": f"{name}-spool.db", "upload_batch_size": 500},
                "log": {"level": "warning"}}))
            cfgs.append(cfg)
        settings = load_settings(parent_cfg, environ={})
        store = Store.from_url(settings.database_url)
        clock = SystemClock()
        with store.session() as s:
            for i, url in enumerate(urls):
                create_feed(s, clock.now(), FeedIn(id=f"B{i}", mp_name=f"bench {i}", url=url))
            task_id = create_task(s, clock.now(), MessageTaskIn(
                name="bench", mps_id=[f"B{i}" for i in range(n_feeds)])).id
        parent = procs.start("serve-parent", "serve-parent", config=parent_cfg)
        _wait_healthy(procs, parent_url, 30)
        children = [procs.start(n, "run-child", config=c) for n, c in zip(names, cfgs,
                                                                         strict=True)]
        _wait_online(procs, store, clock, settings, names, 30)
        ref_before = reference_ms(3)
        cpu0 = {p.pid: proc_cpu(p.pid) for p in [parent, *children]}
        t0 = time.perf_counter()
        with store.session() as s:
            created = dispatch(s, clock.now(), settings, task_id=task_id).allocations_created
        while True:
            procs.check_alive()
            with store.session() as s:
                _, done = alloc_store.list_allocations(s, task_id=task_id, status="completed",
                                                       limit=1)
            if done >= created:
                break
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        cpu_children = sum(proc_cpu(p.pid) - cpu0[p.pid] for p in children)
        cpu_parent = proc_cpu(parent.pid) - cpu0[parent.pid]
        hwm = [round(proc_hwm_mb(p.pid), 1) for p in children]
        phases["cascade"] = {"reference_ms": [ref_before, reference_ms(3)]}
        with store.session() as s:
            rows, _ = alloc_store.list_allocations(s, task_id=task_id, limit=200)
            articles = sum(int(r.get("article_count") or 0) for r in
                           alloc_store.list_allocations(s, task_id=task_id,
                                                        limit=max(created, 1))[0])
        store.dispose()
        procs.stop()  # the last plain run gets the machine to itself, like the first
        after = measured(phases, "plain_loop_after", lambda: plain_loop(urls_file))
        base = {"wall_s": (before["wall_s"] + after["wall_s"]) / 2,
                "cpu_s": (before["cpu_s"] + after["cpu_s"]) / 2}
        result["plain_loop"] = {"wall_s": round(base["wall_s"], 2),
                                "cpu_s": round(base["cpu_s"], 2),
                                "feeds_per_s": round(n_feeds / base["wall_s"], 1),
                                "articles": before["articles"],
                                "max_rss_mb": round(max(before["max_rss_mb"],
                                                        after["max_rss_mb"]), 1),
                                "cpu_ms_per_feed_runs": [
                                    round(1000 * run["cpu_s"] / n_feeds, 2)
                                    for run in (before, after)]}
        result["phases"] = phases
        total_cpu = cpu_children + cpu_parent
        result["cascade"] = {
            "wall_s": round(wall, 2), "feeds_per_s": round(n_feeds / wall, 1),
            "allocations": created, "articles": articles,
            "cpu_children_s": round(cpu_children, 2), "cpu_parent_s": round(cpu_parent, 2),
            "child_peak_rss_mb": hwm, "child_peak_rss_max_mb": max(hwm)}
        result["overhead_pct"] = round(100 * (total_cpu - base["cpu_s"]) / total_cpu, 1)
        result["overhead_children_only_pct"] = round(
            100 * (cpu_children - base["cpu_s"]) / cpu_children, 1)
        result["overhead_vs_parallel_pct"] = round(
            100 * (total_cpu - par["cpu_s"]) / total_cpu, 1)
        result["overhead_vs_parallel_children_only_pct"] = round(
            100 * (cpu_children - par["cpu_s"]) / cpu_children, 1)
        result["cpu_ms_per_feed"] = {
            "plain_loop": round(1000 * base["cpu_s"] / n_feeds, 2),
            "parallel_plain_loops": round(1000 * par["cpu_s"] / n_feeds, 2),
            "cascade_children": round(1000 * cpu_children / n_feeds, 2),
            "cascade_parent": round(1000 * cpu_parent / n_feeds, 2)}
        result["speedup_wall"] = round(base["wall_s"] / wall, 2)
        result["memory_target_met"] = max(hwm) < 150
    finally:
        procs.stop()
        feed_proc.terminate()
        feed_proc.wait(10)
        if keep:
            result["folder"] = str(root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feeds", type=int, default=10_000)
    parser.add_argument("--children", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--baseline", metavar="URLS_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        baseline(args.baseline)
        return
    steal = StealMeter().start()
    result = run(args.feeds, args.children, args.concurrency, args.keep)
    result["machine"] = machine_report(steal)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
