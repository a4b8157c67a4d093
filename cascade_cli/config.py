"""Typed, validated settings from YAML plus ``CASCADE_*`` environment variables.

Where the file comes from (first match wins):
  1. ``--config PATH`` (an error if it does not exist)
  2. ``$CASCADE_CONFIG`` (an error if it does not exist)
  3. ``./config.yaml`` in the current folder
  4. built-in defaults (no file)

``Settings.source`` records which one was used and why, so ``doctor`` can tell. Relative paths
in a file (``data_dir``, a SQLite URL, ``child.spool_path``) are resolved against the file's own
folder, so running a command from another folder reads and writes the same places.

Every key is documented in ``config.example.yaml``. An unknown key is a warning naming it; a
wrong value is a ``ConfigError`` naming the key path, the value and what is expected.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cascade_cli.durations import MAX_SECONDS
from cascade_cli.errors import ConfigError

DEFAULT_PORT = 8001


def _xdg_data_home(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cascade"


def normalise_url(value: Any) -> Any:
    """Strip stray quotes and whitespace, add a missing ``http://``, drop trailing slashes."""
    if not isinstance(value, str):
        return value
    url = value.strip().strip("'\"").strip()
    if not url:
        return url
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


_API_PREFIX_SUFFIX = re.compile(r"/api/v1(/wx)?/cascade$", re.IGNORECASE)


class _Section(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, validate_default=True)


class CascadeSection(_Section):
    """The guide's ``cascade:`` block, read unchanged, plus the child's auth mode."""

    enabled: bool = False
    node_type: Literal["parent", "child"] = "parent"
    parent_api_url: str | None = None
    api_key: str | None = None
    api_secret: str | None = Field(default=None, repr=False)
    sync_interval: float = Field(default=300, gt=0, description="seconds")
    heartbeat_interval: float = Field(default=60, gt=0, description="seconds")
    auth_mode: Literal["signed", "plain"] = "signed"

    @field_validator("parent_api_url", mode="before")
    @classmethod
    def _url(cls, v: Any) -> Any:
        v = normalise_url(v)
        if isinstance(v, str) and v and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL such as http://parent-server:8001")
        # The guide's curl commands show full API paths; a base URL pasted with the API
        # prefix still means that parent (the client adds the prefix itself).
        if isinstance(v, str):
            v = _API_PREFIX_SUFFIX.sub("", v)
        return v or None

    @field_validator("api_key", "api_secret", mode="before")
    @classmethod
    def _strip(cls, v: Any) -> Any:
        return v.strip().strip("'\"").strip() if isinstance(v, str) else v


class DatabaseSection(_Section):
    url: str | None = None  # default: sqlite under data_dir
    echo: bool = False
    pool_size: int = Field(default=10, ge=1, le=200)
    # PostgreSQL/MySQL only (see store.timeouts): a server that accepts TCP and never answers
    # costs a request at most these, then 503 database_unavailable.
    connect_timeout: float = Field(default=5, gt=0, le=300)
    statement_timeout: float = Field(default=15, gt=0, le=3600)
    pool_timeout: float = Field(default=10, gt=0, le=300)


class AuthSection(_Section):
    allow_plain_secret: bool = True
    clock_skew: float = Field(default=300, gt=0, le=3600)
    nonce_ttl: float = Field(default=900, gt=0, le=MAX_SECONDS)
    failed_attempts_limit: int = Field(default=20, ge=1)  # per (address, key)
    failed_attempts_address_limit: int = Field(default=200, ge=1)  # per address, all keys
    failed_attempts_window: float = Field(default=60, gt=0, le=MAX_SECONDS)
    admin_token_ttl: float = Field(default=86400, gt=0, le=MAX_SECONDS)
    admin_token_secret_file: str | None = None  # default: <data_dir>/admin-token.key
    rotation_overlap: float = Field(default=86400, ge=0, le=MAX_SECONDS)


