"""Parent checks: the guide's problems 3 (暂无任务) and 4 (处理公众号失败 / 执行父节点任务失败),
plus the database, nodes, notifications and security. Read-only: doctor never writes a row."""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from cascade_cli.clock import isoformat_z
from cascade_cli.config import Settings
from cascade_cli.cron import InvalidCron, parse_cron
from cascade_cli.doctor.checks_child import _human
from cascade_cli.doctor.context import DoctorContext
from cascade_cli.doctor.result import FAILED, OK, SKIPPED, WARNING, CheckResult, Findings
from cascade_cli.domain import templates
from cascade_cli.domain.scheduler import jitter_offset, scheduler_timezone
from cascade_cli.errors import CascadeError
from cascade_cli.protocol import normalise_mps_id
from cascade_cli.store import health, migrate
from cascade_cli.store.allocations import heartbeat_interval
from cascade_cli.store.claimable import claimable_report
from cascade_cli.store.engine import mask_url
from cascade_cli.store.models import (
    DELIVERY_DELIVERED,
    EXECUTING,
    TIMEOUT,
    Allocation,
)
from cascade_cli.store.models import (
    FAILED as ALLOC_FAILED,
)
from cascade_cli.store.nodes import legacy_nodes, list_nodes, node_status, uses_plain_legacy_secret
from cascade_cli.store.tasks import list_tasks, tasks_naming
from cascade_cli.webhook_url import validate_webhook_url

ROTATE_AFTER_DAYS = 90
FAILURE_WINDOW = timedelta(hours=24)
FAILURE_RATE = 0.5
FAILURE_MIN_RESULTS = 3
STUCK_FACTOR = 6          # held for more than 6 lease TTLs (30 min by default)
PENDING_DELIVERY_STALE = timedelta(minutes=15)
RECENT_DELIVERIES = 5      # the newest attempted deliveries judged together
MIN_RECENT_DELIVERIES = 2  # one failure alone may be a blip
_SOURCE_STATUS = re.compile(r"^HTTP (\d{3})\b")
LOOPBACK = ("127.0.0.1", "localhost", "::1")

START_CHILD = ("start 'cascade run-child' on a child host (run 'cascade doctor' there to see why "
               "it cannot connect); 'cascade init --child NAME' creates a node if none exists")


def _start_children(names: list[str]) -> str:
    """START_CHILD with the nodes doctor knows named."""
    if not names:
        return START_CHILD
    shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    return (f"start 'cascade run-child' on the host of {shown} (run 'cascade doctor' there to "
            "see why it cannot connect)")


# --- plumbing ------------------------------------------------------------------------------


def _ready(ctx: DoctorContext, name: str) -> CheckResult | None:
    """A skip result unless the database is reachable with a current schema."""
    if ctx.settings is None:
        return CheckResult(name, SKIPPED, "configuration not loaded (see config.parse)")
    state = ctx.memo("db_state", lambda: _db_state(ctx))
    if state != "ok":
        return CheckResult(name, SKIPPED, f"database not usable (see {state})")
    return None


def _db_state(ctx: DoctorContext) -> str:
    try:
        store = ctx.store()
        store.ping()
        current = migrate.current_revision(store)
    except CascadeError:
        return "parent.database"
    return "ok" if current == migrate.head_revision() else "parent.schema"


def _read(ctx: DoctorContext, fn: Callable[[Session, datetime, Settings], CheckResult]
          ) -> CheckResult:
    settings = ctx.settings
    assert settings is not None
    with ctx.store().session() as s:
        result = fn(s, ctx.clock.now(), settings)
        s.rollback()  # doctor is read-only: never commit anything by accident
    return result


def _node_names(s: Session) -> dict[str, str]:
    return health.node_names(s)


# --- database ------------------------------------------------------------------------------


def check_database(ctx: DoctorContext) -> CheckResult:
    name = "parent.database"
    s = ctx.settings
    if s is None:
        return CheckResult(name, SKIPPED, "configuration not loaded (see config.parse)")
    shown = mask_url(s.database_url)
    try:
        store = ctx.store()
        store.ping()
    except CascadeError as exc:
        return CheckResult(name, FAILED, f"{exc.message}", [f"database.url: {shown}"],
                           exc.hint or "check database.url", {"url": shown})
    return CheckResult(name, OK, f"{store.dialect} database reachable: {shown}",
                       data={"url": shown, "dialect": store.dialect})


