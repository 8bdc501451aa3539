"""Latency and fault injection, as ASGI middleware around the whole sandbox.

Dropping a connection without an answer: ASGI has no message for that, and uvicorn
answers 500 to an app that raises before starting its response. So the server started by
``opapprove.servers.serving`` puts a ``close`` callable for the connection's transport
into ``scope["extensions"]`` (``CLOSE_EXTENSION``); the middleware calls it and waits for
the disconnect, and the client sees the connection closed with no response at all.
In-process (``httpx.ASGITransport``, which re-raises app exceptions) it raises
``httpx.RemoteProtocolError``, the error httpx gives for that over a socket. Under a
plain uvicorn without that extension the drop degrades to a 500.
"""

from __future__ import annotations

from typing import Any

import httpx
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from opapprove.servers.sandbox.faults import FaultRule
from opapprove.servers.sandbox.operations import operation_name
from opapprove.servers.sandbox.state import SandboxState

CLOSE_EXTENSION = "opapprove.close_connection"
FAULT_HEADER = "x-sandbox-fault"


class FaultMiddleware:
    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_admin/"):
            await self.app(scope, receive, send)
            return
        sleep = self.state.config.sleep
        if self.state.latency > 0:
            await sleep(self.state.latency)
        method, path = scope["method"], scope["path"]
        rule = self.state.faults.take(method, path, operation_name(method, path))
        if rule is None:
            await self.app(scope, receive, send)
        elif rule.delay is not None:
            await sleep(rule.delay)
            await self.app(scope, receive, send)
        elif rule.status is not None:
            await _injected(rule)(scope, receive, send)
        elif rule.drop == "before_commit":
            await _drop(scope, receive)
        else:

            async def swallow(message: Any) -> None:
                return None

            await self.app(scope, receive, swallow)
            await _drop(scope, receive)


def _injected(rule: FaultRule) -> JSONResponse:
    body = {"error": {"code": str(rule.status), "description": "injected fault (sandbox)"}}
    return JSONResponse(body, status_code=rule.status or 500, headers={FAULT_HEADER: "status"})


async def _drop(scope: Scope, receive: Receive) -> None:
    close = scope.get("extensions", {}).get(CLOSE_EXTENSION)
    if close is None:
        raise httpx.RemoteProtocolError(
            "Server disconnected without sending a response (sandbox drop fault)."
        )
    close()
    # uvicorn marks the cycle disconnected when the transport is gone; then it sends nothing.
    while (await receive())["type"] != "http.disconnect":
        pass
