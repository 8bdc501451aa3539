"""The Open Payments protocol as a library: keys, signatures, models, amounts, a client.

Nothing here knows of the CLI or the store, and nothing here prints.

    from opapprove.openpayments import OpenPaymentsClient, load_private_key, models

Names are loaded when first used, so importing one submodule (``errors``, say) does not
load the client, httpx and pydantic with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the submodule that defines it
_WHERE = {
    # the clients
    "OpenPaymentsClient": "client",
    "SyncOpenPaymentsClient": "sync_client",
    "GrantTimeout": "client",
    "is_pending": "client",
    "Exchange": "exchange",
    # auth: keys, request signatures, the interaction hash
    "load_private_key": "keys",
    "generate_private_key": "keys",
    "public_jwk": "keys",
    "new_key_id": "keys",
    "Jwk": "keys",
    "OpenPaymentsAuth": "signatures",
    "sign_request": "signatures",
    "verify_request": "signatures",
    "finish_hash": "interaction",
    "verify_finish_hash": "interaction",
    # errors
    "OpenPaymentsError": "errors",
    "KeyLoadError": "errors",
    "AmountError": "errors",
    "WalletAddressError": "errors",
    "InsecureUrlError": "urls",
    "SignatureError": "errors",
    "InteractionHashError": "errors",
    "TransportError": "errors",
    "ResponseError": "errors",
    "GrantError": "errors",
    "ResourceError": "errors",
    "InvalidResponse": "errors",
    # models: the documents and request bodies, and exact amounts
    "Amount": "money",
}
_SUBMODULES = ("models", "errors")

__all__ = [
    "Amount",
    "AmountError",
    "Exchange",
    "GrantError",
    "GrantTimeout",
    "InsecureUrlError",
    "InteractionHashError",
    "InvalidResponse",
    "Jwk",
    "KeyLoadError",
    "OpenPaymentsAuth",
    "OpenPaymentsClient",
    "OpenPaymentsError",
    "ResourceError",
    "ResponseError",
    "SignatureError",
    "SyncOpenPaymentsClient",
    "TransportError",
    "WalletAddressError",
    "errors",
    "finish_hash",
    "generate_private_key",
    "is_pending",
    "load_private_key",
    "models",
    "new_key_id",
    "public_jwk",
    "sign_request",
    "verify_finish_hash",
    "verify_request",
]

if TYPE_CHECKING:
    from opapprove.openpayments import errors, models
    from opapprove.openpayments.client import GrantTimeout, OpenPaymentsClient, is_pending
    from opapprove.openpayments.errors import (
        AmountError,
        GrantError,
        InteractionHashError,
        InvalidResponse,
        KeyLoadError,
        OpenPaymentsError,
        ResourceError,
        ResponseError,
        SignatureError,
        TransportError,
        WalletAddressError,
    )
    from opapprove.openpayments.exchange import Exchange
    from opapprove.openpayments.interaction import finish_hash, verify_finish_hash
    from opapprove.openpayments.keys import (
        Jwk,
        generate_private_key,
        load_private_key,
        new_key_id,
        public_jwk,
    )
    from opapprove.openpayments.money import Amount
    from opapprove.openpayments.signatures import OpenPaymentsAuth, sign_request, verify_request
    from opapprove.openpayments.sync_client import SyncOpenPaymentsClient
    from opapprove.openpayments.urls import InsecureUrlError


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{where}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