def check_schema(ctx: DoctorContext) -> CheckResult:
    name = "parent.schema"
    if ctx.settings is None:
        return CheckResult(name, SKIPPED, "configuration not loaded (see config.parse)")
    try:
        store = ctx.store()
        current = migrate.current_revision(store)
    except CascadeError:
        return CheckResult(name, SKIPPED, "database not reachable (see parent.database)")
    head = migrate.head_revision()
    data = {"current": current, "head": head}
    if current is None:
        return CheckResult(name, FAILED, "the database has no Cascade schema", [],
                           "run 'cascade init' on the parent", data)
    if current != head:
        return CheckResult(name, FAILED, f"schema at {current}, this version needs {head}", [],
                           "run 'cascade init' to upgrade the schema (stop serve-parent first)",
                           data)
    return CheckResult(name, OK, f"schema current ({head})", data=data)


# --- nodes ---------------------------------------------------------------------------------


def check_nodes(ctx: DoctorContext) -> CheckResult:
    name = "parent.nodes"
    return _ready(ctx, name) or _read(ctx, lambda s, now, st: _nodes(s, now, st, name))


def _nodes(s: Session, now: datetime, settings: Settings, name: str) -> CheckResult:
    f = Findings()
    nodes = list_nodes(s)
    counts: Counter[str] = Counter()
    off = settings.parent.offline_after
    for n in nodes:
        st = node_status(n, now, off)
        counts[st] += 1
        seen = (f"last heartbeat {_human((now - n.last_heartbeat_at).total_seconds())} ago"
                if n.last_heartbeat_at else "never connected")
        if st == "offline":
            f.add(WARNING, f"node '{n.name}' is offline ({seen}; offline after {off:g} s)",
                  f"start 'cascade run-child' on {n.name}'s host and run 'cascade doctor' "
                  f"there; if it is retired, 'cascade nodes disable {n.name}'")
        elif st == "never seen":
            f.add(WARNING, f"node '{n.name}' was created but never connected",
                  f"configure {n.name}'s host with the api_key/api_secret printed by 'cascade "
                  f"init --child {n.name}' (lost secret: 'cascade nodes rotate {n.name}') and "
                  "start 'cascade run-child' there")
        else:
            f.note(f"node '{n.name}': {st} ({seen})")
        rotated = n.credentials_rotated_at or n.created_at
        if st not in ("revoked",) and rotated is not None and \
                now - rotated > timedelta(days=ROTATE_AFTER_DAYS):
            f.add(WARNING, f"node '{n.name}' credentials not rotated for "
                  f"{(now - rotated).days} days", f"'cascade nodes rotate {n.name}' and put the "
                  "new api_secret on its host (the old one keeps working for "
                  "parent.auth.rotation_overlap)")
    if not nodes:
        f.add(WARNING, "no child node exists", "create one: 'cascade init --child NAME'")
    elif counts["online"] == 0:
        f.add(WARNING, "no child node is online",
              _start_children([n.name for n in nodes if n.enabled]))
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no nodes"
    return f.result(name, summary, {"counts": dict(counts), "total": len(nodes)})


# --- tasks and feeds (guide problem 4) -----------------------------------------------------


def _feed_ids(value: Any) -> list[str]:
    try:
        return normalise_mps_id(value)
    except ValueError:
        return []


def _template_problem(template: str | None, message_type: int) -> str | None:
    if not template:
        return None
    try:
        templates.validate_template(template, message_type)
    except CascadeError as exc:
        return exc.message
    return None


def _webhook_problem(url: str) -> str | None:
    try:
        validate_webhook_url(url)
    except CascadeError as exc:
        return exc.message
    return None


def check_tasks(ctx: DoctorContext) -> CheckResult:
    name = "parent.tasks"
    skipped = _ready(ctx, name)
    if skipped is not None:
        return skipped
    # Test renders (up to templates.RENDER_SECONDS each) run between two reads, never inside
    # a transaction: on SQLite every transaction holds the write lock.
    with ctx.store().session() as s:
        sources = health.enabled_task_templates(s)
        s.rollback()
    problems = {tid: _template_problem(text, mtype) for tid, text, mtype in sources}
    return _read(ctx, lambda s, now, st: _tasks(s, name, problems))


