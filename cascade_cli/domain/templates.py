"""Notification messages: sandboxed Jinja2 templates and the body shape of each channel.

Decisions (see docs/operations.md, "Notifications"):

* Templates run in Jinja2's ``SandboxedEnvironment``: no access to ``__class__``, ``__globals__``
  and friends, ranges capped.
* Every render is bounded (docs/operations.md, "Template limits"): at most ``MAX_STEPS`` loop
  iterations, calls and attribute reads together, ``MAX_OUTPUT`` characters in any value or in
  the output, and ``RENDER_SECONDS`` of wall time, checked at every step. A thread cannot be
  killed, so the work itself stops: a loop, a call or a filter that would pass a bound raises.
  The same bounds apply when a task is saved (test render on sample data) and when it is
  sent. An escape attempt or a template over a bound is refused when the task is saved and,
  should one slip through, at render time with a clear error; the delivery is then marked
  dead, nothing crashes.
* ``StrictUndefined``: a misspelt name (``{{ artcles }}``) is an error, reported at
  ``tasks add`` time with its line and column, instead of a silently empty message. ``None``
  values (an article without author) render as an empty string.
* Context: ``feed`` (id, mp_name, name, url, mp_cover, mp_intro), ``articles`` (list of
  title, url, pic_url, description, author, publish_time as ISO-8601 text, id), ``task`` (id,
  name, cron_exp, message_type; never the webhook, headers, cookies or secret), ``now`` (ISO
  text), ``article_count`` (all new articles of the feed in the run) and ``more`` (how many
  were left out of ``articles``, which holds at most ``MAX_ARTICLES``). Filter
  ``datetime(fmt)`` formats an ISO time.
* message_type 0 (text/markdown): autoescape off; the rendered text is wrapped in the shape of
  the channel picked from the webhook host (WeCom, DingTalk, Feishu/Lark, Bark, else generic).
* message_type 1 (JSON): the rendered text is posted as is and must parse as JSON. Inside a
  JSON template every ``{{ value }}`` is JSON-escaped (so ``"{{ a.title }}"`` stays valid JSON
  whatever quotes or newlines the title holds) and ``{{ value | tojson }}`` emits a JSON value
  (object, list, number, quoted string) for use outside quotes.
"""

from __future__ import annotations

import functools
import json
import math
import re
import string
import threading
import time
from collections.abc import ItemsView, KeysView, ValuesView
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

from cascade_cli.clock import ensure_utc, isoformat_z
from cascade_cli.errors import CascadeError, InvalidInput

MESSAGE_TEXT = 0
MESSAGE_JSON = 1
MAX_ARTICLES = 50
MAX_OUTPUT = 1024 * 1024
MAX_STEPS = 200_000  # loop iterations + calls + attribute reads of one render
RENDER_SECONDS = 0.5
# wordwrap (textwrap) cannot be interrupted and is quadratic on words longer than the width:
# 'x' * 200000 at width 1 takes 2.7 s. Its input is capped at MAX_WRAP_INPUT * sqrt(width)
# characters: 0.03-0.07 s at worst (measured: 20 000 at width 1, 178 000 at width 80).
MAX_WRAP_INPUT = 20_000
# Filters whose work grows with their input and cannot be interrupted: characters or items
# of input per step charged before they run (one step is about 2.5 us of template work;
# measured: urlize ~1.5 us per character, sort ~2 us per item, title ~0.5 us per character).
_INPUT_PER_STEP = {"urlize": 1, "wordwrap": 1, "sort": 1, "dictsort": 1, "groupby": 1,
                   "unique": 2, "pprint": 1, "tojson": 4, "xmlattr": 1, "striptags": 4,
                   "title": 4, "capitalize": 8, "wordcount": 8, "upper": 16, "lower": 16,
                   "escape": 8, "e": 8, "forceescape": 8, "trim": 16, "reverse": 16,
                   "string": 8, "list": 8, "batch": 4, "slice": 4, "sum": 4, "min": 4,
                   "max": 4, "map": 16, "select": 16, "reject": 16, "selectattr": 16,
                   "rejectattr": 16}
