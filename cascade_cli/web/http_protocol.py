"""uvicorn's HTTP protocol, with the protocol's envelope on the 400 it answers by itself.

A request whose head cannot be parsed (an invalid ``Content-Length``, a broken request line
or header) is refused by uvicorn's parser before any ASGI app runs, as plain text. Clients
read ``error`` from every answer (PROTOCOL.md), so this subclass answers the same 400 as the
envelope. Everything else is uvicorn's, unchanged.
"""

from __future__ import annotations

from typing import Any

from cascade_cli.web import adapters
from cascade_cli.web.envelope import error_response

MESSAGE = ("malformed HTTP request: the request line, a header or Content-Length could not be "
           "parsed")
_BODY = bytes(error_response(400, "bad_request", MESSAGE).body)
_HEAD = [(b"content-type", b"application/json"), (b"connection", b"close")]


def _raw_response(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [b"HTTP/1.1 400 Bad Request\r\n"]
    for name, value in [*default_headers, *_HEAD,
                        (b"content-length", str(len(_BODY)).encode("ascii"))]:
        lines.append(name + b": " + value + b"\r\n")
    return b"".join([*lines, b"\r\n", _BODY])


def protocol_class() -> type[Any]:
    """What uvicorn's ``auto`` would pick (httptools when installed), with the envelope."""
    return adapters.protocol_answering_400(_raw_response)
