"""The GNAP auth server: interaction, continuation, cancellation, tokens, request checks."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from opapprove.openpayments.keys import generate_private_key, public_jwk
from opapprove.servers.sandbox import AccountConfig
from tests.sandbox_fixtures import Api, Sandbox, finish_params, make_sandbox, reason_of

pytestmark = pytest.mark.anyio

INCOMING_RW = [{"type": "incoming-payment", "actions": ["create", "read"]}]


def error_of(resp: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = resp.json()["error"]
    return error


async def approved_grant(api: Api, sandbox: Sandbox, **kwargs: Any) -> tuple[dict[str, Any], str]:
    pending = await api.pending_outgoing_grant(**kwargs)
    finish = sandbox.state.approve(pending["interact"]["redirect"])
    return pending, finish_params(finish)["interact_ref"]


async def test_reject_redirects_with_grant_rejected_and_the_grant_is_gone(
    sandbox: Sandbox,
) -> None:
    async with sandbox.client() as api:
        pending = await api.pending_outgoing_grant()
        finish = sandbox.state.approve(pending["interact"]["redirect"], reject=True)
        assert finish == "http://127.0.0.1:3999/finish?pendingId=42&result=grant_rejected"
        resp = await api.continue_grant(pending, "anything")
        assert resp.status_code == 404
        assert error_of(resp) == {"code": "invalid_continuation", "description": "grant not found"}
        # Clicking again on a decided interaction: Rafiki's invalid_interaction (1f).
        again = sandbox.state.approve(pending["interact"]["redirect"])
        assert finish_params(again)["result"] == "invalid_interaction"


async def test_reject_through_the_consent_form(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        pending = await api.pending_outgoing_grant()
        click = await api.http.post(pending["interact"]["redirect"] + "/reject")
    assert click.status_code == 303
    assert finish_params(click.headers["location"]) == {
        "pendingId": "42",
        "result": "grant_rejected",
    }


async def test_expired_interaction(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        pending = await api.pending_outgoing_grant()
        sandbox.clock.advance(601)
        finish = sandbox.state.approve(pending["interact"]["redirect"])
        assert finish_params(finish) == {
            "pendingId": "42",
            "result": "invalid_interaction",
            "message": "interaction expired",
        }
        assert "message=interaction+expired" in finish
        page = await api.http.get(pending["interact"]["redirect"])
        assert page.status_code == 302
        assert page.headers["location"] == finish


async def test_too_fast_then_fine_after_wait() -> None:
    box = make_sandbox(wait_seconds=5)
    async with box.client() as api:
        pending = await api.pending_outgoing_grant()
        assert pending["continue"]["wait"] == 5
        ref = finish_params(box.state.approve(pending["interact"]["redirect"]))["interact_ref"]
        early = await api.continue_grant(pending, ref)
        assert early.status_code == 400
        assert error_of(early)["code"] == "too_fast"
        box.clock.advance(5)
        assert (await api.continue_grant(pending, ref)).status_code == 200
    box.recorder.assert_clean()


async def test_token_is_issued_once(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        pending, ref = await approved_grant(api, sandbox)
        first = await api.continue_grant(pending, ref)
        assert first.status_code == 200
        assert "access_token" in first.json()
        second = await api.continue_grant(pending, ref)
        assert second.status_code == 401
        assert error_of(second) == {
            "code": "request_denied",
            "description": "grant interaction not approved",
        }


async def test_wrong_interact_ref_and_missing_ref(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        pending, _ = await approved_grant(api, sandbox)
        wrong = await api.continue_grant(pending, "not-the-ref")
        assert wrong.status_code == 404
        cont = pending["continue"]
        no_ref = await api.post(
            cont["uri"], {"something": "else"}, token=cont["access_token"]["value"]
        )
        assert no_ref.status_code == 401
        assert error_of(no_ref) == {
            "code": "invalid_request",
            "description": "missing interaction reference",
        }
        wrong_token = await api.post(cont["uri"], None, token="not-the-continue-token")
        assert wrong_token.status_code == 404
    assert sandbox.recorder.deviations[("post-continue", 401, "invalid_request")] == 1


async def test_polling_a_grant_without_finish(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        pending = await api.pending_outgoing_grant(finish_uri=None)
        polled = await api.continue_grant(pending)
        assert polled.status_code == 200
        assert set(polled.json()) == {"continue"}
        assert sandbox.state.approve(pending["interact"]["redirect"]) == ""
        done = await api.continue_grant(pending)
        assert done.status_code == 200
        assert done.json()["access_token"]["access"][0]["type"] == "outgoing-payment"
        cont = pending["continue"]
        empty_object = await api.post(cont["uri"], {}, token=cont["access_token"]["value"])
        assert empty_object.status_code == 401  # issued already: nothing more to continue


async def test_a_grant_with_finish_cannot_be_polled(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        pending = await api.pending_outgoing_grant()
        resp = await api.continue_grant(pending)
    assert resp.status_code == 401
    assert error_of(resp)["code"] == "request_denied"
    assert error_of(resp)["description"].startswith("grant cannot be polled")


async def test_cancel_pending_grant(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        pending = await api.pending_outgoing_grant()
        cont = pending["continue"]
        token = cont["access_token"]["value"]
        assert (await api.delete(cont["uri"], token=token)).status_code == 204
        finish = sandbox.state.approve(pending["interact"]["redirect"])
        assert finish_params(finish) == {
            "pendingId": "42",
            "result": "invalid_interaction",
            "message": "invalid interaction",
        }
        again = await api.delete(cont["uri"], token=token)
        assert again.status_code == 401
        assert error_of(again) == {"code": "invalid_continuation", "description": "invalid grant"}
        assert (await api.continue_grant(pending, "x")).status_code == 401


async def test_revoking_an_issued_grant_deactivates_its_token(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        resp = await api.grant(INCOMING_RW)
        grant = resp.json()
        cont = grant["continue"]
        assert (
            await api.delete(cont["uri"], token=cont["access_token"]["value"])
        ).status_code == 204
        used = await api.post_incoming_payment(grant["access_token"]["value"])
    assert used.status_code == 403
    assert error_of(used)["description"] == "Inactive Token"


async def test_rotate_gives_new_value_and_manage_url(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        token = await api.token(INCOMING_RW)
        rotated = await api.post(token["manage"], token=token["value"])
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["access_token"]
        assert new["value"] != token["value"] and new["manage"] != token["manage"]
        assert new["access"] == INCOMING_RW
        old = await api.post_incoming_payment(token["value"])
        assert old.status_code == 403
        assert error_of(old)["description"] == "Inactive Token"
        assert old.headers["www-authenticate"] == f"GNAP as_uri={sandbox.url('/auth')}"
        ok = await api.post_incoming_payment(new["value"])
        assert ok.status_code == 201
        stale = await api.post(token["manage"], token=token["value"])
        assert stale.status_code == 401
        assert error_of(stale)["code"] == "invalid_client"


async def test_revoke_token(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        token = await api.token(INCOMING_RW)
        assert (await api.delete(token["manage"], token=token["value"])).status_code == 204
        used = await api.post_incoming_payment(token["value"])
    assert used.status_code == 403
    assert error_of(used)["description"] == "Inactive Token"


async def test_expired_token_is_inactive_until_rotated(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        token = await api.token(INCOMING_RW)
        assert token["expires_in"] == 600
        sandbox.clock.advance(600)
        used = await api.post_incoming_payment(token["value"])
        assert used.status_code == 403
        assert error_of(used)["description"] == "Inactive Token"
        assert used.headers["www-authenticate"].startswith("GNAP as_uri=")
        new = (await api.post(token["manage"], token=token["value"])).json()["access_token"]
        again = await api.post_incoming_payment(new["value"])
        assert again.status_code == 201


async def test_missing_authorization_and_insufficient_grant(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        incoming = await api.incoming_payment()
        no_auth = await api.post_incoming_payment(None)
        assert no_auth.status_code == 401
        assert error_of(no_auth)["description"] == "Missing or invalid authorization header value"
        quote_token = await api.token([{"type": "quote", "actions": ["create"]}])
        wrong_type = await api.get(incoming["id"], token=quote_token["value"])
        assert wrong_type.status_code == 403
        assert error_of(wrong_type)["description"] == "Insufficient Grant"
        other_wallet = await api.token(
            [{"type": "incoming-payment", "actions": ["create"], "identifier": sandbox.buyer}]
        )
        wrong_id = await api.post_incoming_payment(other_wallet["value"])
        assert wrong_id.status_code == 403
        assert error_of(wrong_id)["description"] == "Insufficient Grant"


async def test_jwk_client_for_non_interactive_grants_only(sandbox: Sandbox) -> None:
    key = generate_private_key()
    jwk = public_jwk(key, "directed-1").to_dict()
    async with sandbox.client(key=key, key_id="directed-1") as api:
        body = {"access_token": {"access": INCOMING_RW}, "client": {"jwk": jwk}}
        ok = await api.post(sandbox.url("/auth"), body)
        assert ok.status_code == 200, ok.text
        token = ok.json()["access_token"]["value"]
        created = await api.post_incoming_payment(token)
        assert created.status_code == 201
        interactive = {
            "access_token": {
                "access": [
                    {"type": "outgoing-payment", "actions": ["create"], "identifier": sandbox.buyer}
                ]
            },
            "client": {"jwk": jwk},
            "interact": {"start": ["redirect"]},
        }
        refused = await api.post(sandbox.url("/auth"), interactive)
    assert refused.status_code == 400
    assert error_of(refused) == {
        "code": "invalid_client",
        "description": "JWK client identifier cannot be used for interactive grants",
    }


async def test_wallet_address_object_client(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        body = {
            "access_token": {"access": INCOMING_RW},
            "client": {"walletAddress": sandbox.seller},
        }
        assert (await api.post(sandbox.url("/auth"), body)).status_code == 200


@pytest.mark.parametrize(
    ("access", "needle"),
    [
        (
            [{"type": "quote", "actions": ["create"], "identifier": "http://sandbox.test/buyer"}],
            "identifier",
        ),
        ([{"type": "incoming-payment", "actions": ["fly"]}], "actions"),
        ([{"type": "payment", "actions": ["create"]}], "type"),
        ([{"type": "quote", "actions": ["create"]}] * 2, "unique"),
        (
            [{"type": "quote", "actions": [a]} for a in ("create", "read", "read-all")]
            + [{"type": "incoming-payment", "actions": ["read"]}],
            "at most 3",
        ),
        ([{"type": "outgoing-payment", "actions": ["create"]}], "access identifier required"),
        ([{"type": "incoming-payment", "actions": ["list-all"]}], "access identifier required"),
        (
            [
                {
                    "type": "outgoing-payment",
                    "actions": ["create"],
                    "identifier": "http://sandbox.test/buyer",
                    "limits": {
                        "debitAmount": {"value": "1", "assetCode": "USD", "assetScale": 2},
                        "receiveAmount": {"value": "1", "assetCode": "USD", "assetScale": 2},
                    },
                }
            ],
            "not both",
        ),
        (
            [
                {
                    "type": "outgoing-payment",
                    "actions": ["create"],
                    "identifier": "http://sandbox.test/buyer",
                    "limits": {"interval": "every month"},
                }
            ],
            "interval",
        ),
    ],
)
async def test_invalid_grant_requests(
    sandbox: Sandbox, access: list[dict[str, Any]], needle: str
) -> None:
    async with sandbox.client() as api:
        resp = await api.grant(access, interact={"start": ["redirect"]})
    assert resp.status_code == 400
    error = error_of(resp)
    # Rafiki's OpenAPI validator refuses some of these itself: no code, its own words.
    if error["description"].startswith("Received error validating OpenAPI request"):
        assert "code" not in error
    else:
        assert error["code"] == "invalid_request"
    assert needle in reason_of(resp) or needle in error["description"]


async def test_interactive_grant_needs_interact(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        resp = await api.grant(
            [{"type": "outgoing-payment", "actions": ["create"], "identifier": sandbox.buyer}]
        )
    assert resp.status_code == 400
    assert error_of(resp) == {
        "code": "invalid_request",
        "description": "missing required request field 'interact'",
    }


async def test_list_all_forces_interaction(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        resp = await api.grant(
            [{"type": "incoming-payment", "actions": ["list-all"], "identifier": sandbox.seller}],
            interact={"start": ["redirect"]},
        )
    assert resp.status_code == 200
    assert "interact" in resp.json()


async def test_interactive_grant_needs_client_public_name() -> None:
    box = make_sandbox(
        accounts=[AccountConfig("buyer", "Buyer", balance=10), AccountConfig("seller")]
    )
    async with box.client() as api:
        resp = await api.grant(
            [{"type": "outgoing-payment", "actions": ["create"], "identifier": box.buyer}],
            interact={"start": ["redirect"]},
        )
    assert resp.status_code == 400
    assert error_of(resp) == {
        "code": "invalid_client",
        "description": "missing required request field 'client'",
    }
    box.recorder.assert_clean()


async def test_subject_grant(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        body = {
            "subject": {"sub_ids": [{"id": sandbox.buyer, "format": "uri"}]},
            "client": sandbox.seller,
            "interact": {
                "start": ["redirect"],
                "finish": {"method": "redirect", "uri": "http://127.0.0.1:1/f", "nonce": "n"},
            },
        }
        pending = (await api.post(sandbox.url("/auth"), body)).json()
        ref = finish_params(sandbox.state.approve(pending["interact"]["redirect"]))["interact_ref"]
        done = (await api.continue_grant(pending, ref)).json()
    assert done["subject"] == body["subject"]
    assert "access_token" not in done


async def test_external_client_wallet_is_fetched_over_http(sandbox: Sandbox) -> None:
    """The client's wallet lives on another server: its jwks.json is fetched like Rafiki does."""
    home = make_sandbox()
    with home.served() as server:
        async with sandbox.client(home.key, home.key_id) as api:
            api.client_wallet = f"{server.url}/seller"
            token = await api.token(INCOMING_RW)
            created = await api.post_incoming_payment(token["value"])
            assert created.status_code == 201
            pending = await api.pending_outgoing_grant()
            assert "interact" in pending  # publicName came from the remote wallet document
            api.client_wallet = f"{server.url}/nobody"
            unknown = await api.grant(INCOMING_RW)
    assert unknown.status_code == 400
    assert error_of(unknown)["description"] == "could not determine client"
    home.recorder.assert_clean()
