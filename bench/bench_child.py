"""Child throughput and memory benchmark. One command, JSON on standard output:

    .venv/bin/python bench/bench_child.py [--feeds 10000] [--children 4] [--concurrency 32]
        [--parser feedparser,fastfeedparser] [--rounds 2] [--parallel]

Method:
* a feed server process serves ``/synthetic/<n>.xml``: realistic 20-item RSS documents
  (~17 KB, content:encoded, authors, dates), different for each n;
* ``--parser`` names one or more values of ``child.feed_parser``; with ``--rounds R`` each runs
  R times, interleaved (A, B, A, B...), so a drift of the shared machine's speed affects every
  parser alike. Every run of a parser is a **plain loop**, a **Cascade run**, and the plain loop
  again (the split uses the mean of the two loops, which bracket the Cascade run):
* **plain loop**: one process doing what a child does per feed and nothing else: the child's
  own HTTP client (``make_http_client``) fetching the URLs one after the other, and the
  child's own parse (``HttpFeedFetcher.parse``, article dicts included) with that parser. Its
  CPU (``time.process_time``, around the loop only) is split into **fetch** and **parse**
  (``time.thread_time`` around each parse call);
* **Cascade**: a real ``serve-parent`` (SQLite, temporary folder) and ``--children`` real
  ``run-child`` processes (fetch concurrency ``--concurrency``, ``child.feed_parser`` set);
  one task over ``--feeds`` feeds is dispatched; the clock runs from dispatch until every
  allocation is completed (all articles uploaded and stored by the parent, all completions
  reported). CPU seconds of each process come from /proc (utime+stime) sampled just before
  the dispatch and at the end, so no start-up or import is counted; peak memory from VmHWM;
* **feeds per child core** = feeds / CPU seconds of all children: what one core running
  children crawls per second. The **CPU split** of a child's CPU per feed: fetch and parse
  as the plain loop measured them, **Cascade** the rest (claims, heartbeats, scheduling, JSON
  encoding, the spool, uploads). The split is an estimate: the plain loop runs alone, the
  children with each other and the parent on the same cores;
* ``overhead_pct`` is Cascade's own share of the CPU work against the plain loop:
  (CPU of children + parent - CPU of the plain loop) / (CPU of children + parent);
  ``overhead_children_only_pct`` leaves out the parent;
* ``--profile FILE.txt`` records the first child's stacks (py-spy, 250 Hz, 8 s from 1 s after
  the dispatch) per run, collapsed: one line per stack and its sample count;
* ``--parallel`` adds the control of earlier sessions: ``--children`` plain loops at once
  (httpx + feedparser.parse, no article dicts), each over its share of the URLs;
* ``reference_ms`` (``bench/machine.py``) is measured before and after every run: when it
  moves by more than a few percent, the machine's speed changed during the benchmark.

The feed server's CPU is in none of the figures. Other load on the machine distorts every
figure; CPU seconds are less distorted than wall time (the figures report both), and the
interleaving spreads what remains over every parser.
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


def baseline(urls_file: str, parser: str) -> None:
    """The plain loop, run in its own process: the child's fetch and parse, nothing else;
    prints its JSON result."""
    import asyncio

    from cascade_cli.child.fetchers import FeedSpec, HttpFeedFetcher, make_http_client
    from cascade_cli.config import ChildSection

    urls = Path(urls_file).read_text().split()
    cfg = ChildSection(fetch_concurrency=1, feed_parser=parser)
    fetcher = HttpFeedFetcher("rss", parser)

    async def loop() -> tuple[int, float]:
        articles, parse_cpu = 0, 0.0
        async with make_http_client(cfg) as http:
            for i, url in enumerate(urls):
                response = await http.get(url)
                response.raise_for_status()
                t0 = time.thread_time()
                articles += len(fetcher.parse(response.content,
                                              response.headers.get("Content-Type"),
                                              FeedSpec(id=f"B{i}", url=url), url))
                parse_cpu += time.thread_time() - t0
        return articles, parse_cpu

    start = time.perf_counter()
    cpu0 = time.process_time()
    articles, parse_cpu = asyncio.run(loop())
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - start
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "parse_cpu_s": parse_cpu,
                      "fetch_cpu_s": cpu - parse_cpu, "articles": articles,
                      "max_rss_mb": ru.ru_maxrss / 1024}))


def naive_baseline(urls_file: str) -> None:
    """Earlier sessions' plain loop (httpx + feedparser.parse), for ``--parallel``."""
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
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "articles": articles}))


