"""The sandbox's state: every record in memory behind one lock, mirrored to SQLite if asked.

It is also the operator's Python handle for in-process tests and the demo: approve a
pending interaction, read balances and payments, set faults and latency.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Unpack
from urllib.parse import urlsplit

from opapprove.openpayments.errors import KeyLoadError
from opapprove.openpayments.keys import Jwk
from opapprove.servers.sandbox.config import AccountConfig, SandboxConfig
from opapprove.servers.sandbox.errors import SandboxError
from opapprove.servers.sandbox.faults import FaultBook, FaultRule, FaultSpec, parse_rule
from opapprove.servers.sandbox.records import (
    AccessToken,
    Account,
    Grant,
    IncomingPayment,
    OutgoingPayment,
    Quote,
    Record,
    RegisteredKey,
    from_data,
)
from opapprove.servers.sandbox.replays import ReplayGuard
from opapprove.servers.sandbox.storage import SqliteStorage


class SandboxState:
    def __init__(self, config: SandboxConfig) -> None:
        config.validate()
        self.config = config
        # Re-entrant: an operation holding it may call helpers that take it too.
        self.lock = threading.RLock()
        self.accounts: dict[str, Account] = {}
        # Write grants and tokens through add_grant / add_token / drop_token: they keep the
        # indexes below, so a lookup stays O(1) however many flows a sandbox has served.
        self.grants: dict[str, Grant] = {}
        self.tokens: dict[str, AccessToken] = {}  # by management id
        self._token_ids: dict[str, str] = {}  # token value -> management id
        self._continue_ids: dict[str, str] = {}  # continue id -> grant id
        self._interaction_ids: dict[str, str] = {}  # interact id -> grant id
        self.incoming: dict[str, IncomingPayment] = {}
        self.quotes: dict[str, Quote] = {}
        self.outgoing: dict[str, OutgoingPayment] = {}
        # Keys registered while running (add_key), by wallet name, in the order added.
        self.added_keys: dict[str, list[Jwk]] = {}
        self.faults = FaultBook()
        self.replays = ReplayGuard()
        # Browser sessions of the interaction front channel: cookie value -> interact id.
        self.sessions: dict[str, str] = {}
        # How many of the next payments to settle fail instead (operator fault).
        self.failing_payments = 0
        self.unsettled: set[str] = set()  # ids of outgoing payments not yet sent
        self.latency = float(config.latency)
        self._seq = 0
        self._storage = SqliteStorage(config.state_path) if config.state_path else None
        if self._storage is not None:
            self._load(self._storage.load())
        fresh = []
        for acct in config.accounts:
            if acct.name not in self.accounts:
                self.accounts[acct.name] = Account(id=acct.name, balance=acct.balance)
                fresh.append(self.accounts[acct.name])
        self.commit(*fresh)
        for route, spec in config.faults.items():
            self.faults.set(parse_rule(route, spec))

    def _load(self, rows: dict[str, list[dict[str, Any]]]) -> None:
        for data in rows.get(Account.kind, []):
            self.accounts[data["id"]] = from_data(Account, data)
        for data in rows.get(Grant.kind, []):
            self.add_grant(from_data(Grant, data))
        for data in rows.get(AccessToken.kind, []):
            self.add_token(from_data(AccessToken, data))
        for data in rows.get(IncomingPayment.kind, []):
            self.incoming[data["id"]] = from_data(IncomingPayment, data)
        for data in rows.get(Quote.kind, []):
            self.quotes[data["id"]] = from_data(Quote, data)
        for data in rows.get(OutgoingPayment.kind, []):
            payment = from_data(OutgoingPayment, data)
            self.outgoing[payment.id] = payment
            if payment.settle_at is not None:
                self.unsettled.add(payment.id)
        for data in rows.get(RegisteredKey.kind, []):
            record = from_data(RegisteredKey, data)
            if self.account_config(record.wallet) is None:
                continue
            # A key configured at start (--key, the seller's) wins over one kept from before.
            if any(k.kid == record.jwk.get("kid") for k in self.keys_for(record.wallet)):
                continue
            self.added_keys.setdefault(record.wallet, []).append(Jwk.from_dict(record.jwk))
        seqs = [p.seq for p in self.incoming.values()] + [p.seq for p in self.outgoing.values()]
        self._seq = max(seqs, default=0)

    # ------------------------------------------------------------------ plumbing

    def now(self) -> float:
        return self.config.clock()

    def next_seq(self) -> int:
        with self.lock:
            self._seq += 1
            return self._seq

    def commit(self, *records: Record, deleted: Iterable[Record] = ()) -> None:
        """Write changed records (already changed in memory) to SQLite in one transaction."""
        if self._storage is not None:
            with self.lock:
                self._storage.write(records, [(r.kind, r.id) for r in deleted])

    def close(self) -> None:
        if self._storage is not None:
            with self.lock:
                self._storage.close()
                self._storage = None

    def account_config(self, name: str) -> AccountConfig | None:
        return next((a for a in self.config.accounts if a.name == name), None)

    def keys_for(self, name: str) -> list[Jwk]:
        """The keys wallet ``name`` publishes: configured ones, then those added since."""
        with self.lock:
            return self.config.keys_for(name) + list(self.added_keys.get(name, ()))

    def add_grant(self, grant: Grant) -> None:
        """Store a new grant (its continue and interaction ids never change afterwards)."""
        with self.lock:
            self.grants[grant.id] = grant
            self._continue_ids[grant.continue_id] = grant.id
            if grant.interact_id is not None:
                self._interaction_ids[grant.interact_id] = grant.id

    def add_token(self, token: AccessToken) -> None:
        with self.lock:
            self.tokens[token.id] = token
            self._token_ids[token.value] = token.id

    def drop_token(self, token: AccessToken) -> None:
        with self.lock:
            self.tokens.pop(token.id, None)
            self._token_ids.pop(token.value, None)

    def token_by_value(self, value: str) -> AccessToken | None:
        token = self.tokens.get(self._token_ids.get(value, ""))
        return token if token is not None and token.value == value else None

    def grant_by_continue_id(self, continue_id: str) -> Grant | None:
        grant = self.grants.get(self._continue_ids.get(continue_id, ""))
        return grant if grant is not None and grant.continue_id == continue_id else None

    def grant_by_interaction(self, interact_id: str) -> Grant | None:
        grant = self.grants.get(self._interaction_ids.get(interact_id, ""))
        return grant if grant is not None and grant.interact_id == interact_id else None

    # ------------------------------------------------------------------ operator API

    def approve(self, redirect_url: str, reject: bool = False) -> str:
        """Do what a person's click on the consent page does; return the client's finish URL.

        The URL is returned, not fetched. It is ``""`` for a grant that asked for no finish
        redirect (the client polls instead).
        """
        from opapprove.servers.sandbox.grants import decide_interaction

        path = urlsplit(redirect_url).path.rstrip("/").split("/")
        if len(path) < 4 or path[-3] != "interact":
            raise SandboxError(
                f"{redirect_url!r} is not an interaction URL ({{public}}/interact/{{id}}/{{nonce}})"
            )
        decision = decide_interaction(self, path[-2], path[-1], accept=not reject)
        return decision.finish_url or ""

    def add_key(self, wallet_name: str, jwk: dict[str, Any] | Jwk) -> tuple[list[str], bool]:
        """Publish a public JWK on a wallet's JWKS from now on (kept with ``--state``).

        Returns the wallet's key ids and whether the key is new; adding the same key again
        changes nothing. Refuses a private key, a malformed JWK, an unknown wallet, and a key
        id already taken by a different key.
        """
        if isinstance(jwk, dict) and "d" in jwk:
            raise SandboxError(
                "that JWK holds a private key ('d'): register only the public JWK "
                "(`opapprove seller keygen` prints it)"
            )
        try:
            key = jwk if isinstance(jwk, Jwk) else Jwk.from_dict(jwk)
        except KeyLoadError as exc:
            raise SandboxError(f"not a usable public JWK: {exc}") from exc
        with self.lock:
            if self.account_config(wallet_name) is None:
                names = ", ".join(a.name for a in self.config.accounts)
                raise SandboxError(
                    f"no wallet {wallet_name!r} on this sandbox (it has {names})", status=404
                )
            existing = self.keys_for(wallet_name)
            same_kid = next((k for k in existing if k.kid == key.kid), None)
            if same_kid is not None and same_kid.x == key.x:
                return [k.kid for k in existing], False
            if same_kid is not None:
                raise SandboxError(
                    f"wallet {wallet_name!r} already publishes a different key with id "
                    f"{key.kid!r}: give the new key another id",
                    status=409,
                )
            self.added_keys.setdefault(wallet_name, []).append(key)
            self.commit(
                RegisteredKey(id=f"{wallet_name}/{key.kid}", wallet=wallet_name, jwk=key.to_dict())
            )
            return [k.kid for k in existing] + [key.kid], True

    def balance(self, name: str) -> int:
        with self.lock:
            self.settle_due()
            account = self.accounts.get(name)
            if account is None:
                raise SandboxError(f"no account {name!r}", status=404)
            return account.balance

    def accounts_summary(self) -> list[dict[str, Any]]:
        with self.lock:
            self.settle_due()
            out = []
            for acct in self.config.accounts:
                out.append(
                    {
                        "name": acct.name,
                        "publicName": acct.public_name,
                        "assetCode": acct.asset_code,
                        "assetScale": acct.asset_scale,
                        "balance": self.accounts[acct.name].balance,
                        "keyIds": [k.kid for k in self.keys_for(acct.name)],
                    }
                )
            return out

    def incoming_payments(self) -> list[IncomingPayment]:
        with self.lock:
            self.settle_due()
            return sorted(self.incoming.values(), key=lambda p: p.seq)

    def outgoing_payments(self) -> list[OutgoingPayment]:
        with self.lock:
            self.settle_due()
            return sorted(self.outgoing.values(), key=lambda p: p.seq)

    def settle_due(self) -> None:
        """Send (or fail) the outgoing payments that are due (``settlement``)."""
        from opapprove.servers.sandbox.settlement import settle_due

        settle_due(self)

    def fail_next_payments(self, count: int = 1) -> None:
        """Make the next ``count`` outgoing payments fail when they settle."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise SandboxError(f"count {count!r} must be an integer >= 0")
        with self.lock:
            self.failing_payments = count

    def set_fault(self, route: str, **spec: Unpack[FaultSpec]) -> FaultRule:
        rule = parse_rule(route, {k: v for k, v in spec.items() if v is not None})
        self.faults.set(rule)
        return rule

    def clear_faults(self) -> None:
        self.faults.clear()

    def set_latency(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise SandboxError(f"latency {seconds!r} must be a number of seconds >= 0")
        self.latency = float(seconds)
