"""The article dict every fetcher hands the worker: field limits of PROTOCOL.md, trimmed here.

Shared by the feedparser path (``fetchers``) and the fast path (``fastparse``) so both send
exactly the same shape.
"""

from __future__ import annotations

from typing import Any

from cascade_cli.protocol import clean_text, strip_controls

# Field limits of PROTOCOL.md / the parent's defaults: trim here rather than have a batch refused.
LIMITS = {"title": 1000, "url": 4096, "pic_url": 4096, "author": 255, "guid": 2048,
          "id": 255}
MAX_CONTENT_CHARS = 1024 * 1024
_SHORTEST_LIMIT = min(*LIMITS.values(), MAX_CONTENT_CHARS)
_TEXT_KEYS = frozenset({"title", "description", "content", "author"})


def clip(article: dict[str, Any]) -> dict[str, Any] | None:
    """Trim fields to the protocol limits; drop an article with neither url nor guid.

    Control characters go first (docs/protocol.md, "Control characters"): free text keeps
    TAB, LF and CR, identifiers (guid, url...) keep none. A feed with a NUL in a title would
    otherwise send the parent a payload it must refuse (and PostgreSQL cannot store).
    """
    out: dict[str, Any] = {}
    for key, value in article.items():
        if isinstance(value, str):
            value = clean_text(value) if key in _TEXT_KEYS else strip_controls(value)
        if value is None or value == "":
            continue
        # Most values are shorter than every limit: one length test, no lookup (20 articles a
        # feed, so this loop runs ~200 times per feed).
        if isinstance(value, str) and len(value) > _SHORTEST_LIMIT:
            limit = LIMITS.get(key)
            if limit and len(value) > limit:
                if key in ("url", "pic_url", "guid"):
                    continue  # a cut URL is a wrong URL
                value = value[:limit]
            elif key in ("content", "description") and len(value) > MAX_CONTENT_CHARS:
                value = value[:MAX_CONTENT_CHARS]
        out[key] = value
    if not out.get("url") and not out.get("guid"):
        return None
    out.setdefault("title", "")
    out.setdefault("url", "")
    return out
