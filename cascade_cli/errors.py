"""One exception tree for the whole package.

Foreign exceptions (SQLAlchemy, httpx, YAML, OS) are translated into these once, at the boundary
where they occur. The CLI is the single error boundary: a ``CascadeError`` becomes one red line
and its ``exit_code``; anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

# Documented exit codes (see ``cascade --help``).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class CascadeError(Exception):
    """Base of every expected error. ``hint`` tells the user what to do about it."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class HttpError(CascadeError):
    """An error that can reach an HTTP client: it carries what the client is told, so the
    web layer answers every one of them by these attributes (no table of classes there).

    ``status`` and ``code`` (PROTOCOL.md's stable machine string); ``public_message()`` (the
    message, unless it names what only the operator may see); ``headers()`` and
    ``detail()``; ``log_level``: how the parent's log notes it (None: not at all)."""

    status: int = 500
    code: str = "internal_error"
    retry_after: float | None = None
    log_level: ClassVar[int | None] = None
    log_what: ClassVar[str] = "error"

    def public_message(self) -> str:
        return self.message

    def headers(self) -> dict[str, str] | None:
        if self.retry_after is None:
            return None
        return {"Retry-After": str(max(1, int(self.retry_after + 0.999)))}

    def detail(self) -> Any:
        return None

    def log_text(self) -> str:
        return self.message


# --- configuration -------------------------------------------------------------------------


class ConfigError(CascadeError):
    """The configuration file or environment is unusable. ``key`` is the dotted key path."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, key: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.key = key


class UsageError(CascadeError):
    exit_code = EXIT_USAGE


class NotBuiltError(CascadeError):
    """A command that exists in the interface but whose implementation has not landed."""


# --- store ---------------------------------------------------------------------------------


class StoreError(HttpError):
    """The database could not be reached or used. ``code`` and ``public`` are what an HTTP
    client is told (503); the message, with host or file names, goes to the log and the CLI.
    Raised by the store only, translated from the driver's exceptions in one place
    (``store.faults``)."""

    status = 503
    code = "database_unavailable"
    public = "database unavailable"
    retry_after: float | None = 5
    log_level = logging.ERROR
    log_what = "database error"

    def public_message(self) -> str:
        return self.public


class DatabaseBusy(StoreError):
    """A lock wait, deadlock or serialization failure that outlived the retries, or another
    transient refusal of the database: not the client's fault, worth retrying shortly.
    ``transient``: the whole transaction was rolled back by the database and may simply be
    run again (a deadlock, a serialization failure)."""

    code = "database_busy"
    public = "database busy, retry shortly"
    retry_after = 1
    log_level = logging.WARNING
    log_what = "database busy"

    def __init__(self, message: str, *, cause: str, transient: bool = False,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.cause = cause  # the driver's exception class name: what the log shows
        self.transient = transient

    def log_text(self) -> str:
        return self.cause


class SchemaOutOfDate(StoreError):
    code = "schema_out_of_date"
    public = ("the parent's database has no Cascade schema or an old one; run 'cascade init' "
              "on the parent host")
    retry_after = 60


class DatabaseFull(StoreError):
    """The database's storage is full (SQLITE_FULL, PostgreSQL 53100, MySQL 1114/1021)."""

    code = "database_full"
    public = ("the parent's database storage is full: nothing can be written until disk space "
              "is freed (see the parent's log)")
    retry_after = 60


class DatabaseReadOnly(StoreError):
    """The database refuses writes (file permissions, a read-only mount, a standby server)."""

    code = "database_read_only"
    public = ("the parent's database is read-only (file permissions, a read-only mount or a "
              "standby server; see the parent's log)")
    retry_after = 60


class NotFound(HttpError):
    """A named object (node, feed, task, allocation...) does not exist."""

    status = 404
    code = "not_found"

    def __init__(self, kind: str, ident: str, *, hint: str | None = None) -> None:
        super().__init__(f"{kind} not found: {ident}", hint=hint)
        self.kind = kind
        self.ident = ident


class Conflict(HttpError):
    """The operation conflicts with existing state (duplicate name, terminal allocation...)."""

    status = 409

    def __init__(self, message: str, *, code: str = "conflict", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class InvalidInput(HttpError):
    """A value supplied by a user or client is malformed. ``field`` names it."""

    exit_code = EXIT_USAGE
    status = 422

    def __init__(self, message: str, *, field: str | None = None, code: str = "invalid_input",
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.field = field
        self.code = code

    def detail(self) -> Any:
        if not self.field:
            return None
        return [{"field": self.field, "type": self.code, "message": self.message}]


# --- protocol (raised by the store/parent logic, mapped to HTTP by the parent app) ---------


class ProtocolError(HttpError):
    """An error with a fixed HTTP status and stable machine code from PROTOCOL.md."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class AuthError(ProtocolError):
    status = 401
    code = "invalid_credentials"


class ForbiddenError(ProtocolError):
    status = 403
    code = "forbidden"


class NotOwner(ForbiddenError):
    code = "not_owner"


class LeaseSuperseded(ProtocolError):
    status = 409
    code = "lease_superseded"


class InvalidTransition(ProtocolError):
    status = 409
    code = "invalid_transition"


class PayloadTooLarge(ProtocolError):
    status = 413
    code = "payload_too_large"


class RateLimited(ProtocolError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: float, **kw: object) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- client side (what a child or doctor sees when talking to a parent) --------------------


class ClientError(CascadeError):
    """Base of failures talking to the parent, in the troubleshooting guide's terms."""


class ParentUnreachable(ClientError):
    """Connection refused, DNS failure or timeout (guide problem 2)."""

    def __init__(self, message: str, *, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason  # "refused" | "dns" | "timeout" | "network"


class WrongEndpoint(ClientError):
    """404 from the parent: wrong URL or path prefix (guide problem 2, '404 - Not Found')."""


class BadCredentials(ClientError):
    """401: unknown key, wrong secret, clock skew or replay."""

    def __init__(self, message: str, *, code: str = "invalid_credentials",
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class NodeDisabled(ClientError):
    """403 node_disabled, or another role error."""

    def __init__(self, message: str, *, code: str = "node_disabled",
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class LeaseLost(ClientError):
    """409: the lease expired and the work was handed on, or the transition is invalid."""

    def __init__(self, message: str, *, code: str = "lease_superseded",
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class ParentRejected(ClientError):
    """Any other 4xx: the request itself was refused. Never retried."""

    def __init__(self, message: str, *, status: int, code: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code


class ParentServerError(ClientError):
    """5xx or an answer that is not the protocol's envelope."""

    def __init__(self, message: str, *, status: int | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class FetchError(CascadeError):
    """A feed could not be fetched or parsed; becomes a failed per-feed result."""
