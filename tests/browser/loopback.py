"""Small ASGI apps the browser tests serve on loopback next to the real servers."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


class FinishReceiver:
    """A client's finish endpoint that only records each redirect's query, for the test to read."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.app = Starlette(routes=[Route("/finish", self._finish)])

    async def _finish(self, request: Request) -> Response:
        self.calls.append(dict(request.query_params))
        return HTMLResponse('<!doctype html><title>received</title><p id="received">received</p>')


class LateApp:
    """An ASGI app whose inner app is set after serving starts.

    The listener's settings need the listener's own URL, which exists only once its socket
    listens. It also remembers the server thread's loop, so the listener's Flow can be
    closed on the loop its HTTP clients were made on.
    """

    def __init__(self) -> None:
        self.inner: ASGIApp | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.inner is not None, "serve the inner app before sending requests"
        self.loop = asyncio.get_running_loop()
        await self.inner(scope, receive, send)

    def run(self, coro: Any, timeout: float = 30) -> Any:
        """Run ``coro`` on the server's loop (if it ever served) and wait for its result."""
        if self.loop is None:
            coro.close()
            return None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)
