"""The marketplace's webhook endpoint for tests: a real server on loopback that records
every request and answers from a script (fixtures ``receiver`` and ``url`` in conftest)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from opapprove.servers.serving import RunningServer, serve_in_thread

PATH = "/api/webhooks/payments"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """The marketplace's webhook endpoint: records every request, answers from a script."""

    requests: list[Received] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, *statuses: int, headers: dict[str, str] | None = None) -> None:
        with self.lock:
            self.script = [(s, headers or {}) for s in statuses]

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.script.clear()

    def of_type(self, kind: str) -> list[Received]:
        return [r for r in self.requests if r.json["type"] == kind]

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            self.requests.append(Received(dict(request.headers), body))
            status, headers = self.script.pop(0) if self.script else (200, {})
        return Response(status_code=status, headers=headers)


@contextmanager
def serve_receiver() -> Iterator[tuple[Receiver, RunningServer]]:
    receiver = Receiver()
    app = Starlette(routes=[Route(PATH, receiver.endpoint, methods=["POST"])])
    with serve_in_thread(app) as server:
        yield receiver, server
