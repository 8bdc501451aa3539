"""``--trace`` / ``--trace-file``: every exchange shown, every secret masked unless asked."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import httpx
import pytest

from opapprove.cli.trace import TraceSink, exchange_record, format_exchange
from opapprove.openpayments.client import OpenPaymentsClient
from opapprove.openpayments.exchange import Exchange
from opapprove.openpayments.models import AmountModel, CreateIncomingPayment, incoming_payment_grant
from opapprove.openpayments.signatures import SignedParts
from tests.sandbox_fixtures import make_sandbox

TOKEN = "TOKEN0123456789ABCDEF"
CONTINUE = "CONTINUE0123456789XYZ"
SECRET = "c2hhcmVkLXNlY3JldC1ieXRlcw"


def crafted() -> Exchange:
    base = (
        '"@method": POST\n"@target-uri": https://auth.example/continue/1\n'
        f'"authorization": GNAP {CONTINUE}\n"@signature-params": ("@method");keyid="k";created=1'
    )
    return Exchange(
        method="POST",
        url="https://auth.example/continue/1",
        request_headers={"Authorization": f"GNAP {CONTINUE}", "Accept": "application/json"},
        request_body=b'{"interact_ref":"REF"}',
        signature=SignedParts(
            signature_input="sig1=()",
            signature="sig1=:AA==:",
            signature_base=base,
            content_digest=None,
            key_id="k",
            created=1,
        ),
        status=200,
        response_headers={"content-type": "application/json"},
        response_body=json.dumps(
            {
                "access_token": {"value": TOKEN, "manage": "https://auth.example/token/1"},
                "continue": {"access_token": {"value": CONTINUE}, "uri": "https://a/c/1"},
                "methods": [{"type": "ilp", "sharedSecret": SECRET, "ilpAddress": "test.x"}],
            }
        ).encode(),
        elapsed=0.0123,
        operation="post-continue",
    )


def test_crafted_exchange_is_masked_on_stderr_and_in_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "trace.jsonl"
    sink = TraceSink(to_stderr=True, path=path)
    sink(crafted())
    sink.close()
    err = capsys.readouterr().err
    text = path.read_text()
    for shown in (err, text):
        assert TOKEN not in shown and CONTINUE not in shown and SECRET not in shown
        assert "***" in shown
    assert "--> POST https://auth.example/continue/1  (post-continue)" in err
    assert "<-- 200 in 12.3 ms" in err
    assert '"@method": POST' in err and "GNAP ***" in err
    assert "https://auth.example/token/1" in err, "manage URLs are not secrets"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    record = json.loads(text)
    assert record["status"] == 200 and record["operation"] == "post-continue"
    assert record["request_headers"]["Authorization"] == "GNAP ***"


def test_show_secrets_shows_them(capsys: pytest.CaptureFixture[str]) -> None:
    record = exchange_record(crafted(), show_secrets=True)
    assert TOKEN in record["response_body"] and CONTINUE in record["signature_base"]
    TraceSink(to_stderr=True, show_secrets=True)(crafted())
    assert TOKEN in capsys.readouterr().err


def test_failed_exchange_is_described() -> None:
    ex = Exchange(
        method="GET",
        url="http://127.0.0.1:1/alice",
        request_headers={},
        request_body=b"",
        signature=None,
        status=None,
        error="ConnectError: connection refused",
    )
    text = format_exchange(exchange_record(ex))
    assert "<-- no answer (ConnectError: connection refused)" in text


def test_real_grant_and_payment_traces_leak_no_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox = make_sandbox()
    path = tmp_path / "t.jsonl"
    sink = TraceSink(to_stderr=True, path=path)
    seen: dict[str, str] = {}

    async def flow() -> None:
        async with OpenPaymentsClient(
            wallet_address_url=sandbox.seller,
            key=sandbox.key,
            key_id=sandbox.key_id,
            transport=httpx.ASGITransport(app=sandbox.asgi),
            allow_http=True,
            on_exchange=sink,
        ) as client:
            buyer = await client.get_wallet_address(sandbox.buyer)
            grant = await client.request_grant(
                buyer.auth_server, incoming_payment_grant(sandbox.seller)
            )
            token = grant.access_token.value  # type: ignore[union-attr]
            seen["token"] = token
            incoming = await client.create_incoming_payment(
                buyer.resource_server,
                token,
                CreateIncomingPayment(
                    wallet_address=buyer.id,
                    incoming_amount=AmountModel(value="100", asset_code="USD", asset_scale=2),
                ),
            )
            seen["secret"] = incoming.methods[0].shared_secret

    asyncio.run(flow())
    sink.close()
    err = capsys.readouterr().err
    text = path.read_text()
    assert seen["token"] and seen["secret"]
    for shown in (err, text):
        assert seen["token"] not in shown
        assert seen["secret"] not in shown
    assert "GNAP ***" in err and "signature base:" in err
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["method"] for r in records] == ["GET", "POST", "POST"]
    assert records[2]["request_headers"]["authorization"] == "GNAP ***"
    assert records[1]["signature_base"].startswith('"@method": POST')
