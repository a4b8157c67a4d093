"""Child checks: the guide's problems 1 (级联客户端未初始化), 2 (请求父节点失败) and 3 (暂无任务).

Each network layer is its own check so a failure is named exactly: DNS, TCP (refused = parent
not started or wrong port), HTTP (404 = wrong URL or path prefix; timeout = network), then the
credentials, the clock, the protocol version and whether work is waiting.
"""

from __future__ import annotations

import os
import re
import sqlite3
from datetime import datetime
from typing import Any

from cascade_cli import PROTOCOL_VERSION
from cascade_cli.child.spool import waiting_summary
from cascade_cli.config import Settings, child_config_problems
from cascade_cli.doctor import probe
from cascade_cli.doctor.context import DoctorContext
from cascade_cli.doctor.result import FAILED, OK, SKIPPED, WARNING, CheckResult
from cascade_cli.protocol import CANONICAL_PREFIX, parse_time

EXPECTED_PATH = f"{CANONICAL_PREFIX}/heartbeat"
DRIFT_WARNING = 30.0  # seconds: worth fixing long before signed requests start failing

START_PARENT = ("start the parent: 'cascade serve-parent' on the parent host (it listens on "
                "parent.port, default 8001), and make cascade.parent_api_url name that host and "
                "port")


# --- shared memoised probes ----------------------------------------------------------------


def _settings(ctx: DoctorContext) -> Settings | None:
    return ctx.settings


def _address(ctx: DoctorContext) -> probe.ParentAddress | None:
    s = _settings(ctx)
    if s is None or not s.cascade.parent_api_url:
        return None
    return ctx.memo("addr", lambda: probe.parse_address(s.cascade.parent_api_url or ""))


def _dns(ctx: DoctorContext, addr: probe.ParentAddress) -> probe.DnsOutcome:
    return ctx.memo("dns", lambda: probe.resolve(addr.host, addr.port, ctx.timeout))


def _tcp(ctx: DoctorContext, addr: probe.ParentAddress) -> probe.TcpOutcome | None:
    dns = _dns(ctx, addr)
    if not dns.ok:
        return None
    return ctx.memo("tcp", lambda: probe.connect(dns.addresses, addr.port, ctx.timeout))


def _plain_http(ctx: DoctorContext, addr: probe.ParentAddress) -> probe.HttpOutcome | None:
    tcp = _tcp(ctx, addr)
    if tcp is None or not tcp.ok:
        return None
    return ctx.memo("http", lambda: probe.http_get(addr.route("heartbeat"), ctx.timeout))


def _usable_credentials(s: Settings) -> bool:
    keys = {k for k, _ in child_config_problems(s)}
    return not keys & {"cascade.api_key", "cascade.api_secret", "cascade.parent_api_url"}


def _authed_get(ctx: DoctorContext, route: str) -> probe.HttpOutcome:
    s = _settings(ctx)
    addr = _address(ctx)
    assert s is not None and addr is not None
    url = addr.route(route)
    header = probe.auth_header(s.cascade.api_key or "", s.cascade.api_secret or "",
                               s.cascade.auth_mode, "GET", url, ctx.clock)
    return probe.http_get(url, ctx.timeout, {"Authorization": header})


def _heartbeat(ctx: DoctorContext) -> probe.HttpOutcome | None:
    """The authenticated GET /heartbeat, or None when an earlier layer already failed."""
    s = _settings(ctx)
    addr = _address(ctx)
    if s is None or addr is None or not _usable_credentials(s):
        return None
    http = _plain_http(ctx, addr)
    if http is None or _http_verdict(http, addr)[0] == FAILED:
        return None
    return ctx.memo("heartbeat", lambda: _authed_get(ctx, "heartbeat"))


def _skip_not_child(ctx: DoctorContext, name: str) -> CheckResult | None:
    if ctx.settings is None:
        return CheckResult(name, SKIPPED, "configuration not loaded (see config.parse)")
    if _address(ctx) is None:
        return CheckResult(name, SKIPPED, "cascade.parent_api_url is not set (see child.settings)")
    return None


# --- child.settings (guide problem 1) ------------------------------------------------------


