"""``opapprove sandbox`` (a real process on loopback) and ``opapprove sandbox approve``."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from opapprove.cli import exitcodes
from opapprove.openpayments.client import OpenPaymentsClient, is_pending
from opapprove.openpayments.interaction import hash_matches
from opapprove.openpayments.keys import generate_private_key, public_jwk
from opapprove.openpayments.models import AmountModel, outgoing_payment_grant
from tests.cli.conftest import Cli, one_error_line
from tests.sandbox_fixtures import Sandbox, make_sandbox


@dataclass
class Interaction:
    redirect: str
    nonce: str
    finish_nonce: str
    auth_server: str


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Sandbox, str]]:
    sandbox = make_sandbox()
    with sandbox.served() as server:
        yield sandbox, server.url


def start_interaction(sandbox: Sandbox, url: str) -> Interaction:
    async def go() -> Interaction:
        async with OpenPaymentsClient(
            wallet_address_url=f"{url}/seller", key=sandbox.key, key_id=sandbox.key_id
        ) as client:
            buyer = await client.get_wallet_address(f"{url}/buyer")
            request = outgoing_payment_grant(
                f"{url}/seller",
                buyer.id,
                AmountModel(value="500", asset_code="USD", asset_scale=2),
                finish_uri="http://127.0.0.1:3999/payments/finish?pendingId=P1",
            )
            grant = await client.request_grant(buyer.auth_server, request)
            assert is_pending(grant)
            assert request.interact is not None and request.interact.finish is not None
            return Interaction(
                grant.redirect, request.interact.finish.nonce, grant.finish_nonce, buyer.auth_server
            )

    return asyncio.run(go())


def test_approve_prints_finish_url_with_valid_hash(cli: Cli, served: tuple[Sandbox, str]) -> None:
    sandbox, url = served
    it = start_interaction(sandbox, url)
    result = cli("sandbox", "approve", it.redirect)
    assert result.exit_code == 0, result.output
    finish = result.stdout.strip()
    assert finish.startswith("http://127.0.0.1:3999/payments/finish?")
    params = {k: v[0] for k, v in parse_qs(urlsplit(finish).query).items()}
    assert params["pendingId"] == "P1"
    assert hash_matches(
        params["hash"], it.nonce, it.finish_nonce, params["interact_ref"], it.auth_server
    )


def test_reject_with_json(cli: Cli, served: tuple[Sandbox, str]) -> None:
    sandbox, url = served
    it = start_interaction(sandbox, url)
    doc = json.loads(cli("--json", "sandbox", "approve", it.redirect, "--reject").stdout)
    assert doc["ok"] is True and doc["rejected"] is True
    assert "result=grant_rejected" in doc["finishUrl"]
    # Deciding twice is what a stale browser tab does: the wallet answers invalid_interaction.
    again = cli("sandbox", "approve", it.redirect)
    assert again.exit_code == exitcodes.USAGE
    assert "already decided" in one_error_line(again)


def test_approve_bad_url_and_unreachable(cli: Cli, served: tuple[Sandbox, str]) -> None:
    _, url = served
    bad = cli("sandbox", "approve", "https://example.com/not-an-interaction")
    assert bad.exit_code == exitcodes.USAGE
    one_error_line(bad)
    unknown = cli("sandbox", "approve", f"{url}/interact/nope/nonce")
    assert unknown.exit_code == exitcodes.REFUSED
    assert "the sandbox refused" in one_error_line(unknown)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = cli("sandbox", "approve", f"http://127.0.0.1:{port}/interact/a/b")
    assert down.exit_code == exitcodes.TRANSPORT
    assert "is `opapprove sandbox` running" in one_error_line(down)


def test_sandbox_runs_registers_keys_and_stops_on_ctrl_c(cli: Cli) -> None:
    keygen = cli(
        "--json", "seller", "keygen", "--seller", "shop", "--wallet", "https://w.example/s"
    )
    kid = json.loads(keygen.stdout)["kid"]
    extra = cli.tmp / "extra.jwk"
    extra.write_text(json.dumps(public_jwk(generate_private_key(), "extra-kid").to_dict()))
    proc = subprocess.Popen(
        cli.argv(
            "--json",
            "sandbox",
            "--port",
            "0",
            "--wait",
            "0",
            "--seller",
            "shop",
            "--key",
            str(extra),
            "--wallet",
            "alice:EUR:2:500.00",
            "--wallet",
            "buyer:JPY:0:100000",
            "--rate",
            "EUR/USD=1.08",
            "--rate",
            "USD/JPY=150",
            "--fee",
            "0.5%+0.10",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli.subprocess_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        doc = json.loads(line)
        base = doc["url"]
        assert base.startswith("http://127.0.0.1:")
        wallets = {w["name"]: w for w in doc["wallets"]}
        assert set(wallets["seller"]["keyIds"]) == {kid, "extra-kid"}
        assert wallets["buyer"]["url"] == f"{base}/buyer"
        assert (wallets["buyer"]["assetCode"], wallets["buyer"]["balance"]) == ("JPY", 100_000)
        assert (wallets["alice"]["assetCode"], wallets["alice"]["balance"]) == ("EUR", 50_000)
        assert doc["rates"] == ["EUR/USD=1.08", "USD/JPY=150"]
        assert doc["fee"] == "0.5%+0.10"
        answer = httpx.get(f"{base}/seller/jwks.json", headers={"Accept": "application/json"})
        assert {k["kid"] for k in answer.json()["keys"]} == {kid, "extra-kid"}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:  # Ctrl-C did not stop it: fail, but leave no sandbox behind
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "not this sandbox" in err  # the seller's wallet is elsewhere: say so


def test_add_key_registers_a_seller_made_after_start(cli: Cli, served: tuple[Sandbox, str]) -> None:
    sandbox, url = served
    keygen = cli(
        "seller", "keygen", "--kid", "made-later", "--seller", "shop", "--wallet", f"{url}/seller"
    )
    assert keygen.exit_code == 0, keygen.output
    assert "made-later" not in [k.kid for k in sandbox.state.keys_for("seller")]
    added = cli("--json", "sandbox", "add-key", "--seller", "shop")
    assert added.exit_code == 0, added.output
    doc = json.loads(added.stdout)
    assert doc["added"] == ["made-later"] and doc["wallet"] == "seller"
    assert doc["keyIds"] == [sandbox.key_id, "made-later"]
    again = cli("sandbox", "add-key", "--seller", "shop")
    assert again.exit_code == 0 and "already there" in again.stdout


def test_add_key_from_a_jwk_file_and_bad_files(cli: Cli, served: tuple[Sandbox, str]) -> None:
    sandbox, url = served
    jwk = public_jwk(generate_private_key(), "from-file").to_dict()
    path = cli.tmp / "k.jwk"
    path.write_text(json.dumps(jwk), encoding="utf-8")
    ok = cli("sandbox", "add-key", "--key", str(path), "--sandbox", url, "--wallet", "buyer")
    assert ok.exit_code == 0, ok.output
    assert [k.kid for k in sandbox.state.keys_for("buyer")][-1] == "from-file"
    secret = cli.tmp / "private.jwk"
    secret.write_text(json.dumps({**jwk, "d": "secret"}), encoding="utf-8")
    private = cli("sandbox", "add-key", "--key", str(secret), "--sandbox", url)
    assert private.exit_code == exitcodes.CONFIG
    assert "private key" in one_error_line(private)
    no_wallet = cli(
        "sandbox", "add-key", "--key", str(path), "--sandbox", url, "--wallet", "nobody"
    )
    assert no_wallet.exit_code == exitcodes.REFUSED
    assert "no wallet 'nobody'" in one_error_line(no_wallet)
    which = cli("sandbox", "add-key", "--key", str(path))
    assert which.exit_code == exitcodes.USAGE
    assert "--sandbox URL" in one_error_line(which)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--wallet", "alice:EUR:2:5"], "no exchange rate between EUR and USD"),
        (["--wallet", "alice:EUR:2"], "NAME:ASSET:SCALE:BALANCE"),
        (["--wallet", "yen:JPY:0:1.5"], "decimal places"),
        (["--rate", "EUR/USD=one"], "not a positive decimal"),
        (["--fee", "1%+2%"], "cannot be read"),
    ],
)
def test_bad_currency_options(cli: Cli, args: list[str], needle: str) -> None:
    state = cli.tmp / "sandbox-state.sqlite"
    result = cli("sandbox", "--state", str(state), *args)
    assert result.exit_code == exitcodes.USAGE
    assert needle in one_error_line(result)
    assert not state.exists()


@pytest.mark.parametrize(("flag", "window"), [(None, 300), (60, 60), (0, None)])
def test_created_window_flag(flag: int | None, window: int | None) -> None:
    from opapprove.cli.sandbox import build_config

    config = build_config(
        seller_keys=[],
        extra_keys=[],
        public_url=None,
        state=None,
        latency=0.0,
        wait=5,
        created_window=flag,
        settle_delay=0.5,
    )
    assert config.created_window == window
    assert config.settle_delay == 0.5
