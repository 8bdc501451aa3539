"""``quote start --pay SELLER=AMOUNT ...``: a split payment from the command line, shown with
its legs by ``status`` and ``pending show``; every bad payee list is one line, exit 2, and
leaves the store as it was. ``demo --split N`` pays N sandbox sellers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from opapprove.approvals.store import Store
from opapprove.approvals.store_copy import count_rows
from opapprove.cli import exitcodes
from opapprove.cli.main import main
from opapprove.openpayments.keys import public_jwk
from opapprove.servers.sandbox.accounts import with_wallets
from opapprove.servers.sandbox.config import default_accounts
from tests.cli.conftest import Cli, one_error_line
from tests.cli.flow_kit import Kit, served_sandbox, setup_kit

SELLERS = ("seller-a", "seller-b")


@pytest.fixture(scope="module")
def split_sandbox() -> Iterator[tuple[Any, str]]:
    accounts = with_wallets(default_accounts(), [f"{s}:USD:2:0" for s in SELLERS])
    with served_sandbox(accounts=accounts) as (box, url):
        for name in SELLERS:
            box.state.add_key(name, public_jwk(box.key, box.key_id))
        yield box, url


@pytest.fixture
def split_kit(cli: Cli, split_sandbox: tuple[Any, str]) -> Kit:
    kit = setup_kit(cli, *split_sandbox)
    for name in SELLERS:
        args = ["seller", "add", name, "--wallet", f"{kit.url}/{name}", "--key-id"]
        args += [kit.box.key_id, "--key", str(kit.key_path)]
        assert main(["--store", str(cli.store), "--config", str(cli.config), *args]) == 0
    return kit


def test_pay_splits_one_approval_across_sellers(split_kit: Kit) -> None:
    kit, cli = split_kit, split_kit.cli
    before = {s: kit.box.state.balance(s) for s in ("buyer", *SELLERS)}
    result = cli("--json", "quote", "start", "--offer", "42", "--buyer", kit.buyer,
                 "--pay", "seller-a=6.00", "--pay", "seller-b=4.00")  # fmt: skip
    assert result.exit_code == 0, result.output
    started = json.loads(result.stdout)
    assert started["amount"] == "10.00" and started["state"] == "awaiting_approval"
    assert started["debitAmount"] == {"value": "1000", "assetCode": "USD", "assetScale": 2}
    assert [(leg["sellerId"], leg["amount"], leg["state"]) for leg in started["legs"]] == [
        ("seller-a", "6.00", "quote_created"),
        ("seller-b", "4.00", "quote_created"),
    ]
    result = cli("--json", "finish", kit.approve(started["approvalUrl"]))
    assert result.exit_code == 0, result.output
    status = json.loads(cli("--json", "status", started["pendingId"]).stdout)
    assert status["state"] == "completed"
    assert [leg["sentAmount"]["value"] for leg in status["legs"]] == ["600", "400"]
    after = {s: kit.box.state.balance(s) for s in ("buyer", *SELLERS)}
    assert {s: after[s] - before[s] for s in after} == {
        "buyer": -1000,
        "seller-a": 600,
        "seller-b": 400,
    }
    shown = cli("pending", "show", started["pendingId"])
    assert shown.exit_code == 0, shown.output
    assert "leg 1             seller-a 6.00: completed, debit 6.00 USD" in shown.stdout
    assert "leg 2             seller-b 4.00: completed" in shown.stdout
    doc = json.loads(cli("--json", "pending", "show", started["pendingId"]).stdout)
    assert [leg["state"] for leg in doc["legs"]] == ["completed", "completed"]


def test_cancel_of_a_split_stopped_while_paying_says_which_legs_it_gave_up(
    split_kit: Kit,
) -> None:
    """The wallet failed on the first leg's payment (a 5xx: not made), so the grant stopped
    paying; `pending cancel` gives up on both unsent legs, says so, pays nobody, exit 0."""
    kit, cli = split_kit, split_kit.cli
    result = cli("--json", "quote", "start", "--offer", "42", "--buyer", kit.buyer,
                 "--pay", "seller-a=6.00", "--pay", "seller-b=4.00")  # fmt: skip
    started = json.loads(result.stdout)
    pending_id = started["pendingId"]
    kit.box.state.set_fault("POST /op/outgoing-payments", status=500, times=1)
    result = cli("finish", kit.approve(started["approvalUrl"]))
    assert result.exit_code == exitcodes.REFUSED, result.output
    result = cli("pending", "cancel", pending_id)
    assert result.exit_code == exitcodes.OK, result.output
    assert (
        result.stdout.split()
        == (
            f"Grant {pending_id} cancelled (was paying): legs 1, 2 were not sent and are"
            " cancelled; nothing was paid."
        ).split()
    )
    doc = json.loads(cli("--json", "status", pending_id).stdout)
    assert doc["state"] == "cancelled"
    assert [leg["state"] for leg in doc["legs"]] == ["cancelled", "cancelled"]
    assert kit.payments() == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--pay", "seller-a=1.00", "--pay", "seller-a=2.00"], "'seller-a' is named twice"),
        (["--pay", "nobody=1.00"], "payee 'nobody' has no seller entry"),
        (["--pay", "seller-a=0.00"], "the share of 'seller-a' is zero"),
        (["--pay", "seller-a=-1"], "the share of 'seller-a' is not a positive amount"),
        (["--pay", "seller-a=1.001"], "USD to 2 decimal places"),
        (["--pay", "seller-a"], "is not SELLER=AMOUNT"),
        (["--pay", "seller-a=1.00", "--seller", "seller-b"], "--pay names the sellers"),
        (["--pay", "seller-a=1", "--pay", "seller-b=2", "--amount", "4"], "not the sum"),
        ([], "give what the seller receives"),
        (["--pay", "seller-a=1.00", "--currency", "EUR"], "holds USD"),
    ],
    ids=[
        "duplicate",
        "no-seller",
        "zero",
        "negative",
        "finer-than-scale",
        "no-amount",
        "with-seller",
        "wrong-sum",
        "neither",
        "other-currency",
    ],
)
def test_bad_payees_are_one_line_exit_2_and_store_nothing(
    split_kit: Kit, args: list[str], needle: str
) -> None:
    cli = split_kit.cli
    with Store(cli.store) as store:
        before = count_rows(store)
    result = cli("quote", "start", "--offer", "42", "--buyer", split_kit.buyer, *args)
    assert result.exit_code == exitcodes.USAGE, result.output
    assert needle in one_error_line(result)
    with Store(cli.store) as store:
        after = count_rows(store)
    # The wallet documents a check fetched may be cached; nothing of a grant is stored.
    assert {t: n for t, n in after.items() if t != "wallet_documents"} == {
        t: n for t, n in before.items() if t != "wallet_documents"
    }


def test_demo_split_pays_three_sellers_across_currencies_with_a_fee(cli: Cli) -> None:
    result = cli(
        "--json", "demo", "--split", "3", "--amount", "10.00", "--buyer-asset", "EUR",
        "--fee", "1%",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    legs = [(leg["seller"], leg["state"], leg["receiveAmount"]["value"],
             leg["debitAmount"]["value"]) for leg in doc["legs"]]  # fmt: skip
    # 10.00 USD in whole cents: 3.33, 3.33, 3.34; each leg converted at EUR/USD 1.08 with
    # its own 1% fee, rounded up: 3.33 / 1.08 * 1.01 = 3.1141... EUR -> 3.12.
    assert legs == [
        ("demo-seller-1", "completed", "333", "312"),
        ("demo-seller-2", "completed", "333", "312"),
        ("demo-seller-3", "completed", "334", "313"),
    ]
    assert all(leg["debitAmount"]["assetCode"] == "EUR" for leg in doc["legs"])
    assert doc["balancesAfter"] == {
        "buyer": "916.56 EUR",
        "seller": "0.00 USD",
        "seller-1": "3.33 USD",
        "seller-2": "3.33 USD",
        "seller-3": "3.34 USD",
    }