def check_settings(ctx: DoctorContext) -> CheckResult:
    name = "child.settings"
    s = ctx.settings
    if s is None:
        return CheckResult(name, SKIPPED, "configuration not loaded (see config.parse)")
    problems = child_config_problems(s)
    c = s.cascade
    data: dict[str, Any] = {"enabled": c.enabled, "node_type": c.node_type,
                            "parent_api_url": c.parent_api_url,
                            "api_key": c.api_key[:6] + "…" if c.api_key else None,
                            "api_secret_set": bool(c.api_secret), "auth_mode": c.auth_mode,
                            "problems": [k for k, _ in problems]}
    if problems:
        # The summary says what is wrong, the fix what to do: each once (the fix column
        # already says "set cascade.node_type: child"; repeating it per key read as a stutter).
        seen = ", ".join(_key_state(s, k) for k, _ in problems)
        return CheckResult(name, FAILED, f"the child cannot start (级联客户端未初始化): {seen}",
                           [], "; ".join(fix for _, fix in problems), data)
    return CheckResult(name, OK, f"cascade enabled, node_type child, parent {c.parent_api_url}, "
                       f"key {c.api_key[:6] if c.api_key else ''}…, {c.auth_mode} requests",
                       [], None, data)


def _key_state(s: Settings, key: str) -> str:
    """What is wrong with one ``cascade.*`` key, never showing a credential's value."""
    value = getattr(s.cascade, key.split(".", 1)[1], None)
    if key == "cascade.enabled":
        return "cascade.enabled is false"
    if value in (None, ""):
        return f"{key} is not set"
    if key == "cascade.node_type":
        if "node_type" not in s.cascade.model_fields_set:  # the default, not the file's
            return "cascade.node_type is not set"
        return f"cascade.node_type is {str(value)[:40]!r}, not 'child'"
    return f"{key} is not valid"


def check_auth_mode(ctx: DoctorContext) -> CheckResult:
    name = "child.auth_mode"
    skip = _skip_not_child(ctx, name)
    if skip:
        return skip
    s = ctx.settings
    addr = _address(ctx)
    assert s is not None and addr is not None
    if s.cascade.auth_mode == "plain" and addr.scheme != "https":
        return CheckResult(name, WARNING, "cascade.auth_mode is plain over http://: the api_secret "
                           "crosses the network in clear on every request", [],
                           "set cascade.auth_mode: signed (the default; the secret never leaves "
                           "this host), or use an https:// parent_api_url")
    return CheckResult(name, OK, f"{s.cascade.auth_mode} requests over {addr.scheme}://")


# --- network layers (guide problem 2) ------------------------------------------------------


def check_dns(ctx: DoctorContext) -> CheckResult:
    name = "child.dns"
    skip = _skip_not_child(ctx, name)
    if skip:
        return skip
    addr = _address(ctx)
    assert addr is not None
    if not addr.host:
        return CheckResult(name, FAILED, f"no host name in cascade.parent_api_url ({addr.url})",
                           fix="set cascade.parent_api_url: http://parent-server:8001")
    out = _dns(ctx, addr)
    data = {"host": addr.host, "addresses": out.addresses}
    if out.ok:
        how = "an IP address, no lookup needed" if probe.is_ip_literal(addr.host) \
            else "resolves to " + ", ".join(out.addresses)
        return CheckResult(name, OK, f"{addr.host}: {how}", data=data)
    return CheckResult(
        name, FAILED, f"DNS: cannot resolve '{addr.host}' ({out.error})", [],
        f"check the host name in cascade.parent_api_url ({addr.url}); use the parent's IP "
        f"address, or add '{addr.host}' to DNS or /etc/hosts on this host", data)


def check_tcp(ctx: DoctorContext) -> CheckResult:
    name = "child.tcp"
    skip = _skip_not_child(ctx, name)
    if skip:
        return skip
    addr = _address(ctx)
    assert addr is not None
    out = _tcp(ctx, addr)
    if out is None:
        return CheckResult(name, SKIPPED, "the host name does not resolve (see child.dns)")
    where = f"{out.address}:{addr.port}"
    data = {"address": out.address, "port": addr.port, "reason": out.reason}
    if out.ok:
        return CheckResult(name, OK, f"TCP connection to {where} accepted", data=data)
    if out.reason == "refused":
        return CheckResult(
            name, FAILED, f"connection refused at {where} (请求父节点失败: Connection refused): "
            "the parent is not running, or listens on another port", [],
            START_PARENT + f"; on the parent host 'ss -ltnp | grep {addr.port}' shows whether "
            "anything listens on that port", data)
    if out.reason == "timeout":
        return CheckResult(
            name, FAILED, f"network: no answer from {where} within {ctx.timeout:g} s "
            "(a firewall drops the packets, or the address is wrong)", [],
            f"open TCP port {addr.port} on the parent's firewall / security group for this "
            "host, and check the address in cascade.parent_api_url", data)
    return CheckResult(
        name, FAILED, f"network: cannot reach {where}: {out.error}", [],
        "check routing between this host and the parent (VPN, interface, firewall) and the "
        "address in cascade.parent_api_url", data)


