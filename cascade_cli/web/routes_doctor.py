"""Read-only node route used by ``cascade doctor`` on a child: ``GET /claimable``.

It answers "is there work this node could claim, and if not, why" (the guide's problem 3,
``暂无任务，等待下次轮询...``) WITHOUT claiming anything. Same node authentication as every node
route (``http_auth.require_node``): a disabled node gets 403 ``node_disabled``, an admin token
403 ``node_required``.

Mounted by ``web/app.py`` under both prefixes, like the node router:
``app.include_router(doctor_router(), prefix=CANONICAL_PREFIX, ...)``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from cascade_cli.store.claimable import claimable_report
from cascade_cli.store.nodes import NodeRow
from cascade_cli.web.envelope import ok
from cascade_cli.web.http_auth import NodeAuth, require_node
from cascade_cli.web.routes_node import node_op


def doctor_router() -> APIRouter:
    router = APIRouter(tags=["node"])

    @router.get("/claimable", summary="Could this node claim work now, and if not why "
                "(read-only; used by cascade doctor)")
    async def claimable(request: Request,
                        p: Annotated[NodeAuth, Depends(require_node)]) -> Response:
        settings = request.app.state.cascade.settings

        def work(s: Session, now: datetime, node: NodeRow) -> dict[str, Any]:
            return claimable_report(s, now, node, settings)

        data = await node_op(request, p, work)
        return ok(data, data["message"])

    return router
