"""``doctor``: is this machine ready to run approvals? Checks as data; nothing is printed.

Each check is one line: pass, warn or fail, with a hint when it is not a pass. A check
that needs an earlier one (no seller, so no key to look at) is left out instead of
failing a second time for the same reason.
"""

from __future__ import annotations

import asyncio
import email.utils
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import httpx

from opapprove.approvals.errors import FlowError
from opapprove.approvals.postgres_backend import PostgresBackend
from opapprove.approvals.records import Seller
from opapprove.approvals.sellers import resolve_seller, seller_from_settings
from opapprove.approvals.store import Store, StoreError
from opapprove.diagnostics.finding import Finding
from opapprove.openpayments import errors as op_errors
from opapprove.openpayments import urls
from opapprove.openpayments.transport import system_tls
from opapprove.paths import DatabaseURL, StoreLocation, store_location

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from opapprove.openpayments.client import OpenPaymentsClient
    from opapprove.openpayments.exchange import Exchange
    from opapprove.openpayments.models import WalletAddress
    from opapprove.settings import Settings

Status = Literal["pass", "warn", "fail"]
RANK: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2}
# Rafiki checks no signature freshness, but token, quote and approval expiries are
# computed from the local clock; a Date header has one-second resolution.
CLOCK_SKEW_WARN = 30.0
# Whose fault a failed Open Payments call is, by the error's kind: the network's for a
# failure on the wire, the wallet's for an answer; anything else (a URL refused before
# sending, a bad key) is the config's.
_FAULT_BY_KIND = {"transport": "transport", "refused": "wallet", "invalid_response": "wallet"}
OTHERS_MAY_READ = 0o077


@dataclass(frozen=True)
class Check(Finding[Status]):
    """One line of ``doctor``."""

    def to_json(self) -> dict[str, Any]:
        return {**self.json_head("check"), "kind": self.kind}


def worst(checks: Iterable[Check]) -> Status:
    """The worst status among ``checks`` (``pass`` when there are none)."""
    found: Status = "pass"
    for check in checks:
        if RANK[check.status] > RANK[found]:
            found = check.status
    return found


def run_checks(
    settings: Settings,
    store_path: StoreLocation | str,
    seller: str | None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
    on_exchange: Callable[[Exchange], None] | None = None,
) -> list[Check]:
    """Every check, in order; ``seller`` is a seller id (default: the config's seller).

    ``on_exchange`` sees the Open Payments requests (``--trace``).
    """
    location = store_location(store_path)
    if isinstance(location, Path):
        location = location.expanduser()
    doctor = _Doctor(settings, location, seller, transport, clock)
    doctor.on_exchange = on_exchange
    asyncio.run(doctor.run())
    return doctor.checks


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def _read_only(path: Path) -> bool:
    """The store (or its directory, where SQLite writes its journal) cannot be written."""
    import os

    for target in (path, path.parent):
        mode = _mode(target)
        if mode is not None and (not mode & 0o200 or not os.access(target, os.W_OK)):
            return True
    return False


def _others_may_read(path: Path) -> bool:
    mode = _mode(path)
    return mode is not None and bool(mode & OTHERS_MAY_READ)


def _host(url: str) -> str:
    try:
        return urlsplit(url).netloc or url
    except ValueError:
        return url