def _http_verdict(out: probe.HttpOutcome, addr: probe.ParentAddress
                  ) -> tuple[str, str, str | None]:
    """(status, summary, fix) for the unauthenticated GET of the heartbeat route."""
    url = out.url
    if out.transport_error == "timeout":
        return (FAILED, f"network: the parent accepted the connection but sent no HTTP answer "
                f"within the timeout ({url})",
                "the parent is overloaded or hung, or a proxy/firewall swallows the request: "
                "check the parent's log and 'cascade doctor' on the parent host")
    if out.transport_error == "tls":
        return (FAILED, f"TLS handshake failed with {addr.root}: {out.error_detail}",
                "if the parent serves plain HTTP use an http:// parent_api_url; otherwise "
                "install the certificate authority that signed the parent's certificate")
    if out.transport_error in ("protocol", "network", "refused"):
        return (FAILED, f"{addr.root} does not answer HTTP properly ({out.error_detail}): "
                "another service, or https:// against a plain HTTP port (or the reverse)",
                f"check the scheme and port in cascade.parent_api_url ({addr.url}); the parent "
                "serves plain HTTP on parent.port (default 8001) unless a TLS proxy is in front")
    assert out.status is not None
    if out.status == 404:
        expected = f"{addr.root}{EXPECTED_PATH}"
        if addr.path:
            fix = (f"set cascade.parent_api_url to the parent's address without the path "
                   f"'{addr.path}': {addr.root} (the child adds {CANONICAL_PREFIX} itself)")
        else:
            fix = (f"check the port in cascade.parent_api_url: something else answers at "
                   f"{addr.root}; the parent serves {EXPECTED_PATH} on parent.port "
                   "(default 8001). Try: curl " + expected)
        return (FAILED, f"404 Not Found at {url} (请求父节点失败: 404 - Not Found): wrong URL or "
                f"path prefix; a Cascade parent serves {EXPECTED_PATH}", fix)
    if out.status in (301, 302, 303, 307, 308):
        return (FAILED, f"{out.status} redirect from {url} to {out.headers.get('location')}",
                "put the final address (often https://...) in cascade.parent_api_url")
    if out.status >= 500 and not out.is_envelope:
        return (FAILED, f"{url} answered HTTP {out.status} without Cascade's JSON envelope: "
                "not a Cascade parent's answer (another web server on that port, or a proxy "
                "without its upstream)",
                f"check the host and port in cascade.parent_api_url ({addr.url}): the parent "
                "listens on parent.port (default 8001); behind a proxy, check that it reaches "
                "the parent")
    if out.status >= 500:
        return (FAILED, f"the parent answered {out.status} (server error): {out.message}",
                "look at the parent's log and run 'cascade doctor' on the parent host "
                "(database reachable, schema current)")
    if out.status == 429 and out.is_envelope:
        return (WARNING, f"the parent's auth throttle blocks this address (429 "
                f"{out.error_code or 'too_many_requests'}: {out.message}): too many failed "
                "logins from here, not an overloaded parent",
                f"fix cascade.api_key/api_secret first (see child.credentials), then wait "
                f"{out.headers.get('retry-after', 'Retry-After')} s; the parent's "
                "parent.auth.failed_attempts_limit / failed_attempts_window set the throttle")
    if not out.is_envelope:
        return (FAILED, f"{url} answered {out.status} but not with Cascade's JSON envelope: "
                "another service listens there",
                f"check the host and port in cascade.parent_api_url ({addr.url})")
    if out.status == 405:
        return (FAILED, f"405 Method Not Allowed at {url}: not a Cascade parent of this protocol",
                "upgrade the parent to a Cascade version that serves GET /heartbeat")
    return (OK, f"a Cascade parent answers at {addr.prefix_url} (HTTP {out.status} without "
            "credentials, as expected)", None)


