"""Browser requests from other sites refused where a person or an operator changes state.

The operator routes (``/_admin``) and the consent forms (``/idp``, ``/interact``) act on a
plain POST, and a browser sends a cross-site form post, or a ``fetch`` with a ``text/plain``
body, without asking first (no CORS preflight): any page a developer opens while the sandbox
runs on loopback could register its own key on the seller's wallet, make every payment fail,
change faults or latency, or decide an approval whose link it saw. Browsers say where a
request comes from (``Origin``, ``Sec-Fetch-Site``); the CLI, tests, curl and other servers
send neither and are let through, so nothing else changes. A browser's request counts as
the sandbox's own when its Origin is ``--public-url``'s, or the Host it asked for under a
loopback name (by DNS rebinding, a page's own name can resolve to 127.0.0.1).
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from opapprove.servers.sandbox.errors import REASON_HEADER
from opapprove.servers.sandbox.state import SandboxState
from opapprove.servers.sandbox.urls import base_url

GUARDED_PREFIXES = ("/_admin/", "/idp/", "/interact/")
# The names a browser reaches the sandbox by on this machine (it binds loopback only).
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def from_another_site(request: Request, public_url: str | None) -> bool:
    origin = request.headers.get("origin")
    if origin is not None:
        if public_url is not None and _origin(origin) == _origin(public_url):
            return False
        # The origin of the Host the browser asked for counts only under a loopback name:
        # under DNS rebinding the page's own name (attacker.example:4000) resolves to
        # 127.0.0.1, and Origin and Host then agree.
        host = _parts(f"//{request.headers.get('host', '')}")
        loopback = host is not None and host.hostname in LOOPBACK_NAMES
        return not (loopback and _origin(origin) == _origin(base_url(request, None)))
    # No Origin: not a browser, or one old enough to send only this.
    return request.headers.get("sec-fetch-site") in ("cross-site", "same-site")


def _parts(url: str) -> SplitResult | None:
    try:
        return urlsplit(url.strip())
    except ValueError:  # "http://[": no origin this sandbox has
        return None


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower case (an Origin header has no path)."""
    parts = _parts(url)
    return "?" if parts is None else f"{parts.scheme}://{parts.netloc}".lower()


class SameOriginMiddleware:
    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] not in _SAFE_METHODS
            and scope["path"].startswith(GUARDED_PREFIXES)
            and from_another_site(Request(scope), self.state.config.public_url)
        ):
            refused = JSONResponse(
                {"error": {"code": "403", "description": "cross-site request refused"}},
                status_code=403,
                headers={
                    REASON_HEADER: "a browser sent this from another site; the sandbox's"
                    " operator routes and consent forms take requests only from its own pages"
                    " or from callers that are not browsers"
                },
            )
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)
