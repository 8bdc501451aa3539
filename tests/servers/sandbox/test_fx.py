"""The sandbox's currency arithmetic: exact minor units, one rounding in the wallet's favour.

Stated rule (fx.py): a fixed receive amount rounds the debit UP; a fixed debitAmount rounds
the receive amount DOWN to the largest amount whose debit fits.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opapprove.openpayments.errors import AmountError
from opapprove.openpayments.rates import Rates
from opapprove.servers.sandbox import FeePolicy, SandboxConfig, SandboxConfigError
from opapprove.servers.sandbox.accounts import parse_wallet, with_wallets
from opapprove.servers.sandbox.config import default_accounts
from opapprove.servers.sandbox.fx import Asset, debit_for, receive_for

USD, EUR, JPY = Asset("USD", 2), Asset("EUR", 2), Asset("JPY", 0)
RATES = Rates.parse(["EUR/USD=1.08", "USD/JPY=150"])
NO_FEE = FeePolicy()


@pytest.mark.parametrize(
    ("receive", "sender", "receiver", "fee", "debit"),
    [
        # same asset, no fee: one for one
        (1234, USD, USD, NO_FEE, 1234),
        # 10.00 USD from EUR: 10 / 1.08 = 9.259259... EUR, rounded up to 9.26
        (1000, EUR, USD, NO_FEE, 926),
        # 1000 JPY from USD: 1000 / 150 = 6.6666... USD, rounded up to 6.67
        (1000, USD, JPY, NO_FEE, 667),
        # 10.00 USD from JPY: exactly 1500 JPY
        (1000, JPY, USD, NO_FEE, 1500),
        # 0.01 USD from JPY: 1.5 JPY, rounded up to 2
        (1, JPY, USD, NO_FEE, 2),
        # 0.5% + 0.10 on 100.00 USD: 100.00 + 0.50 + 0.10
        (10_000, USD, USD, FeePolicy(50, Decimal("0.10")), 10_060),
        # 1% of 9.259259... EUR = 9.351851... rounded up to 9.36, + 0.10 = 9.46
        (1000, EUR, USD, FeePolicy(100, Decimal("0.10")), 946),
        # a fixed part of 0.10 on a JPY wallet is a whole yen
        (1000, JPY, USD, FeePolicy(0, Decimal("0.10")), 1501),
    ],
)
def test_debit_for_a_fixed_receive_amount_rounds_up(
    receive: int, sender: Asset, receiver: Asset, fee: FeePolicy, debit: int
) -> None:
    assert debit_for(receive, sender, receiver, RATES, fee) == debit
    # ... and that debit buys at least the receive amount back, one unit less does not.
    assert receive_for(debit, sender, receiver, RATES, fee) >= receive
    assert receive_for(debit - 1, sender, receiver, RATES, fee) < receive


def test_receive_for_a_fixed_debit_rounds_down() -> None:
    # 9.26 EUR buys 10.0008 USD: 10.00 arrive, the 0.0008 stays with the wallet.
    assert receive_for(926, EUR, USD, RATES, NO_FEE) == 1000
    # 1 JPY is 0.00666 USD: nothing arrives.
    assert receive_for(1, JPY, USD, RATES, NO_FEE) == 0
    # The fixed fee eats a debit that is no bigger than it.
    assert receive_for(10, USD, USD, RATES, FeePolicy(0, Decimal("0.10"))) == 0


ASSETS = st.sampled_from([USD, EUR, JPY, Asset("BTC", 8)])
FEES = st.builds(
    FeePolicy,
    basis_points=st.integers(0, 2_000),
    fixed=st.decimals(min_value=0, max_value=5, places=2),
)
BTC_RATES = Rates.parse(["EUR/USD=1.08", "USD/JPY=150", "BTC/USD=43210.57"])


@given(st.integers(0, 10**12), ASSETS, ASSETS, FEES)
def test_debit_for_is_the_least_debit_that_delivers(
    receive: int, sender: Asset, receiver: Asset, fee: FeePolicy
) -> None:
    debit = debit_for(receive, sender, receiver, BTC_RATES, fee)
    assert receive_for(debit, sender, receiver, BTC_RATES, fee) >= receive
    if debit > fee.fixed_units(sender.scale):
        assert receive_for(debit - 1, sender, receiver, BTC_RATES, fee) < receive


@given(st.integers(0, 10**12), ASSETS, ASSETS, FEES)
def test_receive_for_is_the_most_a_debit_delivers(
    debit: int, sender: Asset, receiver: Asset, fee: FeePolicy
) -> None:
    receive = receive_for(debit, sender, receiver, BTC_RATES, fee)
    assert receive >= 0
    if receive > 0:
        assert debit_for(receive, sender, receiver, BTC_RATES, fee) <= debit
    assert debit_for(receive + 1, sender, receiver, BTC_RATES, fee) > debit


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("0.5%+0.10", FeePolicy(50, Decimal("0.10"))),
        ("0.10 + 0.5%", FeePolicy(50, Decimal("0.10"))),
        ("1%", FeePolicy(100)),
        ("0.25", FeePolicy(0, Decimal("0.25"))),
        ("0", FeePolicy()),
    ],
)
def test_fee_parse(text: str, policy: FeePolicy) -> None:
    assert FeePolicy.parse(text) == policy


@pytest.mark.parametrize("text", ["", "1%+2%", "0.125%", "-1%", "1%+", "abc", "1e3", "2000%"])
def test_bad_fees_are_refused(text: str) -> None:
    with pytest.raises(AmountError):
        FeePolicy.parse(text)


def test_fee_policy_refuses_minor_units() -> None:
    with pytest.raises(TypeError, match="Decimal"):
        FeePolicy(fixed=5)  # type: ignore[arg-type]


def test_wallet_specs() -> None:
    alice = parse_wallet("alice:eur:2:500.00")
    assert (alice.name, alice.asset_code, alice.asset_scale, alice.balance) == (
        "alice",
        "EUR",
        2,
        50_000,
    )
    accounts = with_wallets(default_accounts(), ["buyer:JPY:0:10000", "alice:EUR:2:5"])
    assert [(a.name, a.asset_code, a.balance) for a in accounts] == [
        ("buyer", "JPY", 10_000),
        ("seller", "USD", 0),
        ("alice", "EUR", 500),
    ]
    assert accounts[0].public_name == "Buyer"


@pytest.mark.parametrize(
    ("specs", "needle"),
    [
        (["alice:EUR:2"], "NAME:ASSET:SCALE:BALANCE"),
        (["Alice:EUR:2:1"], "lowercase"),
        (["alice:E-R:2:1"], "asset code"),
        (["alice:EUR:x:1"], "scale"),
        (["alice:JPY:0:1.5"], "decimal places"),
        (["alice:EUR:2:1", "alice:EUR:2:2"], "twice"),
    ],
)
def test_bad_wallet_specs(specs: list[str], needle: str) -> None:
    with pytest.raises(SandboxConfigError, match=needle):
        with_wallets(default_accounts(), specs)


def test_a_missing_rate_is_refused_at_start() -> None:
    accounts = with_wallets(default_accounts(), ["alice:EUR:2:5", "yen:JPY:0:100"])
    with pytest.raises(SandboxConfigError, match="no exchange rate between") as err:
        SandboxConfig(accounts=accounts, rates=Rates.parse(["EUR/USD=1.08"])).validate()
    assert "--rate JPY/" in str(err.value)
    SandboxConfig(accounts=accounts, rates=RATES).validate()
