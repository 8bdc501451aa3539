"""``--wallet NAME:ASSET:SCALE:BALANCE``: the sandbox's accounts as an operator writes them.

``buyer`` and ``seller`` are there unless a ``--wallet`` of that name redefines them; a
redefinition keeps the account's place (and the client wallet's role) but takes the new
asset, scale and balance.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from opapprove.openpayments.errors import AmountError
from opapprove.openpayments.money import to_minor_units
from opapprove.servers.sandbox.config import ACCOUNT_NAME, AccountConfig, SandboxConfigError

_ASSET = re.compile(r"\A[A-Z0-9]{1,12}\Z")
_FORM = "NAME:ASSET:SCALE:BALANCE, e.g. alice:EUR:2:500.00"


def parse_wallet(text: str) -> AccountConfig:
    parts = [p.strip() for p in text.split(":")]
    if len(parts) != 4:
        raise SandboxConfigError(f"--wallet {text!r} is not {_FORM}")
    name, asset, scale_text, balance_text = parts
    if not ACCOUNT_NAME.match(name):
        raise SandboxConfigError(
            f"--wallet {text!r}: the name {name!r} must be lowercase letters, digits, '-' or '_'"
        )
    asset = asset.upper()
    if not _ASSET.match(asset):
        raise SandboxConfigError(f"--wallet {text!r}: {asset!r} is not an asset code like EUR")
    if not scale_text.isdigit() or not 0 <= int(scale_text) <= 255:
        raise SandboxConfigError(
            f"--wallet {text!r}: the scale {scale_text!r} must be a whole number from 0 to 255"
        )
    scale = int(scale_text)
    try:
        balance = to_minor_units(balance_text, scale)
    except AmountError as exc:
        raise SandboxConfigError(f"--wallet {text!r}: balance: {exc}") from exc
    return AccountConfig(
        name=name, public_name=name.title(), asset_code=asset, asset_scale=scale, balance=balance
    )


def with_wallets(defaults: list[AccountConfig], specs: Iterable[str]) -> list[AccountConfig]:
    """``defaults`` with each ``--wallet`` spec added, or put in place of its namesake."""
    accounts = list(defaults)
    given: set[str] = set()
    for spec in specs:
        acct = parse_wallet(spec)
        if acct.name in given:
            raise SandboxConfigError(f"--wallet {acct.name} is given twice")
        given.add(acct.name)
        for i, old in enumerate(accounts):
            if old.name == acct.name:
                acct.public_name = old.public_name
                acct.keys = old.keys
                accounts[i] = acct
                break
        else:
            accounts.append(acct)
    return accounts
