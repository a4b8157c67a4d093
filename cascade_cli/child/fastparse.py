"""The fast path for RSS/Atom documents: fastfeedparser (lxml), with feedparser as the fallback.

feedparser spends ~9 ms of CPU on a 20-item, 17 KB feed, ~85% of all a child does per feed;
fastfeedparser parses the same document in ~0.15 ms. It is a different parser, so it is used
only where its articles are known to equal feedparser's (the differential test over
``tests/child/feed_corpus`` proves it): ``parse`` returns ``None`` for every document outside
that ground, and the caller then parses it with feedparser. The fallbacks, and why:

* not valid UTF-8 without an XML-declared encoding, or an HTTP charset other than UTF-8:
  feedparser sniffs and uses the HTTP header; fastfeedparser decodes with replacement
  characters;
* HTML named entities (``&nbsp;``, ``&eacute;``) outside CDATA: XML does not define them and
  fastfeedparser cuts the text at the first one; feedparser resolves them;
* active content (script, iframe, object, event-handler attributes, ``javascript:`` URLs...):
  feedparser's sanitiser removes it; fastfeedparser passes HTML through as written;
* RSS 1.0 (RDF), Atom ``xhtml`` content and ``xml:base``: fastfeedparser loses RDF
  ``content:encoded``, returns xhtml content wrapped in its element, and ignores xml:base;
* both ``media:thumbnail`` and ``media:content``: fastfeedparser reports only the content
  (a video, say), feedparser's image is the thumbnail;
* an item with a guid but no link: feedparser takes the guid as the link unless
  ``isPermaLink="false"``, an attribute fastfeedparser does not report;
* items that mix having and lacking description / content elements: fastfeedparser fills a
  missing one from the other in its own way (see ``_content_rule``);
* an entry without a date in a document that has date elements (feedparser reads some dates
  fastfeedparser does not, e.g. "2026年11月20日 08:00"), an entry without an author in a
  document with ``<email>`` elements (feedparser takes an Atom author's email when there is
  no name);
* anything fastfeedparser refuses or finds no entry in: feedparser then gives the error.

Documented differences that remain (tested in ``tests/child/test_parser_fidelity.py``): HTML in
descriptions and content is passed through as the feed wrote it instead of being re-serialised
by feedparser's sanitiser, so attribute order and ``<img>`` versus ``<img />`` differ, and
attributes outside feedparser's allow-list (``referrerpolicy``, ``data-src`` of WeChat's lazy
images) and ``style`` values are kept; of several ``dc:creator`` the fast path takes the
first, feedparser the last.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from cascade_cli.child.articles import clip

try:  # a declared dependency; without it (a broken install) feedparser does all the work
    import fastfeedparser
except ImportError:  # pragma: no cover - exercised only on a broken install
    fastfeedparser = None

AVAILABLE = fastfeedparser is not None

# Markers of active content, searched in the lower-cased document. Each pattern starts with a
# literal so the search skips along at memchr speed (one alternation of them all cost ~1.7 ms
# per 17 KB document, ten times fastfeedparser's whole parse). HTML allows no space between
# "<" and a tag name, so "<script" and "</script" are the only raw forms.
_ACTIVE_TAGS = (rb"script|iframe|frame|frameset|object|embed|applet|style|form|input|button"
                rb"|textarea|select|meta|base|svg|math")
_ACTIVE_RAW = re.compile(rb"</?(?:" + _ACTIVE_TAGS + rb")\b")
_ACTIVE_ESCAPED = re.compile(rb"&(?:lt|#60|#x3c);/?(?:" + _ACTIVE_TAGS + rb"|link)\b")
_EVENT_HANDLER = re.compile(rb"on[a-z]{3,}\s*=")
_ACTIVE_LITERALS = (b"javascript:", b"vbscript:", b"data:text", b"xml:base", b"type=\"xhtml\"",
                    b"type='xhtml'")
# Any entity reference that XML itself does not define.
_HTML_ENTITY = re.compile(rb"&(?!(?:amp|lt|gt|quot|apos);)[A-Za-z]")
_CDATA = re.compile(rb"<!\[CDATA\[.*?\]\]>", re.DOTALL)
_XML_ENCODING = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)")
_UTF8 = ("utf-8", "utf8")
# A non-empty date element: when an entry comes back without a date, feedparser may still
# read one (dates like "2026年11月20日 08:00").
_DATE_ELEMENT = re.compile(
    rb"<(?:pubDate|dc:date|published|updated|issued|modified|created)>\s*[^<\s]")


def _declared_charset(content_type: str | None) -> str | None:
    if not content_type or "charset=" not in content_type.lower():
        return None
    return content_type.lower().split("charset=", 1)[1].split(";")[0].strip().strip("\"'")


def _active(lowered: bytes) -> bool:
    if any(marker in lowered for marker in _ACTIVE_LITERALS):
        return True
    if _ACTIVE_RAW.search(lowered) or _ACTIVE_ESCAPED.search(lowered):
        return True
    # an event-handler attribute: "on..." right after a space, quote or slash
    return any(m.start() and lowered[m.start() - 1] in b" \t\r\n\"'/"
               for m in _EVENT_HANDLER.finditer(lowered))


def eligible(body: bytes, content_type: str | None) -> bool:
    """True if the document has none of the traits on which the two parsers disagree."""
    charset = _declared_charset(content_type)
    if charset is not None and charset not in _UTF8:
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        declared = _XML_ENCODING.search(body[:256])
        if declared is None or declared.group(1).decode("ascii").lower() in _UTF8:
            return False
    if b"<rdf:RDF" in body[:4096] or _active(body.lower()):
        return False
    if b"media:thumbnail" in body and b"media:content" in body:
        return False  # fastfeedparser keeps only media:content; feedparser prefers the thumbnail
    return not (_HTML_ENTITY.search(body) and _HTML_ENTITY.search(_CDATA.sub(b"", body)))


def _content_rule(body: bytes, n_entries: int) -> str | None:
    """How fastfeedparser's content/description map to feedparser's, from element counts.

    fastfeedparser copies an RSS description into ``content`` when an item has no content
    element, and makes a short plain-text description from the content when there is no
    description; feedparser leaves content empty in the first case and copies the content
    into the description in the second. Counting the elements tells the cases apart for a
    whole document; a document that mixes them goes to feedparser.
    """
    first_item = body.find(b"<item")
    if first_item < 0:
        first_item = body.find(b"<entry")
    if first_item < 0:
        return None
    # "<content" counts RSS content:encoded and Atom content alike.
    n_content = body.count(b"<content", first_item)
    n_desc = body.count(b"<description", first_item) + body.count(b"<summary", first_item)
    if n_content == 0:
        return "no-content"
    if n_desc == 0:
        return "no-description"
    if n_content == n_entries and n_desc == n_entries:
        return "both"
    return None


def _timestamp(value: Any) -> int | None:
    if not value or not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value).timestamp())
    except (ValueError, OverflowError):
        return None


def _image(entry: dict[str, Any]) -> str | None:
    # feedparser's order: media:thumbnail, media:content, then an image enclosure.
    for key in ("media_thumbnail", "media_content"):
        items = entry.get(key)
        if items and isinstance(items, list) and isinstance(items[0], dict):
            url = items[0].get("url")
            if url:
                return str(url)
    for enc in entry.get("enclosures") or []:
        if str(enc.get("type") or "").startswith("image/") and enc.get("url"):
            return str(enc["url"])
    for link in entry.get("links") or []:
        if link.get("rel") == "enclosure" and str(link.get("type") or "").startswith("image/"):
            return str(link.get("href"))
    return None


def parse(body: bytes, content_type: str | None, feed_id: str) -> list[dict[str, Any]] | None:
    """Articles as ``fetchers.parse_xml_feed`` makes them, or None: use feedparser."""
    if fastfeedparser is None or not eligible(body, content_type):
        return None
    try:
        parsed = fastfeedparser.parse(body, include_tags=False)
    except Exception:  # noqa: BLE001 - any refusal: feedparser decides and words the error
        return None
    entries = parsed.get("entries") or []
    if not entries:
        return None
    rule = _content_rule(body, len(entries))
    if rule is None:
        return None
    out = []
    for e in entries:
        get = e.get
        link = get("link")
        guid = get("id")
        if not link and guid:
            return None  # feedparser's link-from-guid rule needs isPermaLink
        contents = get("content")
        content = contents[0].get("value") if contents else None
        description = get("description")
        if rule == "no-content":
            if content is not None and content.strip() != (description or ""):
                return None  # content from an element the counts did not see
            content = None
        elif rule == "no-description":
            description = content
        published = _timestamp(get("published")) or _timestamp(get("updated"))
        if published is None and _DATE_ELEMENT.search(body):
            return None  # a date fastfeedparser could not read: feedparser's reading
        author = get("author")
        if not author and b"<email>" in body:
            return None  # feedparser takes an Atom author's email when there is no name
        art = {"guid": guid or link, "title": get("title") or "", "url": link or "",
               "description": description, "content": content, "author": author,
               "publish_time": published, "pic_url": _image(e), "feed_id": feed_id}
        clipped = clip(art)
        if clipped:
            out.append(clipped)
    # Nothing usable (a broken document salvaged to bare titles): feedparser says why.
    return out or None
