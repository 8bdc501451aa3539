"""Reading and judging a finish redirect: pure, so each verdict is checked without a wallet."""

from __future__ import annotations

import dataclasses

import pytest

from opapprove.approvals.errors import FlowError
from opapprove.approvals.finish_redirect import (
    FinishRedirect,
    judge,
    parse_finish_url,
    result_error,
    result_note,
)
from opapprove.approvals.records import Pending, State
from opapprove.openpayments.interaction import finish_hash

GRANT_URL = "http://127.0.0.1:9/auth"
AWAITING = Pending(
    id="p1",
    seller_id="s",
    offer_id="o",
    buyer_wallet="http://127.0.0.1:9/buyer",
    amount="1",
    state=State.AWAITING_APPROVAL,
    created_at=0.0,
    updated_at=0.0,
    version=1,
    grant_url=GRANT_URL,
    client_nonce="client-nonce",
    server_finish_nonce="server-nonce",
)
GOOD_HASH = finish_hash("client-nonce", "server-nonce", "ref-1", GRANT_URL)


def test_a_pasted_url_is_read_into_its_parts() -> None:
    url = "http://127.0.0.1:8080/payments/finish?pendingId=p1&interact_ref=r&hash=h%2B%3D"
    assert parse_finish_url(f"  {url} ") == FinishRedirect("p1", interact_ref="r", hash="h+=")
    declined = parse_finish_url("http://x/payments/finish?pendingId=p1&result=grant_rejected")
    assert declined.result == "grant_rejected" and declined.interact_ref is None


@pytest.mark.parametrize(
    "url", ["http://x/payments/finish?interact_ref=r&hash=h", "http://[::1/", "no url at all"]
)
def test_a_url_without_a_pending_id_is_input_error(url: str) -> None:
    with pytest.raises(FlowError) as err:
        parse_finish_url(url)
    assert err.value.kind == "input"


def test_the_grants_own_hash_approves_and_the_same_redirect_again_changes_nothing() -> None:
    assert judge(AWAITING, "ref-1", GOOD_HASH, expired=False).action == "approve"
    approved = dataclasses.replace(AWAITING, state=State.APPROVED, interact_ref="ref-1")
    assert judge(approved, "ref-1", GOOD_HASH, expired=False).action == "approved"


@pytest.mark.parametrize(
    ("pending", "ref", "hash", "kind", "reason"),
    [
        (AWAITING, "ref-1", "forged", "verification", "hash mismatch"),
        (AWAITING, "ref-1", None, "verification", "hash mismatch"),
        (AWAITING, None, GOOD_HASH, "input", None),
        (
            dataclasses.replace(AWAITING, state=State.APPROVED, interact_ref="ref-0"),
            "ref-1",
            GOOD_HASH,
            "verification",
            "interact_ref does not match this grant",
        ),
        (
            dataclasses.replace(AWAITING, state=State.CANCELLED),
            "ref-1",
            GOOD_HASH,
            "stale",
            "grant is cancelled",
        ),
        (
            dataclasses.replace(AWAITING, client_nonce=None),
            "ref-1",
            GOOD_HASH,
            "verification",
            "hash mismatch",
        ),
    ],
)
def test_what_does_not_verify_is_refused_with_its_reason(
    pending: Pending, ref: str | None, hash: str | None, kind: str, reason: str | None
) -> None:
    verdict = judge(pending, ref, hash, expired=False)
    assert verdict.action == "refuse" and verdict.error is not None
    assert (verdict.error.kind, verdict.reason) == (kind, reason)
    assert verdict.error.pending_id == "p1"


def test_an_expired_approval_is_refused_even_with_a_good_hash() -> None:
    verdict = judge(AWAITING, "ref-1", GOOD_HASH, expired=True)
    assert verdict.error is not None and verdict.error.kind == "expired"
    assert verdict.reason == "approval expired"


def test_a_result_is_noted_in_one_line_and_never_ends_the_grant() -> None:
    note = result_note(AWAITING, "grant_rejected", "no\nthanks")
    assert note == {
        "result": "grant_rejected",
        "message": "no thanks",
        "meaning": "declined",
        "verified": False,
        "state": "awaiting_approval",
    }
    assert result_error(AWAITING, "grant_rejected", None).kind == "rejected"
    assert result_error(AWAITING, "something_else", None).kind == "waiting"
    paid = dataclasses.replace(AWAITING, state=State.COMPLETED)
    assert result_error(paid, "grant_rejected", None).kind == "stale"
