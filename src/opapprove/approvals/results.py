"""The ``result=`` a wallet puts on a finish redirect instead of ``interact_ref`` and ``hash``.

Such a redirect carries no hash (rafiki-observed.md, 3a and 8), so anyone who knows a
pending id can forge one: it is recorded and shown to the buyer, but it never ends a
grant. The grant stays open until the wallet itself settles it: a hash-verified
approval, the approval's expiry, or a cancel.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WalletResult:
    """What a ``result`` value means: ``kind`` is ``declined``, ``closed`` or ``other``."""

    value: str
    kind: str
    meaning: str


# Rafiki's values and the sandbox's (old and new), as observed; anything else is "other".
KNOWN: dict[str, WalletResult] = {
    r.value: r
    for r in (
        WalletResult("grant_rejected", "declined", "the buyer declined the payment in the wallet"),
        WalletResult(
            "invalid_interaction",
            "closed",
            "the approval link was opened again after a decision, a cancel or its expiry",
        ),
        WalletResult(
            "grant_invalid", "closed", "the approval link was opened again after approval"
        ),
        WalletResult(
            "unknown_interaction", "closed", "the approval link was opened after a cancel"
        ),
    )
}
# How many unverified results (and, apart, refused callbacks) one grant records: forged ones
# must not grow the store forever.
MAX_RECORDED = 20


def classify(value: str) -> WalletResult:
    return KNOWN.get(value, WalletResult(value, "other", f"the wallet reported {value!r}"))
