"""``quote start`` across currencies with a wallet fee: the quote's terms on every run, the
quote check's refusals as one line (exit 6), bad input as one line (exit 2, nothing stored)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from opapprove.approvals.store import Store
from opapprove.cli import exitcodes
from opapprove.openpayments.rates import Rates
from opapprove.servers.sandbox import FeePolicy
from opapprove.servers.sandbox.accounts import with_wallets
from opapprove.servers.sandbox.config import default_accounts
from tests.cli.conftest import Cli, one_error_line
from tests.cli.flow_kit import Kit, served_sandbox, setup_kit

# 10.00 USD / 1.08 = 9.259259... EUR; + 1% = 9.351851... -> 9.36 EUR
EUR_DEBIT = {"value": "936", "assetCode": "EUR", "assetScale": 2}


@pytest.fixture(scope="module")
def eur_sandbox() -> Iterator[tuple[Any, str]]:
    with served_sandbox(
        accounts=with_wallets(default_accounts(), ["buyer:EUR:2:1000.00"]),
        rates=Rates.parse(["EUR/USD=1.08"]),
        fee=FeePolicy(100),
    ) as served:
        yield served


@pytest.fixture
def kit(cli: Cli, eur_sandbox: tuple[Any, str]) -> Kit:
    return setup_kit(cli, *eur_sandbox)


def start(kit: Kit, *extra: str, json_mode: bool = True) -> Any:
    args = ["quote", "start", "--offer", "o", "--buyer", kit.buyer, "--amount", "10.00", *extra]
    return kit.cli(*(["--json", *args] if json_mode else args))


def rows(kit: Kit) -> list[Any]:
    if not kit.cli.store.exists():
        return []
    with Store(kit.cli.store) as store:
        return store.list_pending()


def test_max_debit_lets_a_cross_currency_quote_through_and_json_shows_its_terms(
    kit: Kit,
) -> None:
    result = start(kit, "--max-debit", "9.36")
    assert result.exit_code == 0, result.output
    terms = json.loads(result.stdout)["quoteTerms"]
    assert terms["debitAmount"] == EUR_DEBIT
    assert terms["receiveAmount"] == {"value": "1000", "assetCode": "USD", "assetScale": 2}
    assert terms["rateText"] == "1 EUR = 1.068376 USD"
    # No reference rate in the config: the fee cannot be told apart from the rate.
    assert terms["fee"] is None and terms["feePercent"] is None


def test_with_a_reference_rate_the_fee_is_shown_and_checked(kit: Kit) -> None:
    kit.cli.write_config(kit.cli.config.read_text("utf-8") + 'reference_rates = ["EUR/USD=1.08"]\n')
    result = start(kit, json_mode=False)
    assert result.exit_code == 0, result.output
    assert (
        "debit 9.36 EUR, receive 10.00 USD, rate 1 EUR = 1.068376 USD, fee 0.10 EUR (1.09%)"
        in result.stdout
    )
    doc = json.loads(start(kit).stdout)
    assert (doc["quoteTerms"]["fee"], doc["quoteTerms"]["feePercent"]) == ("0.10", "1.09")
    kit.cli.write_config(kit.cli.config.read_text("utf-8") + "max_fee_percent = 1\n")
    refused = start(kit, json_mode=False)
    assert refused.exit_code == exitcodes.NOT_APPROVED
    line = one_error_line(refused)
    assert "quote refused: the fee is over max_fee_percent 1%" in line
    assert "raise max_fee_percent in the config to 1.09" in line


def test_a_refused_quote_is_one_line_exit_6_and_the_grant_is_cancelled(kit: Kit) -> None:
    result = start(kit)
    assert result.exit_code == exitcodes.NOT_APPROVED
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "quote_refused"
    assert "debit 9.36 EUR, receive 10.00 USD" in error["message"]
    assert "--max-debit 9.36" in error["hint"]
    (pending,) = rows(kit)
    assert pending.state == "cancelled" and pending.interact_redirect is None
    line = one_error_line(start(kit, "--max-debit", "9.35", json_mode=False))
    assert "over --max-debit 9.35 EUR" in line


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--currency", "EUR"], "the offer is in EUR, but the seller's wallet"),
        (["--max-debit", "9.365"], "invalid --max-debit for the buyer's wallet (EUR, scale 2)"),
        (["--max-debit", "-1"], "invalid --max-debit"),
    ],
)
def test_bad_input_is_exit_2_and_nothing_is_stored(kit: Kit, extra: list[str], needle: str) -> None:
    result = start(kit, *extra, json_mode=False)
    assert result.exit_code == exitcodes.USAGE
    assert needle in one_error_line(result)
    assert rows(kit) == []