def check_http(ctx: DoctorContext) -> CheckResult:
    name = "child.http"
    skip = _skip_not_child(ctx, name)
    if skip:
        return skip
    addr = _address(ctx)
    assert addr is not None
    out = _plain_http(ctx, addr)
    if out is None:
        return CheckResult(name, SKIPPED, "no TCP connection (see child.tcp)")
    status, summary, fix = _http_verdict(out, addr)
    data = {"url": out.url, "http_status": out.status, "transport_error": out.transport_error,
            "expected_path": EXPECTED_PATH}
    return CheckResult(name, status, summary, [], fix, data)  # type: ignore[arg-type]


# --- credentials, clock, protocol ----------------------------------------------------------


def check_credentials(ctx: DoctorContext) -> CheckResult:
    name = "child.credentials"
    skip = _skip_not_child(ctx, name)
    if skip:
        return skip
    s = ctx.settings
    assert s is not None
    if not _usable_credentials(s):
        return CheckResult(name, SKIPPED, "api_key/api_secret missing or malformed "
                           "(see child.settings)")
    hb = _heartbeat(ctx)
    if hb is None:
        return CheckResult(name, SKIPPED, "the parent does not answer (see child.http)")
    key = s.cascade.api_key or ""
    rotate = ("on the parent, 'cascade list-credentials' shows each node's api_key (this child "
              f"uses {key[:6]}…); if the key is not listed, or the secret was lost, rotated or "
              "revoked, run 'cascade nodes rotate NAME' there and put the new api_secret in "
              "cascade.api_secret (or CASCADE_API_SECRET)")
    data = {"http_status": hb.status, "error": hb.error_code, "auth_mode": s.cascade.auth_mode}
    if hb.status == 200 and isinstance(hb.data, dict):
        d = hb.data
        data.update(node_id=d.get("node_id"), node_name=d.get("node_name"))
        return CheckResult(name, OK, f"accepted as node '{d.get('node_name')}' "
                           f"(id {d.get('node_id')})", data=data)
    if hb.status == 401:
        if hb.error_code == "clock_skew":
            return CheckResult(name, FAILED, "the parent refused the signed request because this "
                               "host's clock is off (401 clock_skew)", [],
                               "synchronise this host's clock (see child.clock)", data)
        if hb.error_code == "replayed":
            return CheckResult(name, FAILED, "the parent saw this request's nonce before "
                               "(401 replayed)", [], "run doctor again; if it persists, another "
                               "process replays this node's requests: rotate its credentials",
                               data)
        detail = [f"parent said: {hb.message}"]
        if s.cascade.auth_mode == "plain":
            detail.append("if the parent refuses plain AK-SK (parent.auth.allow_plain_secret: "
                          "false), set cascade.auth_mode: signed")
        return CheckResult(name, FAILED, "the parent rejected api_key/api_secret "
                           f"(401 {hb.error_code or 'unauthorized'}): unknown key, wrong or "
                           "rotated secret, or revoked credentials", detail, rotate, data)
    if hb.status == 403:
        if hb.error_code == "node_disabled":
            # The parent names the node in its message ("node 'NAME' is disabled ...").
            named = re.search(r"node '([^']+)'", hb.message or "")
            fix = (f"on the parent: 'cascade nodes enable {named.group(1)}'" if named else
                   "on the parent: 'cascade nodes enable NAME' ('cascade nodes list' shows "
                   "the name)")
            return CheckResult(name, FAILED, "the credentials are right but this node is disabled "
                               "on the parent (403 node_disabled)", [hb.message], fix, data)
        return CheckResult(name, FAILED, f"the parent refused this credential (403 "
                           f"{hb.error_code}): {hb.message}", [],
                           "use the node credentials printed by 'cascade init --child NAME', not "
                           "an admin token", data)
    if hb.status == 429:
        wait = hb.headers.get("retry-after", "?")
        return CheckResult(name, FAILED, "the parent's auth throttle blocks this address after "
                           f"too many failed logins (429, retry after {wait} s): the parent is "
                           f"not overloaded; it said: {hb.message}", [],
                           f"fix the credentials first ({rotate}), then wait {wait} s before "
                           "trying again", data)
    return CheckResult(name, FAILED, f"unexpected answer {hb.status} to GET /heartbeat: "
                       f"{hb.message}", [], "run 'cascade doctor' on the parent host", data)


