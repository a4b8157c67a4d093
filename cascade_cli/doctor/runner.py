"""The check registry, selection by role and name, and the run itself."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cascade_cli.doctor import checks_child as child
from cascade_cli.doctor import checks_config as cfg
from cascade_cli.doctor import checks_parent as parent
from cascade_cli.doctor.context import DoctorContext
from cascade_cli.doctor.result import FAILED, CheckResult
from cascade_cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError

ANY = ("parent", "child", "unknown")  # "unknown": no role could be told (see config.role)


@dataclass(frozen=True)
class Check:
    name: str
    roles: tuple[str, ...]
    run: Callable[[DoctorContext], CheckResult]
    about: str


CHECKS: tuple[Check, ...] = (
    Check("config.file", ANY, cfg.check_config_file,
          "which configuration file is used, and why"),
    Check("config.parse", ANY, cfg.check_config_parse, "the file parses and every key is valid"),
    Check("config.role", ANY, cfg.check_config_role,
          "whether this host is the parent or a child, and how doctor knows"),
    Check("config.permissions", ANY, cfg.check_config_permissions,
          "a file holding secrets is not readable by other users"),
    Check("child.settings", ("child",), child.check_settings,
          "cascade enabled, node_type child, parent_api_url / api_key / api_secret well formed"),
    Check("child.auth_mode", ("child",), child.check_auth_mode,
          "the secret does not cross the network in clear"),
    Check("child.dns", ("child",), child.check_dns, "the parent's host name resolves"),
    Check("child.tcp", ("child",), child.check_tcp, "the parent's port accepts connections"),
    Check("child.http", ("child",), child.check_http,
          "a Cascade parent answers at /api/v1/cascade/heartbeat"),
    Check("child.credentials", ("child",), child.check_credentials,
          "the parent accepts this node's api_key/api_secret"),
    Check("child.clock", ("child",), child.check_clock,
          "this host's clock agrees with the parent's"),
    Check("child.protocol", ("child",), child.check_protocol, "same protocol version"),
    Check("child.work", ("child",), child.check_work,
          "work this node could claim, or why there is none (without claiming)"),
    Check("child.spool", ("child",), child.check_spool,
          "the local spool is writable; results waiting for upload"),
    Check("parent.database", ("parent",), parent.check_database, "the database is reachable"),
    Check("parent.schema", ("parent",), parent.check_schema, "the schema is current"),
    Check("parent.nodes", ("parent",), parent.check_nodes,
          "nodes online, offline, never seen, credentials rotated"),
    Check("parent.tasks", ("parent",), parent.check_tasks,
          "enabled tasks name existing enabled feeds, valid cron, webhook and template"),
    Check("parent.pending", ("parent",), parent.check_pending,
          "pending allocations have an online node able to take them"),
    Check("parent.leases", ("parent",), parent.check_leases, "expired leases are reaped"),
    Check("parent.stuck", ("parent",), parent.check_stuck,
          "no allocation held far longer than its lease"),
    Check("parent.failures", ("parent",), parent.check_failures,
          "recent failure rate per node and per feed, most common errors"),
    Check("parent.notifications", ("parent",), parent.check_notifications,
          "no dead webhook deliveries; recent attempts do not all fail; pending ones move"),
    Check("parent.scheduler", ("parent",), parent.check_scheduler,
          "every cron task due minutes ago has its run"),
    Check("parent.heartbeat", ("parent",), parent.check_heartbeat_timing,
          "parent.offline_after is longer than the heartbeat interval"),
    Check("parent.plain_auth", ("parent",), parent.check_plain_secret,
          "plain AK-SK is not accepted over a non-TLS listener"),
    Check("parent.legacy_nodes", ("parent",), parent.check_legacy_nodes,
          "no node still in we-mp-rss legacy mode or on an imported secret"),
    Check("parent.admin_secret", ("parent",), parent.check_admin_secret,
          "the admin-token secret file is private"),
    Check("parent.admin_tokens", ("parent",), parent.check_admin_tokens,
          "no admin token without expiry"),
    Check("install.import", ANY, cfg.check_install_import, "the package and its modules import"),
    Check("install.entry_point", ANY, cfg.check_install_entry_point,
          "the 'cascade' command is on PATH"),
    Check("install.config_resolution", ANY, cfg.check_config_resolution,
          "the same configuration is found from any folder"),
)


def select_checks(role: str, names: Iterable[str] | None = None) -> list[Check]:
    """Checks of ``role``; or, when names are given, exactly those (a name or a group prefix
    such as ``child`` or ``parent.tasks``), whatever the role."""
    wanted = [n.strip() for raw in (names or []) for n in raw.split(",") if n.strip()]
    if not wanted:
        return [c for c in CHECKS if role in c.roles]
    chosen: list[Check] = []
    for w in wanted:
        hits = [c for c in CHECKS if c.name == w or c.name.startswith(w + ".")]
        if not hits:
            raise UsageError(f"unknown check '{w}'",
                             hint="known checks: " + ", ".join(c.name for c in CHECKS))
        chosen.extend(c for c in hits if c not in chosen)
    return [c for c in CHECKS if c in chosen]


@dataclass
class Report:
    role: str
    results: list[CheckResult]
    config: dict[str, Any]
    internal_errors: list[str] = field(default_factory=list)
    config_broken: bool = False
    role_reason: str = ""

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(r.status for r in self.results)
        return {k: c.get(k, 0) for k in ("ok", "warning", "failed", "skipped")}

    @property
    def exit_code(self) -> int:
        if self.config_broken or self.internal_errors:
            return EXIT_USAGE
        return EXIT_FAILED if any(r.status == FAILED for r in self.results) else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "role_reason": self.role_reason, "config": self.config,
                "exit_code": self.exit_code,
                "counts": self.counts, "internal_errors": self.internal_errors,
                "checks": [r.to_dict() for r in self.results]}


def run_doctor(ctx: DoctorContext, names: Iterable[str] | None = None) -> Report:
    checks = select_checks(ctx.role, names)
    results: list[CheckResult] = []
    internal: list[str] = []
    try:
        for check in checks:
            try:
                results.append(check.run(ctx))
            except Exception as exc:  # a bug in a check must not hide the other checks
                text = f"{type(exc).__name__}: {exc}"
                internal.append(f"{check.name}: {text}")
                results.append(CheckResult(check.name, FAILED,
                                           f"doctor could not run this check ({text})", [],
                                           "this is a bug in cascade doctor: please report it "
                                           "with the output of 'cascade doctor --json'"))
    finally:
        ctx.close()
    src = ctx.source
    return Report(role=ctx.role, role_reason=ctx.role_reason, results=results,
                  config={"path": str(src.path) if src.path else None, "reason": src.reason},
                  internal_errors=internal, config_broken=ctx.config_error is not None)
