"""The report's numbers on 1,000 grants of known fates (tests/report_seed.py), by hand count."""

from __future__ import annotations

from pathlib import Path

import pytest

from opapprove.approvals.records import State
from opapprove.approvals.store import Store
from opapprove.diagnostics.report import (
    Durations,
    History,
    build_report,
    load_histories,
    reason_of,
)
from tests.report_seed import DAY, NOW, T0, seeded_store


@pytest.fixture(scope="module")
def histories(tmp_path_factory: pytest.TempPathFactory) -> list[History]:
    with Store(seeded_store(tmp_path_factory)) as store:
        return load_histories(store)


def test_the_whole_report_against_a_hand_count(histories: list[History]) -> None:
    report = build_report(histories, now=NOW, stuck_after=900).to_json()
    # 500 completed + 100 rejected + 100 expired + 100 failed after approval + 50 still waiting
    # reached awaiting approval; 500 completed + 100 failed after approval were approved.
    assert report["funnel"] == {
        "started": 1000,
        "awaitingApproval": 850,
        "approved": 600,
        "paid": 500,
    }
    assert report["sideExits"] == [
        {"state": "rejected", "stage": "awaitingApproval", "count": 100},
        {"state": "expired", "stage": "awaitingApproval", "count": 100},
        {"state": "cancelled", "stage": "beforeApproval", "count": 50},
        {"state": "failed", "stage": "beforeApproval", "count": 100},
        {"state": "failed", "stage": "afterApproval", "count": 100},
    ]
    assert report["open"] == {"awaiting_approval": 50}
    # Decided = 600 approved + 100 rejected + 100 expired; 600 / 800.
    assert (report["decided"], report["approvalRate"]) == (800, 0.75)
    # 100 each of 30, 60, 90, 120, 150 and 300 s: the 300th is 90, the 540th 300.
    assert report["timeToApprove"] == {"count": 600, "p50": 90.0, "p90": 300.0, "max": 300.0}
    # 400 paid 5 s after approval, 100 (fate 4) after 50 s: the 250th is 5, the 450th 50.
    assert report["approvalToPayment"] == {"count": 500, "p50": 5.0, "p90": 50.0, "max": 50.0}
    assert report["failureReasons"] == [
        {"state": "expired", "reason": "approval expired", "count": 100},
        {
            "state": "failed",
            "reason": "outgoing payment refused: insufficient funds (grant <id>)",
            "count": 100,
        },
        {"state": "rejected", "reason": "rejected by the buyer", "count": 100},
        {"state": "cancelled", "reason": "cancelled", "count": 50},
        {"state": "failed", "reason": "cannot reach wallet <url> (timed out)", "count": 50},
        {"state": "failed", "reason": "quote refused: 400 invalid amount", "count": 50},
    ]
    # Five waiting grants a day: day 9's are ~10 h idle, days 3-8 one to seven days, 0-2 more.
    [stuck] = report["stuck"]
    assert stuck["state"] == "awaiting_approval" and stuck["count"] == 50
    assert stuck["byAge"] == {"<1h": 0, "1h-1d": 5, "1d-7d": 30, ">7d": 15}
    assert stuck["oldestSeconds"] == NOW - (T0 + 9 * 60 + 1)  # grant 9, waiting since born + 1
    assert len(report["days"]) == 10
    assert report["days"][0] == {
        "day": "2026-01-01",
        "started": 100,
        "approved": 60,
        "paid": 50,
        "sideExits": 45,  # 10 rejected, 10 expired, 20 failed, 5 cancelled
        "open": 5,
    }
    assert report["generatedAt"] == "2026-01-10T12:00:00Z"


def test_since_and_seller_narrow_the_grants(tmp_path_factory: pytest.TempPathFactory) -> None:
    with Store(seeded_store(tmp_path_factory)) as store:
        recent = load_histories(store, since=T0 + 5 * DAY)
        shop_b = load_histories(store, seller_id="shop-b")
    assert len(recent) == 500
    report = build_report(shop_b, now=NOW, stuck_after=900, seller_id="shop-b").to_json()
    # i % 100 < 10: one grant of each fate a day; fate 7 is then always the wallet timeout.
    assert report["funnel"] == {
        "started": 100,
        "awaitingApproval": 90,
        "approved": 60,
        "paid": 50,
    }
    assert report["sellerId"] == "shop-b"
    assert {r["reason"] for r in report["failureReasons"] if r["state"] == "failed"} == {
        "cannot reach wallet <url> (timed out)",
        "outgoing payment refused: insufficient funds (grant <id>)",
    }


def test_nearest_rank_percentiles() -> None:
    assert Durations.of([]) == Durations()
    assert Durations.of([3.0]) == Durations(1, 3.0, 3.0, 3.0)
    assert Durations.of(float(n) for n in range(10, 0, -1)) == Durations(10, 5.0, 9.0, 10.0)


def test_an_empty_store_is_an_empty_report(tmp_path: Path) -> None:
    with Store(tmp_path / "empty.db") as store:
        report = build_report(load_histories(store), now=NOW, stuck_after=900).to_json()
    assert report["total"] == 0 and report["approvalRate"] is None
    assert report["timeToApprove"] == {"count": 0, "p50": None, "p90": None, "max": None}
    assert report["days"] == [] and report["stuck"] == []


def test_reasons_group_alike_errors(tmp_path: Path) -> None:
    with Store(tmp_path / "r.db") as store:
        pid = store.create_pending(
            seller_id="s", offer_id="o", buyer_wallet="https://w.example/b", amount="1"
        ).id
        long = "x " * 200
        failed = store.transition(pid, State.FAILED, expect=State.STARTED, last_error=long)
    reason = reason_of(failed, None)
    assert len(reason) == 120 and reason.endswith("…")


def test_a_grant_our_quote_check_refused_gives_the_refusal_as_its_reason(tmp_path: Path) -> None:
    refusal = "the quote debits EUR, but the buyer's wallet holds USD"
    with Store(tmp_path / "r.db") as store:
        pid = store.create_pending(
            seller_id="s", offer_id="o", buyer_wallet="https://w.example/b", amount="1"
        ).id
        refused = store.transition(
            pid,
            State.CANCELLED,
            expect=State.STARTED,
            event="quote_refused",
            data={"reason": refusal},
            last_error=refusal,
        )
        cancelled = store.transition(
            store.create_pending(
                seller_id="s", offer_id="o2", buyer_wallet="https://w.example/b", amount="1"
            ).id,
            State.CANCELLED,
            expect=State.STARTED,
            event="cancelled",
            last_error="an earlier replay's error",
        )
        [refused_final] = [e for e in store.events(pid) if e.kind == "quote_refused"]
        [cancelled_final] = [e for e in store.events(cancelled.id) if e.kind == "cancelled"]
    assert reason_of(refused, refused_final) == refusal
    assert reason_of(cancelled, cancelled_final) == "cancelled"
