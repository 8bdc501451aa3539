"""Sellers: which one to act for (the store's, or the config's ``seller_*``), their keys, and
the seed's ``POST /sellers`` body, checked before it is stored."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opapprove.approvals import ids
from opapprove.approvals.errors import FlowError
from opapprove.approvals.records import Seller
from opapprove.approvals.store import Store, StoreError
from opapprove.openpayments import errors as op_errors
from opapprove.openpayments import urls

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from opapprove.settings import Settings


class SellerInputError(ValueError):
    """A seller description that cannot be used; the message says what to fix."""


def key_path(private_key_path: str | Path) -> Path:
    """A seller's key file as it is read: ``~`` is the user's home."""
    return Path(private_key_path).expanduser()


def load_key(seller: Seller) -> Ed25519PrivateKey:
    """The seller's private key, from its key file; ``KeyLoadError`` says what is wrong."""
    from opapprove.openpayments import keys  # cryptography: only where a key is read

    return keys.load_private_key_file(key_path(seller.private_key_path))


def seller_from_settings(settings: Settings) -> Seller | None:
    if not (settings.seller_wallet_address_url and settings.seller_key_id):
        return None
    if not settings.seller_private_key_path:
        return None
    return Seller(
        id=settings.seller_id,
        wallet_address_url=settings.seller_wallet_address_url,
        key_id=settings.seller_key_id,
        private_key_path=str(settings.seller_private_key_path),
        created_at=0.0,
    )


def resolve_seller(settings: Settings, store: Store, seller_id: str | None = None) -> Seller:
    """The seller to act for: ``seller_id``, else the default ``settings.seller_id``.

    The store's seller of that id, else the config's ``seller_*`` seller if it has that id.
    Nothing usable is the seed's "Configure wallet address first" (kind ``config``, exit 3),
    with a hint naming what exists and what to set.
    """
    wanted = seller_id or settings.seller_id
    seller = store.get_seller(wanted) if ids.plausible(wanted) else None
    if seller is not None:
        return seller
    from_settings = seller_from_settings(settings)
    if from_settings is not None and from_settings.id == wanted:
        return from_settings
    known = sorted(
        {s.id for s in store.list_sellers()} | ({from_settings.id} if from_settings else set())
    )
    if seller_id is not None:
        message = f"Configure wallet address first: unknown seller {seller_id!r}"
        hint = "known sellers: " + ", ".join(known) if known else _HOW_TO_ADD
    elif missing := _incomplete_settings_seller(settings):
        message = "Configure wallet address first: the config's default seller is incomplete"
        hint = "set " + ", ".join(missing) + f" (or OPAPPROVE_{missing[0].upper()})"
    elif known:
        message = f"Configure wallet address first: no default seller {wanted!r}"
        hint = (
            f"pass --seller {known[0]}, or set seller_id in the config (known: {', '.join(known)})"
        )
    else:
        message = f"Configure wallet address first: no seller {wanted!r} is set up"
        hint = _HOW_TO_ADD
    raise FlowError(message, hint=hint, kind="config")


_HOW_TO_ADD = (
    "run `opapprove seller add ID --wallet URL --key-id KID --key FILE` (or `opapprove seller"
    " keygen --seller ID --wallet URL`), or set seller_wallet_address_url, seller_key_id and"
    " seller_private_key_path in the config"
)


def _incomplete_settings_seller(settings: Settings) -> list[str]:
    names = {
        "seller_wallet_address_url": settings.seller_wallet_address_url,
        "seller_key_id": settings.seller_key_id,
        "seller_private_key_path": settings.seller_private_key_path,
    }
    if not any(names.values()):
        return []
    return [name for name, value in names.items() if not value]


def validate_seller(
    seller_id: str,
    wallet_address_url: str,
    key_id: str,
    private_key_path: str,
    *,
    allow_http: bool = False,
) -> Seller:
    if not seller_id or not seller_id.strip():
        raise SellerInputError("the seller id is empty")
    if not ids.plausible(seller_id.strip()):
        raise SellerInputError(
            f"the seller id {seller_id[:40]!r} is not 1 to {ids.MAX_ID_CHARS} printable"
            " characters: use letters, digits, '-' or '_'"
        )
    if not key_id or not key_id.strip():
        raise SellerInputError("the key id is empty: give the kid of the key in the wallet's JWKS")
    try:
        wallet = urls.parse_wallet_address(wallet_address_url, allow_http=allow_http)
    except op_errors.WalletAddressError as exc:
        raise SellerInputError(f"Invalid wallet address: {exc}") from exc
    from opapprove.openpayments import keys

    path = key_path(private_key_path)
    try:
        keys.load_private_key_file(path)
    except op_errors.KeyLoadError as exc:
        raise SellerInputError(str(exc)) from exc
    return Seller(
        id=seller_id.strip(),
        wallet_address_url=wallet,
        key_id=key_id.strip(),
        private_key_path=str(path.resolve()),
        created_at=time.time(),
    )


class SellerConflict(SellerInputError):
    """A seller of that id exists with another wallet address or key; nothing was changed."""


def add_seller_from_seed(
    store: Store, body: dict[str, Any], *, configured: Seller | None = None
) -> tuple[Seller, bool]:
    """The seed's body: ``{"id", "walletAddressUrl", "keyId", "privateKeyPath"}``.

    ``(seller, created)``: the same seller again is not an error (created False); another
    wallet address or key for an existing id (in the store, or ``configured`` from the
    config) is :class:`SellerConflict`, never a silent replacement.
    """
    missing = [
        k
        for k in ("id", "walletAddressUrl", "keyId", "privateKeyPath")
        if not isinstance(body.get(k), str) or not body.get(k)
    ]
    if missing:
        raise SellerInputError(f"missing or non-string field(s): {', '.join(missing)}")
    seller = validate_seller(
        body["id"], body["walletAddressUrl"], body["keyId"], body["privateKeyPath"], allow_http=True
    )
    for _ in range(2):  # a second try if another request created it in between
        existing = store.get_seller(seller.id)
        if existing is None and configured is not None and configured.id == seller.id:
            existing = configured
        if existing is not None:
            if _same(existing, seller):
                return existing, False
            raise SellerConflict(
                f"seller {seller.id!r} already exists with another wallet address or key;"
                " it was left unchanged"
            )
        try:
            return store.add_seller(seller), True
        except StoreError:
            continue
    raise SellerConflict(f"seller {seller.id!r} is being changed by another request right now")


def _same(a: Seller, b: Seller) -> bool:
    return (a.wallet_address_url, a.key_id, _resolved(a.private_key_path)) == (
        b.wallet_address_url,
        b.key_id,
        _resolved(b.private_key_path),
    )


def _resolved(path: str) -> str:
    return str(Path(path).expanduser().resolve())