# Filters that write their input out as text (a list of 1000 references to one
# 100 000-character string is 100 MB of text): the text size is checked before.
_TEXT_OUT = frozenset({"tojson", "pprint", "string", "escape", "e", "forceescape", "urlize",
                       "safe", "trim", "upper", "lower", "title", "capitalize", "center",
                       "truncate", "wordcount", "striptags", "urlencode", "wordwrap",
                       "format", "indent", "replace"})
CONTEXT_NAMES = frozenset({"feed", "articles", "task", "now", "article_count", "more"})

# Bytes a channel accepts in one message; longer text is cut with a marker.
_CHANNEL_LIMITS = {"wecom": 4000, "dingtalk": 19000, "feishu": 30000, "bark": 3500}

DEFAULT_TEXT_TEMPLATE = """\
### {{ feed.mp_name or feed.id }}: {{ article_count }} new article{{ "s" if article_count != 1 }}

{% for a in articles %}
- [{{ (a.title or a.url) | oneline }}]({{ a.url }}){% if a.publish_time %} \
({{ a.publish_time | datetime }}){% endif %}

{% endfor %}
{% if more %}
...and {{ more }} more.
{% endif %}
"""

DEFAULT_JSON_TEMPLATE = """\
{"task": {{ task | tojson }}, "feed": {{ feed | tojson }}, \
"articles": {{ articles | tojson }}, "article_count": {{ article_count }}, \
"now": {{ now | tojson }}}"""


class RenderError(CascadeError):
    """A template failed at render time (delivery becomes dead with this message)."""


@dataclass(frozen=True)
class Rendered:
    channel: str
    body: str
    content_type: str = "application/json"


# --- URLs and channels ---------------------------------------------------------------------


def channel_for_url(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower()

    def is_(domain: str) -> bool:
        return host == domain or host.endswith("." + domain)

    if is_("qyapi.weixin.qq.com"):
        return "wecom"
    if is_("oapi.dingtalk.com"):
        return "dingtalk"
    if is_("open.feishu.cn") or is_("open.larksuite.com"):
        return "feishu"
    if is_("day.app"):
        return "bark"
    return "generic"


# --- environments --------------------------------------------------------------------------


class _JsonRaw(str):
    """Already JSON: emitted as is by the JSON environment's finalize."""


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return isoformat_z(value)
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_jsonable(v) for v in value]
    return value


def _tojson(value: Any, indent: int | None = None) -> _JsonRaw:
    return _JsonRaw(json.dumps(_to_jsonable(value), ensure_ascii=False, indent=indent))


def _finalize_text(value: Any) -> Any:
    return "" if value is None else _text_checked(value)


def _finalize_json(value: Any) -> Any:
    if isinstance(value, _JsonRaw):
        return value
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    if not isinstance(value, str):
        value = str(_text_checked(value))
    return json.dumps(value, ensure_ascii=False)[1:-1]  # escaped, without the quotes


def _oneline(value: Any) -> str:
    """Collapse whitespace and newlines (a title inside a markdown link must be one line)."""
    return " ".join(str(value if value is not None else "").split())


def _datetime_filter(value: Any, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    if value in (None, ""):
        return ""
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    return ensure_utc(when).strftime(fmt)


# --- resource bounds -----------------------------------------------------------------------


class _Budget(threading.local):
    """The current render's remaining steps and deadline (one render per thread at a time)."""

    steps = 0
    deadline = 0.0
    active = False


_BUDGET = _Budget()


def _step(n: int = 1) -> None:
    b = _BUDGET
    if not b.active:
        return
    b.steps -= n
    if b.steps < 0:
        raise SecurityError(f"template does more than {MAX_STEPS} loop iterations, calls, "
                            "attribute reads and filter work")
    if time.monotonic() > b.deadline:
        raise SecurityError(f"template took more than {RENDER_SECONDS:g}s to render")


def _sized(value: Any) -> Any:
    """Refuse a value larger than ``MAX_OUTPUT`` characters (or items)."""
    if isinstance(value, str | list | tuple | dict) and len(value) > MAX_OUTPUT:
        raise SecurityError(f"a value of {len(value)} characters or items, more than "
                            f"{MAX_OUTPUT}, refused")
    return value


def _counted(iterable: Any) -> Any:
    """What a ``{% for %}`` iterates over: one step per item."""
    for item in iterable:
        _step()
        yield item


def _check_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int | float) and not isinstance(value, bool) \
                and abs(value) > MAX_OUTPUT:
            raise SecurityError(f"argument {value} larger than {MAX_OUTPUT} refused")


