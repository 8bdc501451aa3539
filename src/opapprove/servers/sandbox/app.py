"""``create_app``: the whole sandbox (wallets, auth server, consent, resource server, admin)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.types import ASGIApp

from opapprove.servers.sandbox import admin, auth, consent, resources, wallets
from opapprove.servers.sandbox.config import SandboxConfig
from opapprove.servers.sandbox.errors import ApiError, SandboxError, api_error_response
from opapprove.servers.sandbox.middleware import FaultMiddleware
from opapprove.servers.sandbox.same_origin import SameOriginMiddleware
from opapprove.servers.sandbox.state import SandboxState

MAX_BODY_BYTES = 1 << 20


class SandboxApp(Starlette):
    """The sandbox's ASGI app; ``.sandbox`` is its state (the operator's Python handle)."""

    sandbox: SandboxState

    def build_middleware_stack(self) -> ASGIApp:
        # Outermost, so a dropped connection is not turned into a 500 by Starlette first.
        inner = SameOriginMiddleware(super().build_middleware_stack(), self.sandbox)
        return FaultMiddleware(inner, self.sandbox)


def create_app(config: SandboxConfig | SandboxState | None = None) -> SandboxApp:
    """Build the sandbox from a config (or around an existing state, e.g. after a restart)."""
    state = config if isinstance(config, SandboxState) else SandboxState(config or SandboxConfig())
    app = SandboxApp(
        routes=[*auth.ROUTES, *consent.ROUTES, *resources.ROUTES, *admin.ROUTES, *wallets.ROUTES],
        exception_handlers={ApiError: api_error_response, SandboxError: api_error_response},
        max_body_size=MAX_BODY_BYTES,
    )
    app.sandbox = state
    app.state.sandbox = state
    return app