class LimitsSection(_Section):
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_articles_per_request: int = Field(default=500, ge=1)
    max_title_length: int = Field(default=1000, ge=1)
    max_url_length: int = Field(default=4096, ge=1)
    max_content_length: int = Field(default=1024 * 1024, ge=1)
    max_feeds_per_task: int = Field(default=200_000, ge=1)


class SchedulerSection(_Section):
    enabled: bool = True
    tick_interval: float = Field(default=1.0, gt=0)
    misfire_grace: float = Field(default=60, ge=0, le=MAX_SECONDS)
    timezone: str = "UTC"  # cron expressions are read in this zone ("0 9 * * *" = 9 am here)

    @field_validator("timezone", mode="before")
    @classmethod
    def _zone(cls, v: Any) -> Any:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        if v is None or (isinstance(v, str) and not v.strip()):
            return "UTC"
        if not isinstance(v, str):
            return v
        name = v.strip()
        if name.upper() != "UTC":
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError("must be an IANA time zone name such as 'Asia/Shanghai' or "
                                 f"'UTC', got {name!r}") from None
        return name


class NotifySection(_Section):
    enabled: bool = True
    max_attempts: int = Field(default=8, ge=1)
    timeout: float = Field(default=10, gt=0)
    backoff_base: float = Field(default=5, gt=0)
    backoff_max: float = Field(default=3600, gt=0, le=MAX_SECONDS)
    poll_interval: float = Field(default=2, gt=0)


class ParentSection(_Section):
    host: str = "0.0.0.0"  # noqa: S104 - a parent serves remote children by design
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    public_url: str | None = None  # what children should use; printed by init --child
    lease_ttl: float = Field(default=300, gt=0, le=MAX_SECONDS)
    max_attempts: int = Field(default=3, ge=1)
    reaper_interval: float = Field(default=15, gt=0)
    batch_size: int = Field(default=10, ge=1)
    offline_after: float = Field(default=180, gt=0, le=MAX_SECONDS)
    affinity_grace: float = Field(default=300, ge=0, le=MAX_SECONDS)
    share_webhook_secrets: bool = False
    # A legacy (we-mp-rss) node's heartbeat renews every lease it holds, but only for this
    # long after the claim: its sync service can drop a claimed allocation without a word,
    # and its heartbeats must not keep that one held for ever.
    legacy_max_hold: float = Field(default=3600, gt=0, le=MAX_SECONDS)
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (IPs or CIDRs).
    trusted_proxies: list[str] = []
    heartbeat_interval: float | None = Field(default=None, gt=0)
    # The sub-path a reverse proxy serves the parent under ("/cascade"): the dashboard's links
    # and cookies carry it. Empty: served at the root.
    base_path: str = ""
    # How long a dashboard login lasts (seconds); never beyond the admin token's own expiry.
    # Shorter than a token's usual lifetime: a session cookie cannot be revoked on its own.
    ui_session_ttl: float = Field(default=43200, gt=0, le=MAX_SECONDS)
    # How the four requests a child repeats per allocation (claim-task, task-status,
    # upload-articles, report-completion) are served, as uvicorn's http="auto"|"h11": "auto"
    # by the hand-written fast path (web/fastpath.py) when a request is plainly well-formed,
    # "off" by FastAPI's routing alone. Same answers either way (tests/parent_http).
    http_fast_path: Literal["auto", "off"] = "auto"
    auth: AuthSection = AuthSection()
    limits: LimitsSection = LimitsSection()
    scheduler: SchedulerSection = SchedulerSection()
    notify: NotifySection = NotifySection()

    @field_validator("public_url", mode="before")
    @classmethod
    def _url(cls, v: Any) -> Any:
        return normalise_url(v) or None

    @field_validator("base_path", mode="before")
    @classmethod
    def _base_path(cls, v: Any) -> Any:
        if v is None:
            return ""
        if not isinstance(v, str):
            return v
        path = v.strip().rstrip("/")
        if path and not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", path):
            raise ValueError("must be a URL path such as '/cascade' (letters, digits, '.', "
                             "'_', '~', '-' between slashes), or empty for the root")
        return path

    @field_validator("http_fast_path", mode="before")
    @classmethod
    def _fast_path(cls, v: Any) -> Any:
        if v is False:  # YAML reads an unquoted off (and no, false) as false
            return "off"
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, v: Any) -> Any:
        if v is None:
            return []
        if isinstance(v, str):  # CASCADE_PARENT__TRUSTED_PROXIES=10.0.0.5,10.1.0.0/16
            v = [part for part in (p.strip() for p in v.split(",")) if part]
        if not isinstance(v, list):
            return v
        for item in v:
            if item == "*":
                continue  # documented: only when nothing but the proxy can reach the port
            try:
                ipaddress.ip_network(str(item).strip(), strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network (CIDR) such as "
                                 "127.0.0.1 or 10.0.0.0/8; host names are not resolved") from None
        return [str(item).strip() for item in v]