def _tasks(s: Session, name: str, template_problems: dict[str, str | None]) -> CheckResult:
    f = Findings()
    tasks = health.tasks_by_name(s)
    feeds = health.all_feeds(s)
    enabled = [t for t in tasks if t.status == 1]
    if len(enabled) != len(tasks):
        f.note(f"{len(tasks) - len(enabled)} disabled task(s) not checked")
    for t in enabled:
        label = f"task '{t.name}'"
        ids = _feed_ids(t.mps_id)
        update = f"'cascade tasks update {t.name} --feeds ID1,ID2'"
        if not ids:
            f.add(FAILED, f"{label} is enabled but names no feed: its runs do nothing",
                  f"give it feeds with {update}, or 'cascade tasks disable {t.name}'")
        missing = [i for i in ids if i not in feeds]
        if missing:
            f.add(FAILED, f"{label} names feed(s) that do not exist (公众号不存在): "
                  + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""),
                  f"add them ('cascade feeds add URL --id ID') or drop them from the task "
                  f"({update})")
        off = [i for i in ids if i in feeds and feeds[i].status != 1]
        if off:
            f.add(WARNING, f"{label} names disabled feed(s), skipped at dispatch: "
                  + ", ".join(off[:10]),
                  f"enable them ('cascade feeds enable {off[0]}') or drop them from the task "
                  f"({update})")
        if t.cron_exp:
            try:
                parse_cron(t.cron_exp)
            except InvalidCron as exc:
                f.add(FAILED, f"{label}: {exc.message}",
                      f"'cascade tasks update {t.name} --cron \"0 9 * * *\"' ({exc.hint})")
        else:
            f.note(f"{label}: no cron_exp, runs only when dispatched by hand")
        if t.web_hook_url:
            problem = _webhook_problem(t.web_hook_url)
            if problem:
                f.add(FAILED, f"{label}: {problem}",
                      f"'cascade tasks update {t.name} --webhook https://...'")
        problem = template_problems.get(t.id)  # None also for a task enabled since the read
        if problem:
            f.add(FAILED, f"{label}: message template does not render: {problem}",
                  f"fix it and 'cascade tasks update {t.name} --template-file FILE'")
        if t.last_error:
            f.add(WARNING, f"{label}: last error: {t.last_error[:300]}",
                  f"'cascade tasks show {t.name}' shows the task; fix what the error names")
    if not enabled:
        f.add(WARNING, "no enabled task: nothing is ever dispatched",
              "create one: 'cascade tasks add NAME --feeds ID1,ID2 --cron \"0 9 * * *\"'")
    return f.result(name, f"{len(enabled)} enabled task(s) valid, {len(feeds)} feed(s)",
                    {"tasks": len(tasks), "enabled": len(enabled), "feeds": len(feeds)})


# --- allocations (guide problem 3 seen from the parent) ------------------------------------


def check_pending(ctx: DoctorContext) -> CheckResult:
    name = "parent.pending"
    return _ready(ctx, name) or _read(ctx, lambda s, now, st: _pending(s, now, st, name))


def _pending(s: Session, now: datetime, settings: Settings, name: str) -> CheckResult:
    pending, oldest = health.pending_summary(s)
    if not pending:
        return CheckResult(name, OK, "no pending allocation", data={"pending": 0})
    age = (now - oldest).total_seconds() if oldest else 0.0
    off = settings.parent.offline_after
    nodes = health.all_nodes(s)
    online = [n for n in nodes if node_status(n, now, off) == "online"]
    data: dict[str, Any] = {"pending": pending, "oldest_age_seconds": round(age, 1),
                            "online_nodes": len(online)}
    head = f"{pending} pending allocation(s), the oldest for {_human(age)}"
    if not online:
        states = [f"{n.name}: {node_status(n, now, off)}" for n in nodes] or ["no nodes"]
        return CheckResult(name, FAILED, f"{head}, and no child node is online to claim them",
                           states, _start_children([n.name for n in nodes if n.enabled]), data)
    reports = {n.name: claimable_report(s, now, n, settings) for n in online}
    details = [f"{nm}: {r['reason']} (holds {r['node']['held']}/{r['node']['capacity']})"
               for nm, r in reports.items()]
    data["nodes"] = {nm: r["reason"] for nm, r in reports.items()}
    takers = [nm for nm, r in reports.items() if r["reason"] == "available"]
    if not takers:
        reasons = {r["reason"] for r in reports.values()}
        if reasons <= {"at_capacity"}:
            raise_cmds = "; ".join(
                f"'cascade nodes set {nm} --capacity {r['node']['capacity'] * 2}'"
                for nm, r in list(reports.items())[:3])
            return CheckResult(name, WARNING, f"{head}; every online node is at capacity",
                               details, "wait, add child nodes ('cascade init --child NAME'), or "
                               f"raise capacity: {raise_cmds} (and child.capacity in that "
                               "child's config.yaml to match)", data)
        return CheckResult(name, WARNING, f"{head}; no online node may take them (reserved for "
                           "offline nodes still inside parent.affinity_grace, or at capacity)",
                           details, "start the nodes the feeds prefer, or wait "
                           "parent.offline_after + parent.affinity_grace for them to open to "
                           "every node", data)
    patience = settings.parent.lease_ttl + settings.child.claim_wait + 60
    if age > patience:
        return CheckResult(name, WARNING, f"{head}, though {', '.join(takers)} could claim "
                           "them: those children are online but not claiming", details,
                           f"look at the log of 'cascade run-child' on {', '.join(takers)} (a "
                           "child that heartbeats but never claims is stuck or draining); "
                           "restart it", data)
    return CheckResult(name, OK, f"{head}; {', '.join(takers)} can claim them", details, None,
                       data)


