"""What a sandbox runs with: its accounts, keys, lifetimes, fees and rates, clock and knobs."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opapprove.openpayments.errors import KeyLoadError
from opapprove.openpayments.keys import Jwk
from opapprove.openpayments.rates import RateError, Rates
from opapprove.servers.sandbox.fx import FeePolicy

# Path segments the sandbox itself uses; an account may not shadow them.
RESERVED_NAMES = frozenset({"auth", "op", "interact", "idp", "_admin", "favicon.ico"})
# Account names end up in ILP addresses (test.opapprove.<name>) and in URL paths.
ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class SandboxConfigError(ValueError):
    """A sandbox configuration that cannot work (one line: what, why, what to do)."""


@dataclass
class AccountConfig:
    """One wallet address of the sandbox, ``{public}/{name}``."""

    name: str
    public_name: str | None = None
    asset_code: str = "USD"
    asset_scale: int = 2
    balance: int = 0
    keys: list[Jwk] = field(default_factory=list)


def default_accounts() -> list[AccountConfig]:
    return [
        AccountConfig(name="buyer", public_name="Buyer", balance=100_000),
        AccountConfig(name="seller", public_name="Seller"),
    ]


# Wide enough for ordinary clock skew, narrow enough that a captured request soon dies.
DEFAULT_CREATED_WINDOW = 300

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class SandboxConfig:
    """Everything a sandbox needs; all durations are seconds.

    ``public_url`` is the origin clients address (signatures are checked against
    ``public_url + path + query``). ``None`` means: take it from each request's scheme
    and ``Host`` header, which is what a server bound to port 0 needs.
    """

    accounts: list[AccountConfig] = field(default_factory=default_accounts)
    # The client wallet (the seller in the seed) publishes these keys in its jwks.json.
    client_account: str = "seller"
    seller_keys: list[Jwk] = field(default_factory=list)
    extra_keys: list[Jwk] = field(default_factory=list)
    public_url: str | None = None
    wait_seconds: int = 5
    interaction_lifetime: float = 600.0
    token_lifetime: int = 600
    quote_lifetime: float = 300.0
    incoming_payment_lifetime: float = 30 * 24 * 3600.0
    fee: FeePolicy = field(default_factory=FeePolicy)
    # EUR/USD=1.08 style; every pair of assets the accounts hold must be priced (fx.py).
    rates: Rates = field(default_factory=Rates)
    clock: Callable[[], float] = time.time
    # Injectable so tests can see latency and delay faults without sleeping.
    sleep: Sleep = asyncio.sleep
    state_path: Path | None = None
    latency: float = 0.0
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Freshness check on the signature's `created`, in seconds either side of now; None is
    # Rafiki's leniency (it accepts a created a day old or a day ahead).
    created_window: int | None = DEFAULT_CREATED_WINDOW
    # Refuse an exact replay of an accepted request that creates something (Rafiki does not).
    refuse_replays: bool = True
    # Rafiki digests JSON.stringify(JSON.parse(body)); refuse bodies that differ from that.
    require_compact_json: bool = True
    http_timeout: float = 5.0
    # Seconds after its creation an outgoing payment is sent (at the next request then).
    settle_delay: float = 0.0

    def validate(self) -> None:
        names: set[str] = set()
        for acct in self.accounts:
            if not ACCOUNT_NAME.match(acct.name) or acct.name in RESERVED_NAMES:
                raise SandboxConfigError(
                    f"account name {acct.name!r} cannot be used: it must be lowercase letters, "
                    "digits, '-' or '_' and not one of " + ", ".join(sorted(RESERVED_NAMES))
                )
            if acct.name in names:
                raise SandboxConfigError(f"account {acct.name!r} is configured twice")
            names.add(acct.name)
            if not 0 <= acct.asset_scale <= 255 or acct.balance < 0:
                raise SandboxConfigError(
                    f"account {acct.name!r} needs an asset scale of 0..255 and a balance >= 0"
                )
        if self.client_account not in names:
            raise SandboxConfigError(
                f"the client account {self.client_account!r} is not among the accounts "
                f"({', '.join(sorted(names))})"
            )
        if self.public_url is not None and not re.match(
            r"^https?://[^/?#]+(/[^?#]*)?$", self.public_url
        ):
            raise SandboxConfigError(
                f"public_url {self.public_url!r} must be an http(s) origin like http://127.0.0.1:8080"
            )
        if (
            min(
                self.wait_seconds, self.interaction_lifetime, self.token_lifetime, self.settle_delay
            )
            < 0
        ):
            raise SandboxConfigError("wait and lifetimes must not be negative")
        self._check_rates()

    def _check_rates(self) -> None:
        codes = sorted({a.asset_code for a in self.accounts})
        for code in codes[1:]:
            try:
                self.rates.rate(codes[0], code)
            except RateError as exc:
                holders = ", ".join(a.name for a in self.accounts if a.asset_code == code)
                raise SandboxConfigError(
                    f"no exchange rate between {codes[0]} and {code} (held by {holders}):"
                    f" add --rate {code}/{codes[0]}=NUMBER",
                ) from exc

    def keys_for(self, account: str) -> list[Jwk]:
        acct = next(a for a in self.accounts if a.name == account)
        keys = list(acct.keys)
        if account == self.client_account:
            keys += self.seller_keys + self.extra_keys
        return keys


def load_public_keys(path: Path) -> list[Jwk]:
    """Read a public JWK, or a JWKS ``{"keys": [...]}``, from ``path`` (``--key FILE.jwk``)."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise KeyLoadError(
            f"cannot read key file {path}: {exc.strerror or exc}",
            hint="give the path of a public JWK file (JSON)",
        ) from exc
    except ValueError as exc:
        raise KeyLoadError(
            f"key file {path} is not JSON ({exc})",
            hint="give a public JWK like the ones in a wallet's jwks.json",
        ) from exc
    items = data.get("keys") if isinstance(data, dict) and "keys" in data else [data]
    if not isinstance(items, list) or not items:
        raise KeyLoadError(f"key file {path} holds no keys")
    if any(isinstance(item, dict) and "d" in item for item in items):
        raise KeyLoadError(
            f"key file {path} holds a private key",
            hint="give the sandbox only the public JWK (without 'd')",
        )
    return [Jwk.from_dict(item) for item in items]


def describe(config: SandboxConfig, base_url: str | None = None) -> list[dict[str, Any]]:
    """The wallets a sandbox serves, for ``opapprove sandbox`` to print.

    ``base_url`` is the origin it listens on; it defaults to ``config.public_url``.
    """
    base = (base_url or config.public_url or "").rstrip("/")
    if not base:
        raise SandboxConfigError("describe() needs the sandbox's URL: pass base_url")
    out = []
    for acct in config.accounts:
        out.append(
            {
                "name": acct.name,
                "url": f"{base}/{acct.name}",
                "publicName": acct.public_name,
                "assetCode": acct.asset_code,
                "assetScale": acct.asset_scale,
                "balance": acct.balance,
                "keyIds": [k.kid for k in config.keys_for(acct.name)],
                "client": acct.name == config.client_account,
            }
        )
    return out
