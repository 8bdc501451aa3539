"""The sandbox finds tokens and grants by value and id through indexes kept on every write."""

from __future__ import annotations

from opapprove.servers.sandbox import SandboxConfig, SandboxState
from opapprove.servers.sandbox.grants import _new_token, rotate_token
from opapprove.servers.sandbox.records import Grant


def _grant(state: SandboxState, n: int, *, interactive: bool) -> Grant:
    grant = Grant(
        id=f"g{n}",
        client_wallet="http://127.0.0.1/seller",
        client_jwk=None,
        client_name=None,
        access=[{"type": "quote", "actions": ["create"]}],
        subject=None,
        finish=None,
        state="pending" if interactive else "issued",
        continue_id=f"c{n}",
        continue_token=f"ct{n}",
        created_at=0.0,
        last_continued_at=0.0,
        auth_server_url="http://127.0.0.1/auth",
        interact_id=f"i{n}" if interactive else None,
    )
    state.add_grant(grant)
    return grant


def test_lookups_find_what_was_added_and_nothing_else() -> None:
    state = SandboxState(SandboxConfig())
    grants = [_grant(state, n, interactive=n % 2 == 0) for n in range(50)]
    tokens = [_new_token(state, g) for g in grants]
    for n, (grant, token) in enumerate(zip(grants, tokens, strict=True)):
        assert state.token_by_value(token.value) is token
        assert state.grant_by_continue_id(f"c{n}") is grant
        assert state.grant_by_interaction(f"i{n}") is (grant if n % 2 == 0 else None)
    assert state.token_by_value("no-such-token") is None
    assert state.grant_by_continue_id("no-such-id") is None
    assert state.grant_by_interaction("i1") is None


def test_a_rotated_token_stays_known_as_inactive() -> None:
    state = SandboxState(SandboxConfig())
    grant = _grant(state, 1, interactive=False)
    old = _new_token(state, grant)
    new = rotate_token(state, old)
    # Rafiki answers the old value 403 "Inactive Token", so the sandbox must still know it.
    found = state.token_by_value(old.value)
    assert found is old and found.revoked and found.rotated
    assert state.token_by_value(new.value) is new
