"""``opapprove quote start`` against a sandbox on loopback: output, --json, --qr, --open, errors."""

from __future__ import annotations

import json
import secrets
from types import SimpleNamespace

import pytest

from opapprove.approvals.store import Store
from opapprove.cli import exitcodes
from tests.cli.conftest import Cli, one_error_line
from tests.cli.flow_kit import Kit

JSON_KEYS = {
    "ok",
    "pendingId",
    "offerId",
    "approvalUrl",
    "state",
    "debitAmount",
    "receiveAmount",
    "incomingPayment",
    "quote",
}


def stored_count(cli: Cli) -> int:
    with Store(cli.store) as store:
        return len(store.list_pending())


def test_rich_output_shows_steps_and_url_on_its_own_line(kit: Kit) -> None:
    result = kit.cli("quote", "start", "--offer", "o1", "--buyer", kit.buyer, "--amount", "12.34")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "wallet addresses" in out and "incoming payment" in out
    assert "debit 12.34 USD, receive 12.34 USD" in out
    lines = out.splitlines()
    urls = [ln for ln in lines if "/interact/" in ln]
    assert len(urls) == 1 and urls[0].startswith(kit.url) and " " not in urls[0]
    assert "opapprove listen" in result.stderr


def test_json_shape(kit: Kit) -> None:
    doc = kit.start("offer-9", "3.50")
    assert JSON_KEYS <= set(doc)
    assert doc["ok"] is True and doc["offerId"] == "offer-9"
    assert doc["state"] == "awaiting_approval"
    assert doc["approvalUrl"].startswith(f"{kit.url}/interact/")
    assert doc["debitAmount"] == {"value": "350", "assetCode": "USD", "assetScale": 2}
    assert doc["incomingPayment"]["id"].startswith(f"{kit.url}/op/incoming-payments/")
    assert doc["quote"]["id"].startswith(f"{kit.url}/op/quotes/")
    assert "continue_token" not in json.dumps(doc) and "sharedSecret" not in json.dumps(doc)


def test_qr_is_drawn_and_json_stays_one_document(kit: Kit) -> None:
    result = kit.cli(
        "quote", "start", "--offer", "o", "--buyer", kit.buyer, "--amount", "1", "--qr"
    )
    assert result.exit_code == 0
    assert "█" in result.stdout or "▀" in result.stdout
    as_json = kit.cli(
        "--json", "quote", "start", "--offer", "o", "--buyer", kit.buyer, "--amount", "1", "--qr"
    )
    assert json.loads(as_json.stdout)["ok"] is True
    assert "▀" in as_json.stderr or "█" in as_json.stderr


def test_open_uses_webbrowser_only_when_asked(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: opened.append(url) or True)
    kit.start("o1", "1.00")
    assert opened == []
    doc = kit.start("o2", "1.00", "--open")
    assert opened == [doc["approvalUrl"]]


def test_no_seller_is_configure_wallet_address_first(cli: Cli) -> None:
    result = cli(
        "quote", "start", "--offer", "o1", "--buyer", "https://ilp.example/alice", "--amount", "1"
    )
    assert result.exit_code == exitcodes.CONFIG
    line = one_error_line(result)
    assert "Configure wallet address first" in line and "seller add" in line
    assert stored_count(cli) == 0


def test_unknown_seller_names_the_known_ones(kit: Kit) -> None:
    result = kit.cli(
        "quote", "start", "--offer", "o", "--buyer", kit.buyer, "--amount", "1", "--seller", "x"
    )
    assert result.exit_code == exitcodes.CONFIG
    line = one_error_line(result)
    assert "unknown seller 'x'" in line and "default-seller" in line


@pytest.mark.parametrize("buyer", ["not a url", "ftp://ilp.example/alice", "https://"])
def test_bad_buyer_is_invalid_wallet_address(kit: Kit, buyer: str) -> None:
    result = kit.cli("quote", "start", "--offer", "o", "--buyer", buyer, "--amount", "1")
    assert result.exit_code == exitcodes.USAGE
    assert "Invalid wallet address" in one_error_line(result)
    assert stored_count(kit.cli) == 0


def test_unknown_buyer_wallet_fails_to_initialize_and_keeps_the_row(kit: Kit) -> None:
    before = kit.start("keep-me", "1.00")
    result = kit.cli(
        "--json", "quote", "start", "--offer", "o", "--buyer", f"{kit.url}/nobody", "--amount", "1"
    )
    # Checked before anything is stored: a typo leaves no row behind to clean up.
    assert result.exit_code == exitcodes.USAGE
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and "Invalid wallet address" in doc["error"]["message"]
    assert "nothing was stored" in doc["error"]["hint"]
    with Store(kit.cli.store) as store:
        assert [p.id for p in store.list_pending()] == [before["pendingId"]]
        kept = store.get_pending(before["pendingId"])
        assert kept is not None and kept.state == "awaiting_approval"


@pytest.mark.parametrize("amount", ["abc", "-1", "1.234", ""])
def test_bad_amount(kit: Kit, amount: str) -> None:
    result = kit.cli("quote", "start", "--offer", "o", "--buyer", kit.buyer, "--amount", amount)
    assert result.exit_code == exitcodes.USAGE
    assert "amount" in one_error_line(result)


def test_timeout_needs_poll(kit: Kit) -> None:
    result = kit.cli(
        "quote", "start", "--offer", "o", "--buyer", kit.buyer, "--amount", "1", "--timeout", "5"
    )
    assert result.exit_code == exitcodes.USAGE
    assert "--poll" in one_error_line(result)


def test_poll_timeout_is_exit_8_and_the_grant_stays_open(kit: Kit) -> None:
    result = kit.cli("--json", *kit.quote_start("o", "1", "--poll", "--timeout", "0.2"))
    assert result.exit_code == exitcodes.TIMEOUT
    doc = json.loads(result.stdout)
    assert doc["error"]["kind"] == "timeout" and "pending replay" in doc["error"]["hint"]
    with Store(kit.cli.store) as store:
        (pending,) = store.list_pending()
        assert pending.state == "awaiting_approval" and pending.poll


def test_wallet_failure_is_failed_to_initialize_payment(kit: Kit) -> None:
    kit.box.state.set_fault("create-quote", status=500, times=1)
    result = kit.cli(
        "--json", "quote", "start", "--offer", "o", "--buyer", kit.buyer, "--amount", "1"
    )
    assert result.exit_code == exitcodes.REFUSED
    doc = json.loads(result.stdout)
    assert doc["error"]["message"].startswith("Failed to initialize payment")
    one_error_line(result)


def test_an_approval_url_too_long_for_a_qr_code_is_shown_without_one(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wallet picks the approval URL: one of 3,000 characters made `--qr` fail after
    the grant was stored (a traceback, exit 1; with --json, no document with the URL)."""
    long_nonce = SimpleNamespace(
        token_hex=lambda _n=16: "ab" * 1_500, token_urlsafe=secrets.token_urlsafe
    )
    monkeypatch.setattr("opapprove.servers.sandbox.grants.secrets", long_nonce)
    args = ("quote", "start", "--offer", "o", "--buyer", kit.buyer, "--amount", "1", "--qr")
    result = kit.cli(*args)
    assert result.exit_code == 0, result.output
    assert "no QR code: the approval URL is" in result.stdout
    as_json = kit.cli("--json", *args)
    assert as_json.exit_code == 0 and len(json.loads(as_json.stdout)["approvalUrl"]) > 3_000
