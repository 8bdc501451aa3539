"""``run_checks`` against a live sandbox on loopback, and against things that are broken."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from opapprove.approvals.records import Seller
from opapprove.approvals.store import Store
from opapprove.diagnostics.doctor import Check, _Doctor, run_checks, worst
from opapprove.paths import store_location
from tests.diagnostics.conftest import OTHER_KID, Live, closed_port_url
from tests.postgres_server import PostgresServer

ALL = [
    "config",
    "store",
    "seller",
    "key file",
    "wallet address",
    "auth server",
    "resource server",
    "key published",
    "clock",
]


def by_name(checks: list[Check]) -> dict[str, Check]:
    names = [c.name for c in checks]
    assert len(names) == len(set(names)), names
    return {c.name: c for c in checks}


def assert_one_line(checks: list[Check]) -> None:
    for check in checks:
        assert check.message and "\n" not in check.message, check
        if check.status == "pass":
            assert check.hint is None
        else:
            assert check.hint and "\n" not in check.hint, check


def test_everything_passes_against_a_live_sandbox(live: Live, tmp_path: Path) -> None:
    settings = live.settings(tmp_path)
    checks = run_checks(settings, settings.store, None)
    assert [c.name for c in checks] == ALL
    assert [c.status for c in checks] == ["pass"] * len(ALL), checks
    assert worst(checks) == "pass"
    assert_one_line(checks)
    found = by_name(checks)
    assert f"{live.url}/auth" in found["auth server"].message
    assert live.sandbox.key_id in found["key published"].message
    assert "was created" in found["store"].message
    # A second run finds the store it made, opens it and passes again.
    again = by_name(run_checks(settings, settings.store, None))
    assert again["store"].status == "pass" and "opens" in again["store"].message


def test_a_key_id_missing_from_the_jwks_fails(live: Live, tmp_path: Path) -> None:
    settings = live.settings(tmp_path, seller_key_id="not-published")
    checks = run_checks(settings, settings.store, None)
    published = by_name(checks)["key published"]
    assert published.status == "fail"
    assert "'not-published' is not in" in published.message
    assert live.sandbox.key_id in published.message and OTHER_KID in published.message
    assert published.hint and "seller show" in published.hint
    assert worst(checks) == "fail"
    assert_one_line(checks)


def test_a_published_jwk_of_another_key_fails(live: Live, tmp_path: Path) -> None:
    settings = live.settings(tmp_path, seller_key_id=OTHER_KID)
    published = by_name(run_checks(settings, settings.store, None))["key published"]
    assert published.status == "fail" and "is not the public key of" in published.message


def test_a_key_file_others_can_read_warns(live: Live, tmp_path: Path) -> None:
    key_path = tmp_path / "open.pem"
    key_path.write_bytes(live.key_path.read_bytes())
    key_path.chmod(0o644)
    settings = live.settings(tmp_path, seller_private_key_path=key_path)
    checks = run_checks(settings, settings.store, None)
    key_file = by_name(checks)["key file"]
    assert key_file.status == "warn" and "0o644" in key_file.message
    assert key_file.hint == f"chmod 600 {key_path}"
    assert worst(checks) == "warn"
    assert by_name(checks)["key published"].status == "pass"  # the key itself is fine


def test_a_key_file_that_holds_no_key_fails(live: Live, tmp_path: Path) -> None:
    key_path = tmp_path / "junk.pem"
    key_path.write_text("not a key\n")
    settings = live.settings(tmp_path, seller_private_key_path=key_path)
    checks = by_name(run_checks(settings, settings.store, None))
    assert checks["key file"].status == "fail" and checks["key file"].kind == "key"
    assert "key published" not in checks  # nothing to compare the JWK with
    assert checks["wallet address"].status == "pass"


def test_an_unreachable_wallet_fails_and_stops_there(live: Live, tmp_path: Path) -> None:
    settings = live.settings(tmp_path, seller_wallet_address_url=closed_port_url("/shop"))
    checks = run_checks(settings, settings.store, None)
    found = by_name(checks)
    assert found["wallet address"].status == "fail"
    assert found["wallet address"].kind == "transport"
    assert "cannot connect" in (found["wallet address"].hint or "")
    assert [c.name for c in checks] == ALL[:5]
    assert worst(checks) == "fail"


def test_an_unknown_wallet_address_fails_as_refused(live: Live, tmp_path: Path) -> None:
    settings = live.settings(tmp_path, seller_wallet_address_url=f"{live.url}/nobody")
    wallet = by_name(run_checks(settings, settings.store, None))["wallet address"]
    assert wallet.status == "fail" and wallet.kind == "wallet" and "404" in wallet.message


@pytest.mark.parametrize(("offset", "word"), [(-3600.0, "behind"), (7200.0, "ahead of")])
def test_clock_skew_against_the_date_header_warns(
    live: Live, tmp_path: Path, offset: float, word: str
) -> None:
    settings = live.settings(tmp_path)
    checks = run_checks(settings, settings.store, None, clock=lambda: time.time() + offset)
    clock = by_name(checks)["clock"]
    assert clock.status == "warn" and clock.kind == "clock"
    assert word in clock.message and "NTP" in (clock.hint or "")
    assert worst(checks) == "warn"


def test_a_store_that_is_not_a_store_fails(live: Live, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("my shopping list\n")
    settings = live.settings(tmp_path, store=bogus)
    checks = by_name(run_checks(settings, bogus, None))
    assert checks["store"].status == "fail" and checks["store"].kind == "store"
    assert "not an opapprove store" in checks["store"].message
    assert bogus.read_text() == "my shopping list\n"  # left untouched
    # The config's seller does not need the store: its checks still run.
    assert checks["seller"].status == "pass" and checks["key published"].status == "pass"


def test_a_store_others_can_read_warns(live: Live, tmp_path: Path) -> None:
    settings = live.settings(tmp_path)
    Store(settings.store).close()
    settings.store.chmod(0o644)
    store = by_name(run_checks(settings, settings.store, None))["store"]
    assert store.status == "warn" and "access tokens" in store.message


def test_no_seller_at_all_fails_and_stops(tmp_path: Path) -> None:
    from opapprove.settings import load_settings

    settings = load_settings(store=tmp_path / "op.db")
    checks = run_checks(settings, settings.store, None)
    assert [c.name for c in checks] == ["config", "store", "seller"]
    seller = checks[-1]
    assert seller.status == "fail" and "Configure wallet address first" in seller.message
    assert seller.hint and "seller add" in seller.hint


def test_a_named_seller_from_the_store_is_checked(live: Live, tmp_path: Path) -> None:
    settings = live.settings(tmp_path, seller_key_id="not-published")
    with Store(settings.store) as store:
        store.add_seller(
            Seller("shop", live.seller, live.sandbox.key_id, str(live.key_path), created_at=0.0)
        )
    checks = by_name(run_checks(settings, settings.store, "shop"))
    assert "'shop'" in checks["seller"].message
    assert checks["key published"].status == "pass"
    unknown = by_name(run_checks(settings, settings.store, "nope"))["seller"]
    assert unknown.status == "fail" and "unknown seller 'nope'" in unknown.message


def test_config_problems_warn(live: Live, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('api_token = "s3cret-token"\n')
    config.chmod(0o644)
    from opapprove.settings import load_settings

    settings = load_settings(
        config,
        store=tmp_path / "op.db",
        allow_http=True,
        base_url="http://shop.example:3999",
        seller_wallet_address_url=live.seller,
        seller_key_id=live.sandbox.key_id,
        seller_private_key_path=live.key_path,
    )
    config_check = by_name(run_checks(settings, settings.store, None))["config"]
    assert config_check.status == "warn"
    for words in ("api_token", "allow_http", "base_url"):
        assert words in config_check.message
    assert "s3cret-token" not in config_check.message
    assert f"chmod 600 {config}" in (config_check.hint or "")


def test_a_failing_auth_server_warns(live: Live, tmp_path: Path) -> None:
    settings = live.settings(tmp_path)
    live.sandbox.state.set_fault("GET /auth", status=503, times=1)
    try:
        auth = by_name(run_checks(settings, settings.store, None))["auth server"]
    finally:
        live.sandbox.state.clear_faults()
    assert auth.status == "warn" and "503" in auth.message


def test_a_postgresql_store_is_checked_without_showing_its_password(
    live: Live, tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.fresh_url()
    settings = live.settings(tmp_path, store=url)
    found = by_name(run_checks(settings, settings.store, None))
    store = found["store"]
    assert store.status == "pass" and "connects (PostgreSQL)" in store.message, store
    assert postgres.password not in store.message and ":***@" in store.message
    assert found["seller"].status == "pass"
    # A user who may only read: named as a failure, with what to grant.
    schema = url.rsplit("%3D", 1)[1]
    database = url.split("/")[-1].split("?")[0]
    postgres.admin("DROP ROLE IF EXISTS doctor_reader")
    postgres.admin("CREATE ROLE doctor_reader LOGIN PASSWORD 'doc-pw'")
    postgres.admin(f"GRANT USAGE ON SCHEMA {schema} TO doctor_reader", database=database)
    postgres.admin(
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO doctor_reader", database=database
    )
    reader = url.replace(f"postgres:{postgres.password}@", "doctor_reader:doc-pw@")
    store = _store_check(settings, reader)
    assert store.status == "fail" and "lacks" in store.message and "GRANT" in (store.hint or "")
    assert "doc-pw" not in store.message
    # A server that is not there: one line, no password.
    dead = _store_check(settings, "postgresql://u:hidden@127.0.0.1:1/x")
    assert dead.status == "fail" and "cannot reach" in dead.message and "hidden" not in dead.message


def _store_check(settings: Any, location: str) -> Check:
    """Only doctor's store check (the others would ask the sandbox again)."""
    doctor = _Doctor(settings, store_location(location), None, None, time.time)
    doctor.check_store_and_seller()
    return by_name(doctor.checks)["store"]
