"""`opapprove store migrate` and `store copy SRC DST` (SQLite -> PostgreSQL -> SQLite)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from opapprove.approvals.migrations import MIGRATIONS
from opapprove.approvals.records import CachedGrant, Seller, State
from opapprove.approvals.store import Store
from opapprove.approvals.store_copy import count_rows
from opapprove.approvals.store_idempotency import Claim
from tests.cli.conftest import Cli, one_error_line
from tests.postgres_server import PostgresServer


def _fill(location: Path | str) -> str:
    with Store(location) as store:
        store.add_seller(Seller("shop", "https://w.test/shop", "k1", "/keys/shop.pem", 1.0))
        pid = store.create_pending(
            seller_id="shop",
            offer_id="o-1",
            buyer_wallet="https://w.test/b",
            amount="2.50",
            claim=Claim("caller", "order-1", "hash"),
            quote={"id": "q"},
            poll=True,
        ).id
        store.transition(pid, State.INCOMING_CREATED, expect=State.STARTED, event="incoming")
        store.record_error(pid, "wallet timed out")
        store.add_webhook_delivery(pid, "approval.needed", '{"a":1}')
        store.put_cached_grant(CachedGrant("g", "https://auth", "AT", "https://m", None, [], 1.0))
        store.put_wallet_document("https://w.test/b", {"id": "https://w.test/b"}, now=5.0)
        return pid


def test_copy_to_postgresql_and_back_keeps_every_row(
    cli: Cli, tmp_path: Path, postgres: PostgresServer
) -> None:
    source = tmp_path / "source.db"
    pid = _fill(source)
    url = postgres.fresh_url()
    result = cli("--json", "store", "copy", str(source), url)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rows"] == {
        "sellers": 1,
        "pending": 1,
        "pendingLegs": 0,  # a split payment's legs (none here)
        "events": 3,
        "cachedGrants": 1,
        "webhookDeliveries": 1,
        "walletDocuments": 1,
        "idempotencyKeys": 1,  # a retried quote start still finds its grant after a copy
    }
    assert postgres.password not in result.stdout and ":***@" in data["destination"]

    back = tmp_path / "back.db"
    result = cli("store", "copy", url, str(back))
    assert result.exit_code == 0, result.output
    with Store(source) as a, Store(url) as b, Store(back) as c:
        for store in (b, c):
            assert store.get_pending(pid) == a.get_pending(pid)
            assert store.events(pid) == a.events(pid)
            assert store.webhook_deliveries() == a.webhook_deliveries()
            assert store.list_sellers() == a.list_sellers()
            assert count_rows(store) == count_rows(a)
            assert store.get_idempotency_key("caller", "order-1") == (
                a.get_idempotency_key("caller", "order-1")
            )
        # New rows are numbered after the copied ones.
        event = b.add_event(pid, "after_copy")
        assert event.id == max(e.id for e in a.events(pid)) + 1


def test_copy_into_a_store_that_is_not_empty_writes_nothing(
    cli: Cli, tmp_path: Path, postgres: PostgresServer
) -> None:
    source, url = tmp_path / "source.db", postgres.fresh_url()
    _fill(source)
    with Store(url) as store:
        store.create_pending(seller_id="x", offer_id="y", buyer_wallet="https://b", amount="1")
    before = count_rows(Store(url))
    result = cli("store", "copy", str(source), url)
    assert result.exit_code == 3
    assert "is not empty (1 pending, 1 events); nothing was copied" in one_error_line(result)
    with Store(url) as store:
        assert count_rows(store) == before


def test_copy_refuses_a_missing_source_and_a_bad_destination(cli: Cli, tmp_path: Path) -> None:
    result = cli("store", "copy", str(tmp_path / "nope.db"), str(tmp_path / "new.db"))
    assert result.exit_code == 2 and "no store file" in one_error_line(result)
    _fill(tmp_path / "s.db")
    result = cli("store", "copy", str(tmp_path / "s.db"), "mysql://u:pw@h/db")
    assert result.exit_code == 2 and "pw" not in one_error_line(result)
    assert not (tmp_path / "new.db").exists()


def test_migrate_says_from_which_version(cli: Cli, tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    for statement in [s for m in MIGRATIONS[:2] for s in m]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    result = cli("--store", str(old), "--json", "store", "migrate")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["fromVersion"], data["toVersion"]) == (2, len(MIGRATIONS))
    result = cli("--store", str(old), "store", "migrate")
    assert f"schema v{len(MIGRATIONS)}, the newest" in result.stdout


def test_migrate_a_postgresql_store(cli: Cli, postgres: PostgresServer) -> None:
    url = postgres.fresh_url()
    result = cli("--store", url, "--json", "store", "migrate")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["backend"], data["fromVersion"], data["toVersion"]) == (
        "postgresql",
        0,
        len(MIGRATIONS),
    )
    assert postgres.password not in result.stdout
