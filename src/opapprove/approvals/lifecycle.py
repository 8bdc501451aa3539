"""A grant over its life, besides its redirect: polling for approval, refreshing its
payment, replaying it from its last committed state, cancelling it, expiring it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opapprove.approvals import grant_setup, payment_steps, split_flow
from opapprove.approvals.access import grant_fields
from opapprove.approvals.errors import FlowError, answer_of, quietly, translated
from opapprove.approvals.records import FINAL_STATES, Pending, State
from opapprove.approvals.split import restart_hint
from opapprove.approvals.webhooks import Notice
from opapprove.openpayments import errors as op_errors

if TYPE_CHECKING:
    from opapprove.approvals.flow import Flow

EXPIRED = Notice.failed("expired")


async def wait_for_approval(flow: Flow, pending_id: str, *, timeout: float) -> Pending:
    """For ``--poll`` grants (no finish redirect): poll continuation until approved."""
    pending = flow._get(pending_id)
    if pending.state != State.AWAITING_APPROVAL:
        return await replay(flow, pending_id)
    if not pending.poll:
        raise FlowError(
            "this grant has a finish redirect and cannot be polled",
            hint="wait for the redirect with `opapprove listen`, or paste it to `finish`",
            kind="input",
            pending_id=pending.id,
        )
    if flow._approval_expired(pending):
        return await expire(flow, pending, decided_here=True)
    client = flow.access.client_for(flow._seller_of(pending))
    assert pending.continue_uri and pending.continue_token
    try:
        grant = await client.poll_grant(
            pending.continue_uri,
            pending.continue_token,
            wait=float(pending.continue_wait or 0),
            timeout=timeout,
            sleep=flow.sleep,
            min_interval=1.0,  # a server `wait` of 0 must not make us spin
        )
    except op_errors.GrantError as exc:
        ended = _poll_ended(exc)
        if ended is None:
            raise
        state, message = ended
        await flow._end(pending, state, Notice.failed(str(state)), str(state), last_error=message)
        raise FlowError(
            message, hint="start a new quote", kind="rejected", pending_id=pending.id
        ) from exc
    except op_errors.TransportError as exc:
        raise translated(
            exc, "gave up waiting for approval", kind="timeout", pending_id=pending.id
        ) from exc
    pending = flow._move(
        pending, State.GRANT_ISSUED, event="grant_issued", **grant_fields(grant, flow.clock())
    )
    return await payment_steps.after_approval(flow, pending)


def _poll_ended(exc: op_errors.GrantError) -> tuple[State, str] | None:
    """What a refused poll of a grant still awaiting approval says about it, if final.

    Rafiki answers a rejected grant's poll 401 request_denied ("grant cannot be
    continued", the words it also uses once a token went out, which never happened to a
    grant we still await), and a cancelled grant's 401 invalid_continuation "invalid
    grant". Older sandboxes said 404 for both.
    """
    description = (exc.description or "").lower()
    if exc.code == "invalid_continuation" and exc.status == 401:
        return State.CANCELLED, "the grant was cancelled at the wallet"
    if exc.status == 404 or (
        exc.status == 401
        and exc.code == "request_denied"
        and ("cannot be continued" in description or "cannot be polled" in description)
    ):
        return State.REJECTED, "the buyer rejected the payment in the wallet"
    return None


async def refresh(flow: Flow, pending_id: str) -> Pending:
    """Re-read where a grant's payment stands (``status``); completes it when sent."""
    pending = flow._get(pending_id)
    if not pending.needs_refresh(flow.clock()):
        return pending
    if pending.state == State.PAYMENT_CREATED:
        return await payment_steps.after_approval(flow, pending)
    try:
        await expire(flow, pending, decided_here=True)
    except FlowError:
        return flow._get(pending.id)
    return pending


async def replay(flow: Flow, pending_id: str) -> Pending:
    """Carry a grant on from its last committed state, never paying twice."""
    pending = flow._get(pending_id)
    flow.store.add_event(pending.id, "replay", {"state": str(pending.state)})
    if pending.state == State.PARTIALLY_PAID:
        if split_flow.cancel_requested(flow, pending):  # a cancel that stopped: finish it
            return await cancel(flow, pending.id)
        return await payment_steps.after_approval(flow, pending)  # pays its failed legs
    if pending.state in FINAL_STATES:
        return pending
    if pending.state in grant_setup.SETUP_STATES:
        return await grant_setup.setup(flow, pending)
    if pending.state == State.AWAITING_APPROVAL:
        if flow._approval_expired(pending):
            return await expire(flow, pending, decided_here=True)
        if pending.poll:
            return await wait_for_approval(
                flow, pending.id, timeout=float(pending.continue_wait or 0) + 1
            )
        raise FlowError(
            "still awaiting the buyer's approval; real wallets cannot be polled for grants"
            " with a finish redirect",
            hint=f"paste the wallet's redirect with `opapprove finish URL`, or `opapprove"
            f" pending cancel {pending.id}` and start again",
            kind="waiting",
            pending_id=pending.id,
        )
    return await payment_steps.after_approval(flow, pending)


