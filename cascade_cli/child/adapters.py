"""Every use of httpx's and httpcore's undocumented internals by the child, in one place.

The child otherwise uses only their documented API (``child/transport.py`` is a public
``httpx.AsyncBaseTransport``). What is here, and why: ``fetchers`` wraps the network backend of
each httpcore connection pool under the feed client (cheaper idle-connection probes, see
``fetchers._CheapProbeBackend``), reached through ``AsyncClient._transport`` / ``._mounts``,
``AsyncHTTPTransport._pool`` and ``AsyncConnectionPool._network_backend``. If a release renames
one of them the client keeps httpcore's default backend: slower, same behaviour.

Importing this module checks the installed versions (``cascade_cli.compat``): on an upgrade this
module and the range there are the places to update, and ``child.transport: httpx`` is the
fallback that needs none of Cascade's own transport.
"""

from __future__ import annotations

import httpcore
import httpx

from cascade_cli import compat

compat.require("httpx", httpx.__version__)
compat.require("httpcore", httpcore.__version__)


def client_transports(client: httpx.AsyncClient) -> list[httpx.AsyncBaseTransport]:
    """The transports an ``AsyncClient`` sends through: its own and its mounts (the
    environment's proxies among them); a mount of ``None`` (NO_PROXY) is left out."""
    mounted = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    return [t for t in mounted if t is not None]


def pool_network_backend(transport: object) -> httpcore.AsyncNetworkBackend | None:
    """The network backend of the httpcore pool under an ``AsyncHTTPTransport``, or None."""
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    return backend if isinstance(backend, httpcore.AsyncNetworkBackend) else None


def set_pool_network_backend(transport: object, backend: httpcore.AsyncNetworkBackend) -> None:
    """Replace the network backend of the pool under ``transport`` (as read by
    ``pool_network_backend``)."""
    pool = getattr(transport, "_pool", None)
    if pool is not None:
        pool._network_backend = backend
