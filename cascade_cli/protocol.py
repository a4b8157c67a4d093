"""Wire models shared by parent and child (PROTOCOL.md, version 1).

Requests ignore unknown fields (forward compatibility). Field names are the protocol's and are
stable; add fields, never rename them.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cascade_cli import PROTOCOL_VERSION
from cascade_cli.errors import InvalidInput

NO_TASK_MESSAGE = "暂无待处理任务"  # fixed string: "no pending task"
CANONICAL_PREFIX = "/api/v1/cascade"
LEGACY_PREFIX = "/api/v1/wx/cascade"
PREFIXES = (CANONICAL_PREFIX, LEGACY_PREFIX)

# Counters are INTEGER columns on every database: a larger number from a client is a 422,
# never a database overflow (a 500).
INT32_MAX = 2**31 - 1

__all__ = ["PROTOCOL_VERSION", "NO_TASK_MESSAGE", "CANONICAL_PREFIX", "LEGACY_PREFIX"]


# --- control characters (docs/protocol.md, "Control characters") ------------------------------
# One rule on every database. PostgreSQL cannot store U+0000 in text at all (SQLite and MariaDB
# can), and no other control character means anything in a feed id or a hostname:
# * free text (article title/description/content/author, error messages, descriptions, names
#   of feeds and tasks, templates) has NUL and the C0 controls other than TAB, LF and CR, and
#   DEL, removed - a feed that puts one in a title must not make its articles unstorable;
# * every other string (ids, node names, URLs, hostnames, versions, etags, dates, query and
#   path parameters) holding any control character (U+0000-U+001F, U+007F) is refused: 422.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_NOISE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# ``c in text`` for each of these runs at memory speed; the regex engine scans 5x slower, and
# articles' content is most of what the parent validates.
_NOISE_CHARS = tuple(chr(c) for c in (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F))


def clean_text(text: str) -> str:
    """Free text without NUL and the control characters other than TAB, LF and CR."""
    # Every control character is in Unicode's category Cc, which ``isprintable`` refuses: one
    # C pass settles most titles, names and authors (20x faster than the 29 scans below);
    # text with a newline or an exotic space falls through to them.
    if text.isprintable():
        return text
    for char in _NOISE_CHARS:
        if char in text:
            return _TEXT_NOISE.sub("", text)
    return text


def strip_controls(text: str) -> str:
    """An identifier from outside (a feed's guid, URL, ETag) without any control character:
    what the parent would refuse, the child removes before sending."""
    if text.isprintable():  # no control character (category Cc): the usual case, one C pass
        return text
    return _CONTROL.sub("", text) if _CONTROL.search(text) else text


def clean_deep(value: Any) -> Any:
    """``clean_text`` applied to every string (and dict key) of a JSON-like value."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list | tuple):
        return [clean_deep(v) for v in value]
    if isinstance(value, dict):
        return {clean_deep(k): clean_deep(v) for k, v in value.items()}
    return value


def control_char(value: Any) -> str | None:
    """The first control character in a string, or in the strings of a JSON-like value."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            hit = _CONTROL.search(item)
            if hit:
                return hit.group(0)
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return None


def control_char_message(char: str) -> str:
    return (f"must not contain control characters (found U+{ord(char):04X}); ids, names, "
            "URLs and other identifiers are refused with them, free text has them removed")


class WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    # Fields of free text: control characters removed. RAW_FIELDS check their own characters.
    # Every other field is an identifier: a control character in it is refused.
    TEXT_FIELDS: ClassVar[frozenset[str]] = frozenset()
    RAW_FIELDS: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _control_characters(cls, data: Any) -> Any:
        # One pass over the raw fields (not a validator per field: that tripled the cost of
        # validating an upload of articles, the parent's hottest request).
        if not isinstance(data, dict):
            return data
        text, skip = cls.TEXT_FIELDS, cls.RAW_FIELDS | _model_fields(cls)
        cleaned: dict[str, Any] | None = None
        for key, value in data.items():
            if key in skip or value is None or isinstance(value, bool | int | float):
                continue
            if key in text:
                new = clean_text(value) if isinstance(value, str) else clean_deep(value)
                if new is not value and new != value:
                    if cleaned is None:
                        cleaned = dict(data)
                    cleaned[key] = new
                continue
            if isinstance(value, str):
                hit = _CONTROL.search(value)
                char = hit.group(0) if hit else None
            else:
                char = control_char(value)
            if char is not None:
                raise PydanticCustomError("control_character", "{field} {reason}",
                                          {"field": key, "reason": control_char_message(char)})
        return data if cleaned is None else cleaned


@functools.lru_cache(maxsize=256)
def _model_fields(cls: type[BaseModel]) -> frozenset[str]:
    """Fields holding nested models (names and aliases): those check their own fields."""
    out = set()
    for name, field in cls.model_fields.items():
        if _holds_model(cls, name):
            out.add(name)
            if field.alias:
                out.add(field.alias)
    return frozenset(out)


@functools.lru_cache(maxsize=512)
def _holds_model(cls: type[BaseModel], name: str) -> bool:
    field = cls.model_fields.get(name)
    pending = [field.annotation] if field is not None else []
    while pending:
        tp = pending.pop()
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return True
        pending.extend(get_args(tp))
    return False


M = TypeVar("M", bound=BaseModel)


def parse_model(model: type[M], data: Any, *, where: str | None = None) -> M:
    """Validate input outside HTTP (CLI, files): the first problem as one ``InvalidInput``
    naming the field, instead of pydantic's multi-line report."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
        prefix = f"{where}: " if where else ""
        raise InvalidInput(f"{prefix}{field}: {msg}", field=field) from None


def parse_time(value: Any) -> datetime | None:
    """Epoch seconds (int/float/numeric string) or ISO-8601; naive input is UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if seconds > 1e12:  # milliseconds, as some bridges send
            seconds /= 1000.0
        dt = datetime.fromtimestamp(seconds, tz=UTC)
    elif isinstance(value, str):
        text = value.strip()
        try:
            return parse_time(float(text))
        except ValueError:
            pass
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    else:
        raise ValueError("must be epoch seconds or an ISO-8601 time")
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# --- node requests -------------------------------------------------------------------------


class HeartbeatIn(WireModel):
    callback_url: str | None = Field(default=None, max_length=1000)
    running: list[str] = Field(default_factory=list, max_length=1000)
    version: str | None = Field(default=None, max_length=64)
    hostname: str | None = Field(default=None, max_length=255)
    capacity: int | None = Field(default=None, ge=0, le=256)


# ``completed`` is we-mp-rss's way to finish an allocation; accepted from legacy nodes only
# (others get 422 and are pointed at report-completion).
AllocationWriteStatus = Literal["executing", "failed", "released", "completed"]


class _Fenced(WireModel):
    epoch: int | None = Field(default=None, ge=0)
    timestamp: Any = None


class TaskStatusIn(_Fenced):
    TEXT_FIELDS = frozenset({"error_message"})
    allocation_id: str = Field(min_length=1, max_length=64)
    status: AllocationWriteStatus
    error_message: str | None = Field(default=None, max_length=10_000)


class ArticleIn(WireModel):
    TEXT_FIELDS = frozenset({"title", "description", "content", "author"})
    id: str | None = Field(default=None, max_length=255)
    guid: str | None = Field(default=None, max_length=2048)
    feed_id: str | None = Field(default=None, max_length=128)
    mp_id: str | None = Field(default=None, max_length=128)
    title: str = Field(default="", max_length=1000)
    url: str = Field(default="", max_length=4096)
    pic_url: str | None = Field(default=None, max_length=4096)
    description: str | None = None
    content: str | None = None
    author: str | None = Field(default=None, max_length=255)
    publish_time: Any = None

    @field_validator("publish_time", mode="before")
    @classmethod
    def _time(cls, v: Any) -> Any:
        try:
            return parse_time(v)
        except (ValueError, OverflowError, OSError) as exc:
            raise ValueError(f"publish_time: {exc}") from None

    @property
    def source_feed_id(self) -> str | None:
        return self.feed_id or self.mp_id


class UploadArticlesIn(_Fenced):
    allocation_id: str = Field(min_length=1, max_length=64)
    feed_id: str | None = Field(default=None, max_length=128)
    articles: list[ArticleIn] = Field(default_factory=list)


FeedResultStatus = Literal["success", "failed", "not_modified"]


class FeedResultIn(WireModel):
    TEXT_FIELDS = frozenset({"error"})
    feed_id: str | None = Field(default=None, max_length=128)
    mp_id: str | None = Field(default=None, max_length=128)
    status: FeedResultStatus
    article_count: int = Field(default=0, ge=0, le=INT32_MAX)
    new_article_count: int | None = Field(default=None, ge=0, le=INT32_MAX)
    error: str | None = Field(default=None, max_length=10_000)
    etag: str | None = Field(default=None, max_length=1024)
    last_modified: str | None = Field(default=None, max_length=255)
    duration_ms: int | None = Field(default=None, ge=0, le=INT32_MAX)

    @model_validator(mode="before")
    @classmethod
    def _success_flag(cls, data: Any) -> Any:
        """we-mp-rss's sync service reports ``success: true|false`` instead of a status; it
        means the same and grants nothing, so every node may send it."""
        if isinstance(data, dict) and data.get("status") is None \
                and isinstance(data.get("success"), bool):
            return {**data, "status": "success" if data["success"] else "failed"}
        return data

    @model_validator(mode="after")
    def _has_feed(self) -> FeedResultIn:
        if not (self.feed_id or self.mp_id):
            raise ValueError("feed_id (or mp_id) is required")
        return self

    @property
    def source_feed_id(self) -> str:
        return self.feed_id or self.mp_id or ""


class ReportCompletionIn(_Fenced):
    allocation_id: str = Field(min_length=1, max_length=64)
    task_id: str | None = Field(default=None, max_length=64)
    results: list[FeedResultIn] = Field(default_factory=list, max_length=100_000)
    article_count: int = Field(default=0, ge=0, le=INT32_MAX)


class ReportResultIn(WireModel):
    """Legacy: recorded as an event only."""

    TEXT_FIELDS = frozenset({"results"})

    task_id: str | None = Field(default=None, max_length=64)
    results: list[Any] = Field(default_factory=list, max_length=10_000)
    timestamp: Any = None


# --- admin requests ------------------------------------------------------------------------

FEED_ID_PATTERN = r"^[A-Za-z0-9_.:@\-]{1,128}$"


class FeedIn(WireModel):
    TEXT_FIELDS = frozenset({"mp_name", "mp_intro"})
    id: str | None = Field(default=None, pattern=FEED_ID_PATTERN)
    mp_name: str = Field(default="", max_length=255)
    url: str = Field(min_length=1, max_length=4096)
    kind: str = Field(default="rss", pattern=r"^[a-z][a-z0-9_\-]{0,63}$")
    faker_id: str | None = Field(default=None, max_length=255)
    mp_cover: str | None = Field(default=None, max_length=4096)
    mp_intro: str | None = Field(default=None, max_length=10_000)
    status: Literal[0, 1] = 1
    preferred_node: str | None = Field(default=None, max_length=100)


class FeedUpdate(WireModel):
    TEXT_FIELDS = frozenset({"mp_name", "mp_intro"})
    mp_name: str | None = Field(default=None, max_length=255)
    url: str | None = Field(default=None, min_length=1, max_length=4096)
    kind: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_\-]{0,63}$")
    faker_id: str | None = Field(default=None, max_length=255)
    mp_cover: str | None = Field(default=None, max_length=4096)
    mp_intro: str | None = Field(default=None, max_length=10_000)
    status: Literal[0, 1] | None = None
    preferred_node: str | None = Field(default=None, max_length=100)


def normalise_mps_id(value: Any) -> list[str]:
    """Accept a list of ids, a JSON string of that list, or a list of ``{"id": ...}`` objects."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = [part.strip() for part in text.split(",") if part.strip()]
    if not isinstance(value, list):
        raise ValueError("must be a list of feed ids")
    out: list[str] = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("id")
        if not isinstance(item, str | int) or isinstance(item, bool) or str(item) == "":
            raise ValueError("every entry must be a feed id (or an object with an 'id')")
        out.append(str(item))
    # keep order, drop duplicates
    return list(dict.fromkeys(out))


class MessageTaskIn(WireModel):
    TEXT_FIELDS = frozenset({"name", "message_template"})
    RAW_FIELDS = frozenset({"cookies"})
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")
    name: str = Field(min_length=1, max_length=255)
    mps_id: list[str] = Field(default_factory=list)
    cron_exp: str | None = Field(default=None, max_length=255)
    web_hook_url: str | None = Field(default=None, max_length=4096)
    message_type: Literal[0, 1] = 0
    message_template: str | None = Field(default=None, max_length=100_000)
    headers: dict[str, str] | None = None
    cookies: str | None = Field(default=None, max_length=10_000)
    status: Literal[0, 1] = 1
    overlap_policy: Literal["skip", "allow"] = "skip"
    misfire_policy: Literal["skip", "run_once"] = "skip"
    misfire_grace: float | None = Field(default=None, ge=0)
    jitter: float = Field(default=0, ge=0, le=3600)
    webhook_secret: str | None = Field(default=None, max_length=128)

    @field_validator("mps_id", mode="before")
    @classmethod
    def _mps(cls, v: Any) -> list[str]:
        return normalise_mps_id(v)

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            if not v:
                return None
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                raise ValueError("must be a JSON object of header names to values") from None
        if isinstance(v, dict):
            out = {str(k): str(val) for k, val in v.items()}
            for name, value in out.items():
                if not name.strip() or any(c in name + value for c in "\r\n\0"):
                    raise ValueError(f"header {name!r}: names must be non-empty and names and "
                                     "values must not contain line breaks")
            return out
        return v

    @field_validator("cookies", mode="before")
    @classmethod
    def _cookies(cls, v: Any) -> Any:
        """``k=v; k2=v2`` (newlines may separate pairs too); a part without ``=`` is refused
        rather than silently dropped when the webhook is sent."""
        if not isinstance(v, str):
            return v
        if not v.strip():
            return None
        for part in v.replace("\n", ";").split(";"):
            part = part.strip()
            if part and (not part.partition("=")[1] or not part.partition("=")[0].strip()):
                raise ValueError(f"expected 'name=value; name2=value2', got {part!r}")
            if "\r" in part or "\0" in part:
                raise ValueError("cookies must not contain control characters")
        return v

    @field_validator("cron_exp", "web_hook_url", mode="before")
    @classmethod
    def _blank_none(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip():
            return None
        return v.strip() if isinstance(v, str) else v


class MessageTaskUpdate(MessageTaskIn):
    name: str | None = Field(default=None, min_length=1, max_length=255)  # type: ignore[assignment]
    mps_id: list[str] | None = None  # type: ignore[assignment]
    message_type: Literal[0, 1] | None = None  # type: ignore[assignment]
    status: Literal[0, 1] | None = None  # type: ignore[assignment]
    overlap_policy: Literal["skip", "allow"] | None = None  # type: ignore[assignment]
    misfire_policy: Literal["skip", "run_once"] | None = None  # type: ignore[assignment]
    jitter: float | None = Field(default=None, ge=0, le=3600)  # type: ignore[assignment]


class NodeIn(WireModel):
    TEXT_FIELDS = frozenset({"description"})
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    description: str = Field(default="", max_length=500)
    max_capacity: int = Field(default=2, ge=1, le=256)
    # we-mp-rss's admin page sends these too: node_type 1 (child) is the only kind Cascade
    # keeps; api_url (the child's own address) is not needed and ignored.
    node_type: Literal[1] | None = None
    api_url: str | None = Field(default=None, max_length=500)

    @field_validator("node_type", mode="before")
    @classmethod
    def _child_only(cls, v: Any) -> Any:
        if v == 0:
            raise ValueError("Cascade keeps no parent node records (this parent is the "
                             "parent): create child nodes only (node_type 1)")
        return v


class NodeUpdate(WireModel):
    TEXT_FIELDS = frozenset({"description"})
    description: str | None = Field(default=None, max_length=500)
    max_capacity: int | None = Field(default=None, ge=1, le=256)
    enabled: bool | None = None


# --- node answers (the envelope's ``data``) ------------------------------------------------
#
# Produced by the parent's node routes (``web.routes_node``, also behind the fast path) and
# parsed by the client layer (``client``), so the child reads attributes. The JSON of each is
# the protocol's, byte for byte: the fields in the order the parent has always sent them, every
# field present (null when empty) except the legacy package's extra fields, which only a
# we-mp-rss node gets (``LegacyTaskPackage``). Unknown fields are ignored when parsing (a newer
# parent may add some), and every field has a default, so a partial answer from an older or
# foreign parent still parses; the child checks what it needs (e.g. an ``allocation_id``).
# No control-character rule here (that guards what the parent accepts, see ``WireModel``).


class WireAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    def wire_json(self) -> bytes:
        """The answer as the parent sends it: compact UTF-8 JSON, non-ASCII unescaped (what
        ``web.envelope``'s encoder writes for the same values)."""
        return self.__pydantic_serializer__.to_json(self)


class HeartbeatCheck(WireAnswer):
    """``GET /heartbeat``: a read-only connection check (node or admin)."""

    status: str = "alive"
    node_id: str | None = None
    node_name: str | None = None
    role: str | None = None
    server_time: str | None = None
    protocol: int = PROTOCOL_VERSION


class HeartbeatAnswer(WireAnswer):
    """``POST /heartbeat``: the intervals the child should keep, and the allocations it listed
    as running that it no longer holds (``cancel``: drop that work)."""

    status: str = "alive"
    node_id: str | None = None
    node_name: str | None = None
    server_time: str | None = None
    heartbeat_interval: float | None = None
    lease_ttl: float | None = None
    cancel: list[str] = Field(default_factory=list)
    protocol: int = PROTOCOL_VERSION


class Lease(WireAnswer):
    expires_at: str | None = None
    ttl: int = 0


class PackageFeed(WireAnswer):
    """A feed as a task package lists it (``store.feeds.PACKAGE_COLUMNS``)."""

    id: str | None = None
    faker_id: str | None = None
    mp_name: str | None = None
    mp_cover: str | None = None
    mp_intro: str | None = None
    status: int | None = None
    url: str | None = None
    kind: str | None = None
    etag: str | None = None
    last_modified: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _mp_id(cls, data: Any) -> Any:
        """A feed named by ``mp_id`` (we-mp-rss's name for it) instead of ``id``."""
        if isinstance(data, dict) and not data.get("id") and data.get("mp_id"):
            return {**data, "id": data["mp_id"]}
        return data


class TaskPackage(WireAnswer):
    """The claim result (PROTOCOL.md, "Task package")."""

    allocation_id: str | None = None
    task_id: str | None = None
    task_name: str | None = None
    schedule_run_id: str | None = None
    attempt: int | None = None
    epoch: int | None = None
    lease: Lease | None = None
    message_type: int = 0
    cron_exp: str | None = None
    feeds: list[PackageFeed] = Field(default_factory=list)
    dispatched_at: str | None = None
    protocol: int = PROTOCOL_VERSION


class LegacyTaskPackage(TaskPackage):
    """The package for a we-mp-rss (legacy) node: its worker reads the task's template,
    webhook URL, and headers and cookies (as the original stored them: a JSON object string;
    ``k=v; k2=v2``) from the package and fails with a KeyError without them. Never sent to
    other nodes: these may carry tokens, and the parent sends notifications itself."""

    message_template: str | None = None
    web_hook_url: str | None = None
    headers: str | None = None
    cookies: str | None = None


class AllocationAnswer(WireAnswer):
    """``PUT /task-status`` and ``POST /report-completion``: the allocation's state after."""

    allocation_id: str | None = None
    status: str | None = None


class UploadAnswer(WireAnswer):
    """``POST /upload-articles``: articles received, and how many of them were new."""

    received: int = 0
    new_count: int = 0


class ReportResultAnswer(WireAnswer):
    """Legacy ``POST /report-result``: recorded as an event."""

    task_id: str | None = None
    recorded: bool = True
    event_id: int | None = None