class CommandSpec(_Section):
    argv: list[str]
    timeout: float = Field(default=60, gt=0)


class ChildSection(_Section):
    capacity: int = Field(default=2, ge=1, le=256)
    fetch_concurrency: int = Field(default=8, ge=1, le=512)
    per_host_concurrency: int = Field(default=4, ge=1, le=512)
    fetch_timeout: float = Field(default=20, gt=0)
    max_feed_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    spool_path: str | None = None  # default: <data_dir>/spool.db
    drain_timeout: float = Field(default=30, gt=0)
    claim_wait: float = Field(default=30, ge=0, le=60)
    upload_batch_size: int = Field(default=200, ge=1)
    # Sends of one upload the parent answers with 500 (a payload it cannot take, not an
    # outage: 502/503/504 keep the results spooled for ever) before the feed is reported failed.
    upload_attempts: int = Field(default=3, ge=1, le=100)
    user_agent: str = "Cascade/0.1 (+feed crawler)"
    # RSS/Atom parser: fastfeedparser where it gives feedparser's articles (about 50 times
    # less CPU), feedparser for the rest; "feedparser" for feedparser alone.
    feed_parser: Literal["fastfeedparser", "feedparser"] = "fastfeedparser"
    commands: dict[str, CommandSpec] = {}
    # The child's own Prometheus /metrics (off when unset); on 127.0.0.1 unless metrics_host.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    # The HTTP/1.1 connection layer under httpx for the child's requests (to the parent, and
    # direct feed GETs): "auto" the hand-written one (child/transport.py), "httpx" httpx's own.
    transport: Literal["auto", "httpx"] = "auto"

    @field_validator("transport", mode="before")
    @classmethod
    def _choice(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v


class LogSection(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    # serve-parent: one INFO line per HTTP request (logger cascade.access).
    access_log: bool = False

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


class SettingsModel(_Section):
    data_dir: str | None = None
    cascade: CascadeSection = CascadeSection()
    database: DatabaseSection = DatabaseSection()
    parent: ParentSection = ParentSection()
    child: ChildSection = ChildSection()
    log: LogSection = LogSection()


@dataclass(frozen=True)
class ConfigSource:
    path: Path | None
    reason: str  # "--config", "CASCADE_CONFIG", "./config.yaml", "defaults"


@dataclass(frozen=True)
class Settings:
    """Immutable settings plus where they came from. Build once, pass down."""

    model: SettingsModel
    source: ConfigSource
    data_dir: Path
    warnings: tuple[str, ...] = field(default_factory=tuple)

    # Convenience accessors keep call sites short.
    @property
    def cascade(self) -> CascadeSection:
        return self.model.cascade

    @property
    def parent(self) -> ParentSection:
        return self.model.parent

    @property
    def child(self) -> ChildSection:
        return self.model.child

    @property
    def log(self) -> LogSection:
        return self.model.log

    @property
    def database_url(self) -> str:
        url = self.model.database.url
        if not url:
            return f"sqlite:///{self.data_dir / 'cascade.db'}"
        return url

    @property
    def spool_path(self) -> Path:
        return Path(self.child.spool_path) if self.child.spool_path else self.data_dir / "spool.db"

    @property
    def admin_token_secret_file(self) -> Path:
        configured = self.parent.auth.admin_token_secret_file
        return Path(configured) if configured else self.data_dir / "admin-token.key"

    def parent_url_for_children(self) -> str:
        if self.parent.public_url:
            return self.parent.public_url
        if self.cascade.parent_api_url:
            return self.cascade.parent_api_url
        host = self.parent.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104
            host = "127.0.0.1"
        return f"http://{host}:{self.parent.port}"


# --- environment overrides -----------------------------------------------------------------


def env_overrides(environ: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    """Public name of ``_env_overrides`` (doctor reads which keys the environment sets)."""
    return _env_overrides(environ)


_TOP_SECTIONS = ("cascade", "database", "parent", "child", "log")


def _env_overrides(environ: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    """Map ``CASCADE_*`` variables to dotted key paths.

    ``CASCADE_API_SECRET`` -> ``cascade.api_secret`` (keys of the guide's block need no section),
    ``CASCADE_PARENT__PORT`` -> ``parent.port``, ``CASCADE_DATABASE_URL`` -> ``database.url``.
    ``CASCADE_CONFIG`` selects the file and is not a key.
    """
    out: dict[str, tuple[str, Any]] = {}
    cascade_keys = set(CascadeSection.model_fields)
    for name, value in environ.items():
        if not name.startswith("CASCADE_") or name == "CASCADE_CONFIG":
            continue
        rest = name[len("CASCADE_"):].lower()
        if "__" in rest:
            path = rest.replace("__", ".")
        elif rest in cascade_keys:
            path = f"cascade.{rest}"
        elif rest == "database_url":
            path = "database.url"
        elif rest == "data_dir":
            path = "data_dir"
        else:
            head, _, tail = rest.partition("_")
            if head in _TOP_SECTIONS and tail:
                path = f"{head}.{tail}"
            else:
                continue
        out[path] = (name, _env_value(path, value))
    return out


def _field_info(path: str) -> Any:
    """The pydantic field at a dotted path of ``SettingsModel``, or None when unknown."""
    model: Any = SettingsModel
    info = None
    for part in path.split("."):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        info = model.model_fields.get(part)
        if info is None:
            return None
        model = info.annotation
    return info


def _env_value(path: str, raw: str) -> Any:
    """Text for string keys (a secret like ``CS-1`` stays text); YAML scalars for the rest.

    A value that is not valid YAML is passed on as text, so validation names the key instead
    of the YAML parser failing without one.
    """
    info = _field_info(path)
    annotation = getattr(info, "annotation", None)
    if annotation in (str, str | None):
        return raw
    if not raw.strip():
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


# --- unknown keys --------------------------------------------------------------------------


def _unknown_keys(data: Mapping[str, Any], model: type[BaseModel], prefix: str = "") -> list[str]:
    found: list[str] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        info = model.model_fields.get(str(key))
        if info is None:
            found.append(path)
            continue
        sub = info.annotation
        if isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            found.extend(_unknown_keys(value, sub, prefix=f"{path}."))
    return found


# --- error translation ---------------------------------------------------------------------

_EXPECT = {
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "literal_error": "must be one of {expected}",
    "string_type": "must be a string",
    "dict_type": "must be a mapping (key: value lines)",
    "model_type": "must be a mapping (key: value lines)",
    "list_type": "must be a list",
    "missing": "is required",
}


def _describe(err: Mapping[str, Any]) -> str:
    kind = str(err.get("type", ""))
    ctx = {k: (f"{v:g}" if isinstance(v, int | float) and not isinstance(v, bool) else v)
           for k, v in (err.get("ctx") or {}).items()}
    template = _EXPECT.get(kind)
    if template:
        try:
            text = template.format(**ctx)
        except (KeyError, IndexError):
            text = template
    else:
        text = str(err.get("msg", "is invalid"))
        text = text.removeprefix("Value error, ")
    loc = [str(p) for p in err.get("loc", ())]
    if loc and loc[-1] in _SECONDS_FIELDS:
        if kind in ("greater_than", "float_parsing", "float_type") and "ge" not in ctx:
            text = "must be a positive number of seconds"
        elif kind == "greater_than_equal":
            text = f"must be a number of seconds, at least {ctx.get('ge')}"
        elif kind == "less_than_equal":
            text = f"must be a number of seconds, at most {ctx.get('le')}"
    return text


# Keys measured in seconds: their errors say so.
_SECONDS_FIELDS = frozenset({
    "sync_interval", "heartbeat_interval", "lease_ttl", "timeout", "fetch_timeout",
    "drain_timeout", "reaper_interval", "clock_skew", "nonce_ttl", "failed_attempts_window",
    "admin_token_ttl", "rotation_overlap", "tick_interval", "misfire_grace", "backoff_base",
    "backoff_max", "poll_interval", "offline_after", "affinity_grace", "claim_wait",
    "legacy_max_hold", "ui_session_ttl",
    "connect_timeout", "statement_timeout", "pool_timeout",
})


def _config_error(exc: ValidationError, origin: str,
                  env_paths: Mapping[str, str] | None = None) -> ConfigError:
    errors = exc.errors()
    lines = []
    first_key = None
    env_paths = env_paths or {}
    origins: list[str] = []
    for err in errors:
        key = ".".join(str(p) for p in err.get("loc", ()))
        first_key = first_key or key
        value = err.get("input")
        shown = "<hidden>" if key.endswith(("api_secret",)) else repr(value)
        if isinstance(value, str) and not key.endswith("api_secret"):
            shown = f'"{value}"'
        lines.append(f"{key}: {_describe(err)}, got {shown}")
        # Say where the bad value came from: an environment variable or the file.
        var = next((v for p, v in env_paths.items() if key == p or key.startswith(p + ".")),
                   None)
        where = f"environment variable {var}" if var else origin
        if where not in origins:
            origins.append(where)
    message = "; ".join(lines)
    return ConfigError(
        f"{message} (in {', '.join(origins) or origin})",
        key=first_key,
        hint="fix the value in the configuration (see config.example.yaml for every key)",
    )


# --- loading -------------------------------------------------------------------------------


def _read_yaml(path: Path, reason: str = "--config") -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        named = "named by --config" if reason == "--config" else f"named by ${reason}"
        raise ConfigError(f"config file not found: {path} ({named})",
                          hint="check the path, or leave it out to use ./config.yaml "
                               "or the built-in defaults") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"config path is a folder, not a file: {path}") from exc
    except PermissionError as exc:
        raise ConfigError(f"config file not readable: {path}",
                          hint="check its permissions") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file is not UTF-8 text: {path}") from exc
    except OSError as exc:
        raise ConfigError(f"config file cannot be read: {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}",
                          hint="fix the YAML syntax (indentation, colons, quotes)") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections "
                          f"(cascade:, parent:, child:, ...), got {type(data).__name__}")
    return data


# --- we-mp-rss config.yaml (docs/migration.md) ----------------------------------------------

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_text(value: str, environ: Mapping[str, str]) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` as we-mp-rss expands them: the variable when set
    (even empty), else the default. A value that is one placeholder only becomes a number or
    a boolean when it reads as one, as the original's ``cfg.get`` did."""
    whole = _PLACEHOLDER.fullmatch(value.strip())

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        return environ.get(name, default or "")

    text = _PLACEHOLDER.sub(sub, value)
    if whole:
        low = text.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        if re.fullmatch(r"-?[0-9]+", text.strip()):
            return int(text.strip())
    return text


def expand_placeholders(data: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(data, dict):
        return {k: expand_placeholders(v, environ) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_placeholders(v, environ) for v in data]
    if isinstance(data, str) and "${" in data:
        return _expand_text(data, environ)
    return data


# we-mp-rss keys (top level, or in its cascade: block) and what replaces each in Cascade.
_WEMPRSS_KEYS = {
    "task_poll_interval": "child.claim_wait (a child long-polls claim-task and gets work "
                          "as soon as it exists)",
    "claim_interval": "child.claim_wait (we-mp-rss never used it)",
    "callback_url": "nothing: children long-poll claim-task (child.claim_wait), the parent "
                    "needs no address of theirs",
    "db": "database.url",
    "port": "parent.port (and the URL in each child's cascade.parent_api_url)",
    "secret": "admin tokens: 'cascade token create' (signed with the key 'cascade init' made)",
    "token_expire_minutes": "parent.auth.admin_token_ttl (seconds) or 'cascade token create "
                            "--ttl'",
    "server": "the options of 'cascade serve-parent'",
    "interval": "child.per_host_concurrency and child.fetch_timeout",
    "webhook": "each message task's web_hook_url, message_type and message_template",
}


def _wemprss_keys(data: dict[str, Any], origin: str) -> list[str]:
    """Take we-mp-rss keys out of the data, with a warning naming what replaces each (they
    would otherwise be 'unknown key' warnings that do not say what to do)."""
    found: list[str] = []
    for key in list(data):
        if key in _WEMPRSS_KEYS:
            data.pop(key)
            found.append(f"'{key}' is a we-mp-rss key (in {origin}); Cascade ignores it. "
                         f"It is replaced by {_WEMPRSS_KEYS[key]}")
    cascade = data.get("cascade")
    if isinstance(cascade, dict):
        for key in list(cascade):
            if key in ("task_poll_interval", "claim_interval", "callback_url"):
                cascade.pop(key)
                found.append(f"'cascade.{key}' is a we-mp-rss key (in {origin}); Cascade "
                             f"ignores it. It is replaced by {_WEMPRSS_KEYS[key]}")
    return found


def locate_config(explicit: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None,
                  cwd: Path | None = None) -> ConfigSource:
    env = os.environ if environ is None else environ
    if explicit:
        return ConfigSource(Path(explicit).expanduser().absolute(), "--config")
    if env.get("CASCADE_CONFIG"):
        return ConfigSource(Path(env["CASCADE_CONFIG"]).expanduser().absolute(), "CASCADE_CONFIG")
    local = (cwd or Path.cwd()) / "config.yaml"
    if local.is_file():
        return ConfigSource(local.absolute(), "./config.yaml")
    return ConfigSource(None, "defaults")


def _resolve_relative(path_value: str | None, base: Path) -> str | None:
    if not path_value:
        return path_value
    p = Path(path_value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _resolve_sqlite_url(url: str | None, base: Path) -> str | None:
    if not url or not url.startswith("sqlite"):
        return url
    prefix, sep, rest = url.partition(":///")
    if not sep or not rest or rest.startswith("/") or rest == ":memory:":
        return url
    return f"{prefix}:///{(base / rest).resolve()}"


def _origin_of(key: str, env_paths: Mapping[str, str], origin: str) -> str:
    var = env_paths.get(key)
    return f"environment variable {var}" if var else origin


def load_settings(explicit: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None,
                  cwd: Path | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """Load, merge and validate. Raises ``ConfigError`` naming the key on any problem."""
    env = os.environ if environ is None else environ
    source = locate_config(explicit, env, cwd)
    data: dict[str, Any] = _read_yaml(source.path, source.reason) if source.path else {}
    origin = str(source.path) if source.path else "built-in defaults"

    for section in _TOP_SECTIONS:
        if section in data and data[section] is None:
            data[section] = {}  # "child:" with everything commented out
        if section in data and not isinstance(data[section], dict):
            raise ConfigError(
                f"{section}: must be a mapping (indented key: value lines), "
                f"got {data[section]!r} (in {origin})", key=section)

    data = expand_placeholders(data, env)
    warnings_wemp = _wemprss_keys(data, origin)
    env_paths: dict[str, str] = {}
    for path, (var, value) in _env_overrides(env).items():
        _set_path(data, path, value)
        env_paths[path] = var
    for path, value in (overrides or {}).items():
        _set_path(data, path, value)

    warnings = warnings_wemp + [f"unknown configuration key '{k}' "
                f"(in {_origin_of(k, env_paths, origin)}) is ignored; "
                f"see config.example.yaml for the valid keys"
                for k in _unknown_keys(data, SettingsModel)]
    try:
        model = SettingsModel.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, origin, env_paths) from None

    base = source.path.parent if source.path else Path.cwd()
    if model.data_dir:
        data_dir = Path(_resolve_relative(model.data_dir, base) or model.data_dir)
    elif source.path:
        data_dir = base / "data"
    else:
        data_dir = _xdg_data_home(env)
    fixes: dict[str, Any] = {}
    if model.database.url:
        fixes["database"] = model.database.model_copy(
            update={"url": _resolve_sqlite_url(model.database.url, base)})
    if model.child.spool_path:
        fixes["child"] = model.child.model_copy(
            update={"spool_path": _resolve_relative(model.child.spool_path, base)})
    if model.parent.auth.admin_token_secret_file:
        auth = model.parent.auth.model_copy(update={"admin_token_secret_file": _resolve_relative(
            model.parent.auth.admin_token_secret_file, base)})
        fixes["parent"] = model.parent.model_copy(update={"auth": auth})
    if fixes:
        model = model.model_copy(update=fixes)
    return Settings(model=model, source=source, data_dir=data_dir, warnings=tuple(warnings))


def child_config_problems(settings: Settings) -> list[tuple[str, str]]:
    """Why these settings cannot run a child: (key, fix) pairs; empty when usable.

    This is the guide's problem 1 (``级联客户端未初始化``) made explicit.
    """
    c = settings.cascade
    problems: list[tuple[str, str]] = []
    if not c.enabled:
        problems.append(("cascade.enabled", "set cascade.enabled: true"))
    if c.node_type != "child":
        problems.append(("cascade.node_type", "set cascade.node_type: child"))
    if not c.parent_api_url:
        problems.append(("cascade.parent_api_url",
                         "set cascade.parent_api_url: http://parent-server:8001"))
    if not c.api_key:
        problems.append(("cascade.api_key", "paste the api_key printed by "
                         "'cascade init --child NAME' on the parent"))
    elif not re.fullmatch(r"CN[A-Za-z0-9_\-]{32}", c.api_key):
        problems.append(("cascade.api_key", "an api_key is 'CN' followed by 32 letters/digits "
                         "(keys imported from we-mp-rss may also hold '-' and '_'); "
                         "copy it again from 'cascade init --child NAME'"))
    elif _is_placeholder(c.api_key):
        problems.append(("cascade.api_key", "this is the sample placeholder (CNxxx...), not a "
                         "key: paste the api_key printed by 'cascade init --child NAME'"))
    if not c.api_secret:
        problems.append(("cascade.api_secret", "paste the api_secret printed once by "
                         "'cascade init --child NAME' (or set CASCADE_API_SECRET)"))
    elif not re.fullmatch(r"CS[A-Za-z0-9_\-]{20,}", c.api_secret):
        problems.append(("cascade.api_secret", "an api_secret starts with 'CS'; copy it again, "
                         "or rotate it with 'cascade nodes rotate NAME' on the parent"))
    elif _is_placeholder(c.api_secret):
        problems.append(("cascade.api_secret", "this is the sample placeholder (CSxxx...), not "
                         "a secret: paste the api_secret printed once by 'cascade init --child "
                         "NAME', or rotate it with 'cascade nodes rotate NAME'"))
    return problems


def _is_placeholder(credential: str) -> bool:
    """The troubleshooting guide's sample values (``CNxxxx...``, ``CSxxxx...``)."""
    return len(set(credential[2:].lower())) == 1 and credential[2:3].lower() == "x"
