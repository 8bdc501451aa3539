"""opapprove's sandbox inside your own tests.

With pytest, the plugin registered at install (``opapprove.testing.plugin``) gives the
fixtures ``op_sandbox`` and ``op_seller``. Elsewhere, use the context manager:

    from opapprove.testing import make_seller, running_sandbox

    with running_sandbox() as sandbox:
        seller = make_seller(sandbox, Path("keys"))
        ...
        finish_url = sandbox.approve(approval_url)
"""

from opapprove.testing.sandbox import (
    OpSandbox,
    SandboxAdminError,
    SandboxLog,
    SandboxStartError,
    running_sandbox,
)
from opapprove.testing.seller import OpSeller, make_seller

__all__ = [
    "OpSandbox",
    "OpSeller",
    "SandboxAdminError",
    "SandboxLog",
    "SandboxStartError",
    "make_seller",
    "running_sandbox",
]
