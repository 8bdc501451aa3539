"""A page on another site, open in the developer's browser while the sandbox runs, posting
to it (cross-site, or same-origin by DNS rebinding): the operator routes and the consent
forms refuse it; callers that are not browsers
(no Origin) and the sandbox's own pages are served as before.

The headers are the ones a browser sets on a cross-site form post or ``no-cors`` fetch,
which it sends without a CORS preflight.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from opapprove.openpayments.keys import generate_private_key, public_jwk
from tests.sandbox_fixtures import Sandbox

pytestmark = pytest.mark.anyio

ELSEWHERE = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
TEXT = {"Content-Type": "text/plain;charset=UTF-8"}  # no preflight for this type
OWN = {"Origin": "http://127.0.0.1:4000", "Host": "127.0.0.1:4000"}  # its own page
REBOUND = {"Origin": "http://attacker.example:4000", "Host": "attacker.example:4000"}


async def test_operator_routes_refuse_another_site(sandbox: Sandbox) -> None:
    key = public_jwk(generate_private_key(), "evil-key").to_dict()
    async with sandbox.client() as api:
        failing = await api.http.post(
            sandbox.url("/_admin/settlement"),
            content=b'{"fail": 1000}',
            headers={**ELSEWHERE, **TEXT},
        )
        keyed = await api.http.post(
            sandbox.url("/_admin/keys"),
            json={"wallet": "seller", "jwk": key},
            headers={"Origin": "null"},  # a sandboxed iframe or a file:// page
        )
        garbled = await api.http.post(
            sandbox.url("/_admin/latency"), json={"seconds": 5}, headers={"Origin": "http://["}
        )
        # DNS rebinding: the page's own name resolves to 127.0.0.1; Origin and Host agree.
        rebound = await api.http.post(
            sandbox.url("/_admin/settlement"),
            content=b'{"fail": 1000}',
            headers={**REBOUND, **TEXT},
        )
        ours = await api.http.post(
            sandbox.url("/_admin/settlement"), content=b'{"fail": 0}', headers={**OWN, **TEXT}
        )
    refused = (failing, keyed, garbled, rebound)
    assert [r.status_code for r in refused] == [403, 403, 403, 403]
    assert failing.json()["error"]["description"] == "cross-site request refused"
    assert sandbox.state.failing_payments == 0
    assert "evil-key" not in [k.kid for k in sandbox.state.keys_for("seller")]
    assert ours.status_code == 200


async def test_a_consent_form_posted_from_another_site_decides_nothing(
    sandbox: Sandbox,
) -> None:
    async with sandbox.client() as api:
        redirect = (await api.pending_outgoing_grant())["interact"]["redirect"]
        interact_id, nonce = urlsplit(redirect).path.split("/")[-2:]
        form = {"interactId": interact_id, "nonce": nonce, "decision": "accept"}
        forged = [
            await api.http.post(sandbox.url("/idp/decide"), data=form, headers=ELSEWHERE),
            await api.http.post(f"{redirect}/accept", headers={"Sec-Fetch-Site": "cross-site"}),
        ]
        assert [r.status_code for r in forged] == [403, 403]
        grant = sandbox.state.grant_by_interaction(interact_id)
        assert grant is not None and grant.state == "pending"
        # The person's own click, on the sandbox's page: its origin.
        clicked = await api.http.post(sandbox.url("/idp/decide"), data=form, headers=OWN)
    assert clicked.status_code == 303 and grant.state == "approved"
