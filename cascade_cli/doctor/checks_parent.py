"""Parent checks: the guide's problems 3 (暂无任务) and 4 (处理公众号失败 / 执行父节点任务失败),
plus the database, nodes, notifications and security. Read-only: doctor never writes a row."""

from __future__ import annotations

import os
import stat
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cascade_cli.clock import isoformat_z
from cascade_cli.config import Settings
from cascade_cli.doctor.checks_child import _human
from cascade_cli.doctor.context import DoctorContext
from cascade_cli.doctor.result import FAILED, OK, SKIPPED, WARNING, CheckResult, Findings
from cascade_cli.errors import CascadeError
from cascade_cli.store.models import (
    ACTIVE_STATES,
    DELIVERY_DEAD,
    DELIVERY_PENDING,
    EXECUTING,
    PENDING,
    TIMEOUT,
    AdminToken,
    Allocation,
    Delivery,
    Feed,
    FeedResult,
    MessageTask,
    Node,
)
from cascade_cli.store.models import (
    FAILED as ALLOC_FAILED,
)

ROTATE_AFTER_DAYS = 90
FAILURE_WINDOW = timedelta(hours=24)
FAILURE_RATE = 0.5
FAILURE_MIN_RESULTS = 3
STUCK_FACTOR = 6          # held for more than 6 lease TTLs (30 min by default)
PENDING_DELIVERY_STALE = timedelta(minutes=15)
LOOPBACK = ("127.0.0.1", "localhost", "::1")

START_CHILD = ("start 'cascade run-child' on a child host (run 'cascade doctor' there to see why "
               "it cannot connect); 'cascade init --child NAME' creates a node if none exists")


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
    from cascade_cli.store import migrate

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
    return {n.id: n.name for n in s.scalars(select(Node))}


# --- database ------------------------------------------------------------------------------


def check_database(ctx: DoctorContext) -> CheckResult:
    name = "parent.database"
    s = ctx.settings
    if s is None:
        return CheckResult(name, SKIPPED, "configuration not loaded (see config.parse)")
    from cascade_cli.store.engine import mask_url

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
    from cascade_cli.store import migrate

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
    from cascade_cli.store.nodes import list_nodes, node_status

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
        f.add(WARNING, "no child node is online", START_CHILD)
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no nodes"
    return f.result(name, summary, {"counts": dict(counts), "total": len(nodes)})


# --- tasks and feeds (guide problem 4) -----------------------------------------------------


def _feed_ids(value: Any) -> list[str]:
    from cascade_cli.protocol import normalise_mps_id

    try:
        return normalise_mps_id(value)
    except ValueError:
        return []


def _template_problem(template: str | None, message_type: int) -> str | None:
    if not template:
        return None
    from cascade_cli.parent import templates

    try:
        templates.validate_template(template, message_type)
    except CascadeError as exc:
        return exc.message
    return None


def _webhook_problem(url: str) -> str | None:
    from cascade_cli.parent import templates

    try:
        templates.validate_webhook_url(url)
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
        sources = [(t.id, t.message_template, t.message_type) for t in s.scalars(
            select(MessageTask).where(MessageTask.status == 1))]
        s.rollback()
    problems = {tid: _template_problem(text, mtype) for tid, text, mtype in sources}
    return _read(ctx, lambda s, now, st: _tasks(s, name, problems))