def _text_size(value: Any, limit: int = MAX_OUTPUT) -> int:
    """About how many characters ``value`` takes written out (str, repr or JSON), counted
    without writing it and only until past ``limit``: a list may hold a thousand references
    to one long string."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v) + 2
        elif isinstance(v, bool) or v is None:
            total += 5
        elif isinstance(v, int):
            total += v.bit_length() * 3 // 10 + 2
        elif isinstance(v, float):
            total += 330  # '%f' of 1e308 is 309 digits
        elif isinstance(v, dict):
            total += 2 + 4 * len(v)
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list | tuple | set | frozenset | KeysView | ValuesView | ItemsView):
            total += 2 + 2 * len(v)
            stack.extend(v)
        elif isinstance(v, Namespace):
            stack.append(object.__getattribute__(v, "_Namespace__attrs"))
        else:
            total += 64  # Undefined, a macro, a loop: a short repr
    return total


def _number(digits: str) -> int:
    """A width or precision from a format string; absurdly long ones count as too big
    (int() of more than 4300 digits raises)."""
    return MAX_OUTPUT + 1 if len(digits) > 7 else int(digits)


_PRINTF = re.compile(r"%(?:\((?P<key>[^)]*)\))?[-#0 +]*(?P<width>\*|\d+)?"
                     r"(?:\.(?P<prec>\*|\d*))?[hlL]?(?P<conv>.?)", re.S)


def _printf_size(fmt: str, values: Any) -> int:
    """An upper bound of ``len(fmt % values)``, from the widths, precisions and the values
    written, before formatting (``'%900000000s' % 1`` allocates 900 MB)."""
    _step(len(fmt) // 8)  # the estimate itself walks the format string
    args = list(values) if isinstance(values, tuple) else [values]
    mapping = values if isinstance(values, dict) else {}
    size, i = len(fmt), 0

    def next_arg() -> Any:
        nonlocal i
        i += 1
        return args[i - 1] if i <= len(args) else None

    for m in _PRINTF.finditer(fmt):
        if m.group("conv") == "%":
            continue
        width, prec = m.group("width") or "0", m.group("prec") or "0"
        w = next_arg() if width == "*" else _number(width)
        p = next_arg() if prec == "*" else _number(prec)
        value = mapping.get(m.group("key")) if m.group("key") is not None else next_arg()
        for n in (w, p):
            size += abs(n) if isinstance(n, int) else 0
        size += _text_size(value) * (4 if m.group("conv") in ("r", "a") else 1)
        if size > MAX_OUTPUT:
            break
    return size


def _format_size(fmt: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """An upper bound of ``len(fmt.format(*args, **kwargs))`` before formatting
    (``'{:>900000000}'.format(1)``)."""
    _step(len(fmt) // 8)  # the estimate itself walks the format string
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return 0  # str.format raises the same error itself
    numbers = [abs(v) for v in (*args, *kwargs.values())
               if isinstance(v, int) and not isinstance(v, bool)]
    size, auto = 0, 0
    for literal, field, spec, conversion in fields:
        size += len(literal)
        if field is None:
            continue
        base = re.match(r"[^.\[]*", field)
        name = base.group(0) if base else ""
        value: Any = None
        if name == "":
            value = args[auto] if auto < len(args) else None
            auto += 1
        elif name.isdigit():
            value = args[int(name)] if int(name) < len(args) else None
        else:
            value = kwargs.get(name)
        spec = spec or ""
        size += sum(_number(d) for d in re.findall(r"\d+", spec))
        if "{" in spec:  # a nested width: at most the largest number given
            size += spec.count("{") * max(numbers, default=0)
            auto += spec.count("{}")  # nested automatic fields take arguments too
        size += _text_size(value) * (4 if conversion in ("r", "a") else 1)
        if size > MAX_OUTPUT:
            break
    return size


def _expected_size(name: str, value: Any, args: tuple[Any, ...],
                   kwargs: dict[str, Any] | None = None) -> int:
    """The size a multiplying string operation would produce, before it runs."""
    if name == "join" and isinstance(value, list | tuple):
        sep = args[0] if args and isinstance(args[0], str) else ""
        return sum(len(v) if isinstance(v, str) else _text_size(v) for v in value) + \
            len(sep) * len(value)
    if name == "replace" and isinstance(value, str) and len(args) >= 2 \
            and isinstance(args[0], str) and isinstance(args[1], str):
        hits = value.count(args[0]) if args[0] else len(value) + 1
        return len(value) + hits * max(0, len(args[1]) - len(args[0]))
    if name == "indent" and isinstance(value, str):
        width = args[0] if args else 4
        width = len(width) if isinstance(width, str) else width
        return len(value) + (value.count("\n") + 1) * (width if isinstance(width, int) else 4)
    if name == "expandtabs" and isinstance(value, str):
        width = args[0] if args and isinstance(args[0], int) else 8
        return len(value) + value.count("\t") * width
    if name in _TEXT_OUT and not isinstance(value, str):
        return _text_size(value)
    return 0


def _bounded_filter(name: str, func: Any) -> Any:
    """A built-in filter with the same bounds as calls: arguments, expected and real size,
    and work charged by input size before a filter that cannot be interrupted runs."""

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _step()
        _check_args(args, kwargs)
        # Filters get (eval_ctx|context|environment)? then the value.
        values = [a for a in args if not hasattr(a, "environment") and
                  not isinstance(a, SandboxedEnvironment)]
        if values:
            value, rest = values[0], tuple(values[1:])
            size = _expected_size(name, value, rest, kwargs)
            if name == "format" and isinstance(value, str):
                size = _printf_size(value, kwargs or rest)  # do_format: value % (kwargs or args)
            if size > MAX_OUTPUT:
                raise SecurityError(f"filter {name} would produce more than {MAX_OUTPUT} "
                                    "characters, refused")
            if name == "wordwrap" and isinstance(value, str):
                width = rest[0] if rest else kwargs.get("width", 79)
                limit = int(MAX_WRAP_INPUT * math.sqrt(max(1, width))) \
                    if isinstance(width, int) else MAX_WRAP_INPUT
                if len(value) > limit:
                    raise SecurityError(f"wordwrap of {len(value)} characters at width "
                                        f"{width}, more than {limit}, refused")
            per_step = _INPUT_PER_STEP.get(name)
            if per_step:
                _step(_input_size(value) // per_step)
        return _sized(func(*args, **kwargs))

    return bounded


def _input_size(value: Any) -> int:
    """Characters or items a filter goes through (a generator counts as nothing here: its
    items are counted as they are produced)."""
    if isinstance(value, str | list | tuple | dict | set | frozenset):
        return len(value)
    return 0


def _text_checked(value: Any) -> Any:
    """A value about to be written out as text (``{{ value }}``, ``~``): refused before
    writing when its text would be too long."""
    if not isinstance(value, str) and _text_size(value) > MAX_OUTPUT:
        raise SecurityError(f"a value whose text is more than {MAX_OUTPUT} characters refused")
    return value


class _BoundCode(NodeTransformer):
    """Every ``{% for %}`` iterates through ``_counted``; every ``~`` operand is text-checked
    and its result size-checked."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802 - Jinja's visitor names
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "cascade_counted", [], [], None, None,
                                 lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        node.nodes = [nodes.Filter(n, "cascade_text", [], [], None, None, lineno=node.lineno)
                      for n in node.nodes]
        return nodes.Filter(node, "cascade_sized", [], [], None, None, lineno=node.lineno)


