"""The web dashboard served by ``serve-parent`` at ``/ui`` (issue 20), and the local ``/docs``.

``install(app, base_path)`` mounts it. Behind a reverse proxy under a sub-path
(``parent.base_path``, e.g. ``/cascade``) the page's links and cookie carry the sub-path, and
the routes answer both with and without it, so a proxy may strip the prefix or pass it on.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import RedirectResponse, Response

from cascade_cli.web.ui.apidocs import install_docs
from cascade_cli.web.ui.routes import LeavePage, build_router, leave_page


def install(app: FastAPI, base_path: str) -> None:
    router = build_router()
    app.add_exception_handler(LeavePage, leave_page)
    app.include_router(router)
    if base_path:
        app.include_router(router, prefix=base_path)
    install_docs(app, base_path)

    async def to_dashboard() -> Response:
        return RedirectResponse(f"{base_path}/ui/", status_code=307)

    app.add_api_route("/", to_dashboard, methods=["GET"], include_in_schema=False)
    if base_path:
        app.add_api_route(base_path + "/", to_dashboard, methods=["GET"],
                          include_in_schema=False)
        app.add_api_route(base_path, to_dashboard, methods=["GET"], include_in_schema=False)


__all__ = ["install"]
