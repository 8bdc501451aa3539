"""``listen --api``'s quote-start route with a list of payees: one approval for every seller,
the legs in the status route; bad payee lists are 400 and store nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from opapprove.approvals.records import State
from opapprove.approvals.store_copy import count_rows
from tests.approvals.conftest import make_split_kit
from tests.servers.test_listener import Harness

pytestmark = pytest.mark.anyio

PAYEES = [{"sellerId": "seller-a", "amount": "6.00"}, {"sellerId": "seller-b", "amount": "4.00"}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_payee_list_pays_every_seller_with_one_approval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = make_split_kit(tmp_path, monkeypatch, ["seller-a:USD:2:0", "seller-b:USD:2:0"])
    h = Harness(kit, api=True, api_token="s3cret")
    h.http.headers["Authorization"] = "Bearer s3cret"
    body = {"buyerWalletAddressUrl": kit.sandbox.buyer, "payees": PAYEES}
    resp = await h.http.post("/offers/42/quotes/start", json=body)
    assert resp.status_code == 200, resp.text
    started = resp.json()
    assert set(started) == {"success", "redirectUrl", "pendingId", "paymentUrl"}
    await h.follow(kit.finish_url(started["redirectUrl"]))
    pending = kit.store.get_pending(started["pendingId"])
    assert pending is not None and pending.state == State.COMPLETED
    assert [kit.sandbox.state.balance(s) for s in ("seller-a", "seller-b")] == [600, 400]
    status = (await h.http.get(f"/payments/{pending.id}")).json()
    assert status["state"] == "completed"
    assert [(leg["sellerId"], leg["state"]) for leg in status["legs"]] == [
        ("seller-a", "completed"),
        ("seller-b", "completed"),
    ]
    await h.http.aclose()
    await kit.flow.aclose()
    kit.sandbox.recorder.assert_clean()
    kit.store.close()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"payees": [PAYEES[0], PAYEES[0]]}, "named twice"),
        ({"payees": [{"sellerId": "nobody", "amount": "1.00"}]}, "'nobody' has no seller entry"),
        ({"payees": [{"sellerId": "seller-a", "amount": "0"}]}, "is zero"),
        ({"payees": [{"sellerId": "seller-a", "amount": "-1"}]}, "not a positive amount"),
        ({"payees": [{"sellerId": "seller-a", "amount": "1.001"}]}, "decimal places"),
        ({"payees": []}, "at least one payee"),
        ({"payees": {"seller-a": "1"}}, "must be a list"),
        ({"payees": PAYEES, "amount": "11.00"}, "not the sum"),
        ({"payees": PAYEES, "sellerId": "seller-a"}, '"sellerId" names one seller'),
    ],
    ids=["duplicate", "no-seller", "zero", "negative", "finer", "empty", "shape", "sum", "seller"],
)
async def test_a_bad_payee_list_is_400_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], needle: str
) -> None:
    kit = make_split_kit(tmp_path, monkeypatch, ["seller-a:USD:2:0", "seller-b:USD:2:0"])
    h = Harness(kit, api=True, api_token="s3cret")
    h.http.headers["Authorization"] = "Bearer s3cret"
    before = count_rows(kit.store)
    resp = await h.http.post(
        "/offers/42/quotes/start", json={"buyerWalletAddressUrl": kit.sandbox.buyer, **extra}
    )
    assert resp.status_code == 400, resp.text
    answer = resp.json()
    assert answer["success"] is False and needle in answer["error"], answer
    assert answer["pendingId"] is None
    after = count_rows(kit.store)
    # Only the wallet documents the checks fetched may be cached; nothing of a grant.
    assert {t: n for t, n in after.items() if t != "wallet_documents"} == {
        t: n for t, n in before.items() if t != "wallet_documents"
    }
    await h.http.aclose()
    await kit.flow.aclose()
    kit.store.close()