class _Sandbox(SandboxedEnvironment):
    """Jinja's sandbox (no attribute escapes) plus guards against the cheapest ways to make
    one render eat the parent's memory: huge powers, huge repetitions, huge size arguments.
    Templates are written by admins; these guards are a seat belt, not a resource jail."""

    intercepted_binops = frozenset({"**", "*", "+", "%"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        return _BoundCode().visit(tree)  # type: ignore[no-any-return]

    def getattr(self, obj: Any, attribute: str) -> Any:
        _step()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _step()
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _step()
        if operator == "%" and isinstance(left, str) and _printf_size(left, right) > MAX_OUTPUT:
            raise SecurityError(f"'%' formatting would produce more than {MAX_OUTPUT} "
                                "characters, refused")
        if operator in ("+", "%"):
            return _sized(super().call_binop(context, operator, left, right))
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > 64:
                raise SecurityError("exponent larger than 64 refused")
            return left ** right
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) \
                        and len(seq) * n > MAX_OUTPUT:
                    raise SecurityError(f"repetition larger than {MAX_OUTPUT} refused")
            return left * right
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Any:
        """``str.format``/``format_map``: Jinja wraps them when the attribute is read; the
        expected size is checked before the wrapped call formats anything."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt: str = value.__self__
        name: str = value.__name__

        @functools.wraps(wrapped)
        def bounded(*args: Any, **kwargs: Any) -> Any:
            if name == "format_map":
                mapping = args[0] if len(args) == 1 and isinstance(args[0], dict) else {}
                size = _format_size(fmt, (), mapping)
            else:
                size = _format_size(fmt, args, kwargs)
            if size > MAX_OUTPUT:
                raise SecurityError(f"{name}() would produce more than {MAX_OUTPUT} "
                                    "characters, refused")
            return wrapped(*args, **kwargs)

        return bounded

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _step()
        _check_args(args, kwargs)
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str) and _expected_size(name, owner, args) > MAX_OUTPUT:
            raise SecurityError(f"{name}() would produce more than {MAX_OUTPUT} characters, "
                                "refused")
        result = _sized(super().call(__context, __obj, *args, **kwargs))
        if isinstance(owner, list | dict) and len(owner) > MAX_OUTPUT:  # l.extend(l), ...
            raise SecurityError(f"a list or dict of more than {MAX_OUTPUT} items refused")
        return result


@functools.lru_cache(maxsize=2)
def _environment(message_type: int) -> SandboxedEnvironment:
    json_mode = message_type == MESSAGE_JSON
    env = _Sandbox(
        undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True,
        finalize=_finalize_json if json_mode else _finalize_text)
    env.filters["tojson"] = _tojson
    env.filters["datetime"] = _datetime_filter
    env.filters["oneline"] = _oneline
    for name, func in list(env.filters.items()):
        env.filters[name] = _bounded_filter(name, func)
    env.filters["cascade_counted"] = _counted
    env.filters["cascade_sized"] = _sized
    env.filters["cascade_text"] = _text_checked
    env.globals.pop("lipsum", None)  # lipsum(n=10**9) would only waste memory
    return env


@functools.lru_cache(maxsize=256)
def _compiled(source: str, message_type: int) -> Any:
    return _environment(message_type).from_string(source)


def default_template(message_type: int) -> str:
    return DEFAULT_JSON_TEMPLATE if message_type == MESSAGE_JSON else DEFAULT_TEXT_TEMPLATE


# --- validation ----------------------------------------------------------------------------


def _line_col_of_offset(source: str, offset: int) -> tuple[int, int]:
    offset = max(0, min(offset, len(source)))
    line = source.count("\n", 0, offset) + 1
    return line, offset - (source.rfind("\n", 0, offset) + 1) + 1


def _column_on_line(source: str, lineno: int, needle: str | None) -> int:
    lines = source.split("\n")
    if not 1 <= lineno <= len(lines):
        return 1
    line = lines[lineno - 1]
    if needle:
        # Prefer an occurrence inside a {{ }} or {% %} region.
        for m in re.finditer(r"\{[{%].*?(?:[}%]\}|$)", line):
            idx = m.group(0).find(needle)
            if idx >= 0:
                return m.start() + idx + 1
        idx = line.find(needle)
        if idx >= 0:
            return idx + 1
    first = re.search(r"\{[{%]", line)
    return first.start() + 1 if first else 1


def syntax_error_text(source: str, exc: TemplateSyntaxError) -> str:
    """'template syntax error at line L, column C: reason' for a Jinja syntax error."""
    msg = exc.message or "invalid syntax"
    at = re.search(r" at (\d+)$", msg)
    lineno = exc.lineno or 1
    if at:  # lexer errors carry the absolute offset
        msg = msg[:at.start()]
        line, col = _line_col_of_offset(source, int(at.group(1)))
    elif msg.lower().startswith("unexpected end of template") or "missing end of" in msg.lower():
        lines = source.split("\n")
        line = min(lineno, len(lines))
        col = len(lines[line - 1]) + 1
    else:
        quoted = re.findall(r"(?:got|unexpected|tag|named|char) '([^']+)'", msg)
        line, col = lineno, _column_on_line(source, lineno, quoted[-1] if quoted else None)
    return f"template syntax error at line {line}, column {col}: {msg}"


def _undeclared_position(source: str, name: str) -> tuple[int, int]:
    for m in re.finditer(r"\{[{%].*?[}%]\}", source, re.S):
        hit = re.search(rf"(?<![\w.]){re.escape(name)}\b", m.group(0))
        if hit:
            return _line_col_of_offset(source, m.start() + hit.start())
    return 1, 1


def _template_lineno(exc: BaseException) -> int | None:
    """The template line where a render error happened (Jinja rewrites the traceback)."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, field="message_template", code="invalid_template",
                        hint="fix the template; 'cascade tasks show' prints the default one")


