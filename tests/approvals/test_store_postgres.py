"""The PostgreSQL store on a real server: bad input is one clear line, drops are survived."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from opapprove.approvals import migrations as sqlite_migrations
from opapprove.approvals import postgres_migrations
from opapprove.approvals.postgres_backend import PostgresBackend
from opapprove.approvals.records import State
from opapprove.approvals.store import Store, StoreError
from tests.approvals.conftest import make_kit
from tests.approvals.crash_support import payments_by_pending
from tests.postgres_server import PostgresServer


def _columns_sqlite(tmp_path: Path) -> dict[str, list[str]]:
    Store(tmp_path / "op.db").close()
    conn = sqlite3.connect(tmp_path / "op.db")
    try:
        return {
            table: [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            for table in postgres_migrations.TABLES
        }
    finally:
        conn.close()


def test_both_schemas_have_the_same_versions_tables_and_columns(
    tmp_path: Path, postgres_url: str
) -> None:
    assert len(postgres_migrations.MIGRATIONS) == len(sqlite_migrations.MIGRATIONS)
    with Store(postgres_url) as store:
        assert store.schema_version() == len(sqlite_migrations.MIGRATIONS)
        found = store.backend.read(
            lambda c: c.execute(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() ORDER BY ordinal_position"
            ).fetchall(),
            "",
        )
    columns: dict[str, list[str]] = {}
    for row in found:
        columns.setdefault(row["table_name"], []).append(row["column_name"])
    assert {t: columns[t] for t in postgres_migrations.TABLES} == _columns_sqlite(tmp_path)


def test_reopening_is_idempotent_and_keeps_rows(postgres_url: str) -> None:
    with Store(postgres_url) as store:
        pid = store.create_pending(
            seller_id="s", offer_id="o", buyer_wallet="https://b", amount="1"
        ).id
    with Store(postgres_url) as again:
        assert again.get_pending(pid) is not None
        assert isinstance(again.backend, PostgresBackend)
        assert again.backend.migrated_from == len(postgres_migrations.MIGRATIONS)


def _one_line(exc: StoreError, secret: str) -> str:
    text = str(exc)
    assert "\n" not in text and secret not in text and " — " in text, text
    return text


def test_wrong_password_is_one_line_without_it(postgres: PostgresServer) -> None:
    with pytest.raises(StoreError) as err:
        Store(postgres.url(password="not-the-password"))
    text = _one_line(err.value, "not-the-password")
    assert "wrong user or password" in text and ":***@" in text


def test_a_missing_database_says_how_to_create_it(postgres: PostgresServer) -> None:
    with pytest.raises(StoreError) as err:
        Store(postgres.url("no_such_db"))
    assert "createdb" in _one_line(err.value, postgres.password)


def test_another_programs_database_is_left_untouched(postgres: PostgresServer) -> None:
    url = postgres.fresh_url()
    with Store(url) as store:  # only to get at a connection in that schema
        store.backend.write(lambda c: c.execute("DROP TABLE opapprove_meta"), "")
        store.backend.write(lambda c: c.execute("CREATE TABLE orders (id INT)"), "")
    with pytest.raises(StoreError) as err:
        Store(url)
    text = _one_line(err.value, postgres.password)
    assert "another program" in text and "search_path" in text


def test_a_store_from_a_newer_opapprove_is_refused(postgres_url: str) -> None:
    with Store(postgres_url) as store:
        store.backend.write(
            lambda c: c.execute(
                "UPDATE opapprove_meta SET value = '99' WHERE key = 'schema_version'"
            ),
            "",
        )
    with pytest.raises(StoreError, match="schema version 99, newer than this opapprove"):
        Store(postgres_url)


def test_a_dropped_connection_is_reopened_and_the_write_goes_through(
    postgres: PostgresServer, postgres_url: str
) -> None:
    with Store(postgres_url) as store:
        pid = store.create_pending(
            seller_id="s", offer_id="o", buyer_wallet="https://b", amount="1"
        ).id
        postgres.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'opapprove' AND pid <> pg_backend_pid()"
        )
        moved = store.transition(pid, State.INCOMING_CREATED, expect=State.STARTED)
        assert moved.state == State.INCOMING_CREATED and moved.version == 2


def test_a_server_restart_mid_flow_is_survived(postgres: PostgresServer, postgres_url: str) -> None:
    with Store(postgres_url) as store:
        pid = store.create_pending(
            seller_id="s", offer_id="o", buyer_wallet="https://b", amount="1"
        ).id
        postgres.restart()
        store.transition(pid, State.INCOMING_CREATED, expect=State.STARTED)
        assert [e.kind for e in store.events(pid)] == ["created", "started->incoming_created"]


def test_a_user_without_privileges_gets_one_line(
    postgres: PostgresServer, postgres_url: str
) -> None:
    Store(postgres_url).close()
    schema = postgres_url.rsplit("%3D", 1)[1]
    database = postgres_url.split("/")[-1].split("?")[0]
    postgres.admin("DROP ROLE IF EXISTS reader")
    postgres.admin("CREATE ROLE reader LOGIN PASSWORD 'reader-pw'")
    postgres.admin(f"GRANT USAGE ON SCHEMA {schema} TO reader", database=database)
    postgres.admin(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO reader", database=database)
    url = postgres_url.replace(f"postgres:{postgres.password}@", "reader:reader-pw@")
    with Store(url) as store:
        assert store.list_pending() == []
        missing = store.backend.privileges()  # type: ignore[attr-defined]
        assert missing["pending"] == ["INSERT", "UPDATE", "DELETE"]
        with pytest.raises(StoreError) as err:
            store.create_pending(seller_id="s", offer_id="o", buyer_wallet="https://b", amount="1")
    assert "may not" in _one_line(err.value, "reader-pw")


@pytest.mark.anyio
async def test_a_flow_carries_on_across_a_server_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres: PostgresServer, postgres_url: str
) -> None:
    kit = make_kit(tmp_path, monkeypatch, store_at=postgres_url)
    try:
        pending = await kit.flow.start_quote(
            offer_id="offer-1", buyer_wallet=kit.sandbox.buyer, amount="1.00"
        )
        postgres.restart()  # every connection drops; the next write opens a new one
        done = await kit.flow.finish_url(kit.finish_url(pending.interact_redirect))
        assert done.state == State.COMPLETED
        assert payments_by_pending(kit.sandbox.state) == {pending.id: 1}
    finally:
        await kit.flow.aclose()
        kit.store.close()
        kit.sandbox.state.close()


def test_a_transition_dropped_with_no_word_from_the_server_is_not_run_again(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transition is one statement on PostgreSQL, sent without BEGIN: a connection lost
    while it was on its way leaves it unknown whether it committed. That is said in one
    line; it is not sent again (it did commit here)."""
    import psycopg

    from opapprove.approvals.postgres_backend import PostgresTx

    with Store(postgres_url) as store:
        pid = store.create_pending(
            seller_id="s", offer_id="o", buyer_wallet="https://b", amount="1"
        ).id
        real = PostgresTx.execute
        sent: list[str] = []

        def execute(tx: PostgresTx, sql: str, params: Any = ()) -> Any:
            cursor = real(tx, sql, params)
            if sql.startswith("WITH old AS"):
                sent.append(sql)
                tx.conn.pgconn.finish()  # the answer is lost with the connection
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return cursor

        monkeypatch.setattr(PostgresTx, "execute", execute)
        with pytest.raises(StoreError) as err:
            store.transition(pid, State.INCOMING_CREATED, expect=State.STARTED)
        monkeypatch.undo()
        assert "may or may not be saved" in str(err.value) and len(sent) == 1
        moved = store.get_pending(pid)
        assert moved is not None and moved.state == State.INCOMING_CREATED
        assert [e.kind for e in store.events(pid)] == ["created", "started->incoming_created"]
