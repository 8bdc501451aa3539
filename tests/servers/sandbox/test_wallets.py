"""Wallet addresses: the document, content negotiation, the JWKS, unknown names."""

from __future__ import annotations

import pytest

from opapprove.openpayments.keys import generate_private_key, public_jwk
from tests.sandbox_fixtures import Sandbox, make_sandbox

pytestmark = pytest.mark.anyio


async def test_wallet_document(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        doc = (await api.get(sandbox.buyer)).json()
    assert doc == {
        "id": sandbox.buyer,
        "publicName": "Buyer",
        "assetCode": "USD",
        "assetScale": 2,
        "authServer": sandbox.url("/auth"),
        "resourceServer": sandbox.url("/op"),
    }


async def test_browsers_get_json_and_people_have_a_page(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        # Rafiki 10b: a browser's Accept list ends in */*, so it gets the JSON document.
        resp = await api.http.get(sandbox.buyer, headers={"Accept": "text/html,*/*;q=0.8"})
        assert resp.status_code == 200
        assert resp.json()["id"] == sandbox.buyer
        page = await api.http.get(sandbox.buyer + "/page")
    assert "1000.00 USD" in page.text
    assert sandbox.buyer in page.text


async def test_jwks_lists_seller_and_extra_keys() -> None:
    extra = public_jwk(generate_private_key(), "from-key-file")
    box = make_sandbox(extra_keys=[extra])
    async with box.client() as api:
        seller = (await api.get(box.seller + "/jwks.json")).json()
        buyer = (await api.get(box.buyer + "/jwks.json")).json()
    assert [k["kid"] for k in seller["keys"]] == [box.key_id, "from-key-file"]
    assert set(seller["keys"][0]) == {"kid", "alg", "kty", "crv", "x"}
    assert buyer == {"keys": []}
    box.recorder.assert_clean()


async def test_unknown_wallet_is_404(sandbox: Sandbox) -> None:
    async with sandbox.client() as api:
        assert (await api.get(sandbox.url("/nobody"))).status_code == 404
        assert (await api.get(sandbox.url("/nobody/jwks.json"))).status_code == 404