def validate_template(text: str | None, message_type: int = MESSAGE_TEXT) -> None:
    """Syntax, unknown names, sandbox escapes and (for JSON) the output shape.

    Raises ``InvalidInput`` whose message names the line and column.
    """
    if message_type not in (MESSAGE_TEXT, MESSAGE_JSON):
        raise InvalidInput(f"message_type must be 0 (text/markdown) or 1 (JSON), "
                           f"got {message_type!r}", field="message_type")
    if text is None or not text.strip():
        return  # the default template is used
    env = _environment(message_type)
    try:
        ast = env.parse(text)
        _compiled(text, message_type)
    except TemplateSyntaxError as exc:
        raise _invalid(syntax_error_text(text, exc)) from None
    except (RecursionError, MemoryError):
        raise _invalid("template is nested too deeply") from None
    unknown = sorted(meta.find_undeclared_variables(ast) - CONTEXT_NAMES - set(env.globals))
    if unknown:
        line, col = _undeclared_position(text, unknown[0])
        raise _invalid(f"template error at line {line}, column {col}: unknown name "
                       f"'{unknown[0]}' (available: {', '.join(sorted(CONTEXT_NAMES))})")
    try:
        render_template(text, message_type, sample_context())
    except RenderError as exc:
        raise _invalid(str(exc)) from None


