"""What a check returns: plain data. Rendering (Rich table, JSON) lives in ``render.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "warning", "failed", "skipped"]
OK: Status = "ok"
WARNING: Status = "warning"
FAILED: Status = "failed"
SKIPPED: Status = "skipped"

_RANK = {SKIPPED: 0, OK: 1, WARNING: 2, FAILED: 3}


def worst(*statuses: Status) -> Status:
    """The most serious of several statuses (failed > warning > ok > skipped)."""
    return max(statuses, key=lambda s: _RANK[s]) if statuses else OK


@dataclass
class CheckResult:
    """One verdict. ``summary`` is what doctor saw in one line; ``details`` are supporting lines;
    ``fix`` is the exact remedy (a key to set, a command to run) whenever status is not ok;
    ``data`` carries machine-readable numbers for ``--json``."""

    name: str
    status: Status
    summary: str
    details: list[str] = field(default_factory=list)
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "summary": self.summary,
                "details": list(self.details), "fix": self.fix, "data": dict(self.data)}


class Findings:
    """Collects several problems inside one check and folds them into one ``CheckResult``."""

    def __init__(self) -> None:
        self.status: Status = OK
        self.details: list[str] = []
        self.fixes: list[str] = []
        self.problems: list[str] = []

    def add(self, status: Status, problem: str, fix: str | None = None) -> None:
        self.status = worst(self.status, status)
        if status in (WARNING, FAILED):
            self.problems.append(problem)
            self.details.append(f"{status}: {problem}")
        else:
            self.details.append(problem)
        if fix and fix not in self.fixes:
            self.fixes.append(fix)

    def note(self, line: str) -> None:
        self.details.append(line)

    def result(self, name: str, ok_summary: str, data: dict[str, Any] | None = None
               ) -> CheckResult:
        if self.status in (WARNING, FAILED):
            n = len(self.problems)
            details = self.details
            if n == 1:  # the summary says it already
                summary = self.problems[0]
                details = [d for d in details if not d.endswith(": " + summary)]
            else:
                summary = f"{n} problems: {self.problems[0]}; ..."
            return CheckResult(name, self.status, summary, details,
                               "; ".join(self.fixes) or None, data or {})
        return CheckResult(name, self.status, ok_summary, self.details, None, data or {})
