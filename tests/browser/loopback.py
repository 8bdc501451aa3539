"""Small ASGI apps the browser tests serve on loopback next to the real servers."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from opapprove.servers.serving import LateApp

__all__ = ["FinishReceiver", "LateApp"]


class FinishReceiver:
    """A client's finish endpoint that only records each redirect's query, for the test to read."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.app = Starlette(routes=[Route("/finish", self._finish)])

    async def _finish(self, request: Request) -> Response:
        self.calls.append(dict(request.query_params))
        return HTMLResponse('<!doctype html><title>received</title><p id="received">received</p>')