def _skew(ctx: DoctorContext) -> tuple[float, str] | None:
    """(local minus parent, in seconds; how it was measured) or None."""
    hb = _heartbeat(ctx)
    now = ctx.clock.now()
    if hb is not None and hb.status == 200 and isinstance(hb.data, dict):
        try:
            server = parse_time(hb.data.get("server_time"))
        except (ValueError, OverflowError):
            server = None
        if server is not None:
            return (now - server).total_seconds(), "the parent's server_time"
    for out in (hb, ctx._memo.get("http")):
        if isinstance(out, probe.HttpOutcome):
            date: datetime | None = out.server_date()
            if date is not None:
                return (now - date).total_seconds(), "the parent's HTTP Date header (1 s precision)"
    return None


def check_clock(ctx: DoctorContext) -> CheckResult:
    name = "child.clock"
    skip = _skip_not_child(ctx, name)
    if skip:
        return skip
    s = ctx.settings
    assert s is not None
    measured = _skew(ctx)
    hb = _heartbeat(ctx)
    window = s.parent.auth.clock_skew
    signed = s.cascade.auth_mode == "signed"
    fix = ("synchronise this host's clock with NTP ('timedatectl set-ntp true', or install "
           "chrony) and check the parent host's clock too")
    if measured is None:
        if hb is not None and hb.error_code == "clock_skew":
            return CheckResult(name, FAILED, "the parent reports clock skew beyond its window "
                               f"(default {window:g} s)", [], fix)
        return CheckResult(name, SKIPPED, "no time from the parent (see child.http)")
    skew, how = measured
    direction = "ahead of" if skew > 0 else "behind"
    data = {"skew_seconds": round(skew, 3), "window_seconds": window, "measured_by": how}
    text = f"this host is {abs(skew):.0f} s {direction} the parent (measured by {how})"
    if abs(skew) > window:
        if signed:
            return CheckResult(name, FAILED, text + f": signed requests fail beyond {window:g} s "
                               "(401 clock_skew)", [], fix, data)
        return CheckResult(name, WARNING, text + f": signed requests would fail beyond "
                           f"{window:g} s; plain AK-SK still works", [], fix, data)
    if abs(skew) > DRIFT_WARNING:
        return CheckResult(name, WARNING, text + f"; signed requests fail beyond {window:g} s",
                           [], fix, data)
    return CheckResult(name, OK, text, data=data)


def check_protocol(ctx: DoctorContext) -> CheckResult:
    name = "child.protocol"
    skip = _skip_not_child(ctx, name)
    if skip:
        return skip
    hb = _heartbeat(ctx)
    if hb is None or hb.status != 200 or not isinstance(hb.data, dict):
        return CheckResult(name, SKIPPED, "no authenticated answer (see child.credentials)")
    theirs = hb.data.get("protocol")
    data = {"parent": theirs, "child": PROTOCOL_VERSION}
    if theirs is None:
        return CheckResult(name, WARNING, "the parent does not report a protocol version "
                           "(an older or foreign parent)", [],
                           "upgrade the parent to a Cascade release that reports 'protocol' in "
                           "GET /heartbeat", data)
    if str(theirs) != str(PROTOCOL_VERSION):
        return CheckResult(name, FAILED, f"protocol mismatch: parent speaks {theirs}, this child "
                           f"{PROTOCOL_VERSION}", [], "install the same Cascade release on the "
                           "parent and the children (pip install --upgrade cascade-cli)", data)
    return CheckResult(name, OK, f"protocol {theirs} on both sides", data=data)


# --- work (guide problem 3) ----------------------------------------------------------------

_WORK_FIXES = {
    "nothing_dispatched": (WARNING, "on the parent: 'cascade dispatch' (or POST "
                           "/api/v1/cascade/dispatch-task with an admin token) creates work now; "
                           "check that the tasks are enabled and their cron_exp fires"),
    "all_taken": (OK, None),
    "at_capacity": (WARNING, "wait for the running allocations to finish, or raise this node's "
                    "capacity: on the parent 'cascade nodes set {node} --capacity {more}', and "
                    "child.capacity here to match"),
    "targeted_elsewhere": (WARNING, "nothing to do here: those nodes will take them; to share "
                           "the work, clear the feeds' preferred_node on the parent (they open "
                           "to every node once their node is offline for parent.offline_after + "
                           "parent.affinity_grace)"),
    "node_disabled": (FAILED, "on the parent: 'cascade nodes enable {node}'"),
    "available": (OK, None),
}