def _tasks(s: Session, name: str, template_problems: dict[str, str | None]) -> CheckResult:
    from cascade_cli.parent.cron import InvalidCron, parse_cron

    f = Findings()
    tasks = list(s.scalars(select(MessageTask).order_by(MessageTask.name)))
    feeds = {fd.id: fd for fd in s.scalars(select(Feed))}
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
                  "enable them (PUT /api/v1/cascade/feeds/ID with {\"status\": 1}) or drop "
                  f"them from the task ({update})")
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
    from cascade_cli.doctor.claimable import claimable_report
    from cascade_cli.store.nodes import node_status

    pending = int(s.scalar(select(func.count()).select_from(Allocation)
                           .where(Allocation.status == PENDING)) or 0)
    if not pending:
        return CheckResult(name, OK, "no pending allocation", data={"pending": 0})
    oldest = s.scalar(select(func.min(Allocation.dispatched_at))
                      .where(Allocation.status == PENDING))
    age = (now - oldest).total_seconds() if oldest else 0.0
    off = settings.parent.offline_after
    nodes = list(s.scalars(select(Node)))
    online = [n for n in nodes if node_status(n, now, off) == "online"]
    data: dict[str, Any] = {"pending": pending, "oldest_age_seconds": round(age, 1),
                            "online_nodes": len(online)}
    head = f"{pending} pending allocation(s), the oldest for {_human(age)}"
    if not online:
        states = [f"{n.name}: {node_status(n, now, off)}" for n in nodes] or ["no nodes"]
        return CheckResult(name, FAILED, f"{head}, and no child node is online to claim them",
                           states, START_CHILD, data)
    reports = {n.name: claimable_report(s, now, n, settings) for n in online}
    details = [f"{nm}: {r['reason']} (holds {r['node']['held']}/{r['node']['capacity']})"
               for nm, r in reports.items()]
    data["nodes"] = {nm: r["reason"] for nm, r in reports.items()}
    takers = [nm for nm, r in reports.items() if r["reason"] == "available"]
    if not takers:
        reasons = {r["reason"] for r in reports.values()}
        if reasons <= {"at_capacity"}:
            return CheckResult(name, WARNING, f"{head}; every online node is at capacity",
                               details, "wait, add child nodes ('cascade init --child NAME'), or "
                               "raise capacity (PUT /api/v1/cascade/nodes/ID max_capacity)", data)
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
    rows = list(s.scalars(select(Allocation).where(
        Allocation.status.in_(ACTIVE_STATES), Allocation.lease_expires_at < now - grace)
        .order_by(Allocation.lease_expires_at).limit(50)))
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

    rows = [a for a in s.scalars(select(Allocation).where(Allocation.status.in_(ACTIVE_STATES)))
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


def _failures(s: Session, now: datetime, name: str) -> CheckResult:
    since = now - FAILURE_WINDOW
    names = _node_names(s)
    per_node: dict[str, list[FeedResult]] = defaultdict(list)
    per_feed: dict[str, list[FeedResult]] = defaultdict(list)
    for r in s.scalars(select(FeedResult).where(FeedResult.created_at >= since)):
        per_node[r.node_id or "?"].append(r)
        per_feed[r.feed_id].append(r)
    lost = Counter(
        a.node_id or "?" for a in s.scalars(select(Allocation).where(
            Allocation.status.in_((ALLOC_FAILED, TIMEOUT)), Allocation.updated_at >= since)))
    f = Findings()
    data: dict[str, Any] = {"window_hours": FAILURE_WINDOW.total_seconds() / 3600,
                            "nodes": {}, "feeds": {}}

    def rate(rows: list[FeedResult]) -> tuple[int, int, list[str]]:
        bad = [r for r in rows if r.status == "failed"]
        common = Counter((r.error or "no error text").strip().splitlines()[0][:120] for r in bad)
        return len(bad), len(rows), [f"{n}× {e}" for e, n in common.most_common(3)]

    for node_id, rows in sorted(per_node.items()):
        bad, total, errors = rate(rows)
        nm = names.get(node_id, node_id)
        data["nodes"][nm] = {"failed": bad, "total": total, "errors": errors}
        if total >= FAILURE_MIN_RESULTS and bad / total >= FAILURE_RATE:
            f.add(WARNING, f"node '{nm}': {bad}/{total} feed fetches failed in 24 h "
                  f"(执行父节点任务失败/处理公众号失败); most common: {'; '.join(errors)}",
                  f"run 'cascade doctor' on {nm}'s host and check its network/DNS/proxy to the "
                  "feed sources")
    for feed_id, rows in sorted(per_feed.items()):
        bad, total, errors = rate(rows)
        data["feeds"][feed_id] = {"failed": bad, "total": total, "errors": errors}
        if total >= FAILURE_MIN_RESULTS and bad / total >= FAILURE_RATE:
            f.add(WARNING, f"feed '{feed_id}': {bad}/{total} fetches failed in 24 h "
                  f"(处理公众号失败 {feed_id}); most common: {'; '.join(errors)}",
                  "check the feed's URL ('cascade feeds status', 'cascade feeds list') and "
                  "that the source (RSS bridge, RSSHub...) answers from the children")
    for node_id, n in lost.items():
        f.note(f"node '{names.get(node_id, node_id)}': {n} allocation(s) failed or timed out "
               "in 24 h")
    total = sum(len(v) for v in per_feed.values())
    return f.result(name, f"{total} feed result(s) in 24 h, no node or feed failing "
                    f"{FAILURE_RATE:.0%} or more", data)


# --- notifications -------------------------------------------------------------------------


def check_notifications(ctx: DoctorContext) -> CheckResult:
    name = "parent.notifications"
    return _ready(ctx, name) or _read(ctx, lambda s, now, st: _notifications(s, now, st, name))


def _notifications(s: Session, now: datetime, settings: Settings, name: str) -> CheckResult:
    f = Findings()
    dead = list(s.scalars(select(Delivery).where(Delivery.status == DELIVERY_DEAD)
                          .order_by(Delivery.updated_at.desc())))
    if dead:
        tasks = {t.id: t.name for t in s.scalars(select(MessageTask))}
        by_task = Counter(tasks.get(d.task_id, d.task_id) for d in dead)
        last = dead[0]
        f.add(FAILED, f"{len(dead)} dead notification(s) (gave up after max attempts) for "
              + ", ".join(f"task '{t}' ×{n}" for t, n in by_task.most_common(5))
              + f"; last error: {(last.last_error or '?')[:200]}"
              + (f" (HTTP {last.last_status_code})" if last.last_status_code else ""),
              "fix the task's web_hook_url ('cascade tasks update NAME --webhook URL'), then "
              "'cascade deliveries retry --dead' sends the dead ones again")
    pending = s.execute(select(func.count(), func.min(Delivery.created_at))
                        .where(Delivery.status == DELIVERY_PENDING)).one()
    n_pending, oldest = int(pending[0] or 0), pending[1]
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
                     "oldest_pending": isoformat_z(oldest)})


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
    active = list(s.scalars(select(AdminToken).where(AdminToken.revoked_at.is_(None))))
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