def check_leases(ctx: DoctorContext) -> CheckResult:
    name = "parent.leases"
    return _ready(ctx, name) or _read(ctx, lambda s, now, st: _leases(s, now, st, name))


def _leases(s: Session, now: datetime, settings: Settings, name: str) -> CheckResult:
    grace = timedelta(seconds=2 * settings.parent.reaper_interval + 5)
    rows = health.expired_leases(s, now - grace)
    if not rows:
        return CheckResult(name, OK, "no expired lease waits for the reaper")
    names = _node_names(s)
    worst = (now - rows[0].lease_expires_at).total_seconds() if rows[0].lease_expires_at else 0
    details = [f"allocation {a.id} ({a.task_name}) held by "
               f"{names.get(a.node_id or '', a.node_id)}: lease expired "
               f"{_human((now - a.lease_expires_at).total_seconds())} ago"
               for a in rows[:10] if a.lease_expires_at]
    return CheckResult(name, WARNING, f"{len(rows)} allocation(s) with leases expired up to "
                       f"{_human(worst)} ago are not requeued: the reaper is not running",
                       details, "start (or restart) 'cascade serve-parent': it requeues expired "
                       f"leases every parent.reaper_interval ({settings.parent.reaper_interval:g}"
                       " s)", {"expired": len(rows)})


def check_stuck(ctx: DoctorContext) -> CheckResult:
    name = "parent.stuck"
    return _ready(ctx, name) or _read(ctx, lambda s, now, st: _stuck(s, now, st, name))


def _stuck(s: Session, now: datetime, settings: Settings, name: str) -> CheckResult:
    limit = timedelta(seconds=STUCK_FACTOR * settings.parent.lease_ttl)

    def held_since(a: Allocation) -> datetime:
        return a.started_at or a.claimed_at or a.dispatched_at

    rows = [a for a in health.active_allocations(s)
            if now - held_since(a) > limit
            and (a.lease_expires_at is None or a.lease_expires_at >= now)]
    if not rows:
        return CheckResult(name, OK, "no allocation held far longer than its lease "
                           f"({_human(limit.total_seconds())})")
    names = _node_names(s)
    holders = sorted({names.get(a.node_id or "", a.node_id or "?") for a in rows})
    details = [f"allocation {a.id} ({a.task_name}, {len(a.feed_ids or [])} feeds) "
               f"{a.status} on {names.get(a.node_id or '', a.node_id)} for "
               f"{_human((now - held_since(a)).total_seconds())}"
               for a in rows[:10]]
    return CheckResult(name, WARNING, f"{len(rows)} allocation(s) held for more than "
                       f"{STUCK_FACTOR} lease TTLs while heartbeats keep renewing them "
                       f"(on {', '.join(holders)}): the child may hang on a feed", details,
                       f"look at the log of 'cascade run-child' on {', '.join(holders)} and "
                       "restart it (its allocations are released or requeued); lower "
                       "child.fetch_timeout if a feed never answers",
                       {"stuck": len(rows), "executing": sum(a.status == EXECUTING
                                                              for a in rows)})


def check_failures(ctx: DoctorContext) -> CheckResult:
    name = "parent.failures"
    return _ready(ctx, name) or _read(ctx, lambda s, now, st: _failures(s, now, name))


def _first_line(text: str | None) -> str:
    return (text or "no error text").strip().splitlines()[0][:160] if (text or "").strip() \
        else "no error text"


def source_answered(error: str) -> str | None:
    """The HTTP status the feed's source answered with ("HTTP 429 Too Many Requests from URL"
    from the fetcher), or None for a network-level failure (DNS, refused, timeout): a status
    means the node reached the source fine and the source refused - the feed's problem."""
    m = _SOURCE_STATUS.match(error.strip())
    return m.group(1) if m else None


