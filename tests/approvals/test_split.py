"""The payee list of a split payment, checked before anything is asked or stored."""

from __future__ import annotations

import pytest

from opapprove.approvals.errors import FlowError
from opapprove.approvals.split import Payee, check_payees, parse_pay, payees_from_json


def test_pay_options_and_api_payees_read_the_same() -> None:
    assert parse_pay(" seller-a = 60.00 ") == Payee("seller-a", "60.00")
    assert payees_from_json([{"sellerId": "seller-a", "amount": "60.00"}]) == [
        Payee("seller-a", "60.00")
    ]
    payees = [Payee("a", "60.00"), Payee("b", "40.00"), Payee("c", "0.01")]
    assert check_payees(payees) == "100.01"
    assert check_payees(payees, amount="100.010") == "100.01"


@pytest.mark.parametrize(
    ("payees", "amount", "needle"),
    [
        ([], None, "needs at least one payee"),
        ([Payee("a", "1"), Payee("a", "2")], None, "seller 'a' is named twice"),
        ([Payee("a", "0.00"), Payee("b", "2")], None, "the share of 'a' is zero"),
        ([Payee("a", "-5"), Payee("b", "2")], None, "the share of 'a' is not a positive amount"),
        ([Payee("a", "ten")], None, "the share of 'a' is not a positive amount"),
        ([Payee("a", "60"), Payee("b", "40")], "90", "--amount 90 is not the sum"),
        ([Payee(str(n), "1") for n in range(21)], None, "more than one approval takes"),
    ],
    ids=["none", "duplicate", "zero", "negative", "not-a-number", "sum", "too-many"],
)
def test_bad_payees_are_one_line_of_kind_input(
    payees: list[Payee], amount: str | None, needle: str
) -> None:
    with pytest.raises(FlowError) as err:
        check_payees(payees, amount=amount)
    assert err.value.kind == "input" and err.value.exit_code == 2
    assert needle in err.value.message and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [("seller-a", "is not SELLER=AMOUNT"), ("=5", "is not SELLER=AMOUNT"), ("a=", "SELLER=")],
)
def test_a_pay_option_without_both_halves(text: str, needle: str) -> None:
    with pytest.raises(FlowError, match=needle):
        parse_pay(text)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ({"sellerId": "a"}, "payees must be a list"),
        (["a=1"], "payee 1 has no sellerId"),
        ([{"sellerId": "a", "amount": None}], "payee 1 (a) has no amount"),
        ([{"sellerId": "a", "amount": True}], "payee 1 (a) has no amount"),
    ],
)
def test_api_payees_of_the_wrong_shape(value: object, needle: str) -> None:
    with pytest.raises(FlowError) as err:
        payees_from_json(value)
    assert needle in err.value.message


def test_starting_over_names_the_sellers_again_for_a_split() -> None:
    from opapprove.approvals.records import Pending, State
    from opapprove.approvals.split import restart_hint

    fields = {"seller_id": "a", "offer_id": "42", "buyer_wallet": "https://ilp.test/b"}
    one = Pending("p1", amount="10.00", state=State.EXPIRED, created_at=0, updated_at=0,
                  version=1, **fields)  # fmt: skip
    split = Pending("p2", amount="10.00", state=State.EXPIRED, created_at=0, updated_at=0,
                    version=1, leg_count=2, **fields)  # fmt: skip
    assert restart_hint(one).endswith("--buyer https://ilp.test/b --amount 10.00")
    assert "--pay SELLER=AMOUNT for each seller of `opapprove pending show p2`" in (
        restart_hint(split)
    )
