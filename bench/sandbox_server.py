"""The sandbox for the benches, in its own process: latency, request spans, optional profile.

stdin: one JSON line ``{latency, wait_seconds, seller_keys, buyer_balance, profile}``;
stdout: the URL, once it listens. It serves until stdin closes, then writes the cProfile
stats to ``profile`` if one was asked for. Extra routes for the driver:
``POST /_bench/spans`` (the requests served since the last call, then forgotten) and
``GET /_bench/stats`` (requests served, CPU seconds used, which opapprove serves).
"""

from __future__ import annotations

import cProfile
import dataclasses
import json
import sys
import threading
import time
from typing import Any

import uvicorn

import opapprove
from opapprove.openpayments.keys import Jwk
from opapprove.servers.sandbox import AccountConfig, SandboxConfig, create_app
from opapprove.servers.serving import ClosableH11Protocol

# Which opapprove serves (bench/ab.py runs older revisions through PYTHONPATH).
_imported = opapprove.__file__
_config_fields = {f.name for f in dataclasses.fields(SandboxConfig)}


class Recorder:
    """Outermost ASGI layer: notes each request's start and end (latency included)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.spans: list[dict[str, Any]] = []
        self.served = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith("/_bench/"):
            await self._bench(path, scope, send)
            return
        start = time.monotonic()
        await self.app(scope, receive, send)
        if not path.startswith("/_admin/"):
            self.served += 1
            self.spans.append(
                {"method": scope["method"], "path": path, "start": start, "end": time.monotonic()}
            )

    async def _bench(self, path: str, scope: Any, send: Any) -> None:
        if path == "/_bench/spans":
            data, self.spans = self.spans, []
            body: Any = data
        else:
            body = {"served": self.served, "cpu": time.process_time(), "opapprove": _imported}
        raw = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": raw})


class Server(uvicorn.Server):
    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        port = self.servers[0].sockets[0].getsockname()[1]
        print(f"http://127.0.0.1:{port}", flush=True)


def main() -> None:
    options = json.loads(sys.stdin.readline())
    config = SandboxConfig(
        accounts=[
            AccountConfig(name="buyer", public_name="Buyer", balance=options["buyer_balance"]),
            AccountConfig(name="seller", public_name="Seller"),
        ],
        seller_keys=[Jwk.from_dict(k) for k in options["seller_keys"]],
        latency=float(options["latency"]),
        wait_seconds=int(options["wait_seconds"]),
        # As Rafiki: it keeps no record of signatures, so a byte-identical request (the
        # same grant asked for by 64 replays in the same second) is not refused as a replay.
        # (An older opapprove, run by bench/ab.py, has no such option and never refused.)
        **({"refuse_replays": False} if "refuse_replays" in _config_fields else {}),
    )
    app = Recorder(create_app(config))
    server = Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            access_log=False,
            http=ClosableH11Protocol,
            lifespan="off",
            loop="asyncio",
            backlog=4096,
        )
    )

    def stop_on_eof() -> None:
        sys.stdin.read()
        server.should_exit = True

    threading.Thread(target=stop_on_eof, daemon=True).start()
    profile = options.get("profile")
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    try:
        server.run()
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)


if __name__ == "__main__":
    main()