def _failures(s: Session, now: datetime, name: str) -> CheckResult:
    since = now - FAILURE_WINDOW
    names = health.node_names(s)
    per_node: dict[str, list[health.FeedOutcome]] = defaultdict(list)
    per_feed: dict[str, list[health.FeedOutcome]] = defaultdict(list)
    for r in health.feed_outcomes(s, since):
        per_node[r.node_id or "?"].append(r)
        per_feed[r.feed_id].append(r)
    lost = health.lost_allocations(s, since)
    f = Findings()
    data: dict[str, Any] = {"window_hours": FAILURE_WINDOW.total_seconds() / 3600,
                            "nodes": {}, "feeds": {}, "allocations": {}}

    def rate(rows: list[health.FeedOutcome]) -> tuple[list[health.FeedOutcome], int,
                                                       list[str]]:
        bad = [r for r in rows if r.status == "failed"]
        common = Counter(_first_line(r.error) for r in bad)
        return bad, len(rows), [f"{n}× {e}" for e, n in common.most_common(3)]

    # Whole allocations first: a child that crashed or reported 'failed' (执行父节点任务失败)
    # leaves no per-feed result at all, so the rates below would never see it. A terminal
    # timeout is the same loss seen later: the lease ran out after the last attempt.
    by_node: dict[str, list[health.LostAllocation]] = defaultdict(list)
    for a in lost:
        by_node[names.get(a.node_id or "", a.node_id or "no node")].append(a)
    for nm, allocs in sorted(by_node.items()):
        failed = [a for a in allocs if a.status == ALLOC_FAILED]
        timed_out = len(allocs) - len(failed)
        common = Counter(_first_line(a.error) for a in failed)
        errors = [f"{n}× {e}" for e, n in common.most_common(3)]
        if timed_out:
            errors.append(f"{timed_out}× lease expired after the last attempt (the child died, "
                          "was killed or hung)")
        tasks = sorted({a.task_name for a in allocs if a.task_name})
        data["allocations"][nm] = {"failed": len(failed), "timed_out": timed_out,
                                   "errors": errors, "tasks": tasks}
        f.add(FAILED, f"node '{nm}': {len(allocs)} allocation(s) failed as a whole in 24 h "
              f"(执行父节点任务失败) for task(s) {', '.join(tasks) or '?'}: {'; '.join(errors)}",
              f"on {nm}'s host read the log of 'cascade run-child' around "
              f"{isoformat_z(allocs[0].updated_at)} and run 'cascade doctor' there; "
              + " and ".join(f"'cascade allocations --node {shlex.quote(nm)} --status {st}'"
                             for st, n in ((ALLOC_FAILED, len(failed)), (TIMEOUT, timed_out))
                             if n)
              + " show each allocation's error")

    for node_id, rows in sorted(per_node.items()):
        bad, total, errors = rate(rows)
        nm = names.get(node_id, node_id)
        data["nodes"][nm] = {"failed": len(bad), "total": total, "errors": errors}
        if total < FAILURE_MIN_RESULTS or len(bad) / total < FAILURE_RATE:
            continue
        # Only failures that never reached the source say something about the node's own
        # network; a source answering 429/403/5xx is the feed's (or the source's) problem.
        network = [r for r in bad if source_answered(r.error or "") is None]
        if len(network) * 2 >= len(bad):
            f.add(WARNING, f"node '{nm}': {len(bad)}/{total} feed fetches failed in 24 h "
                  f"(执行父节点任务失败/处理公众号失败); most common: {'; '.join(errors)}",
                  f"run 'cascade doctor' on {nm}'s host and check its network/DNS/proxy to the "
                  "feed sources")
        else:
            f.note(f"node '{nm}': {len(bad)}/{total} fetches failed, mostly because sources "
                   "answered with an HTTP error (see the feeds below), not the node's network")
    naming = tasks_naming(s, list(per_feed))  # the fixes name the tasks to change
    for feed_id, rows in sorted(per_feed.items()):
        bad, total, errors = rate(rows)
        data["feeds"][feed_id] = {"failed": len(bad), "total": total, "errors": errors}
        if total < FAILURE_MIN_RESULTS or len(bad) / total < FAILURE_RATE:
            continue
        statuses = Counter(source_answered(r.error or "") for r in bad)
        statuses.pop(None, None)
        if statuses.get("429", 0) * 2 >= len(bad):
            tasks = naming.get(feed_id) or ["NAME"]
            spread = " and ".join(f"'cascade tasks update {shlex.quote(t)} --jitter 300'"
                                  for t in tasks[:5])
            fix = (f"the source of feed {feed_id} rate-limits the children (HTTP 429): fetch it "
                   "less often (fewer tasks or a sparser cron), lower child.per_host_concurrency "
                   f"for its host, or spread ticks with {spread}"
                   + (f" (and {len(tasks) - 5} more task(s))" if len(tasks) > 5 else ""))
            why = "the source answers 429 Too Many Requests (rate limited), the node is fine"
        elif statuses and sum(statuses.values()) * 2 >= len(bad):
            code = statuses.most_common(1)[0][0]
            fix = (f"the source answers HTTP {code} for feed {feed_id}: check its URL "
                   f"('cascade feeds list', 'cascade feeds update {feed_id} --url URL') and the "
                   "source (RSS bridge, RSSHub...)")
            why = f"the source answers HTTP {code}"
        else:
            fix = ("check the feed's URL ('cascade feeds status', 'cascade feeds list') and "
                   "that the source (RSS bridge, RSSHub...) answers from the children")
            why = None
        f.add(WARNING, f"feed '{feed_id}': {len(bad)}/{total} fetches failed in 24 h "
              f"(处理公众号失败 {feed_id})" + (f": {why}" if why else "")
              + f"; most common: {'; '.join(errors)}", fix)
    total = sum(len(v) for v in per_feed.values())
    return f.result(name, f"{total} feed result(s) in 24 h, no failed allocation, no node or "
                    f"feed failing {FAILURE_RATE:.0%} or more", data)


