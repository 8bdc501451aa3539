"""The approval flow end to end against the in-process sandbox."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from opapprove.approvals.errors import FlowError
from opapprove.approvals.finish_redirect import FinishRedirect
from opapprove.approvals.records import State
from tests.approvals.conftest import FlowKit, make_kit

pytestmark = pytest.mark.anyio


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_start_records_every_step_and_awaits_approval(
    started: tuple[FlowKit, Any],
) -> None:
    kit, pending = started
    assert pending.state == State.AWAITING_APPROVAL
    assert pending.interact_redirect.startswith(kit.sandbox.url("/interact/"))
    assert pending.incoming_payment_url and pending.quote_url
    assert pending.debit_amount == {"value": "1234", "assetCode": "USD", "assetScale": 2}
    assert pending.finish_uri == f"http://127.0.0.1:3999/payments/finish?pendingId={pending.id}"
    kinds = [e.kind for e in kit.store.events(pending.id)]
    assert kinds[0] == "created"
    assert "incoming_payment_created" in kinds and "quote_created" in kinds
    assert kinds[-1] == "approval_requested"
    # The ilp shared secret is not kept.
    assert "methods" not in (pending.incoming_payment or {})


async def test_approve_finishes_and_pays_once(started: tuple[FlowKit, Any]) -> None:
    kit, pending = started
    buyer_before = kit.sandbox.state.balance("buyer")
    url = kit.finish_url(pending.interact_redirect)
    done = await kit.flow.finish_url(url)
    assert done.state == State.COMPLETED
    assert done.outgoing_payment_url
    assert kit.sandbox.state.balance("buyer") == buyer_before - 1234
    assert len(kit.sandbox.state.outgoing_payments()) == 1
    # The same callback again changes nothing and pays nothing.
    again = await kit.flow.finish_url(url)
    assert again.state == State.COMPLETED
    assert len(kit.sandbox.state.outgoing_payments()) == 1


async def test_a_rejection_redirect_is_noted_but_keeps_the_grant_open(
    started: tuple[FlowKit, Any],
) -> None:
    kit, pending = started
    url = kit.finish_url(pending.interact_redirect, reject=True)
    assert _query(url)["result"] == "grant_rejected"
    with pytest.raises(FlowError) as err:
        await kit.flow.finish_url(url)
    assert err.value.kind == "rejected" and err.value.exit_code == 6
    assert "stays open" in err.value.message and "pending cancel" in (err.value.hint or "")
    assert kit.store.get_pending(pending.id).state == State.AWAITING_APPROVAL
    (noted,) = [e.data for e in kit.store.events(pending.id) if e.kind == "wallet_result"]
    assert noted["result"] == "grant_rejected" and noted["verified"] is False
    assert kit.sandbox.state.outgoing_payments() == []


@pytest.mark.parametrize(
    "query",
    [
        "result=grant_rejected",
        "result=grant_rejected&hash=AAAA",
        "result=invalid_interaction&message=invalid+interaction",
        "result=invalid_interaction&message=interaction+expired",
        "result=grant_invalid",
        "result=unknown_interaction&message=unknown+interaction",
        "result=anything_else",
    ],
)
async def test_a_forged_result_then_the_real_approval_pays_once(
    started: tuple[FlowKit, Any], query: str
) -> None:
    kit, pending = started
    with pytest.raises(FlowError):
        await kit.flow.finish_url(
            f"http://127.0.0.1:3999/payments/finish?pendingId={pending.id}&{query}"
        )
    assert kit.store.get_pending(pending.id).state == State.AWAITING_APPROVAL
    done = await kit.flow.finish_url(kit.finish_url(pending.interact_redirect))
    assert done.state == State.COMPLETED
    assert len(kit.sandbox.state.outgoing_payments()) == 1


async def test_forged_results_are_recorded_a_bounded_number_of_times(
    started: tuple[FlowKit, Any],
) -> None:
    kit, pending = started
    for _ in range(30):
        await kit.flow.note_result(pending.id, "grant_rejected", None)
    kinds = [e.kind for e in kit.store.events(pending.id)]
    assert kinds.count("wallet_result") == 20


async def test_bad_hash_is_refused_and_nothing_changes(started: tuple[FlowKit, Any]) -> None:
    kit, pending = started
    url = kit.finish_url(pending.interact_redirect)
    q = _query(url)
    forged = url.replace(
        q["hash"].replace("+", "%2B").replace("/", "%2F").replace("=", "%3D"), "AAAA"
    )
    assert forged != url
    with pytest.raises(FlowError) as err:
        await kit.flow.finish_url(forged)
    assert err.value.kind == "verification" and err.value.exit_code == 7
    after = kit.store.get_pending(pending.id)
    assert after.state == State.AWAITING_APPROVAL and after.version == pending.version
    assert kit.sandbox.state.outgoing_payments() == []
    # The genuine redirect still works afterwards.
    assert (await kit.flow.finish_url(url)).state == State.COMPLETED


async def test_hash_in_urlsafe_unpadded_form_is_accepted(started: tuple[FlowKit, Any]) -> None:
    kit, pending = started
    q = _query(kit.finish_url(pending.interact_redirect))
    h = q["hash"].replace("+", "-").replace("/", "_").rstrip("=")
    done = await kit.flow.finish(FinishRedirect(pending.id, interact_ref=q["interact_ref"], hash=h))
    assert done.state == State.COMPLETED


async def test_hash_of_another_grant_is_refused(kit: FlowKit) -> None:
    a = await kit.flow.start_quote(offer_id="a", buyer_wallet=kit.sandbox.buyer, amount="1")
    b = await kit.flow.start_quote(offer_id="b", buyer_wallet=kit.sandbox.buyer, amount="2")
    qa = _query(kit.finish_url(a.interact_redirect))
    with pytest.raises(FlowError):
        await kit.flow.finish(
            FinishRedirect(b.id, interact_ref=qa["interact_ref"], hash=qa["hash"])
        )
    assert kit.store.get_pending(b.id).state == State.AWAITING_APPROVAL
    await kit.flow.aclose()


async def test_unknown_pending_id(kit: FlowKit) -> None:
    with pytest.raises(FlowError) as err:
        await kit.flow.finish(FinishRedirect("nope", interact_ref="x", hash="y"))
    assert err.value.kind == "input"


async def test_interaction_expired(started: tuple[FlowKit, Any]) -> None:
    kit, pending = started
    kit.sandbox.clock.advance(601)
    url = kit.finish_url(pending.interact_redirect)
    assert _query(url)["result"] == "invalid_interaction"
    with pytest.raises(FlowError) as err:
        await kit.flow.finish_url(url)
    assert err.value.message == "Payment approval expired"
    assert kit.store.get_pending(pending.id).state == State.EXPIRED


async def test_replay_of_stale_approval_marks_expired(started: tuple[FlowKit, Any]) -> None:
    kit, pending = started
    kit.sandbox.clock.advance(kit.settings.approval_timeout + 1)
    with pytest.raises(FlowError) as err:
        await kit.flow.replay(pending.id)
    assert err.value.kind == "expired" and "quote start" in (err.value.hint or "")
    assert kit.store.get_pending(pending.id).state == State.EXPIRED


async def test_quote_expired_before_payment_is_requoted(started: tuple[FlowKit, Any]) -> None:
    kit, pending = started
    url = kit.finish_url(pending.interact_redirect)
    kit.sandbox.clock.advance(301)  # quotes live 300 s, approvals 600 s
    done = await kit.flow.finish_url(url)
    assert done.state == State.COMPLETED
    assert done.quote_url != pending.quote_url
    assert "requoted" in [e.kind for e in kit.store.events(pending.id)]
    assert len(kit.sandbox.state.outgoing_payments()) == 1


async def test_requote_dearer_than_approved_fails(started: tuple[FlowKit, Any]) -> None:
    from opapprove.servers.sandbox import FeePolicy

    kit, pending = started
    url = kit.finish_url(pending.interact_redirect)
    kit.sandbox.clock.advance(301)
    kit.sandbox.state.config.fee = FeePolicy(fixed=Decimal("0.05"))
    with pytest.raises(FlowError) as err:
        await kit.flow.finish_url(url)
    assert "more than" in err.value.message
    assert kit.store.get_pending(pending.id).state == State.FAILED
    assert kit.sandbox.state.outgoing_payments() == []


async def test_cancel_awaiting_grant(started: tuple[FlowKit, Any]) -> None:
    kit, pending = started
    cancelled = await kit.flow.cancel(pending.id)
    assert cancelled.state == State.CANCELLED
    assert (await kit.flow.cancel(pending.id)).state == State.CANCELLED  # idempotent
    url = kit.finish_url(pending.interact_redirect)
    with pytest.raises(FlowError):
        await kit.flow.finish_url(url)
    assert kit.sandbox.state.outgoing_payments() == []


async def test_poll_mode_without_finish_redirect(kit: FlowKit) -> None:
    pending = await kit.flow.start_quote(
        offer_id="p", buyer_wallet=kit.sandbox.buyer, amount="3.00", poll=True
    )
    assert pending.poll and pending.state == State.AWAITING_APPROVAL
    kit.sandbox.state.approve(pending.interact_redirect)
    done = await kit.flow.wait_for_approval(pending.id, timeout=5)
    assert done.state == State.COMPLETED
    await kit.flow.aclose()


async def test_grants_are_cached_between_quotes(kit: FlowKit) -> None:
    await kit.flow.start_quote(offer_id="1", buyer_wallet=kit.sandbox.buyer, amount="1")
    seen_before = dict(kit.sandbox.recorder.seen)
    await kit.flow.start_quote(offer_id="2", buyer_wallet=kit.sandbox.buyer, amount="1")
    grants = kit.sandbox.recorder.seen[("post-request", 200)] - seen_before[("post-request", 200)]
    assert grants == 1  # only the interactive grant; both non-interactive ones were reused
    await kit.flow.aclose()


async def test_cached_grant_that_expired_at_the_server_is_renewed(kit: FlowKit) -> None:
    await kit.flow.start_quote(offer_id="1", buyer_wallet=kit.sandbox.buyer, amount="1")
    # Tokens live 600 s at the sandbox; the store's clock (real time) still thinks it valid.
    kit.sandbox.clock.advance(700)
    pending = await kit.flow.start_quote(offer_id="2", buyer_wallet=kit.sandbox.buyer, amount="1")
    assert pending.state == State.AWAITING_APPROVAL
    await kit.flow.aclose()


@pytest.mark.parametrize(
    ("buyer", "amount", "fragment"),
    [
        ("", "1.00", "Configure wallet address first"),
        ("ftp://x/y", "1.00", "Invalid wallet address"),
        ("http://sandbox.test/buyer", "-1", "invalid amount"),
        ("http://sandbox.test/buyer", "abc", "invalid amount"),
        ("http://sandbox.test/buyer", "1.234", "invalid amount"),
    ],
)
async def test_bad_input_is_one_clear_error(
    kit: FlowKit, buyer: str, amount: str, fragment: str
) -> None:
    before = kit.store.list_pending()
    with pytest.raises(FlowError) as err:
        await kit.flow.start_quote(offer_id="o", buyer_wallet=buyer, amount=amount)
    assert fragment in err.value.message
    assert "\n" not in str(err.value)
    if fragment != "invalid amount" or amount != "1.234":
        assert kit.store.list_pending() == before
    await kit.flow.aclose()


async def test_unknown_buyer_wallet(kit: FlowKit) -> None:
    with pytest.raises(FlowError) as err:
        await kit.flow.start_quote(
            offer_id="o", buyer_wallet=kit.sandbox.url("/nobody"), amount="1"
        )
    assert err.value.message.startswith("Invalid wallet address")
    await kit.flow.aclose()


async def test_no_seller_configured(kit: FlowKit) -> None:
    with pytest.raises(FlowError) as err:
        await kit.flow.start_quote(
            offer_id="o", buyer_wallet=kit.sandbox.buyer, amount="1", seller_id="ghost"
        )
    assert err.value.kind == "config" and err.value.exit_code == 3


async def test_unaffordable_payment_fails(kit: FlowKit) -> None:
    pending = await kit.flow.start_quote(
        offer_id="big", buyer_wallet=kit.sandbox.buyer, amount="5000.00"
    )
    done = await kit.flow.finish_url(kit.finish_url(pending.interact_redirect))
    assert done.state == State.FAILED
    assert kit.sandbox.state.balance("buyer") == 100_000
    await kit.flow.aclose()


async def test_continue_waits_for_wait_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = make_kit(tmp_path, monkeypatch, wait_seconds=5)
    sleep, slept = kit.clock_sleep()
    flow = kit.new_flow(sleep=sleep)
    pending = await flow.start_quote(offer_id="w", buyer_wallet=kit.sandbox.buyer, amount="1")
    assert pending.continue_wait == 5
    done = await flow.finish_url(kit.finish_url(pending.interact_redirect))
    assert done.state == State.COMPLETED
    assert slept == [5.0]
    assert "too_fast" not in [e.kind for e in kit.store.events(pending.id)]
    await flow.aclose()
    kit.sandbox.recorder.assert_clean()


async def test_too_fast_is_retried_after_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = make_kit(tmp_path, monkeypatch, wait_seconds=5)
    sleep, _ = kit.clock_sleep()
    flow = kit.new_flow(sleep=sleep)
    pending = await flow.start_quote(offer_id="w", buyer_wallet=kit.sandbox.buyer, amount="1")
    # Pretend the wallet said wait 0, so the first continue goes out too early.
    kit.store.update(pending.id, continue_wait=0)
    done = await flow.finish_url(kit.finish_url(pending.interact_redirect))
    assert done.state == State.COMPLETED
    assert "too_fast" in [e.kind for e in kit.store.events(pending.id)]
    await flow.aclose()


async def test_a_new_process_reuses_wallet_documents_and_grants(kit: FlowKit) -> None:
    await kit.flow.start_quote(offer_id="1", buyer_wallet=kit.sandbox.buyer, amount="1")
    await kit.flow.aclose()
    before = dict(kit.sandbox.recorder.seen)
    fresh = kit.new_flow()  # what the next `quote start` process builds
    await fresh.start_quote(offer_id="2", buyer_wallet=kit.sandbox.buyer, amount="1")
    seen = {k: v - before.get(k, 0) for k, v in kit.sandbox.recorder.seen.items()}
    assert seen.get(("get-wallet-address", 200), 0) == 0
    assert seen[("post-request", 200)] == 1  # only the interactive grant
    await fresh.aclose()


async def test_an_unsent_payment_is_read_with_backoff_until_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created unsent (Rafiki 6b); sent 0.3 s later: reads at 0, 0.05, 0.15 and 0.35 s."""
    kit = make_kit(tmp_path, monkeypatch, settle_delay=0.3)
    sleep, slept = kit.clock_sleep()
    async with kit.new_flow(sleep=sleep) as flow:
        pending = await flow.start_quote(
            offer_id="offer-1", buyer_wallet=kit.sandbox.buyer, amount="12.34"
        )
        done = await flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    assert done.state == State.COMPLETED
    assert slept == [0.05, 0.1, 0.2]
    assert kit.sandbox.recorder.seen[("get-outgoing-payment", 200)] == 4
    kit.store.close()
    kit.sandbox.state.close()


async def test_a_payment_the_wallet_fails_fails_the_grant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = make_kit(tmp_path, monkeypatch)
    kit.sandbox.state.fail_next_payments(1)
    pending = await kit.flow.start_quote(
        offer_id="offer-1", buyer_wallet=kit.sandbox.buyer, amount="12.34"
    )
    done = await kit.flow.finish_url(kit.finish_url(pending.interact_redirect or ""))
    assert done.state == State.FAILED and "failed: true" in (done.last_error or "")
    await kit.flow.aclose()
    kit.store.close()
    kit.sandbox.state.close()