# --- rendering -----------------------------------------------------------------------------


def render_template(text: str | None, message_type: int, context: dict[str, Any]) -> str:
    """Render (the default template when ``text`` is empty). Raises ``RenderError``."""
    source = text if text and text.strip() else default_template(message_type)
    budget = _BUDGET
    budget.steps, budget.deadline = MAX_STEPS, time.monotonic() + RENDER_SECONDS
    budget.active = True
    try:
        out = _render_bounded(_compiled(source, message_type), context)
    except SecurityError as exc:
        why = (" (templates may only read the feed, articles, task and now values)"
               if "unsafe" in str(exc) else "")
        raise RenderError(f"template refused by the sandbox: {exc}{why}") from None
    except UndefinedError as exc:
        line = _template_lineno(exc)
        name = re.findall(r"'([^']+)'", exc.message or "")
        col = _column_on_line(source, line, name[-1] if name else None) if line else 0
        where = f" at line {line}, column {col}" if line else ""
        raise RenderError(f"template error{where}: {exc.message}") from None
    except TemplateSyntaxError as exc:
        raise RenderError(syntax_error_text(source, exc)) from None
    except RecursionError:
        raise RenderError("template is nested too deeply") from None
    except MemoryError:
        raise RenderError("template needs too much memory to render") from None
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError,
            AttributeError, OverflowError) as exc:
        line = _template_lineno(exc)
        where = f" at line {line}" if line else ""
        raise RenderError(f"template error{where}: {type(exc).__name__}: {exc}") from None
    finally:
        budget.active = False
    if len(out) > MAX_OUTPUT:
        raise RenderError(f"rendered message is {len(out)} characters, more than {MAX_OUTPUT}")
    if message_type == MESSAGE_JSON:
        try:
            json.loads(out)
        except ValueError as exc:
            pos = getattr(exc, "lineno", None), getattr(exc, "colno", None)
            where = f" at line {pos[0]}, column {pos[1]} of the output" if pos[0] else ""
            raise RenderError(f"JSON template did not render valid JSON{where}: "
                              f"{getattr(exc, 'msg', exc)} (use {{{{ value | tojson }}}} "
                              "for values outside quotes)") from None
    return out