# --- notifications -------------------------------------------------------------------------


def check_notifications(ctx: DoctorContext) -> CheckResult:
    name = "parent.notifications"
    return _ready(ctx, name) or _read(ctx, lambda s, now, st: _notifications(s, now, st, name))


def _notifications(s: Session, now: datetime, settings: Settings, name: str) -> CheckResult:
    f = Findings()
    tasks = health.task_names(s)
    dead = health.dead_deliveries(s)
    if dead:
        by_task = Counter(tasks.get(d.task_id, d.task_id) for d in dead)
        last = dead[0]
        f.add(FAILED, f"{len(dead)} dead notification(s) (gave up after max attempts) for "
              + ", ".join(f"task '{t}' ×{n}" for t, n in by_task.most_common(5))
              + f"; last error: {(last.last_error or '?')[:200]}"
              + (f" (HTTP {last.last_status_code})" if last.last_status_code else ""),
              f"fix the task's web_hook_url ('cascade tasks update "
              f"{by_task.most_common(1)[0][0]} --webhook URL'), then "
              "'cascade deliveries retry --dead' sends the dead ones again")
    # Dead rows take up to max_attempts of backoff to appear; the latest attempts tell now
    # whether the webhook works at all.
    recent = health.recent_attempted_deliveries(s, now - FAILURE_WINDOW, RECENT_DELIVERIES)
    failing = [d for d in recent if d.status != DELIVERY_DELIVERED]
    if len(recent) >= MIN_RECENT_DELIVERIES and len(failing) == len(recent):
        by_task = Counter(tasks.get(d.task_id, d.task_id) for d in failing)
        last = failing[0]
        worst_task = by_task.most_common(1)[0][0]
        f.add(FAILED, f"the last {len(recent)} notification attempts all failed (task(s) "
              + ", ".join(f"'{t}'" for t in by_task) + f"); last error: "
              f"{(last.last_error or '?')[:200]}"
              + (f" (HTTP {last.last_status_code})" if last.last_status_code else ""),
              f"check the webhook of task '{worst_task}' ('cascade tasks show {worst_task}'; "
              f"'cascade tasks update {worst_task} --webhook URL' to change it); "
              "'cascade deliveries list' shows every attempt's error")
    elif recent:
        f.note(f"{len(recent) - len(failing)}/{len(recent)} recent notification(s) delivered")
    n_pending, oldest = health.pending_deliveries(s)
    if n_pending and oldest is not None:
        age = now - oldest
        text = f"{n_pending} notification(s) pending, the oldest for {_human(age.total_seconds())}"
        if not settings.parent.notify.enabled:
            f.add(WARNING, text + " and the notifier is disabled",
                  "set parent.notify.enabled: true and restart 'cascade serve-parent'")
        elif age > PENDING_DELIVERY_STALE:
            f.add(WARNING, text + ": the notifier is not running or the webhook keeps failing",
                  "make sure 'cascade serve-parent' runs; 'cascade deliveries list' shows the "
                  "last error of each")
        else:
            f.note(text)
    return f.result(name, f"no dead notification; {n_pending} pending",
                    {"dead": len(dead), "pending": n_pending,
                     "recent_attempted": len(recent), "recent_failing": len(failing),
                     "oldest_pending": isoformat_z(oldest)})


# --- scheduler -----------------------------------------------------------------------------

SCHEDULER_SLACK = timedelta(minutes=2)  # a tick later than this with no run is missed


def check_scheduler(ctx: DoctorContext) -> CheckResult:
    name = "parent.scheduler"
    return _ready(ctx, name) or _read(ctx, lambda s, now, st: _scheduler(s, now, st, name))


