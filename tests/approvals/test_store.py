"""The SQLite store on a real file: schema, records, transitions, leases, cached grants."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from opapprove.approvals import sqlite_backend as store_module
from opapprove.approvals.ids import new_id
from opapprove.approvals.migrations import MIGRATIONS
from opapprove.approvals.records import PENDING_FIELDS, CachedGrant, Seller, State
from opapprove.approvals.store import PendingNotFound, StaleState, Store, StoreError
from opapprove.openpayments.redaction import redact_json as redact


def is_id(text: str) -> bool:
    """26 Crockford base32 characters whose first (the top of 48 bits of ms) is 0-7."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return len(text) == 26 and all(c in alphabet for c in text) and text[0] in "01234567"


class Clock:
    """A hand-moved clock, so ages and expiries are tested without sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_location: Path | str, clock: Clock) -> Iterator[Store]:
    """A new store on each backend in turn (SQLite, PostgreSQL)."""
    with Store(store_location, clock=clock) as s:
        yield s


def new_pending(store: Store, offer_id: str = "offer-1", **fields: object) -> str:
    return store.create_pending(
        seller_id="default-seller",
        offer_id=offer_id,
        buyer_wallet="https://ilp.test/buyer",
        amount="100.00",
        **fields,
    ).id


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- opening and schema ---------------------------------------------------------------------


def test_new_store_is_migrated_and_reopens_idempotently(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "op.db"
    with Store.open(path) as s:
        assert s.path == path
        assert s.schema_version() == len(MIGRATIONS)
        pid = new_pending(s)
    with Store.open(path) as s:
        assert s.schema_version() == len(MIGRATIONS)
        assert s.get_pending(pid) is not None
    tables = {
        row[0]
        for row in sqlite3.connect(path).execute(
            "SELECT name FROM sqlite_master WHERE type='table'"
        )
    }
    assert {"sellers", "pending", "events", "cached_grants", "webhook_deliveries"} <= tables


def test_an_empty_existing_file_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch(mode=0o644)
    with Store(path) as s:
        assert s.schema_version() == len(MIGRATIONS)
    assert mode(path) == 0o600


def test_file_and_sidecars_are_0600_and_wal_is_on(tmp_path: Path) -> None:
    path = tmp_path / "op.db"
    with Store(path) as s:
        new_pending(s)
        assert mode(path) == 0o600
        for suffix in ("-wal", "-shm"):
            sidecar = path.with_name(path.name + suffix)
            if sidecar.exists():
                assert mode(sidecar) == 0o600, suffix
        other = sqlite3.connect(path)
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        other.close()


def test_pending_table_has_a_column_per_field(tmp_path: Path) -> None:
    Store(tmp_path / "op.db").close()
    conn = sqlite3.connect(tmp_path / "op.db")
    columns = [row[1] for row in conn.execute("PRAGMA table_info(pending)")]
    conn.close()
    assert columns == list(PENDING_FIELDS)


def test_text_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not a database\n" * 100)
    before = digest(path)
    with pytest.raises(StoreError) as err:
        Store(path)
    text = str(err.value)
    assert str(path) in text and "not a SQLite database" in text and "\n" not in text
    assert digest(path) == before
    assert not path.with_name("notes.txt-wal").exists()


def test_damaged_sqlite_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(4080))
    before = digest(path)
    with pytest.raises(StoreError, match=r"damaged|not a SQLite"):
        Store(path)
    assert digest(path) == before


def test_someone_elses_sqlite_database_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(StoreError, match="some other program"):
        Store(path)
    assert digest(path) == before


def test_a_store_from_a_newer_opapprove_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "op.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="upgrade opapprove"):
        Store(path)


def test_a_failing_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "op.db"
    Store(path).close()
    broken = [*MIGRATIONS, ["CREATE TABLE half_done (a TEXT)", "THIS IS NOT SQL"]]
    monkeypatch.setattr(store_module, "MIGRATIONS", broken)
    with pytest.raises(StoreError, match="upgrading its schema"):
        Store(path)
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)
    with Store(path) as s:
        assert s.schema_version() == len(MIGRATIONS)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall() == []
    conn.close()


def test_a_directory_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        Store(tmp_path)


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    s = Store(tmp_path / "op.db")
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.get_pending("x")


# -- sellers --------------------------------------------------------------------------------


def seller(seller_id: str = "default-seller", key_id: str = "k1") -> Seller:
    return Seller(seller_id, "https://ilp.test/seller", key_id, "/keys/seller.key", 1.0)


def test_sellers_add_get_list_replace_remove(store: Store) -> None:
    assert store.get_seller("default-seller") is None
    store.add_seller(seller())
    store.add_seller(seller("another"))
    assert store.get_seller("default-seller") == seller()
    with pytest.raises(StoreError, match="already exists"):
        store.add_seller(seller(key_id="k2"))
    store.add_seller(seller(key_id="k2"), replace=True)
    assert store.get_seller("default-seller") == seller(key_id="k2")
    assert [s.id for s in store.list_sellers()] == ["another", "default-seller"]
    assert store.remove_seller("another") is True
    assert store.remove_seller("another") is False


# -- pending grants -------------------------------------------------------------------------


def test_create_and_get_round_trip_every_kind_of_field(store: Store, clock: Clock) -> None:
    quote = {"id": "https://rs.test/quotes/1", "debitAmount": {"value": "10000"}}
    p = store.create_pending(
        seller_id="s1",
        offer_id="o1",
        buyer_wallet="https://ilp.test/buyer",
        amount="100.00",
        quote=quote,
        poll=True,
        continue_wait=5,
        token_expires_at=12.5,
    )
    assert is_id(p.id)
    assert p.state == State.STARTED
    assert (p.created_at, p.updated_at, p.version, p.attempts) == (clock.now, clock.now, 1, 0)
    got = store.get_pending(p.id)
    assert got == p
    assert got is not None and got.quote == quote and got.poll is True and got.continue_wait == 5
    (event,) = store.events(p.id)
    assert (event.kind, event.from_state, event.to_state) == ("created", None, "started")
    assert event.data["offer_id"] == "o1"
    assert store.get_pending("01HZZNOSUCHPENDINGGRANT000") is None


def test_unknown_or_store_managed_fields_are_programming_errors(store: Store) -> None:
    with pytest.raises(TypeError, match="colour"):
        new_pending(store, colour="red")
    with pytest.raises(TypeError, match="state"):
        new_pending(store, state=State.PAYING)
    pid = new_pending(store)
    with pytest.raises(TypeError, match="colour"):
        store.update(pid, colour="red")
    with pytest.raises(TypeError, match="version"):
        store.transition(pid, State.FAILED, expect=State.STARTED, version=9)
    with pytest.raises(TypeError, match="state"):
        store.update(pid, state=State.FAILED)
    p = store.get_pending(pid)
    assert p is not None and p.version == 1 and p.state == State.STARTED


def test_list_filters_by_state_since_and_stuck(store: Store, clock: Clock) -> None:
    old = new_pending(store, "old")
    clock.advance(100)
    mid = new_pending(store, "mid")
    clock.advance(100)
    new = new_pending(store, "new")
    store.transition(mid, State.FAILED, expect=State.STARTED)
    clock.advance(1000)
    store.update(new, last_error=None)

    assert [p.id for p in store.list_pending()] == [old, mid, new]
    assert [p.id for p in store.list_pending(newest_first=True, limit=2)] == [new, mid]
    assert [p.id for p in store.list_pending(states=[State.FAILED])] == [mid]
    assert [p.id for p in store.list_pending(states=[State.STARTED, State.FAILED])] == [
        old,
        mid,
        new,
    ]
    assert store.list_pending(states=[]) == []
    assert [p.id for p in store.list_pending(since=clock.now - 1100)] == [mid, new]
    # old: started 1200 s ago, untouched -> stuck; mid is final; new was just updated.
    assert [p.id for p in store.list_pending(stuck_after=900)] == [old]
    assert [p.id for p in store.list_pending(stuck_after=900, now=clock.now + 1000)] == [old, new]
    assert store.list_pending(stuck_after=900, states=[State.FAILED]) == []


def test_transition_saves_fields_and_appends_one_event(store: Store, clock: Clock) -> None:
    pid = new_pending(store)
    clock.advance(5)
    p = store.transition(
        pid,
        State.INCOMING_CREATED,
        expect=State.STARTED,
        incoming_payment_url="https://rs.test/incoming-payments/1",
        incoming_payment={"id": "https://rs.test/incoming-payments/1"},
    )
    assert p.state == State.INCOMING_CREATED
    assert p.incoming_payment == {"id": "https://rs.test/incoming-payments/1"}
    assert (p.version, p.updated_at, p.created_at) == (2, clock.now, clock.now - 5)
    event = store.events(pid)[-1]
    assert (event.kind, event.from_state, event.to_state, event.at) == (
        "started->incoming_created",
        "started",
        "incoming_created",
        clock.now,
    )
    p = store.transition(
        pid,
        State.FAILED,
        expect=(State.QUOTE_CREATED, State.INCOMING_CREATED),
        event="failed",
        data={"why": "quote refused"},
    )
    assert p.state == State.FAILED and p.is_final
    last = store.events(pid)[-1]
    assert (last.kind, last.from_state, last.data) == (
        "failed",
        "incoming_created",
        {"why": "quote refused"},
    )
    assert len(store.events(pid)) == 3


def test_transition_from_the_wrong_state_changes_nothing(store: Store) -> None:
    pid = new_pending(store)
    store.transition(pid, State.INCOMING_CREATED, expect=State.STARTED)
    before = store.get_pending(pid)
    events_before = store.events(pid)
    with pytest.raises(StaleState) as err:
        store.transition(
            pid, State.INCOMING_CREATED, expect=State.STARTED, incoming_payment_url="https://x"
        )
    assert err.value.current == State.INCOMING_CREATED
    assert err.value.pending_id == pid
    assert "incoming_created" in str(err.value) and "\n" not in str(err.value)
    assert store.get_pending(pid) == before
    assert store.events(pid) == events_before


def test_unknown_pending_raises_not_found(store: Store) -> None:
    with pytest.raises(PendingNotFound) as err:
        store.transition("missing", State.FAILED, expect=State.STARTED)
    assert isinstance(err.value, StaleState) and err.value.current is None
    with pytest.raises(PendingNotFound):
        store.update("missing", last_error="x")
    with pytest.raises(PendingNotFound):
        store.record_error("missing", "x")
    with pytest.raises(PendingNotFound):
        store.add_event("missing", "note")
    with pytest.raises(PendingNotFound):
        store.acquire_lease("missing", "me", 10)


def test_update_changes_fields_not_state(store: Store, clock: Clock) -> None:
    pid = new_pending(store)
    clock.advance(3)
    p = store.update(pid, outgoing_payment={"id": "op1"}, event="refreshed", data={"n": 1})
    assert p.state == State.STARTED and p.outgoing_payment == {"id": "op1"}
    assert (p.version, p.updated_at) == (2, clock.now)
    event = store.events(pid)[-1]
    assert (event.kind, event.from_state, event.to_state, event.data) == (
        "refreshed",
        None,
        None,
        {"n": 1},
    )
    store.update(pid, outgoing_payment=None)
    assert len(store.events(pid)) == 2


def test_record_error_counts_attempts_and_keeps_the_grant_stuck(store: Store, clock: Clock) -> None:
    pid = new_pending(store)
    clock.advance(1000)
    store.record_error(pid, "wallet unreachable")
    store.record_error(pid, "wallet unreachable again")
    p = store.get_pending(pid)
    assert p is not None
    assert (p.last_error, p.attempts, p.updated_at) == ("wallet unreachable again", 2, p.created_at)
    assert [e.kind for e in store.events(pid)] == ["created", "error", "error"]
    assert [p.id for p in store.list_pending(stuck_after=900)] == [pid]


def test_events_keep_order_and_never_store_tokens(store: Store) -> None:
    pid = new_pending(store)
    store.add_event(pid, "grant", {"continue": {"access_token": {"value": "CONT-SECRET"}}})
    store.add_event(pid, "token", {"access_token": "TOKEN-SECRET", "manage": "https://m"})
    kinds = [e.kind for e in store.events(pid)]
    assert kinds == ["created", "grant", "token"]
    if isinstance(store.location, Path):
        wal = store.path.with_name(store.path.name + "-wal")
        raw = store.path.read_bytes() + wal.read_bytes()
    else:
        raw = str(
            store.backend.read(lambda c: c.execute("SELECT * FROM events").fetchall(), "")
        ).encode()
    assert b"CONT-SECRET" not in raw and b"TOKEN-SECRET" not in raw
    assert store.events(pid)[-1].data == {"access_token": "***", "manage": "https://m"}


# -- leases ---------------------------------------------------------------------------------


def test_leases_are_exclusive_until_they_expire(store: Store, clock: Clock) -> None:
    pid = new_pending(store)
    assert store.acquire_lease(pid, "listener", 60) is True
    assert store.acquire_lease(pid, "replay", 60) is False
    assert store.acquire_lease(pid, "listener", 60, now=clock.now + 30) is True  # extends
    assert store.acquire_lease(pid, "replay", 60, now=clock.now + 60) is False
    assert store.acquire_lease(pid, "replay", 60, now=clock.now + 90) is True  # expired
    store.release_lease(pid, "listener")  # not the holder any more: no-op
    p = store.get_pending(pid)
    assert p is not None and p.lease_holder == "replay"
    store.release_lease(pid, "replay")
    p = store.get_pending(pid)
    assert p is not None and (p.lease_holder, p.lease_until) == (None, None)
    assert store.acquire_lease(pid, "listener", 60) is True


# -- cached grants --------------------------------------------------------------------------


def grant(key: str = "k", value: str = "AT-1", expires_at: float | None = None) -> CachedGrant:
    return CachedGrant(
        key=key,
        auth_server="https://auth.test/",
        access_token=value,
        manage_url="https://auth.test/token/1",
        expires_at=expires_at,
        access=[{"type": "quote", "actions": ["create", "read"]}],
        created_at=1.0,
    )


def test_cached_grant_expires_with_margin(store: Store, clock: Clock) -> None:
    store.put_cached_grant(grant(expires_at=clock.now + 60))
    got = store.get_cached_grant("k")
    assert got == grant(expires_at=clock.now + 60)
    assert store.get_cached_grant("k", now=clock.now + 29) is not None
    assert store.get_cached_grant("k", now=clock.now + 30) is None
    assert store.get_cached_grant("k", now=clock.now + 50, margin=5) is not None
    clock.advance(45)
    assert store.get_cached_grant("k") is None
    assert store.get_cached_grant("nope") is None


def test_cached_grant_upsert_and_drop(store: Store, clock: Clock) -> None:
    store.put_cached_grant(grant(value="AT-1"))
    store.put_cached_grant(grant(value="AT-2"))
    got = store.get_cached_grant("k", now=clock.now + 10**9)
    assert got is not None and got.access_token == "AT-2"  # no expiry: good until dropped
    store.drop_cached_grant("k")
    store.drop_cached_grant("k")
    assert store.get_cached_grant("k") is None


# -- records --------------------------------------------------------------------------------


def test_reprs_redact_tokens(store: Store) -> None:
    pid = new_pending(store)
    p = store.update(
        pid,
        continue_token="CONT-SECRET",
        access_token="ACCESS-SECRET",
        incoming_payment={"access_token": "NESTED-SECRET"},
    )
    assert p.continue_token == "CONT-SECRET"
    for text in (repr(p), str(p), str(p.as_dict()), repr(grant(value="GRANT-SECRET"))):
        assert "SECRET" not in text
    assert p.as_dict()["continue_token"] == "***"
    assert p.as_dict(redact_secrets=False)["access_token"] == "ACCESS-SECRET"


def test_redact_handles_gnap_shapes() -> None:
    body = {
        "access_token": {"value": "A", "manage": "https://m", "access": []},
        "continue": {"access_token": {"value": "C"}, "uri": "https://c", "wait": 5},
        "list": [{"token": "T"}],
    }
    assert redact(body) == {
        "access_token": {"value": "***", "manage": "https://m", "access": []},
        "continue": {"access_token": {"value": "***"}, "uri": "https://c", "wait": 5},
        "list": [{"token": "***"}],
    }
    assert body["access_token"]["value"] == "A"  # type: ignore[index]


def test_ids_are_unique_sortable_and_url_safe() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(is_id(i) for i in ids)


def test_ids_follow_time() -> None:
    early, late = new_id(now=4_000_000_000.0), new_id(now=4_000_000_001.0)
    assert early < late and len(early) == 26


def test_wallet_documents_are_cached_for_a_while(tmp_path: Path) -> None:
    store = Store(tmp_path / "docs.db")
    doc = {"id": "https://w.example/a", "assetCode": "USD", "assetScale": 2}
    assert store.get_wallet_document(doc["id"], max_age=60, now=1000.0) is None
    store.put_wallet_document(doc["id"], doc, now=1000.0)
    assert store.get_wallet_document(doc["id"], max_age=60, now=1059.0) == doc
    assert store.get_wallet_document(doc["id"], max_age=60, now=1061.0) is None
    store.drop_wallet_document(doc["id"])
    assert store.get_wallet_document(doc["id"], max_age=60, now=1000.0) is None
    store.close()


def test_an_older_sqlite_without_returning_reads_the_row_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module._Connection, "returning", False)  # SQLite < 3.35
    with Store(tmp_path / "op.db") as store:
        pid = new_pending(store)
        moved = store.transition(pid, State.INCOMING_CREATED, expect=State.STARTED, quote_url="q")
        assert (moved.state, moved.quote_url, moved.version) == (State.INCOMING_CREATED, "q", 2)
        assert store.update(pid, last_error="x").version == 3
        with pytest.raises(PendingNotFound):
            store.update("nope", last_error="x")


def test_row_types_still_import_from_the_store_module_with_a_warning() -> None:
    from opapprove.approvals import records, store

    with pytest.warns(DeprecationWarning, match="opapprove.approvals.records"):
        from opapprove.approvals.store import Pending
    assert Pending is records.Pending
    with pytest.raises(AttributeError):
        store.NoSuchName  # noqa: B018