def check_work(ctx: DoctorContext) -> CheckResult:
    name = "child.work"
    skip = _skip_not_child(ctx, name)
    if skip:
        return skip
    hb = _heartbeat(ctx)
    if hb is None or hb.status != 200:
        return CheckResult(name, SKIPPED, "not accepted by the parent (see child.credentials)")
    out = ctx.memo("claimable", lambda: _authed_get(ctx, "claimable"))
    if out.status == 404 or out.status == 405:
        return CheckResult(name, SKIPPED, "the parent does not serve GET /claimable (older "
                           "version): cannot tell without claiming")
    if out.status != 200 or not isinstance(out.data, dict):
        return CheckResult(name, WARNING, f"GET /claimable answered {out.status}: {out.message}",
                           [], "run 'cascade doctor' on the parent host")
    d: dict[str, Any] = out.data
    reason = str(d.get("reason"))
    status, fix = _WORK_FIXES.get(reason, (WARNING, "run 'cascade doctor' on the parent host"))
    pending = d.get("pending") or {}
    node = d.get("node") or {}
    if fix:  # the parent told us this node's name: put it in the command
        capacity = node.get("capacity")
        fix = fix.format(node=node.get("name") or "NAME",
                         more=capacity * 2 if isinstance(capacity, int) else "N")
    details = [f"pending on the parent: {pending.get('total', '?')} (shared "
               f"{pending.get('shared', '?')}, reserved for this node "
               f"{pending.get('targeted_here', '?')}, reserved for other nodes "
               f"{pending.get('targeted_elsewhere', '?')})",
               f"this node holds {node.get('held', '?')} of capacity {node.get('capacity', '?')};"
               f" other nodes hold {d.get('held_by_other_nodes', '?')}",
               f"last dispatch: {d.get('last_dispatch_at') or 'never'}"]
    if reason == "available":
        summary = f"{d.get('claimable')} allocation(s) waiting that this node can claim"
    else:
        summary = f"no work for this node (暂无任务): {d.get('message', reason)}"
        if reason == "targeted_elsewhere" and d.get("reserved_for"):
            summary += f" ({', '.join(map(str, d['reserved_for']))})"
    return CheckResult(name, status, summary, details, fix, d)


# --- spool ---------------------------------------------------------------------------------

SPOOL_STALE = 600.0  # seconds: results older than this should have reached the parent


def _writable_dir(path: Any) -> tuple[bool, Any]:
    """Is the nearest existing folder of ``path`` writable (so the spool can be created)?"""
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK | os.X_OK), folder


def check_spool(ctx: DoctorContext) -> CheckResult:
    name = "child.spool"
    s = ctx.settings
    if s is None:
        return CheckResult(name, SKIPPED, "configuration not loaded (see config.parse)")
    path = s.spool_path
    fix_perm = (f"make {path.parent} writable by the user that runs 'cascade run-child' "
                f"(chown/chmod), or set child.spool_path to a writable file")
    data: dict[str, Any] = {"path": str(path)}
    if not path.exists():
        ok_, folder = _writable_dir(path.parent)
        if not ok_:
            return CheckResult(name, FAILED, f"the spool {path} cannot be created: {folder} is "
                               "not writable", [], fix_perm, data)
        return CheckResult(name, OK, f"no spool yet; {path} will be created (folder writable)",
                           data=data)
    if not (os.access(path, os.R_OK | os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)):
        return CheckResult(name, FAILED, f"the spool {path} or its folder is not writable "
                           "(SQLite needs both for its journal)", [], fix_perm, data)
    try:
        waiting = waiting_summary(path)
    except sqlite3.DatabaseError as exc:
        return CheckResult(name, FAILED, f"the spool {path} cannot be read: {exc}", [],
                           f"stop the child, move the file aside (mv {path} {path}.bad) and start "
                           "it again; results still in it are lost", data)
    articles, completions = waiting.articles, waiting.completions
    oldest = waiting.oldest_created
    data.update(articles_waiting=articles, completions_waiting=completions)
    if not articles and not completions:
        return CheckResult(name, OK, f"{path}: writable, nothing waiting for upload", data=data)
    age = ctx.clock.now().timestamp() - oldest if oldest is not None else 0.0
    data["oldest_age_seconds"] = round(age, 1)
    text = (f"{articles} article(s) and {completions} completion(s) wait for upload in {path}, "
            f"the oldest for {_human(age)}")
    if age > SPOOL_STALE:
        return CheckResult(name, WARNING, text, [],
                           "the parent has not accepted them: fix the connection checks above; "
                           "'cascade run-child' uploads the spool first thing once the parent "
                           "answers", data)
    return CheckResult(name, OK, text, data=data)


def _human(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