def _scheduler(s: Session, now: datetime, settings: Settings, name: str) -> CheckResult:
    """A task due minutes ago without a run means no scheduler fired it (serve-parent is
    stopped, or parent.scheduler.enabled is false) - the operator otherwise learns it the
    next morning when nothing arrived."""
    f = Findings()
    tz = scheduler_timezone(settings)
    sched = settings.parent.scheduler
    checked = 0
    missed: list[str] = []
    for t in list_tasks(s, enabled_only=True):
        if not t.cron_exp:
            continue
        try:
            spec = parse_cron(t.cron_exp)
        except InvalidCron:
            continue  # parent.tasks reports it
        floor = max(t.created_at, t.updated_at or t.created_at)
        # The newest tick whose (jittered) due time is far enough in the past to have fired.
        cutoff = now - SCHEDULER_SLACK - timedelta(seconds=float(t.jitter or 0))
        tick = spec.prev_at_or_before(cutoff, tz)
        if tick is None or tick <= floor:
            continue
        checked += 1
        due = tick + timedelta(seconds=jitter_offset(t.id, tick, float(t.jitter or 0)))
        late = _human((now - due).total_seconds())
        if health.cron_run_exists(s, t.id, tick):
            f.note(f"task '{t.name}': tick {isoformat_z(tick)} fired")
        elif t.overlap_policy != "allow" and health.running_run_since(s, t.id, due):
            f.note(f"task '{t.name}': tick {isoformat_z(tick)} skipped, the previous run was "
                   "still running (overlap: skip)")
        elif health.scheduler_event_since(s, t.id, tick):
            f.note(f"task '{t.name}': tick {isoformat_z(tick)} handled late by the scheduler "
                   "(misfire; see 'cascade events')")
        else:
            missed.append(t.name)
            f.add(FAILED, f"task '{t.name}' was due at {isoformat_z(due)} ({late} ago, cron "
                  f"'{t.cron_exp}') and no run was created: no scheduler fired it",
                  "set parent.scheduler.enabled: true and restart 'cascade serve-parent'"
                  if not sched.enabled else
                  "start 'cascade serve-parent' (its scheduler fires cron runs; check its log "
                  f"for errors); 'cascade dispatch --task {t.name}' runs it by hand meanwhile")
    if not sched.enabled and not missed:
        f.note("parent.scheduler.enabled is false: cron runs fire only where it is true")
    return f.result(name, f"{checked} cron task(s) due recently, each fired (or skipped for a "
                    "reason)", {"checked": checked, "missed": missed,
                                "scheduler_enabled": sched.enabled})


# --- heartbeat timing ----------------------------------------------------------------------


def check_heartbeat_timing(ctx: DoctorContext) -> CheckResult:
    name = "parent.heartbeat"
    settings = ctx.settings
    if settings is None:
        return CheckResult(name, SKIPPED, "configuration not loaded (see config.parse)")
    told = heartbeat_interval(settings)
    off = settings.parent.offline_after
    data = {"offline_after": off, "heartbeat_interval": told}
    if off <= told:
        return CheckResult(name, FAILED, f"parent.offline_after ({off:g} s) is not longer than "
                           f"the heartbeat interval children are told ({told:g} s): healthy "
                           "nodes show offline between two heartbeats and lose their reserved "
                           "work", [], f"set parent.offline_after to at least {told * 3:g} "
                           "(three heartbeats), or lower parent.heartbeat_interval", data)
    if off < 2 * told:
        return CheckResult(name, WARNING, f"parent.offline_after ({off:g} s) is less than two "
                           f"heartbeat intervals ({told:g} s): one late heartbeat marks a node "
                           "offline", [], f"set parent.offline_after to at least {told * 3:g}",
                           data)
    return CheckResult(name, OK, f"a node is offline after {off:g} s without a heartbeat; "
                       f"children heartbeat every {told:g} s", data=data)


# --- security ------------------------------------------------------------------------------


def check_plain_secret(ctx: DoctorContext) -> CheckResult:
    name = "parent.plain_auth"
    s = ctx.settings
    if s is None:
        return CheckResult(name, SKIPPED, "configuration not loaded (see config.parse)")
    p = s.parent
    tls = bool(p.public_url and p.public_url.lower().startswith("https://"))
    data = {"allow_plain_secret": p.auth.allow_plain_secret, "host": p.host, "tls": tls}
    if not p.auth.allow_plain_secret:
        return CheckResult(name, OK, "plain AK-SK refused: only signed node requests",
                           data=data)
    if tls:
        return CheckResult(name, OK, f"plain AK-SK accepted, behind TLS ({p.public_url})",
                           data=data)
    if p.host in LOOPBACK:
        return CheckResult(name, OK, f"plain AK-SK accepted, listener on {p.host} only",
                           data=data)
    return CheckResult(
        name, WARNING, f"plain AK-SK accepted on a non-TLS listener ({p.host}:{p.port}): a child "
        "using it sends its api_secret in clear", [],
        "once every child signs its requests (cascade run-child does by default), set "
        "parent.auth.allow_plain_secret: false; or serve the parent behind a TLS proxy and set "
        "parent.public_url: https://...", data)


