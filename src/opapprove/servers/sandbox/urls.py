"""The sandbox's URLs: the origin a client addressed, the signed target URI, finish redirects."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit, urlunsplit

from starlette.requests import Request

AUTH_PATH = "/auth"
INTERACT_PATH = "/interact"
RS_PATH = "/op"
INCOMING = "incoming-payments"
OUTGOING = "outgoing-payments"
QUOTES = "quotes"


def base_url(request: Request, public_url: str | None) -> str:
    """The origin clients see: ``public_url``, else the request's scheme and Host header."""
    if public_url is not None:
        return public_url.rstrip("/")
    host = request.headers.get("host")
    if not host:
        server = request.scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{request.url.scheme}://{host}"


def target_uri(request: Request, base: str) -> str:
    """``@target-uri`` as the client signed it: the origin, the raw path, the raw query."""
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else request.url.path
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{base}{path}" + (f"?{query}" if query else "")


def wallet_url(base: str, account: str) -> str:
    return f"{base}/{account}"


def resource_url(base: str, collection: str, rid: str) -> str:
    return f"{base}{RS_PATH}/{collection}/{rid}"


def resource_id(base: str, collection: str, url: str) -> str | None:
    """The id in ``{base}/op/{collection}/{id}``, or None if ``url`` is not one of ours."""
    prefix = f"{base}{RS_PATH}/{collection}/"
    if not url.startswith(prefix):
        return None
    rid = url[len(prefix) :]
    return rid if rid and "/" not in rid and "?" not in rid and "#" not in rid else None


def account_of(base: str, url: str) -> str | None:
    """The account name of a sandbox wallet address URL (no existence check)."""
    prefix = f"{base}/"
    if not url.startswith(prefix):
        return None
    name = url[len(prefix) :]
    return name if name and "/" not in name and "?" not in name and "#" not in name else None


_FORM_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789*-._")


def _form_encode(text: str) -> str:
    """application/x-www-form-urlencoded exactly as WHATWG URLSearchParams serialises it."""
    out = []
    for byte in text.encode("utf-8"):
        if byte in _FORM_SAFE:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def set_query_params(url: str, params: dict[str, str]) -> str:
    """Like ``URL.searchParams.set`` for each param: keeps the rest of the query, in order."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    for name, value in params.items():
        idx = next((i for i, (k, _) in enumerate(pairs) if k == name), None)
        if idx is None:
            pairs.append((name, value))
        else:
            pairs[idx] = (name, value)
            pairs = [p for i, p in enumerate(pairs) if i == idx or p[0] != name]
    query = "&".join(f"{_form_encode(k)}={_form_encode(v)}" for k, v in pairs)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
