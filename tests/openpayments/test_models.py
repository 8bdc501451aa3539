"""The models against the specs: every example in the yaml files, and every body we build."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from opapprove.openpayments import keys
from opapprove.openpayments import models as m
from opapprove.openpayments.money import UINT64_MAX, Amount
from tests.spec_check import SpecMismatch, _load, _validate, check_request_body, operations

Parse = Callable[[Any], BaseModel]

REQUEST_MODELS: dict[str, Parse] = {
    "post-request": m.GrantRequest.model_validate,
    "post-continue": m.ContinueRequest.model_validate,
    "create-incoming-payment": m.CreateIncomingPayment.model_validate,
    "create-outgoing-payment": m.CreateOutgoingPayment.model_validate,
    "create-quote": m.CreateQuote.model_validate,
}
RESPONSE_MODELS: dict[tuple[str, str], Parse] = {
    ("post-request", "200"): m.parse_grant_response,
    ("post-continue", "200"): m.parse_continue_response,
    ("post-token", "200"): m.RotatedToken.model_validate,
    ("get-wallet-address", "200"): m.WalletAddress.model_validate,
    ("create-incoming-payment", "201"): m.IncomingPaymentWithMethods.model_validate,
    ("get-incoming-payment", "200"): m.IncomingPaymentWithMethods.model_validate,
    ("complete-incoming-payment", "200"): m.IncomingPayment.model_validate,
    ("list-incoming-payments", "200"): m.Page[m.IncomingPayment].model_validate,
    ("create-quote", "201"): m.Quote.model_validate,
    ("get-quote", "200"): m.Quote.model_validate,
    ("create-outgoing-payment", "201"): m.OutgoingPaymentWithSpentAmounts.model_validate,
    ("get-outgoing-payment", "200"): m.OutgoingPayment.model_validate,
    ("list-outgoing-payments", "200"): m.Page[m.OutgoingPayment].model_validate,
    ("get-outgoing-payment-grant", "200"): m.GrantSpentAmounts.model_validate,
}
COMPONENT_MODELS: dict[str, Parse] = {
    "wallet-address": m.WalletAddress.model_validate,
    "json-web-key-set": m.JWKS.model_validate,
    "json-web-key": m.JWK.model_validate,
    "incoming-payment": m.IncomingPayment.model_validate,
    "incoming-payment-with-methods": m.IncomingPaymentWithMethods.model_validate,
    "public-incoming-payment": m.PublicIncomingPayment.model_validate,
    "outgoing-payment": m.OutgoingPayment.model_validate,
    "outgoing-payment-with-spent-amounts": m.OutgoingPaymentWithSpentAmounts.model_validate,
    "quote": m.Quote.model_validate,
    "page-info": m.PageInfo.model_validate,
    "ilp-payment-method": m.IlpPaymentMethod.model_validate,
}

# Examples in the specs that their own schemas refuse, and what the models do with them.
# Tolerated: parsed, with what the dump adds. Refused: a real problem the models report.
TOLERATED = {
    # `completed` is required (default false) and this example leaves it out.
    "resource-server.yaml#incoming-payment[1]": {"completed": False},
    # The quote forbids extra members; this one carries a stray `sentAmount`.
    "resource-server.yaml#quote[0]": {},
}
REFUSED = {
    "resource-server.yaml#public-incoming-payment[0]",  # no authServer
    "resource-server.yaml#outgoing-payment[1]",  # no receiveAmount
    "resource-server.yaml#quote[1]",  # no receiveAmount
    "resource-server.yaml#ilp-payment-method[0]",  # placeholder values "string"
    "wallet-address-server.yaml#json-web-key[0]",  # no alg: Rafiki would refuse this JWKS
    "wallet-address-server.yaml#json-web-key[1]",
}
# A `$ref` with a sibling `additionalProperties: false` reads, in JSON Schema 2020-12, as
# "no properties allowed": these responses' schemas refuse every real answer.
SPEC_QUIRKS = {"list-incoming-payments", "complete-incoming-payment"}


@dataclass(frozen=True)
class Example:
    id: str
    value: Any
    parse: Parse
    spec: str
    schema: dict[str, Any]


def _deref(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def _examples() -> Iterator[Example]:
    for op_id, op in operations().items():
        doc = _load(op.spec)
        body = _deref(doc, op.op.get("requestBody"))
        if body and op_id in REQUEST_MODELS:
            content = body["content"]["application/json"]
            for name, ex in (content.get("examples") or {}).items():
                yield Example(
                    f"{op_id} request: {name}",
                    _deref(doc, ex)["value"],
                    REQUEST_MODELS[op_id],
                    op.spec,
                    content["schema"],
                )
        for status, response in op.op["responses"].items():
            parse = RESPONSE_MODELS.get((op_id, status))
            content = (_deref(doc, response).get("content") or {}).get("application/json")
            if parse is None or not content:
                continue
            for name, ex in (content.get("examples") or {}).items():
                schema = content["schema"]
                if op_id in SPEC_QUIRKS:
                    schema = {"type": "object"}
                yield Example(
                    f"{op_id} {status}: {name}", _deref(doc, ex)["value"], parse, op.spec, schema
                )
    for spec in ("auth-server.yaml", "resource-server.yaml", "wallet-address-server.yaml"):
        doc = _load(spec)
        for name, schema in doc["components"]["schemas"].items():
            if name not in COMPONENT_MODELS:
                continue
            for i, ex in enumerate(schema.get("examples") or []):
                ref = {"$ref": f"#/components/schemas/{name}"}
                yield Example(f"{spec}#{name}[{i}]", ex, COMPONENT_MODELS[name], spec, ref)
    for spec in ("auth-server.yaml", "resource-server.yaml"):
        examples = _load(spec)["components"].get("examples", {})
        for name, ex in examples.items():
            yield Example(
                f"{spec}#examples/{name}",
                ex["value"],
                m.ResourceServerError.model_validate,
                spec,
                {"$ref": "#/components/schemas/error-response"},
            )


EXAMPLES = list(_examples())


def _spec_accepts(example: Example) -> bool:
    try:
        _validate(example.spec, example.schema, example.value, example.id)
    except SpecMismatch:
        return False
    return True


def test_every_model_has_examples() -> None:
    assert len(EXAMPLES) > 40
    assert len(TOLERATED.keys() | REFUSED) == len(TOLERATED) + len(REFUSED)
    ids = {e.id for e in EXAMPLES}
    assert (TOLERATED.keys() | REFUSED) <= ids


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_spec_example_round_trips(example: Example) -> None:
    spec_ok = _spec_accepts(example)
    if example.id in REFUSED:
        assert not spec_ok
        with pytest.raises(ValidationError):
            example.parse(example.value)
        return
    assert spec_ok or example.id in TOLERATED
    model = example.parse(example.value)
    wire = model.to_wire()
    assert wire == {**example.value, **TOLERATED.get(example.id, {})}
    assert example.parse(wire) == model


# --------------------------------------------------------------------------- amounts


def test_amount_model_converts_exactly() -> None:
    amount = Amount.parse("12.34", "USD", 2)
    model = m.AmountModel.of(amount)
    assert model.to_wire() == {"value": "1234", "assetCode": "USD", "assetScale": 2}
    assert model.to_amount() == amount
    assert str(model) == "12.34 USD"
    assert m.AmountModel(value=str(UINT64_MAX), asset_code="X", asset_scale=0)


@pytest.mark.parametrize(
    "wire",
    [
        {"value": 100, "assetCode": "USD", "assetScale": 2},
        {"value": "-1", "assetCode": "USD", "assetScale": 2},
        {"value": "1.5", "assetCode": "USD", "assetScale": 2},
        {"value": str(UINT64_MAX + 1), "assetCode": "USD", "assetScale": 2},
        {"value": "1", "assetCode": "USD", "assetScale": 256},
        {"value": "1", "assetCode": "USD", "assetScale": "2"},
        {"value": "1", "assetCode": "USD"},
    ],
    ids=["number", "negative", "fraction", "over-uint64", "scale", "scale-string", "missing"],
)
def test_amount_model_refuses(wire: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        m.AmountModel.model_validate(wire)


def test_wallet_address_amount() -> None:
    wallet = m.WalletAddress.model_validate(
        {
            "id": "https://w.example/a",
            "assetCode": "EUR",
            "assetScale": 2,
            "authServer": "https://auth.w.example",
            "resourceServer": "https://w.example",
            "someExtension": True,
        }
    )
    assert wallet.amount("5") == Amount(500, "EUR", 2)
    assert wallet.to_wire()["someExtension"] is True


# --------------------------------------------------------------------------- grant requests

ALICE = "https://ilp.example/alice"
RECEIVER = "https://ilp.example/incoming-payments/1"
CLIENT = "https://client.example/shop"


def _check_grant(body: m.GrantRequest) -> dict[str, Any]:
    wire = body.to_wire()
    check_request_body("post-request", wire)
    assert m.GrantRequest.model_validate(wire) == body
    return wire


def test_incoming_payment_grant() -> None:
    wire = _check_grant(m.incoming_payment_grant(CLIENT, ALICE))
    assert wire == {
        "access_token": {
            "access": [
                {
                    "type": "incoming-payment",
                    "actions": ["create", "read", "complete"],
                    "identifier": ALICE,
                }
            ]
        },
        "client": CLIENT,
    }


def test_quote_grant_sends_no_identifier() -> None:
    wire = _check_grant(m.quote_grant({"walletAddress": CLIENT}))  # type: ignore[arg-type]
    assert wire["access_token"]["access"] == [{"type": "quote", "actions": ["create", "read"]}]
    assert wire["client"] == {"walletAddress": CLIENT}


def test_outgoing_payment_grant_with_finish() -> None:
    body = m.outgoing_payment_grant(
        m.WalletAddressClient(wallet_address=CLIENT),
        ALICE,
        Amount(2600, "USD", 2),
        receiver=RECEIVER,
        finish_uri="http://127.0.0.1:3999/finish?pendingId=42",
        interval="R12/2025-10-14T00:03:00Z/P1M",
    )
    wire = _check_grant(body)
    assert wire["interact"]["start"] == ["redirect"]
    finish = wire["interact"]["finish"]
    assert finish["method"] == "redirect" and len(finish["nonce"]) >= 24
    assert wire["access_token"]["access"][0]["limits"] == {
        "receiver": RECEIVER,
        "interval": "R12/2025-10-14T00:03:00Z/P1M",
        "debitAmount": {"value": "2600", "assetCode": "USD", "assetScale": 2},
    }
    assert body.is_interactive


def test_outgoing_payment_grant_for_polling_and_by_receive_amount() -> None:
    body = m.outgoing_payment_grant(
        CLIENT, ALICE, None, receive_amount=m.AmountModel.of(Amount(1, "EUR", 2))
    )
    wire = _check_grant(body)
    assert wire["interact"] == {"start": ["redirect"]}
    assert "debitAmount" not in wire["access_token"]["access"][0]["limits"]


def test_outgoing_payment_grant_refuses_nonce_without_finish() -> None:
    with pytest.raises(ValueError):
        m.outgoing_payment_grant(CLIENT, ALICE, None, nonce="n")


def test_subject_grant_request() -> None:
    body = m.GrantRequest(
        client=CLIENT,
        subject=m.Subject(sub_ids=[m.SubjectId(id=ALICE)]),
        interact=m.InteractRequest(finish=m.InteractFinish(uri="https://c.example/f", nonce="n")),
    )
    _check_grant(body)


def test_jwk_client() -> None:
    jwk = m.JWK.of(keys.public_jwk(keys.generate_private_key(), "k1"))
    body = m.incoming_payment_grant(m.JwkClient(jwk=jwk))
    wire = _check_grant(body)
    assert wire["client"]["jwk"]["kid"] == "k1"
    assert m.client_url(body.client) is None
    assert jwk.to_jwk().kid == "k1"


@pytest.mark.parametrize(
    "wire",
    [
        {"client": CLIENT},
        {"client": CLIENT, "subject": {"sub_ids": [{"id": ALICE, "format": "uri"}]}},
        {
            "client": CLIENT,
            "access_token": {
                "access": [{"type": "quote", "actions": ["read"], "identifier": ALICE}]
            },
        },
        {
            "client": CLIENT,
            "access_token": {"access": [{"type": "outgoing-payment", "actions": ["create"]}]},
        },
        {
            "client": CLIENT,
            "access_token": {
                "access": [
                    {
                        "type": "outgoing-payment",
                        "actions": ["create"],
                        "identifier": ALICE,
                        "limits": {
                            "debitAmount": {"value": "1", "assetCode": "USD", "assetScale": 2},
                            "receiveAmount": {"value": "1", "assetCode": "USD", "assetScale": 2},
                        },
                    }
                ]
            },
        },
        {
            "client": CLIENT,
            "access_token": {
                "access": [
                    {
                        "type": "outgoing-payment",
                        "actions": ["create"],
                        "identifier": ALICE,
                        "limits": {"receiver": "https://ilp.example/alice"},
                    }
                ]
            },
        },
        {
            "client": CLIENT,
            "access_token": {"access": [{"type": "quote", "actions": ["create", "create"]}]},
        },
        {
            "client": CLIENT,
            "access_token": {"access": [{"type": "quote", "actions": ["create"]}] * 2},
        },
        {"client": CLIENT, "access_token": {"access": []}},
        {"client": CLIENT, "access_token": {"access": [{"type": "quote", "actions": ["list"]}]}},
        {"client": CLIENT, "access_token": {"access": [{"type": "x", "actions": []}]}},
        {"client": {"walletAddress": CLIENT, "extra": 1}, "access_token": {"access": []}},
        {
            "client": CLIENT,
            "access_token": {"access": [{"type": "quote", "actions": ["read"]}]},
            "clientName": "typo",
        },
    ],
    ids=[
        "no-access-no-subject",
        "subject-without-interact",
        "quote-identifier",
        "outgoing-without-identifier",
        "both-amounts",
        "receiver-not-incoming-payment",
        "duplicate-action",
        "duplicate-item",
        "empty-access",
        "unknown-action",
        "unknown-type",
        "client-extra",
        "unknown-field",
    ],
)
def test_grant_request_refuses(wire: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        m.GrantRequest.model_validate(wire)


# --------------------------------------------------------------------------- resource bodies


def test_create_incoming_payment_body() -> None:
    body = m.CreateIncomingPayment(
        wallet_address=ALICE,
        incoming_amount=Amount(2500, "USD", 2),
        expires_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
        metadata={"order": 1},
    )
    wire = body.to_wire()
    assert wire["expiresAt"] == "2030-01-02T01:04:05.000Z"
    check_request_body("create-incoming-payment", wire)
    check_request_body(
        "create-incoming-payment", m.CreateIncomingPayment(wallet_address=ALICE).to_wire()
    )


@pytest.mark.parametrize(
    "body",
    [
        m.CreateQuote(wallet_address=ALICE, receiver=RECEIVER),
        m.CreateQuote(wallet_address=ALICE, receiver=RECEIVER, debit_amount=Amount(1, "USD", 2)),
        m.CreateQuote(wallet_address=ALICE, receiver=RECEIVER, receive_amount=Amount(1, "EUR", 2)),
    ],
    ids=["no-amount", "debit", "receive"],
)
def test_create_quote_bodies(body: m.CreateQuote) -> None:
    wire = body.to_wire()
    assert wire["method"] == "ilp"
    check_request_body("create-quote", wire)


def test_create_quote_refuses_both_amounts_and_bad_receivers() -> None:
    one = Amount(1, "USD", 2)
    with pytest.raises(ValidationError):
        m.CreateQuote(wallet_address=ALICE, receiver=RECEIVER, debit_amount=one, receive_amount=one)
    with pytest.raises(ValidationError):
        m.CreateQuote(wallet_address=ALICE, receiver=ALICE)


def test_create_outgoing_payment_forms() -> None:
    quote = "https://ilp.example/quotes/1"
    for body in (
        m.CreateOutgoingPayment(wallet_address=ALICE, quote_id=quote),
        m.CreateOutgoingPayment(
            wallet_address=ALICE, incoming_payment=RECEIVER, debit_amount=Amount(5, "USD", 2)
        ),
    ):
        check_request_body("create-outgoing-payment", body.to_wire())
    bad: list[dict[str, Any]] = [
        {"wallet_address": ALICE},
        {"wallet_address": ALICE, "quote_id": quote, "incoming_payment": RECEIVER},
        {"wallet_address": ALICE, "incoming_payment": RECEIVER},
        {"wallet_address": ALICE, "quote_id": quote, "debit_amount": Amount(5, "USD", 2)},
    ]
    for kwargs in bad:
        with pytest.raises(ValidationError):
            m.CreateOutgoingPayment(**kwargs)


def test_continue_request_bodies() -> None:
    check_request_body("post-continue", m.ContinueRequest(interact_ref="r").to_wire())


# --------------------------------------------------------------------------- received documents

TOKEN = "SECRET-ACCESS-TOKEN"
CONT = "SECRET-CONTINUE-TOKEN"
GRANT = {
    "access_token": {
        "value": TOKEN,
        "manage": "https://auth.example/token/1",
        "expires_in": 600,
        "access": [{"type": "quote", "actions": ["create", "read"]}],
    },
    "continue": {"access_token": {"value": CONT}, "uri": "https://auth.example/continue/1"},
}


def test_secrets_are_redacted_in_repr_and_str() -> None:
    grant = m.parse_grant_response(GRANT)
    pending = m.parse_grant_response(
        {"interact": {"redirect": "https://a/i", "finish": "n"}, "continue": GRANT["continue"]}
    )
    method = m.IlpPaymentMethod(ilp_address="test.a.b", shared_secret="SECRETSHAREDSECRET")
    for obj in (grant, pending, grant.continue_, method):
        for text in (repr(obj), str(obj)):
            assert TOKEN not in text and CONT not in text and "SECRETSHARED" not in text
            assert "***" in text
    assert isinstance(grant, m.Grant) and grant.access_token is not None
    assert grant.access_token.value == TOKEN  # only the display is redacted
    assert grant.to_wire() == GRANT


def test_grant_parsers_pick_the_form() -> None:
    pending = m.parse_continue_response({"continue": GRANT["continue"]})
    assert isinstance(pending, m.PendingGrant) and pending.interact is None
    with pytest.raises(ValueError):
        _ = pending.redirect
    assert isinstance(m.parse_continue_response(GRANT), m.Grant)
    with pytest.raises(ValidationError):
        m.parse_grant_response({"continue": GRANT["continue"]})
    with pytest.raises(ValidationError):
        m.Grant.model_validate({"continue": GRANT["continue"]})


def test_grant_spent_amounts_keep_their_nulls() -> None:
    spent = m.GrantSpentAmounts.model_validate(
        {"spentDebitAmount": None, "spentReceiveAmount": None}
    )
    assert spent.to_wire() == {"spentDebitAmount": None, "spentReceiveAmount": None}
    with pytest.raises(ValidationError):
        m.GrantSpentAmounts.model_validate({})


def test_jwks_refuses_extra_members_and_finds_keys() -> None:
    jwk = keys.public_jwk(keys.generate_private_key(), "k1").to_dict()
    jwks = m.JWKS.model_validate({"keys": [jwk]})
    assert jwks.find("k1") is not None and jwks.find("k2") is None
    with pytest.raises(ValidationError):
        m.JWKS.model_validate({"keys": [jwk], "extra": True})
    with pytest.raises(ValidationError):
        m.JWKS.model_validate({"keys": [{**jwk, "x": "not base64url!"}]})


def test_quote_expiry_as_datetime() -> None:
    quote = m.Quote.model_validate(
        {
            "id": "https://ilp.example/quotes/1",
            "walletAddress": ALICE,
            "receiver": RECEIVER,
            "receiveAmount": {"value": "1", "assetCode": "USD", "assetScale": 2},
            "debitAmount": {"value": "2", "assetCode": "USD", "assetScale": 2},
            "method": "ilp",
            "createdAt": "2025-01-01T00:00:00Z",
            "expiresAt": "2025-01-01T00:05:00.52Z",
        }
    )
    assert quote.expires_at_datetime == datetime(2025, 1, 1, 0, 5, 0, 520000, tzinfo=UTC)


def test_outgoing_payment_failed_defaults_to_false() -> None:
    amount = {"value": "1", "assetCode": "USD", "assetScale": 2}
    payment = m.OutgoingPayment.model_validate(
        {
            "id": "https://ilp.example/outgoing-payments/1",
            "walletAddress": ALICE,
            "receiver": RECEIVER,
            "receiveAmount": amount,
            "debitAmount": amount,
            "sentAmount": amount,
            "createdAt": "2025-01-01T00:00:00Z",
        }
    )
    assert payment.failed is False