def plain_loop(urls_file: Path, parser: str) -> dict[str, Any]:
    """One plain loop in its own process (``baseline``); its JSON result."""
    out = subprocess.run([sys.executable, __file__, "--baseline", str(urls_file),
                          "--parser", parser],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def parallel_baseline(root: Path, urls: list[str], n: int) -> dict[str, Any]:
    """``n`` plain loops at once over disjoint shares of ``urls``."""
    files = []
    for i in range(n):
        f = root / f"urls-{i}.txt"
        f.write_text("\n".join(urls[i::n]))
        files.append(f)
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--naive-baseline", str(f)],
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


def start_profile(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    """py-spy (``pip install py-spy``) records one child's stacks, collapsed, into ``out``."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("--profile: py-spy is not installed (pip install py-spy); no profile",
              file=sys.stderr)
        return None
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "250",
                             "--duration", str(int(seconds)), "--format", "raw",
                             "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cascade_run(root: Path, urls: list[str], n_children: int, concurrency: int,
                parser: str, profile: Path | None = None) -> dict[str, Any]:
    """One Cascade run in a fresh folder: a parent, ``n_children`` children, one task."""
    from cascade_cli.clock import SystemClock
    from cascade_cli.config import load_settings
    from cascade_cli.demo.runner import DemoProcesses, _free_port, _wait_healthy, _wait_online
    from cascade_cli.domain.dispatch import dispatch
    from cascade_cli.protocol import FeedIn, MessageTaskIn
    from cascade_cli.store import allocations as alloc_store
    from cascade_cli.store.engine import Store
    from cascade_cli.store.feeds import create_feed
    from cascade_cli.store.tasks import create_task

    root.mkdir(parents=True)
    procs = DemoProcesses(root)
    n_feeds = len(urls)
    try:
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
                          "spool_path": f"{name}-spool.db", "upload_batch_size": 500,
                          "feed_parser": parser},
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
        cpu0 = {p.pid: proc_cpu(p.pid) for p in [parent, *children]}
        t0 = time.perf_counter()
        with store.session() as s:
            created = dispatch(s, clock.now(), settings, task_id=task_id).allocations_created
        spy = None
        if profile is not None:  # the first child, once the work is under way
            time.sleep(1.0)
            spy = start_profile(children[0].pid, profile, 8)
        while True:
            procs.check_alive()
            with store.session() as s:
                _, done = alloc_store.list_allocations(s, task_id=task_id, status="completed",
                                                       limit=1)
            if done >= created:
                break
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        if spy is not None:
            spy.wait(30)
        cpu_children = sum(proc_cpu(p.pid) - cpu0[p.pid] for p in children)
        cpu_parent = proc_cpu(parent.pid) - cpu0[parent.pid]
        hwm = [round(proc_hwm_mb(p.pid), 1) for p in children]
        with store.session() as s:
            articles = sum(int(r.get("article_count") or 0) for r in
                           alloc_store.list_allocations(s, task_id=task_id,
                                                        limit=max(created, 1))[0])
        store.dispose()
    finally:
        procs.stop()
    return {"wall_s": round(wall, 2), "feeds_per_s": round(n_feeds / wall, 1),
            "allocations": created, "articles": articles,
            "cpu_children_s": round(cpu_children, 2), "cpu_parent_s": round(cpu_parent, 2),
            "child_peak_rss_mb": hwm, "child_peak_rss_max_mb": max(hwm)}


def one_run(root: Path, urls: list[str], urls_file: Path, n_children: int, concurrency: int,
            parser: str, profile: Path | None = None) -> dict[str, Any]:
    """A plain loop, a Cascade run with ``parser``, a plain loop again, and the figures derived
    from them. The plain loop's fetch and parse are the mean of the loops before and after:
    one loop alone moved by up to 15% between runs, most of the spread of the split."""
    n = len(urls)
    ref0 = reference_ms(3)
    before = plain_loop(urls_file, parser)
    ref1 = reference_ms(3)
    casc = cascade_run(root, urls, n_children, concurrency, parser, profile)
    ref2 = reference_ms(3)
    after = plain_loop(urls_file, parser)
    plain = {k: (before[k] + after[k]) / 2 for k in
             ("wall_s", "cpu_s", "parse_cpu_s", "fetch_cpu_s", "max_rss_mb")}
    plain["articles"] = before["articles"]
    child_ms = 1000 * casc["cpu_children_s"] / n
    fetch_ms = 1000 * plain["fetch_cpu_s"] / n
    parse_ms = 1000 * plain["parse_cpu_s"] / n
    cascade_ms = child_ms - fetch_ms - parse_ms
    total = casc["cpu_children_s"] + casc["cpu_parent_s"]
    return {
        "parser": parser, "reference_ms": [ref0, ref1, ref2],
        "plain_loop": {"wall_s": round(plain["wall_s"], 2), "cpu_s": round(plain["cpu_s"], 2),
                       "cpu_ms_per_feed": round(1000 * plain["cpu_s"] / n, 3),
                       "feeds_per_cpu_s": round(n / plain["cpu_s"], 1),
                       "articles": plain["articles"],
                       "max_rss_mb": round(plain["max_rss_mb"], 1),
                       "cpu_ms_per_feed_before_after": [
                           round(1000 * before["cpu_s"] / n, 3),
                           round(1000 * after["cpu_s"] / n, 3)]},
        "cascade": casc,
        "feeds_per_child_core": round(n / casc["cpu_children_s"], 1),
        "child_cpu_ms_per_feed": round(child_ms, 3),
        "parent_cpu_ms_per_feed": round(1000 * casc["cpu_parent_s"] / n, 3),
        "cpu_split_ms_per_feed": {"fetch": round(fetch_ms, 3), "parse": round(parse_ms, 3),
                                  "cascade": round(cascade_ms, 3)},
        "cpu_split_pct": {"fetch": round(100 * fetch_ms / child_ms, 1),
                          "parse": round(100 * parse_ms / child_ms, 1),
                          "cascade": round(100 * cascade_ms / child_ms, 1)},
        "overhead_pct": round(100 * (total - plain["cpu_s"]) / total, 1),
        "overhead_children_only_pct": round(
            100 * (casc["cpu_children_s"] - plain["cpu_s"]) / casc["cpu_children_s"], 1),
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarise(runs: list[dict[str, Any]], parsers: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for parser in parsers:
        mine = [r for r in runs if r["parser"] == parser]
        out[parser] = {
            "runs": len(mine),
            "feeds_per_child_core": [r["feeds_per_child_core"] for r in mine],
            "feeds_per_child_core_median": round(_median(
                [r["feeds_per_child_core"] for r in mine]), 1),
            "child_cpu_ms_per_feed_median": round(_median(
                [r["child_cpu_ms_per_feed"] for r in mine]), 3),
            "cpu_split_ms_per_feed_median": {
                k: round(_median([r["cpu_split_ms_per_feed"][k] for r in mine]), 3)
                for k in ("fetch", "parse", "cascade")},
            "overhead_pct": [r["overhead_pct"] for r in mine],
            "overhead_children_only_pct": [r["overhead_children_only_pct"] for r in mine],
            "cascade_share_of_child_cpu_pct": [r["cpu_split_pct"]["cascade"] for r in mine],
            "feeds_per_s_wall": [r["cascade"]["feeds_per_s"] for r in mine],
            "child_peak_rss_max_mb": max(r["cascade"]["child_peak_rss_max_mb"] for r in mine),
        }
    if len(parsers) >= 2:
        base, new = parsers[0], parsers[-1]
        pairs = [(a["feeds_per_child_core"], b["feeds_per_child_core"]) for a, b in zip(
            [r for r in runs if r["parser"] == base], [r for r in runs if r["parser"] == new],
            strict=False)]
        out["speedup_per_child_core"] = {
            "of": new, "over": base,
            "per_round": [round(b / a, 2) for a, b in pairs],
            "of_medians": round(out[new]["feeds_per_child_core_median"]
                                / out[base]["feeds_per_child_core_median"], 2)}
    return out


def run(n_feeds: int, n_children: int, concurrency: int, parsers: list[str], rounds: int,
        parallel: bool, keep: bool, profile: Path | None = None) -> dict[str, Any]:
    from cascade_cli.demo.runner import DemoProcesses

    root = Path(tempfile.mkdtemp(prefix="cascade-bench-"))
    feed_proc, feed_port = start_feed_server(DemoProcesses(root).env)
    urls = [f"http://127.0.0.1:{feed_port}/synthetic/{i}.xml" for i in range(n_feeds)]
    result: dict[str, Any] = {
        "method": "CPU seconds (user+system) of the work only, no start-up; parsers "
                  "interleaved round by round; see the module docstring "
                  "(python bench/bench_child.py --help)",
        "feeds": n_feeds, "children": n_children, "fetch_concurrency": concurrency,
        "parsers": parsers, "rounds": rounds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}}
    try:
        urls_file = root / "urls.txt"
        urls_file.write_text("\n".join(urls))
        # warms the server's document cache: every run then sees the same server
        plain_loop(urls_file, parsers[-1])
        if parallel:
            result["parallel_plain_loops"] = parallel_baseline(root, urls, n_children)
        runs = []
        for rnd in range(rounds):
            for parser in parsers:
                print(f"round {rnd + 1}/{rounds}: {parser}", file=sys.stderr, flush=True)
                prof = (profile.with_name(f"{profile.stem}-r{rnd + 1}-{parser}"
                                          f"{profile.suffix}") if profile else None)
                runs.append(one_run(root / f"r{rnd}-{parser}", urls, urls_file, n_children,
                                    concurrency, parser, prof))
                print(json.dumps({k: runs[-1][k] for k in (
                    "feeds_per_child_core", "cpu_split_ms_per_feed", "overhead_pct")}),
                    file=sys.stderr, flush=True)
        result["runs"] = runs
        result["summary"] = summarise(runs, parsers)
        result["memory_target_met"] = all(r["cascade"]["child_peak_rss_max_mb"] < 150
                                          for r in runs)
        result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
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
    parser.add_argument("--parser", default="feedparser,fastfeedparser",
                        help="comma-separated child.feed_parser values, the baseline first")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--parallel", action="store_true",
                        help="also run the parallel plain loops (httpx + feedparser)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--profile", metavar="FILE.txt", type=Path,
                        help="record the first child's stacks with py-spy (8 s, 250 Hz, "
                             "collapsed) into FILE-r<round>-<parser>.txt")
    parser.add_argument("--baseline", metavar="URLS_FILE", help=argparse.SUPPRESS)
    parser.add_argument("--naive-baseline", metavar="URLS_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    parsers = [p.strip() for p in args.parser.split(",") if p.strip()]
    for name in parsers:
        if name not in ("feedparser", "fastfeedparser"):
            parser.error(f"--parser: unknown parser {name!r} (feedparser, fastfeedparser)")
    if args.baseline:
        baseline(args.baseline, parsers[0])
        return
    if args.naive_baseline:
        naive_baseline(args.naive_baseline)
        return
    steal = StealMeter().start()
    result = run(args.feeds, args.children, args.concurrency, parsers, args.rounds,
                 args.parallel, args.keep, args.profile)
    result["machine"].update(machine_report(steal))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