class _Doctor:
    def __init__(
        self,
        settings: Settings,
        store_path: StoreLocation,
        seller_id: str | None,
        transport: httpx.AsyncBaseTransport | None,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.store_path = store_path
        self.seller_id = seller_id
        self.transport = transport
        self.clock = clock
        self.checks: list[Check] = []
        self.on_exchange: Callable[[Exchange], None] | None = None
        # (host, the server's Date, our clock when the answer came)
        self.dates: list[tuple[str, float, float]] = []

    def add(
        self,
        name: str,
        status: Status,
        message: str,
        hint: str | None = None,
        kind: str = "config",
    ) -> None:
        if status == "pass":
            self.checks.append(Check(name, status, message))
        else:
            self.checks.append(Check(name, status, message, hint, kind))

    def add_failure(self, name: str, exc: op_errors.OpenPaymentsError) -> None:
        """``name`` failed on an Open Payments call: whose fault it is follows the error's kind."""
        self.add(name, "fail", exc.message, exc.hint, kind=_FAULT_BY_KIND.get(exc.kind, "config"))

    async def run(self) -> None:
        self.check_config()
        seller = self.check_store_and_seller()
        if seller is None:
            return
        key = self.check_key_file(seller)
        from opapprove.openpayments.client import OpenPaymentsClient

        client = OpenPaymentsClient(
            wallet_address_url=seller.wallet_address_url,
            transport=self.transport,
            timeout=float(self.settings.timeout),
            use_http=bool(self.settings.use_http),
            allow_http=bool(self.settings.allow_http),
            retries=1,
            on_exchange=self.saw,
        )
        async with client:
            wallet = await self.check_wallet(client, seller)
            if wallet is not None:
                await self.check_servers(wallet)
                if key is not None:
                    await self.check_published_key(client, seller, key)
        if wallet is not None:
            self.check_clock()

    # ------------------------------------------------------------------ local checks

    def check_config(self) -> None:
        settings = self.settings
        problems: list[tuple[str, str]] = []
        path = settings.config_file
        where = f"config file {path}" if path else "no config file (defaults and OPAPPROVE_*)"
        secrets = [
            name for name in ("webhook_secret", "api_token") if getattr(settings, name) is not None
        ]
        if path is not None and secrets and _others_may_read(path):
            problems.append(
                (
                    f"{path} holds {' and '.join(secrets)} and is readable by others "
                    f"(mode {oct(_mode(path) or 0)})",
                    f"chmod 600 {path}",
                )
            )
        if settings.allow_http:
            problems.append(
                (
                    "allow_http is on: tokens and signed requests may cross the network in clear",
                    "turn allow_http off unless the wallet runs on a network you control",
                )
            )
        base = settings.base_url
        if base.lower().startswith("http://") and not urls.is_loopback(base):
            problems.append(
                (
                    f"base_url {base} is plain http on a non-loopback host: the wallet sends "
                    "the buyer's browser there with the interaction reference",
                    "serve the listener behind https, or keep base_url on 127.0.0.1",
                )
            )
        if not problems:
            self.add("config", "pass", where)
            return
        self.add(
            "config",
            "warn",
            "; ".join(p for p, _ in problems),
            "; ".join(h for _, h in problems),
        )

    def check_store_and_seller(self) -> Seller | None:
        if isinstance(self.store_path, DatabaseURL):
            return self.check_database_store(self.store_path)
        path = self.store_path
        existed = path.exists()
        store: Store | None = None
        try:
            store = Store(path)
            version = store.schema_version()
        except StoreError as exc:
            self.add("store", "fail", exc.message, exc.hint, kind="store")
        else:
            opened = "opens" if existed else "was created"
            if _read_only(path):
                self.add(
                    "store",
                    "fail",
                    f"store {path} {opened} (schema v{version}) but is read-only: every command "
                    "that records a step would fail",
                    f"chmod u+w {path} {path.parent}",
                    kind="store",
                )
            elif _others_may_read(path):
                self.add(
                    "store",
                    "warn",
                    f"store {path} {opened} (schema v{version}) but is readable by others "
                    f"(mode {oct(_mode(path) or 0)}); it holds access tokens",
                    f"chmod 600 {path}",
                    kind="store",
                )
            else:
                self.add("store", "pass", f"store {path} {opened}, schema v{version}")
        try:
            return self.check_seller(store)
        finally:
            if store is not None:
                store.close()

    def check_database_store(self, url: DatabaseURL) -> Seller | None:
        """A PostgreSQL store: it connects, it is ours at a version we know, we may write it."""
        store: Store | None = None
        try:
            store = Store(url)
            version = store.schema_version()
            missing = (
                store.backend.privileges() if isinstance(store.backend, PostgresBackend) else {}
            )
        except StoreError as exc:
            self.add("store", "fail", exc.message, exc.hint, kind="store")
        else:
            if missing:
                lacking = "; ".join(f"{t}: {', '.join(p)}" for t, p in missing.items())
                self.add(
                    "store",
                    "fail",
                    f"store {url} connects (schema v{version}), but the user lacks {lacking}",
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ... TO the "
                    "user (and USAGE on its sequences)",
                    kind="store",
                )
            else:
                self.add(
                    "store",
                    "pass",
                    f"store {url} connects (PostgreSQL), schema v{version}, may read and write",
                )
        try:
            return self.check_seller(store)
        finally:
            if store is not None:
                store.close()

    def check_seller(self, store: Store | None) -> Seller | None:
        settings = self.settings
        try:
            if store is not None:
                seller = resolve_seller(settings, store, self.seller_id)
            else:
                found = seller_from_settings(settings)
                wanted = self.seller_id or settings.seller_id
                if found is None or found.id != wanted:
                    self.add(
                        "seller",
                        "fail",
                        f"no seller {wanted!r}: the store did not open and the config names none",
                        "fix the store first, or set the config's seller_* keys",
                    )
                    return None
                seller = found
        except FlowError as exc:
            self.add("seller", "fail", exc.message, exc.hint)
            return None
        try:
            urls.parse_wallet_address(
                seller.wallet_address_url, allow_http=bool(settings.allow_http)
            )
        except op_errors.WalletAddressError as exc:
            self.add(
                "seller",
                "fail",
                f"seller {seller.id!r}: {exc.message}",
                exc.hint or f"fix it with `opapprove seller add {seller.id} --replace ...`",
                kind="input",
            )
            return None
        self.add(
            "seller",
            "pass",
            f"seller {seller.id!r}: wallet {seller.wallet_address_url}, key id {seller.key_id}",
        )
        return seller

    def check_key_file(self, seller: Seller) -> Ed25519PrivateKey | None:
        from opapprove.approvals.sellers import key_path, load_key

        path = key_path(seller.private_key_path)
        try:
            key = load_key(seller)
        except op_errors.KeyLoadError as exc:
            self.add("key file", "fail", exc.message, exc.hint, kind="key")
            return None
        if _others_may_read(path):
            self.add(
                "key file",
                "warn",
                f"{path} loads (Ed25519) but is readable by others (mode {oct(_mode(path) or 0)})",
                f"chmod 600 {path}",
                kind="key",
            )
        else:
            self.add("key file", "pass", f"{path} is an Ed25519 key, mode 0o600 or tighter")
        return key

    # ------------------------------------------------------------------ network checks

    def saw(self, exchange: Exchange) -> None:
        """The client's ``on_exchange``: keeps each answer's ``Date`` for the clock check."""
        self._note_date(exchange.url, exchange.response_headers.get("date"))
        if self.on_exchange is not None:
            self.on_exchange(exchange)

    def _note_date(self, url: str, header: str | None) -> None:
        if not header:
            return
        try:
            server = email.utils.parsedate_to_datetime(header).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        self.dates.append((_host(url), server, self.clock()))

    async def check_wallet(
        self, client: OpenPaymentsClient, seller: Seller
    ) -> WalletAddress | None:
        url = seller.wallet_address_url
        try:
            wallet = await client.get_wallet_address(url)
        except op_errors.OpenPaymentsError as exc:
            self.add_failure("wallet address", exc)
            return None
        asset = f"{wallet.asset_code}, scale {wallet.asset_scale}"
        if wallet.id.rstrip("/") != url.rstrip("/"):
            self.add(
                "wallet address",
                "warn",
                f"{url} answers, but its document's id is {wallet.id} ({asset})",
                "use the document's id as the seller's wallet address",
                kind="wallet",
            )
        else:
            name = f"{wallet.public_name!r}, " if wallet.public_name else ""
            self.add("wallet address", "pass", f"{url} answers ({name}{asset})")
        return wallet

    async def check_servers(self, wallet: WalletAddress) -> None:
        settings = self.settings
        async with httpx.AsyncClient(
            transport=self.transport,
            timeout=float(settings.timeout),
            follow_redirects=False,
            verify=system_tls(),
        ) as http:
            for name, url in (
                ("auth server", wallet.auth_server),
                ("resource server", wallet.resource_server),
            ):
                await self._check_server(http, name, url)

    async def _check_server(self, http: httpx.AsyncClient, name: str, url: str) -> None:
        settings = self.settings
        target = urls.apply_use_http(url) if settings.use_http else url
        try:
            urls.check_url(target, allow_http=bool(settings.allow_http))
        except urls.InsecureUrlError as exc:
            self.add(name, "fail", f"{name} {url}: {exc.message}", exc.hint, kind="config")
            return
        try:
            response = await http.get(target, headers={"Accept": "application/json"})
        except httpx.TimeoutException:
            self.add(
                name,
                "fail",
                f"{name} {target} did not answer within {settings.timeout:g} s",
                "check the wallet is up and reachable from here, or raise the timeout",
                kind="transport",
            )
            return
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            self.add(
                name,
                "fail",
                f"{name} {target} is unreachable ({type(exc).__name__}: {exc})",
                "check the URL in the wallet address document and your network",
                kind="transport",
            )
            return
        self._note_date(target, response.headers.get("date"))
        if response.status_code >= 500:
            self.add(
                name,
                "warn",
                f"{name} {target} answers {response.status_code}",
                "the wallet's server reports a failure; report it to the wallet operator",
                kind="wallet",
            )
        else:
            self.add(name, "pass", f"{name} {target} answers (HTTP {response.status_code})")

    async def check_published_key(
        self, client: OpenPaymentsClient, seller: Seller, key: Ed25519PrivateKey
    ) -> None:
        from opapprove.openpayments.keys import public_jwk

        jwks_url = f"{seller.wallet_address_url.rstrip('/')}/jwks.json"
        name = "key published"
        try:
            jwks = await client.get_keys(seller.wallet_address_url)
        except op_errors.OpenPaymentsError as exc:
            self.add_failure(name, exc)
            return
        published = jwks.find(seller.key_id)
        if published is None:
            kids = ", ".join(k.kid for k in jwks.keys) or "no keys"
            self.add(
                name,
                "fail",
                f"key id {seller.key_id!r} is not in {jwks_url} (it has: {kids}); every grant "
                "request would fail with invalid_client",
                f"upload the public JWK from `opapprove seller show {seller.id}` to the wallet, "
                "or fix the seller's key id",
            )
            return
        if published.x != public_jwk(key, seller.key_id).x:
            self.add(
                name,
                "fail",
                f"the JWK published as {seller.key_id!r} in {jwks_url} is not the public key of "
                f"{seller.private_key_path}; every signature would be refused",
                "upload the JWK of this private key, or use the private key of the published JWK",
            )
            return
        self.add(
            name, "pass", f"key id {seller.key_id!r} is in {jwks_url} and matches the private key"
        )

    def check_clock(self) -> None:
        if not self.dates:
            self.add(
                "clock",
                "warn",
                "not checked: no server sent a Date header",
                "make sure this machine's clock is synchronised (NTP)",
                kind="clock",
            )
            return
        # Positive: the server is ahead, so our clock is behind.
        host, skew = max(
            ((host, server - local) for host, server, local in self.dates),
            key=lambda item: abs(item[1]),
        )
        if abs(skew) <= CLOCK_SKEW_WARN:
            self.add("clock", "pass", f"within {abs(skew):.0f} s of {host}'s Date header")
            return
        direction = "behind" if skew > 0 else "ahead of"
        self.add(
            "clock",
            "warn",
            f"this machine's clock is {abs(skew):.0f} s {direction} {host}'s Date header",
            "synchronise the clock (NTP): token, quote and approval expiries are computed from it",
            kind="clock",
        )