def _render_bounded(template: Any, context: dict[str, Any]) -> str:
    """Render piece by piece, stopping as soon as the output passes ``MAX_OUTPUT``."""
    parts: list[str] = []
    size = 0
    for piece in template.generate(**context):
        size += len(piece)
        if size > MAX_OUTPUT:
            raise SecurityError(f"rendered message is more than {MAX_OUTPUT} characters")
        parts.append(piece)
        _step(0)  # the deadline, also for output that needs no loop
    return "".join(parts)


def _iso(value: datetime | None) -> str | None:
    return isoformat_z(value) if value is not None else None


def build_context(task: Any, feed: Any, feed_id: str, articles: list[Any], now: datetime,
                  total: int | None = None) -> dict[str, Any]:
    """Plain dicts (never ORM objects) so a template cannot reach the database."""
    feed_d = {"id": feed_id, "mp_name": getattr(feed, "mp_name", None) or feed_id,
              "name": getattr(feed, "mp_name", None) or feed_id,
              "url": getattr(feed, "url", None), "mp_cover": getattr(feed, "mp_cover", None),
              "mp_intro": getattr(feed, "mp_intro", None)}
    shown = articles[:MAX_ARTICLES]
    arts = [{"id": a.id, "title": a.title or "", "url": a.url or "", "pic_url": a.pic_url,
             "description": a.description, "author": a.author,
             "publish_time": _iso(a.publish_time), "feed_id": a.feed_id} for a in shown]
    count = total if total is not None else len(articles)
    task_d = {"id": task.id, "name": task.name, "cron_exp": task.cron_exp,
              "message_type": task.message_type}
    return {"feed": feed_d, "articles": arts, "task": task_d, "now": isoformat_z(now),
            "article_count": count, "more": max(0, count - len(arts))}


def sample_context() -> dict[str, Any]:
    """Realistic data with quotes, newlines and missing fields, for test renders."""
    when = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    arts = [{"id": "a1", "title": 'He said "hi"\nand left', "url": "https://example.org/1",
             "pic_url": None, "description": "line1\nline2 \\ \"q\"", "author": None,
             "publish_time": isoformat_z(when), "feed_id": "MP_WXS_1"},
            {"id": "a2", "title": "标题", "url": "https://example.org/2", "pic_url": "",
             "description": None, "author": "Ann", "publish_time": None,
             "feed_id": "MP_WXS_1"}]
    return {"feed": {"id": "MP_WXS_1", "mp_name": "Example", "name": "Example",
                     "url": "https://example.org/feed.xml", "mp_cover": None, "mp_intro": None},
            "articles": arts, "task": {"id": "t1", "name": "sample", "cron_exp": "0 9 * * *",
                                       "message_type": 0},
            "now": isoformat_z(when), "article_count": 2, "more": 0}


def _cut(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    marker = "\n..."
    return data[:limit - len(marker.encode())].decode("utf-8", "ignore") + marker


def build_message(task: Any, context: dict[str, Any], url: str) -> Rendered:
    """The request body for this task's webhook. Raises ``RenderError``."""
    message_type = task.message_type or MESSAGE_TEXT
    text = render_template(task.message_template, message_type, context)
    channel = channel_for_url(url)
    if message_type == MESSAGE_JSON:
        return Rendered("json", text)
    text = text.strip()
    feed = context["feed"]
    title = f"{feed.get('mp_name') or feed.get('id')}: {context['article_count']} new"
    if channel in _CHANNEL_LIMITS:
        text = _cut(text, _CHANNEL_LIMITS[channel])
    body: dict[str, Any]
    if channel == "wecom":
        body = {"msgtype": "markdown", "markdown": {"content": text}}
    elif channel == "dingtalk":
        body = {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
    elif channel == "feishu":
        body = {"msg_type": "text", "content": {"text": text}}
    elif channel == "bark":
        body = {"title": title, "body": text, "group": "cascade"}
        arts = context.get("articles") or []
        if len(arts) == 1 and arts[0].get("url"):
            body["url"] = arts[0]["url"]
    else:
        body = {"title": title, "text": text, "feed": feed, "articles": context["articles"],
                "task": context["task"], "now": context["now"]}
    return Rendered(channel, json.dumps(body, ensure_ascii=False))
