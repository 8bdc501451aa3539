"""An embedded Open Payments account servicing entity, for tests, the demo and CI.

Wallet addresses and their JWKS, a GNAP auth server with a consent page, and a resource
server that settles payments between its own accounts, on one loopback origin. It checks
signatures the way Rafiki does, and stricter where Rafiki fails open.

    app = create_app(SandboxConfig(seller_keys=[jwk]))
    with serve_in_thread(app) as server: ...        # opapprove.servers.serving
    app.sandbox.approve(redirect_url)               # what a person's click does
"""

from opapprove.servers.sandbox.app import SandboxApp, create_app
from opapprove.servers.sandbox.config import (
    AccountConfig,
    SandboxConfig,
    SandboxConfigError,
    describe,
    load_public_keys,
)
from opapprove.servers.sandbox.errors import SandboxError
from opapprove.servers.sandbox.fx import FeePolicy
from opapprove.servers.sandbox.state import SandboxState

__all__ = [
    "AccountConfig",
    "FeePolicy",
    "SandboxApp",
    "SandboxConfig",
    "SandboxConfigError",
    "SandboxError",
    "SandboxState",
    "create_app",
    "describe",
    "load_public_keys",
]
