"""Operator endpoints under ``/_admin`` (not Open Payments): for tests, the demo and CI.

They do what the Python methods on SandboxState do, over HTTP.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opapprove.openpayments import jsontext
from opapprove.servers.sandbox.errors import SandboxError
from opapprove.servers.sandbox.faults import parse_rule
from opapprove.servers.sandbox.state import SandboxState
from opapprove.servers.sandbox.urls import base_url, wallet_url


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


async def _json(request: Request) -> dict[str, Any]:
    try:
        data = jsontext.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise SandboxError(f"the body is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SandboxError("the body must be a JSON object")
    return data


async def approve(request: Request) -> Response:
    data = await _json(request)
    redirect = data.get("redirect")
    reject = data.get("reject", False)
    if not isinstance(redirect, str) or not isinstance(reject, bool):
        raise SandboxError('send {"redirect": "<interact.redirect URL>", "reject": false}')
    finish_url = _state(request).approve(redirect, reject=reject)
    return JSONResponse({"finish_url": finish_url or None})


async def accounts(request: Request) -> Response:
    state = _state(request)
    base = base_url(request, state.config.public_url)
    out = state.accounts_summary()
    for item in out:
        item["url"] = wallet_url(base, item["name"])
    return JSONResponse({"accounts": out})


async def add_key(request: Request) -> Response:
    data = await _json(request)
    wallet, jwk = data.get("wallet"), data.get("jwk")
    if not isinstance(wallet, str) or not isinstance(jwk, dict):
        raise SandboxError('send {"wallet": "<wallet name, e.g. seller>", "jwk": {<public JWK>}}')
    key_ids, added = _state(request).add_key(wallet, jwk)
    return JSONResponse(
        {"wallet": wallet, "keyIds": key_ids, "added": added}, status_code=201 if added else 200
    )


async def set_faults(request: Request) -> Response:
    state = _state(request)
    data = await _json(request)
    rules = [parse_rule(route, spec) for route, spec in data.items()]
    for rule in rules:
        state.faults.set(rule)
    return JSONResponse({"faults": state.faults.snapshot()})


async def get_faults(request: Request) -> Response:
    return JSONResponse({"faults": _state(request).faults.snapshot()})


async def clear_faults(request: Request) -> Response:
    _state(request).clear_faults()
    return Response(status_code=204)


async def set_latency(request: Request) -> Response:
    state = _state(request)
    data = await _json(request)
    state.set_latency(data.get("seconds", -1))
    return JSONResponse({"latency": state.latency})


async def set_settlement(request: Request) -> Response:
    """``{"delay": S}`` and/or ``{"fail": N}``: when payments send, and how many fail."""
    state = _state(request)
    data = await _json(request)
    if "delay" in data:
        delay = data["delay"]
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            raise SandboxError(f"delay {delay!r} must be a number of seconds >= 0")
        state.config.settle_delay = float(delay)
    if "fail" in data:
        state.fail_next_payments(data["fail"])
    return JSONResponse({"delay": state.config.settle_delay, "failNext": state.failing_payments})


ROUTES = [
    Route("/_admin/approve", approve, methods=["POST"]),
    Route("/_admin/accounts", accounts, methods=["GET"]),
    Route("/_admin/keys", add_key, methods=["POST"]),
    Route("/_admin/faults", set_faults, methods=["POST"]),
    Route("/_admin/faults", get_faults, methods=["GET"]),
    Route("/_admin/faults", clear_faults, methods=["DELETE"]),
    Route("/_admin/latency", set_latency, methods=["POST"]),
    Route("/_admin/settlement", set_settlement, methods=["POST"]),
]