def check_legacy_nodes(ctx: DoctorContext) -> CheckResult:
    name = "parent.legacy_nodes"
    return _ready(ctx, name) or _read(ctx, lambda s, now, st: _legacy_nodes(s, now, st, name))


def _legacy_nodes(s: Session, now: datetime, settings: Settings, name: str) -> CheckResult:
    """Nodes imported from we-mp-rss or switched to legacy mode (docs/migration.md): each is
    a downgrade (webhook secrets in its packages, an unsalted SHA-256 secret, plain AK-SK
    only), so the operator should see them until the last one is gone."""
    f = Findings()
    found = legacy_nodes(s)
    for n in found:
        what = []
        if n.legacy:
            what.append("legacy mode (its task packages carry webhook URLs, headers and "
                        "cookies)")
        if uses_plain_legacy_secret(n):
            what.append("the secret imported from we-mp-rss (plain AK-SK only, unsalted "
                        "SHA-256)")
        elif n.prev_secret_hash and n.prev_secret_hash.startswith("sha256$") and \
                n.prev_valid_until and n.prev_valid_until > now:
            what.append("the imported we-mp-rss secret still valid until "
                        f"{isoformat_z(n.prev_valid_until)} (rotation overlap)")
        if not what:
            continue
        fixes = []
        if uses_plain_legacy_secret(n):
            fixes.append(f"'cascade nodes rotate {n.name}' and put the new api_secret on its "
                         "host")
        if n.legacy:
            fixes.append(f"once it runs 'cascade run-child', 'cascade nodes legacy {n.name} "
                         "off'")
        f.add(WARNING, f"node '{n.name}' still uses " + " and ".join(what),
              "; ".join(fixes) or "wait for the rotation overlap to end")
    plain_only = [n.name for n in found if uses_plain_legacy_secret(n)]
    if plain_only and not settings.parent.auth.allow_plain_secret:
        f.add(FAILED, "parent.auth.allow_plain_secret is false, so these nodes cannot "
              "authenticate at all (imported secrets work with plain AK-SK only): "
              + ", ".join(plain_only[:10]),
              "set parent.auth.allow_plain_secret: true until they are rotated and run "
              "'cascade run-child'")
    names = [n.name for n in found]
    if not f.problems:
        return CheckResult(name, OK, "no node uses legacy mode or a we-mp-rss secret",
                           data={"nodes": []})
    return f.result(name, f"{len(names)} node(s) still on we-mp-rss compatibility: "
                    + ", ".join(names[:10]), {"nodes": names})


def check_admin_secret(ctx: DoctorContext) -> CheckResult:
    name = "parent.admin_secret"
    s = ctx.settings
    if s is None:
        return CheckResult(name, SKIPPED, "configuration not loaded (see config.parse)")
    path = s.admin_token_secret_file
    if not path.exists():
        return CheckResult(name, WARNING, f"no admin-token secret at {path}: the admin API "
                           "refuses every token", [], "run 'cascade init' on the parent",
                           {"path": str(path)})
    if os.name != "posix":
        return CheckResult(name, SKIPPED, "file modes are not checked on this system")
    mode = stat.S_IMODE(path.stat().st_mode)
    data = {"path": str(path), "mode": oct(mode)}
    if mode & 0o077:
        return CheckResult(name, FAILED, f"{path} is readable by other users (mode {oct(mode)}): "
                           "anyone who reads it can mint admin tokens", [],
                           f"chmod 600 {path}", data)
    return CheckResult(name, OK, f"{path} is private (mode {oct(mode)})", data=data)


def check_admin_tokens(ctx: DoctorContext) -> CheckResult:
    name = "parent.admin_tokens"
    return _ready(ctx, name) or _read(ctx, lambda s, now, st: _admin_tokens(s, now, name))


def _admin_tokens(s: Session, now: datetime, name: str) -> CheckResult:
    active = health.unrevoked_admin_tokens(s)
    forever = [t for t in active if t.expires_at is None]
    live = [t for t in active if t.expires_at is None or t.expires_at > now]
    if forever:
        return CheckResult(name, WARNING, f"{len(forever)} admin token(s) never expire: "
                           + ", ".join(f"{t.jti[:8]}… '{t.label}'" for t in forever[:5]),
                           [], "revoke them ('cascade token revoke JTI') and issue expiring "
                           "ones ('cascade token create --ttl 1d')",
                           {"no_expiry": [t.jti for t in forever]})
    return CheckResult(name, OK, f"{len(live)} live admin token(s), all expiring",
                       data={"live": len(live)})