async def _cancel_at_wallet(flow: Flow, pending: Pending) -> str:
    """DELETE the grant's continuation: ``ok``, ``already cancelled``, or what failed.

    A second cancel is no error: Rafiki answers it 401 invalid_continuation "invalid
    grant" (an old sandbox 404), which means the grant is gone, as wanted.
    """
    if not (pending.continue_uri and pending.continue_token):
        return "nothing to cancel"
    client = flow.access.client_for(flow._seller_of(pending))
    try:
        await client.cancel_grant(pending.continue_uri, pending.continue_token)
    except op_errors.GrantError as exc:
        if exc.code == "invalid_continuation" or exc.status == 404:
            return "already cancelled"
        return answer_of(exc)
    except op_errors.TransportError as exc:
        return answer_of(exc)
    return "ok"


async def _revoke(flow: Flow, pending: Pending) -> dict[str, Any]:
    """Revoke the grant and its token at the wallet: what each answered. A grant that never
    got as far as the wallet's grant has nothing to revoke there: no key, no network (it
    may be a typo whose seller is gone since)."""
    notes: dict[str, Any] = {}
    if pending.continue_uri and pending.continue_token:
        notes["grant"] = await _cancel_at_wallet(flow, pending)
    if pending.access_token and pending.token_manage_url:
        client = flow.access.client_for(flow._seller_of(pending))
        notes["token"] = await quietly(
            client.revoke_token(pending.token_manage_url, pending.access_token)
        )
    return notes


async def cancel(flow: Flow, pending_id: str) -> Pending:
    pending = flow._get(pending_id)
    if pending.state == State.CANCELLED:
        return pending
    made = pending.state in (State.PAYING, State.PAYMENT_CREATED)
    # A split can still be cancelled while paying or partially paid: the legs not paid
    # are given up on (split_flow.stop_paying, cancel_failed_legs).
    settled = pending.state in FINAL_STATES and pending.state != State.PARTIALLY_PAID
    if settled or (made and not pending.is_split):
        raise FlowError(
            f"grant {pending.id} is {pending.state}; there is nothing left to cancel",
            hint="a payment that was made cannot be cancelled here"
            if made or pending.state == State.COMPLETED
            else None,
            kind="input",
            pending_id=pending.id,
        )
    busy = f"another opapprove process is working on grant {pending.id}"
    async with flow._leased(pending, busy, hint="try again shortly") as current:
        # Read again under the lease: an attempt that held it may have paid meanwhile.
        if current.state != pending.state:
            return await cancel(flow, pending.id)
        if made:
            stopped = await split_flow.stop_paying(flow, current)
            if stopped.state == State.CANCELLED:
                flow.store.add_event(stopped.id, "revoked", await _revoke(flow, stopped))
            return stopped
        if pending.state == State.PARTIALLY_PAID:
            split_flow.request_cancel(flow, pending)  # a replay now finishes it, pays no leg
        notes = await _revoke(flow, pending)
        if pending.state == State.PARTIALLY_PAID:
            notes["legs"] = split_flow.cancel_failed_legs(flow, pending)
        # The marketplace heard of it (approval.needed): say it will not be paid.
        told = None
        if pending.interact_redirect is not None:
            told = flow._told(Notice.failed("cancelled"), pending)  # the legs as they end
        pending = flow._move(
            flow._get(pending.id), State.CANCELLED, event="cancelled", data=notes, notice=told
        )
    if told is not None:
        await flow._emit(told, pending)  # closes the incoming payments left open
    else:
        await flow._close_incoming(pending)
    return pending


async def expire(
    flow: Flow, pending: Pending, data: dict[str, Any] | None = None, *, decided_here: bool = False
) -> Pending:
    """Expire a grant awaiting approval.

    When opapprove decides it (``decided_here``: its approval_timeout passed) the grant
    is cancelled at the wallet first, so the buyer cannot approve it there afterwards;
    if the wallet cannot be reached the grant stays as it is (a FlowError of kind
    ``transport``) and the next command that finds it expired tries again. A wallet
    that said so itself has expired it already.
    """
    wallet = await _cancel_at_wallet(flow, pending) if decided_here else "expired there"
    if wallet.startswith("unreachable"):
        raise FlowError(
            f"grant {pending.id} expired, but the wallet could not be told: {wallet}",
            hint="it stays awaiting approval until the wallet answers; try again",
            kind="transport",
            pending_id=pending.id,
        )
    pending = await flow._end(
        pending,
        State.EXPIRED,
        EXPIRED,
        "expired",
        data={**(data or {}), "wallet": wallet},
        last_error="Payment approval expired",
    )
    raise FlowError(
        "Payment approval expired",
        hint=restart_hint(pending),
        kind="expired",
        pending_id=pending.id,
    )
