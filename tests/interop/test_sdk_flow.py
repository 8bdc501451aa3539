"""The official @interledger/open-payments 7.4.0 client, response validation on, drives a live
sandbox over loopback through the whole seed flow (tests/interop/sdk_flow.mjs): once with
buyer and seller in USD, once with a EUR buyer paying a USD seller (rate and fee)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from opapprove.openpayments.keys import (
    generate_private_key,
    new_key_id,
    private_key_pem,
    public_jwk,
)
from opapprove.openpayments.rates import Rates
from opapprove.servers.sandbox import FeePolicy, SandboxConfig, create_app
from opapprove.servers.sandbox.accounts import with_wallets
from opapprove.servers.sandbox.config import default_accounts
from opapprove.servers.serving import serve_in_thread
from tests.interop.conftest import NodeEnv

pytestmark = pytest.mark.interop

INCOMING_VALUE = "1234"
# A fee makes debit and receive differ, so each balance is checked against the right one.
FEE = FeePolicy(fixed=Decimal("0.03"), basis_points=50)
# Nothing listens there: the script reads the finish URL from the admin approve answer.
FINISH_URI = "http://127.0.0.1:9/payments/finish?pendingId=42"


@dataclass(frozen=True)
class Case:
    buyer: str | None  # a --wallet spec redefining the buyer, or the default USD buyer
    expected_debit: dict[str, Any]


CASES = {
    # ceil(1234 * 0.5%) = 7, + 0.03
    "same-currency": Case(None, {"value": "1244", "assetCode": "USD", "assetScale": 2}),
    # 12.34 USD / 1.08 = 11.425925... EUR, + 0.5% = 11.483055... -> 11.49, + 0.03 = 11.52
    "eur-to-usd": Case(
        "buyer:EUR:2:1000.00", {"value": "1152", "assetCode": "EUR", "assetScale": 2}
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


@pytest.fixture(scope="module")
def flow(node_env: NodeEnv, case: Case) -> Iterator[dict[str, Any]]:
    key = generate_private_key()
    kid = new_key_id()
    config = SandboxConfig(
        accounts=with_wallets(default_accounts(), [case.buyer] if case.buyer else []),
        rates=Rates.parse(["EUR/USD=1.08"]),
        seller_keys=[public_jwk(key, kid)],
        wait_seconds=0,
        fee=FEE,
    )
    app = create_app(config)
    with serve_in_thread(app) as server:
        try:
            result = node_env.run_script(
                "sdk_flow.mjs",
                {
                    "sandboxUrl": server.url,
                    "clientWalletUrl": f"{server.url}/seller",
                    "senderWalletUrl": f"{server.url}/buyer",
                    "receiverWalletUrl": f"{server.url}/seller",
                    "keyId": kid,
                    "privateKeyPem": private_key_pem(key).decode("ascii"),
                    "incomingValue": INCOMING_VALUE,
                    "finishUri": FINISH_URI,
                },
            )
        finally:
            app.sandbox.close()
    assert isinstance(result, dict)
    yield result


def _failed(flow: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in flow["steps"] if not s["ok"]]


def test_every_sdk_step_succeeds(flow: dict[str, Any]) -> None:
    assert _failed(flow) == []
    assert flow["ok"] is True


def test_the_sdk_found_no_spec_mismatch(flow: dict[str, Any]) -> None:
    assert flow["validationErrors"] == []
    assert all(not s.get("validationErrors") for s in flow["steps"])


def test_every_sdk_operation_was_covered(flow: dict[str, Any]) -> None:
    ops = {s["op"] for s in flow["steps"] if s["ok"]}
    for op in (
        "walletAddress.get (sender)",
        "walletAddress.getKeys (client)",
        "grant.request (incoming-payment)",
        "incomingPayment.create",
        "incomingPayment.get",
        "incomingPayment.getPublic",
        "incomingPayment.list",
        "incomingPayment.complete",
        "grant.request (quote)",
        "quote.create",
        "quote.get",
        "grant.request (outgoing-payment, interactive)",
        "grant.continue",
        "outgoingPayment.create",
        "outgoingPayment.get",
        "outgoingPayment.list",
        "outgoingPayment.getGrantSpentAmounts",
        "token.rotate",
        "token.revoke (quote token)",
        "grant.cancel",
        "grant.cancel (again)",
        "grant.continue (rejected, redirect)",
        "grant.continue (rejected, poll)",
        "control: validation is live",
    ):
        assert op in ops, op


def test_the_finish_hash_matches_rafikis_algorithm(flow: dict[str, Any]) -> None:
    assert flow["hash"]["matches"] is True
    assert len(flow["hash"]["received"]) == 44
    assert flow["hash"]["received"].endswith("=")


def test_balances_move_by_exactly_the_debit_amount(flow: dict[str, Any], case: Case) -> None:
    balances = {k: int(v) for k, v in flow["balances"].items()}
    debit = int(flow["debitAmount"]["value"])
    receive = int(flow["receiveAmount"]["value"])
    assert receive == int(INCOMING_VALUE)
    assert flow["debitAmount"] == case.expected_debit
    assert flow["receiveAmount"] == {"value": INCOMING_VALUE, "assetCode": "USD", "assetScale": 2}
    assert balances["senderBefore"] - balances["senderAfter"] == debit
    assert balances["receiverAfter"] - balances["receiverBefore"] == receive
    assert flow["sentAmount"] == flow["debitAmount"]
    assert flow["receivedAmount"]["value"] == INCOMING_VALUE


def test_grant_spent_amounts_include_the_payment(flow: dict[str, Any]) -> None:
    assert flow["grantSpent"]["spentDebitAmount"] == flow["debitAmount"]
    assert flow["grantSpent"]["spentReceiveAmount"] == flow["receiveAmount"]


def test_old_and_cancelled_tokens_are_inactive_as_on_rafiki(flow: dict[str, Any]) -> None:
    # rafiki-observed 5b, 4h: one answer for both, 403 "Inactive Token".
    for refusal in (flow["oldTokenRefusal"], flow["cancelledTokenRefusal"]):
        assert (refusal["status"], refusal["description"]) == (403, "Inactive Token")


def test_rejection_and_a_repeated_cancel_answer_as_on_rafiki(flow: dict[str, Any]) -> None:
    assert flow["rejectRedirect"]["result"] == "grant_rejected"
    assert "hash" not in flow["rejectRedirect"]  # 3a
    redirect, poll = flow["rejectedRedirectPoll"], flow["rejectedPoll"]
    assert (redirect["status"], redirect["code"]) == (401, "request_denied")  # 3c
    assert redirect["description"] == "grant cannot be polled"
    assert (poll["status"], poll["code"]) == (401, "request_denied")  # 2l
    assert poll["description"] == "grant cannot be continued"
    again = flow["repeatedCancel"]
    assert (again["status"], again["code"], again["description"]) == (
        401,
        "invalid_continuation",
        "invalid grant",
    )


def test_grants_signed_with_keys_the_client_does_not_publish_are_refused(
    flow: dict[str, Any],
) -> None:
    unknown = flow["refusals"]["grant.request (unknown kid)"]
    wrong = flow["refusals"]["grant.request (wrong key for kid)"]
    assert (unknown["status"], unknown["code"]) == (400, "invalid_client")
    assert (wrong["status"], wrong["code"]) == (401, "invalid_client")
