"""What a task's webhook URL must be: an absolute http(s) URL with a host.

A value rule shared by the store (a task is never saved with a URL that can only fail later),
the notifier (checked again before each send) and ``cascade doctor``; it needs nothing but the
URL, so it sits with the other base modules.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from cascade_cli.errors import InvalidInput


def validate_webhook_url(url: str | None) -> str:
    """An absolute http(s) URL with a host; returns it stripped. Raises ``InvalidInput``."""
    text = (url or "").strip()
    if not text:
        raise InvalidInput("webhook URL is empty", field="web_hook_url", code="invalid_webhook")
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise InvalidInput(f"webhook URL contains spaces or control characters: {text!r}",
                           field="web_hook_url", code="invalid_webhook")
    try:
        parts = urlsplit(text)
        port = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise InvalidInput(f"webhook URL is malformed: {text!r} ({exc})", field="web_hook_url",
                           code="invalid_webhook") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidInput(
            f"webhook URL must start with http:// or https://, got {text!r}",
            field="web_hook_url", code="invalid_webhook",
            hint="for example https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...")
    if not parts.hostname:
        raise InvalidInput(f"webhook URL has no host: {text!r}", field="web_hook_url",
                           code="invalid_webhook")
    del port
    return text
