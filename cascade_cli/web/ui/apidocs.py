"""``/docs``: Swagger UI served from the parent itself, and the security schemes it needs.

The parent may run on a machine without internet access, so the Swagger UI files come from the
``swagger-ui-bundle-v2`` package (a dependency) instead of FastAPI's default CDN. Without that
package ``/docs`` is switched off (404) rather than serving a page that cannot load.

The schema declares the two ways to authenticate (admin ``Bearer`` token, node ``AK-SK``
header) and which routes take which, so Swagger UI's Authorize button sends the header.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from cascade_cli.errors import NotFound

log = logging.getLogger("cascade.parent.ui")

# What the docs page loads; nothing else of the bundle is served.
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
          "favicon-32x32.png": "image/png"}

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "adminToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "An admin token from 'cascade token create'."},
    "nodeKey": {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "A node's plain credential: 'AK-SK <api_key>:<api_secret>' "
                               "(children normally use the signed form, which Swagger UI "
                               "cannot compute)."},
}


def swagger_assets() -> Path | None:
    """The folder of the bundled Swagger UI, or ``None`` when the package is missing."""
    try:
        import swagger_ui_bundle  # type: ignore[import-untyped]
    except ImportError:
        return None
    folder = Path(str(swagger_ui_bundle.swagger_ui_path))
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def add_security(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare the schemes, and on each operation the ones its tags accept."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            tags = operation.get("tags") or []
            accepted: list[dict[str, list[str]]] = []
            if "admin" in tags:
                accepted.append({"adminToken": []})
            if "node" in tags:
                accepted.append({"nodeKey": []})
            if accepted:
                operation["security"] = accepted
    return schema


def install_docs(app: FastAPI, base_path: str) -> None:
    """Serve ``/docs`` with local assets (or nothing, see the module's docstring)."""
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_security(plain_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if base_path:
        app.servers = [{"url": base_path}]  # "Try it out" goes through the proxy

    assets = swagger_assets()
    if assets is None:
        log.warning("/docs is off: the swagger-ui-bundle-v2 package is not installed")
        return

    async def docs(request: Request) -> Response:
        return get_swagger_ui_html(
            openapi_url=f"{base_path}/openapi.json", title="Cascade parent - API",
            swagger_js_url=f"{base_path}/docs/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{base_path}/docs/assets/swagger-ui.css",
            swagger_favicon_url=f"{base_path}/docs/assets/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": False})

    async def docs_asset(name: str) -> Response:
        media = ASSETS.get(name)
        if media is None:
            raise NotFound("file", name)
        return FileResponse(assets / name, media_type=media,
                            headers={"Cache-Control": "public, max-age=86400"})

    async def schema() -> Response:
        return JSONResponse(app.openapi())

    # Under the sub-path too, for a proxy that passes it on (one that strips it reaches the
    # routes at the root).
    for prefix in ("", base_path) if base_path else ("",):
        app.add_api_route(f"{prefix}/docs", docs, methods=["GET"], include_in_schema=False)
        app.add_api_route(f"{prefix}/docs/assets/{{name}}", docs_asset, methods=["GET"],
                          include_in_schema=False)
        if prefix:
            app.add_api_route(f"{prefix}/openapi.json", schema, methods=["GET"],
                              include_in_schema=False)
