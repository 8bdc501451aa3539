"""Who may call ``listen --api``: the marketplace's backend, not a web page the user visits.

A page in the user's browser can POST ``text/plain`` to loopback without a CORS preflight,
and a DNS-rebinding page reaches loopback under its own host name. So every API request
needs the run's bearer token, a ``Host`` that names this listener (a loopback name or the
host of ``base_url``), no ``Origin`` but the listener's own, and a POST needs
``Content-Type: application/json``.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def _host_of(authority: str) -> str | None:
    try:
        return urlsplit(f"//{authority}").hostname
    except ValueError:
        return None


def _origin(url: str) -> str | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    suffix = f":{port}" if port is not None and port != default else ""
    return f"{parts.scheme}://{host}{suffix}".lower()


class ApiGuard:
    def __init__(self, token: str, base_url: str) -> None:
        if not token:
            raise ValueError("the API needs a bearer token")
        self.token = token
        self._expected = f"Bearer {token}".encode()
        self.base_origin = _origin(base_url)
        self.hosts = LOOPBACK_NAMES | {h for h in [_host_of(urlsplit(base_url).netloc)] if h}

    def refuse(self, request: Request) -> Response | None:
        """The refusal for a request that must not reach the API, else None."""
        host = request.headers.get("host", "")
        name = _host_of(host)
        if name is None or name.lower() not in self.hosts:
            return api_error(
                403,
                f"Host {host[:80]!r} is not this listener",
                "call it by a loopback address or by the host of base_url",
            )
        origin = request.headers.get("origin")
        if origin is not None:
            own = {self.base_origin, _origin(f"{request.url.scheme}://{host}")}
            if _origin(origin) not in own - {None}:
                return api_error(
                    403,
                    f"cross-site request from Origin {origin[:80]!r} refused",
                    "call the API from the marketplace's backend, not from a web page",
                )
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, self._expected):
            return api_error(
                401,
                "missing or wrong bearer token",
                "send Authorization: Bearer <api_token> (listen prints the run's token when"
                " api_token is unset)",
            )
        if request.method == "POST":
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/json":
                return api_error(
                    415,
                    f"Content-Type {media or 'none'!r} refused: the API takes application/json",
                    "send the body as JSON with Content-Type: application/json",
                )
        return None


def api_error(status: int, error: str, hint: str) -> JSONResponse:
    """The listener API's refusal: the seed's ``success: false`` body, with what to do."""
    return JSONResponse({"success": False, "error": error, "hint": hint}, status)
