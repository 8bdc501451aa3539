"""Wallet address URLs: what a person may type, and which URLs may go over plain HTTP."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from urllib.parse import urlsplit

from opapprove.openpayments.errors import OpenPaymentsError, WalletAddressError

_HTTP_HINT = "use https, or allow plain http explicitly (allow_http) for a local test wallet"


class InsecureUrlError(OpenPaymentsError, ValueError):
    """A URL the client refuses to call: plain http to a host that is not loopback, or not http."""

    kind = "insecure_url"


def is_loopback(url: str) -> bool:
    """True if the URL's host is ``localhost`` or a loopback IP (127.0.0.0/8, ::1)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return _loopback_host(host) if host else False


@lru_cache(maxsize=256)
def _loopback_host(host: str) -> bool:
    # Asked for every request to a plain-http URL (a local sandbox or Rafiki): a bulk replay
    # parsed the same few hosts as IP addresses thousands of times.
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def apply_use_http(url: str) -> str:
    """Rewrite ``https://`` to ``http://`` (the Node SDK's ``useHttp``, for a local Rafiki)."""
    if url[:8].lower() == "https://":
        return "http://" + url[8:]
    return url


def check_url(url: str, *, allow_http: bool = False) -> str:
    """Return ``url`` unchanged if the client may call it, else raise ``InsecureUrlError``.

    Tokens and signed requests must not cross a network in the clear, so plain http is only
    for loopback unless the caller allows it.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InsecureUrlError(f"{url!r} is not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise InsecureUrlError(
            f"{url!r} is not an http(s) URL", hint="Open Payments URLs start with https://"
        )
    if scheme == "http" and not allow_http and not is_loopback(url):
        raise InsecureUrlError(
            f"refusing plain http to {parts.hostname}: only loopback hosts may use http",
            hint=_HTTP_HINT,
        )
    return url


def parse_wallet_address(text: str, *, allow_http: bool = False) -> str:
    """Normalise what a person typed into a wallet address URL, or raise ``WalletAddressError``.

    Accepts ``https://host/path`` and ``$host/path`` payment pointers (which mean https).
    Strips trailing slashes, because the SDK appends ``/jwks.json`` to the address as is.
    """
    raw = text.strip() if isinstance(text, str) else ""
    if not raw:
        raise WalletAddressError(
            "the wallet address is empty", hint="give a URL like https://ilp.example/alice"
        )
    if any(ch.isspace() for ch in raw):
        raise WalletAddressError(
            f"wallet address {raw!r} contains whitespace", hint="give a single URL"
        )
    url = "https://" + raw[1:] if raw.startswith("$") else raw
    if "://" not in url:
        raise WalletAddressError(
            f"wallet address {raw!r} has no scheme",
            hint=f"did you mean https://{raw}?",
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WalletAddressError(
            f"wallet address {raw!r} is not a valid URL ({exc})",
            hint="give a URL like https://ilp.example/alice",
        ) from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WalletAddressError(
            f"wallet address {raw!r} uses {scheme}://, not https://",
            hint="wallet addresses are https URLs like https://ilp.example/alice",
        )
    if not parts.hostname:
        raise WalletAddressError(
            f"wallet address {raw!r} has no host", hint="give a URL like https://ilp.example/alice"
        )
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise WalletAddressError(
            f"wallet address {raw!r} contains a user name or password",
            hint="remove the user@ part; wallet addresses carry no credentials",
        )
    if "?" in url.split("#", 1)[0]:
        raise WalletAddressError(
            f"wallet address {raw!r} has a query string",
            hint="remove everything from the '?' on",
        )
    if "#" in url:
        raise WalletAddressError(
            f"wallet address {raw!r} has a fragment", hint="remove everything from the '#' on"
        )
    path = parts.path.rstrip("/")
    if not path:
        raise WalletAddressError(
            f"wallet address {raw!r} has no path",
            hint="a wallet address names an account, like https://ilp.example/alice",
        )
    host = parts.hostname.lower()
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    normalised = f"{scheme}://{netloc}{path}"
    if scheme == "http" and not allow_http and not is_loopback(normalised):
        raise WalletAddressError(
            f"wallet address {raw!r} uses plain http, which is only allowed for loopback hosts",
            hint=_HTTP_HINT,
        )
    return normalised
