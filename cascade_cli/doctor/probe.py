"""Low-level probes of the parent address, one layer at a time (DNS, TCP, HTTP, auth).

Doctor deliberately does not go through ``ParentClient`` here: the client retries and folds
failures into one exception, while doctor must see each layer's raw outcome (which address,
which errno, which status and body, the ``Date`` header) to name the guide's problem exactly.
It reuses the same signing code (``cascade_cli.auth``) so a signature doctor gets accepted is one
the child's client gets accepted.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import socket
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from cascade_cli import auth
from cascade_cli.clock import Clock, ensure_utc
from cascade_cli.protocol import CANONICAL_PREFIX


@dataclass(frozen=True)
class ParentAddress:
    url: str            # as configured (normalised)
    scheme: str
    host: str
    port: int
    root: str           # scheme://host:port
    path: str           # path part of the configured URL ("" when none)
    prefix_url: str     # where node routes live: root + path + /api/v1/cascade

    @property
    def prefix_path(self) -> str:
        return urlsplit(self.prefix_url).path

    def route(self, name: str) -> str:
        return f"{self.prefix_url}/{name.lstrip('/')}"


def parse_address(url: str) -> ParentAddress:
    """Mirror ``ParentClient.url_for``: the child always appends ``/api/v1/cascade`` to
    ``cascade.parent_api_url``, whatever path that URL already has."""
    parts = urlsplit(url)
    scheme = parts.scheme or "http"
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    path = parts.path.rstrip("/")
    netloc = f"[{host}]" if ":" in host else host
    root = f"{scheme}://{netloc}:{port}"
    return ParentAddress(url, scheme, host, port, root, path,
                         url.rstrip("/") + CANONICAL_PREFIX)


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# --- DNS / TCP -----------------------------------------------------------------------------


@dataclass
class DnsOutcome:
    ok: bool
    addresses: list[str] = field(default_factory=list)
    error: str | None = None
    timed_out: bool = False


def resolve(host: str, port: int, timeout: float) -> DnsOutcome:
    if is_ip_literal(host):
        return DnsOutcome(True, [host])
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        fut = pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        infos = fut.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        return DnsOutcome(False, error=f"no answer from the resolver within {timeout:g} s",
                          timed_out=True)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        return DnsOutcome(False, error=str(exc))
    finally:
        pool.shutdown(wait=False)
    addrs = list(dict.fromkeys(str(info[4][0]) for info in infos))
    return DnsOutcome(bool(addrs), addrs, None if addrs else "no address")


@dataclass
class TcpOutcome:
    ok: bool
    address: str | None = None
    reason: str | None = None  # refused | timeout | unreachable | error
    error: str | None = None


def connect(addresses: list[str], port: int, timeout: float) -> TcpOutcome:
    last = TcpOutcome(False, reason="error", error="no address to connect to")
    for addr in addresses:
        try:
            with socket.create_connection((addr, port), timeout=timeout):
                return TcpOutcome(True, addr)
        except ConnectionRefusedError as exc:
            last = TcpOutcome(False, addr, "refused", str(exc))
        except TimeoutError as exc:
            last = TcpOutcome(False, addr, "timeout", str(exc) or "timed out")
        except OSError as exc:
            last = TcpOutcome(False, addr, "unreachable", str(exc))
    return last


# --- HTTP ----------------------------------------------------------------------------------


@dataclass
class HttpOutcome:
    """One HTTP exchange. ``status`` is None when no answer came (see ``transport_error``)."""

    url: str
    status: int | None = None
    body: Any = None              # parsed JSON, or None
    text: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    transport_error: str | None = None  # refused | timeout | tls | network | protocol
    error_detail: str | None = None

    @property
    def is_envelope(self) -> bool:
        return isinstance(self.body, dict) and "code" in self.body and "message" in self.body

    @property
    def error_code(self) -> str | None:
        if isinstance(self.body, dict):
            code = self.body.get("error")
            return str(code) if code else None
        return None

    @property
    def message(self) -> str:
        if isinstance(self.body, dict) and self.body.get("message"):
            return str(self.body["message"])
        return self.text[:200]

    @property
    def data(self) -> Any:
        return self.body.get("data") if isinstance(self.body, dict) else None

    def server_date(self) -> datetime | None:
        value = self.headers.get("date")
        if not value:
            return None
        try:
            return ensure_utc(parsedate_to_datetime(value))
        except (TypeError, ValueError):
            return None


def auth_header(api_key: str, api_secret: str, mode: str, method: str, url: str,
                clock: Clock, body: bytes = b"") -> str:
    if mode == "plain":
        return f"{auth.PLAIN_SCHEME} {api_key}:{api_secret}"
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return auth.sign_request(api_key, api_secret, method, path, body,
                             timestamp=int(clock.now().timestamp()))


def http_get(url: str, timeout: float, headers: dict[str, str] | None = None) -> HttpOutcome:
    out = HttpOutcome(url)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            resp = client.get(url, headers=headers or {})
    except httpx.ConnectError as exc:
        text = str(exc)
        lowered = text.lower()
        if "refused" in lowered:
            out.transport_error = "refused"
        elif "ssl" in lowered or "certificate" in lowered or "tls" in lowered:
            out.transport_error = "tls"
        else:
            out.transport_error = "network"
        out.error_detail = text
        return out
    except httpx.TimeoutException as exc:
        out.transport_error = "timeout"
        out.error_detail = str(exc) or type(exc).__name__
        return out
    except (httpx.RemoteProtocolError, httpx.ProtocolError) as exc:
        out.transport_error = "protocol"
        out.error_detail = str(exc) or type(exc).__name__
        return out
    except httpx.HTTPError as exc:
        out.transport_error = "network"
        out.error_detail = str(exc) or type(exc).__name__
        return out
    out.status = resp.status_code
    out.headers = {k.lower(): v for k, v in resp.headers.items()}
    out.text = resp.text[:4000]
    try:
        out.body = json.loads(resp.content) if resp.content else None
    except (ValueError, UnicodeDecodeError):
        out.body = None
    return out
