"""Outgoing payments are created unsent and settle a moment later, as on Rafiki.

Rafiki answers a new outgoing payment with ``sentAmount`` 0: its account servicing entity
funds it, then it is sent (or ends ``failed: true``). The sandbox does the same: a payment
is due ``settle_delay`` seconds (sandbox clock) after it was created, and settles at the
first request the sandbox serves once it is due, before that request is answered. With the
default delay of 0 that is the very next request, which is what Rafiki showed (sent at the
first GET after the create, 0.3 s later). ``fail_next`` makes the next payments that settle
fail instead, the way a wallet that cannot fund them does.
"""

from __future__ import annotations

from typing import Any

from opapprove.servers.sandbox.records import OutgoingPayment
from opapprove.servers.sandbox.state import SandboxState


def schedule(state: SandboxState, payment: OutgoingPayment) -> None:
    payment.settle_at = state.now() + state.config.settle_delay
    state.unsettled.add(payment.id)


def settle_due(state: SandboxState) -> None:
    """Settle (or fail) every payment whose time has come, oldest first."""
    from opapprove.servers.sandbox.payments import Receiver, settle

    if not state.unsettled:
        return
    with state.lock:
        now = state.now()
        waiting = [state.outgoing[i] for i in state.unsettled if i in state.outgoing]
        due = sorted(
            (p for p in waiting if p.settle_at is not None and now >= p.settle_at),
            key=lambda p: p.seq,
        )
        for payment in due:
            state.unsettled.discard(payment.id)
            payment.settle_at = None
            changed: list[Any] = [payment]
            if state.failing_payments > 0:
                state.failing_payments -= 1
                payment.failed = True
            else:
                ip = state.incoming[payment.receiver]
                acct = state.account_config(ip.account)
                assert acct is not None
                changed += settle(state, payment, Receiver(ip, acct))
            state.commit(*changed)
