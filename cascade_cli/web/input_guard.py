"""Refuses a request whose path or query string holds a control character, before routing.

Path and query parameters are identifiers (node names, task ids, statuses...): a control
character in one can never match anything, and PostgreSQL cannot even compare a text column
with a string holding U+0000 (it raised, the client got a 500). One check here covers every
route, declared or future, on every database (docs/protocol.md, "Control characters").
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from cascade_cli.web.envelope import error_response


def _control_byte(data: bytes) -> int | None:
    for byte in data:
        if byte < 0x20 or byte == 0x7F:
            return byte
    return None


class ControlCharGuard:
    """ASGI middleware: 422 ``validation_error`` for a control character in path or query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            where, byte = self._find(scope)
            if byte is not None:
                message = (f"invalid value for '{where}': must not contain control characters "
                           f"(found U+{byte:04X})")
                response = error_response(422, "validation_error", message, detail=[
                    {"field": where, "type": "control_character", "message": message}])
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _find(scope: Scope) -> tuple[str, int | None]:
        # The path arrives percent-decoded; the query string raw ('+' is a space).
        byte = _control_byte(scope.get("path", "").encode("utf-8", "surrogateescape"))
        if byte is not None:
            return "path", byte
        query: bytes = scope.get("query_string", b"")
        if query:
            byte = _control_byte(unquote_to_bytes(query))
            if byte is not None:
                return "query", byte
        return "", None
