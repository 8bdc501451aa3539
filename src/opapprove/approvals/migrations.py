"""The store's schema, as an append-only list of migrations.

``PRAGMA user_version`` is the number of migrations applied. Never edit a migration
that has shipped: append a new one. Each is a list of single statements because
``executescript`` would commit the surrounding transaction.
"""

from __future__ import annotations

# 'opAp' in ASCII: marks a SQLite file as an opapprove store (PRAGMA application_id).
APPLICATION_ID = 0x6F704170

_V1 = [
    f"PRAGMA application_id = {APPLICATION_ID}",
    """CREATE TABLE sellers (
        id TEXT PRIMARY KEY,
        wallet_address_url TEXT NOT NULL,
        key_id TEXT NOT NULL,
        private_key_path TEXT NOT NULL,
        created_at REAL NOT NULL
    )""",
    # No foreign key to sellers: a seller may come from settings instead of this table.
    """CREATE TABLE pending (
        id TEXT PRIMARY KEY,
        seller_id TEXT NOT NULL,
        offer_id TEXT NOT NULL,
        buyer_wallet TEXT NOT NULL,
        amount TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        version INTEGER NOT NULL DEFAULT 1,
        seller_wallet TEXT,
        buyer_doc TEXT,
        seller_doc TEXT,
        incoming_payment_url TEXT,
        incoming_payment TEXT,
        quote_url TEXT,
        quote TEXT,
        debit_amount TEXT,
        receive_amount TEXT,
        grant_url TEXT,
        client_nonce TEXT,
        finish_uri TEXT,
        poll INTEGER NOT NULL DEFAULT 0,
        interact_redirect TEXT,
        server_finish_nonce TEXT,
        continue_uri TEXT,
        continue_token TEXT,
        continue_wait INTEGER,
        interact_ref TEXT,
        access_token TEXT,
        token_manage_url TEXT,
        token_expires_at REAL,
        outgoing_payment_url TEXT,
        outgoing_payment TEXT,
        approval_expires_at REAL,
        last_error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_holder TEXT,
        lease_until REAL
    )""",
    "CREATE INDEX pending_state_updated ON pending (state, updated_at)",
    "CREATE INDEX pending_created ON pending (created_at)",
    "CREATE INDEX pending_offer ON pending (seller_id, offer_id)",
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        pending_id TEXT NOT NULL REFERENCES pending (id) ON DELETE CASCADE,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT,
        data TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX events_pending ON events (pending_id, id)",
    """CREATE TABLE cached_grants (
        key TEXT PRIMARY KEY,
        auth_server TEXT NOT NULL,
        access_token TEXT NOT NULL,
        manage_url TEXT NOT NULL,
        expires_at REAL,
        access TEXT NOT NULL,
        created_at REAL NOT NULL
    )""",
    """CREATE TABLE webhook_deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        pending_id TEXT REFERENCES pending (id) ON DELETE CASCADE,
        event_type TEXT NOT NULL,
        body TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        delivered_at REAL,
        last_error TEXT,
        created_at REAL NOT NULL
    )""",
    "CREATE INDEX webhook_deliveries_undelivered ON webhook_deliveries (delivered_at, created_at)",
]

# v2: wallet address documents, so a new process can skip refetching them (quote start warm).
_V2 = [
    """CREATE TABLE wallet_documents (
        url TEXT PRIMARY KEY,
        document TEXT NOT NULL,
        fetched_at REAL NOT NULL
    )""",
]

# v3: a lease names the host and pid of its holder, so a dead holder's lease is taken at once.
_V3 = [
    "ALTER TABLE pending ADD COLUMN lease_host TEXT",
    "ALTER TABLE pending ADD COLUMN lease_pid INTEGER",
]

# v4: a webhook delivery being sent is held by its sender until then, so a sweep in another
# process (``pending replay``) does not send it a second time meanwhile.
_V4 = [
    "ALTER TABLE webhook_deliveries ADD COLUMN sending_until REAL",
]

# v5: split payments (one approval, several sellers): a grant's legs, one row per seller.
_V5 = [
    "ALTER TABLE pending ADD COLUMN leg_count INTEGER NOT NULL DEFAULT 0",
    """CREATE TABLE pending_legs (
        pending_id TEXT NOT NULL REFERENCES pending (id) ON DELETE CASCADE,
        leg INTEGER NOT NULL,
        seller_id TEXT NOT NULL,
        seller_wallet TEXT NOT NULL,
        amount TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        version INTEGER NOT NULL DEFAULT 1,
        seller_doc TEXT,
        incoming_payment_url TEXT,
        incoming_payment TEXT,
        quote_url TEXT,
        quote TEXT,
        debit_amount TEXT,
        receive_amount TEXT,
        outgoing_payment_url TEXT,
        outgoing_payment TEXT,
        last_error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (pending_id, leg)
    )""",
]

# v6: ``listen --api``'s Idempotency-Key: a key names the grant its first request stored (in
# that grant's transaction), and once the request is answered, that answer, for 24 hours.
_V6 = [
    """CREATE TABLE idempotency_keys (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        pending_id TEXT NOT NULL REFERENCES pending (id) ON DELETE CASCADE,
        status INTEGER,
        answer TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (scope, key)
    )""",
    "CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at)",
    "CREATE INDEX idempotency_keys_pending ON idempotency_keys (pending_id)",
]

MIGRATIONS: list[list[str]] = [_V1, _V2, _V3, _V4, _V5, _V6]
