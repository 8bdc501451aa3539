"""``opapprove demo`` across currencies and with a fee: every leg's debit and receive, and
both sides' final balances, exactly (--json)."""

from __future__ import annotations

import json

import pytest

from opapprove.cli import exitcodes
from tests.cli.conftest import Cli, one_error_line


def usd(value: str) -> dict[str, object]:
    return {"value": value, "assetCode": "USD", "assetScale": 2}


def test_a_eur_buyer_pays_a_usd_seller(cli: Cli) -> None:
    result = cli("--json", "demo", "--buyer-asset", "EUR", "--amount", "12.34")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (leg,) = doc["legs"]
    # 12.34 USD / 1.08 = 11.425925... EUR, rounded up
    assert leg["debitAmount"] == {"value": "1143", "assetCode": "EUR", "assetScale": 2}
    assert leg["receiveAmount"] == usd("1234") and leg["state"] == "completed"
    assert leg["rateText"] == "1 EUR = 1.079615 USD" and leg["feePercent"] == "0.04"
    # The buyer holds 1000.00 USD worth of EUR: 925.925... rounded up.
    assert doc["balancesBefore"] == {"buyer": "925.93 EUR", "seller": "0.00 USD"}
    assert doc["balancesAfter"] == {"buyer": "914.50 EUR", "seller": "12.34 USD"}


def test_a_fee_is_debited_on_top(cli: Cli) -> None:
    result = cli("--json", "demo", "--fee", "1%+0.10", "--amount", "10.00")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (leg,) = doc["legs"]
    # 1% of 10.00 plus 0.10
    assert (leg["debitAmount"], leg["receiveAmount"]) == (usd("1020"), usd("1000"))
    assert leg["sentAmount"] == usd("1020")
    assert (leg["fee"], leg["feePercent"]) == ("0.20", "2.00")
    assert doc["balancesAfter"] == {"buyer": "989.80 USD", "seller": "10.00 USD"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--buyer-asset", "XYZ"], "not an asset I know the scale of"),
        (["--buyer-asset", "XYZ:2"], "no exchange rate from XYZ to USD"),
        (["--fee", "1%%"], "cannot be read"),
        (["--rate", "EUR/USD=-1"], "not a positive decimal"),
    ],
)
def test_bad_money_options(cli: Cli, args: list[str], needle: str) -> None:
    result = cli("demo", *args)
    assert result.exit_code == exitcodes.USAGE
    assert needle in one_error_line(result)
