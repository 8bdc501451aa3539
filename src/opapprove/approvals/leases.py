"""Who holds a grant's lease: one attempt, in one process, on one host.

A lease is taken per attempt (one finish delivery, one replay, one cancel), not per
process: two deliveries of one redirect to one listener are two attempts, and only one
of them may continue the grant. The lease records the holder's host and pid, so on the
same host a lease whose process is gone (killed, crashed) can be taken at once instead
of after it runs out. :func:`attempt` is the one way the flow holds one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from opapprove.approvals.backend import StoreError

if TYPE_CHECKING:
    from opapprove.approvals.store import Store


@cache
def this_host() -> str:
    return socket.gethostname() or "localhost"


@dataclass(frozen=True)
class Holder:
    """One attempt at driving a grant. ``id`` is unique to the attempt."""

    id: str
    host: str = field(default_factory=this_host)
    pid: int = field(default_factory=os.getpid)


def new_holder(prefix: str = "") -> Holder:
    token = uuid.uuid4().hex[:12]
    return Holder(f"{prefix}-{token}" if prefix else f"{os.getpid()}-{token}")


def process_gone(host: str | None, pid: int | None) -> bool:
    """True only when sure: the holder ran on this host and its process no longer runs.

    Another host's process, or a pid that exists (even one reused by an unrelated
    process), counts as alive: the lease then runs out by its time as before.
    """
    if host != this_host() or pid is None or pid <= 0 or pid == os.getpid():
        return False
    if os.name == "nt":
        return False  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists, but belongs to another user
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    # A killed child its parent has not reaped yet still answers kill(0); it runs no code.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the command name, which is in parentheses and may hold ')'.
    return stat[stat.rfind(")") + 1 :].split()[:1] == ["Z"]


# The leases this task's attempt holds, by grant id (an attempt may nest: re-approval).
_ATTEMPT: ContextVar[dict[str, Holder]] = ContextVar("opapprove_attempt", default={})  # noqa: B039
# Attempts running in this process: a 401 on continue is no crash while one is in flight.
_LIVE_ATTEMPTS: set[str] = set()


def current_attempt(pending_id: str) -> Holder | None:
    """The lease this task holds on the grant, if it is inside an attempt at it."""
    return _ATTEMPT.get().get(pending_id)


def attempt_running(holder_id: str) -> bool:
    """Whether the attempt ``holder_id`` runs in this process right now."""
    return holder_id in _LIVE_ATTEMPTS


@contextlib.asynccontextmanager
async def attempt(
    store: Store, pending_id: str, *, prefix: str, seconds: float, busy: Exception
) -> AsyncIterator[Holder]:
    """Hold the grant's lease for one attempt; raise ``busy`` if another attempt has it.

    Re-entrant within an attempt (a re-approval sets the grant up again under the lease
    it already holds); renewed while the attempt runs, so a slow wallet never lets a
    second attempt in beside a live one.
    """
    held = _ATTEMPT.get()
    if pending_id in held:
        yield held[pending_id]
        return
    holder = new_holder(prefix)
    if not store.acquire_lease(pending_id, holder, seconds):
        raise busy
    token = _ATTEMPT.set({**held, pending_id: holder})
    _LIVE_ATTEMPTS.add(holder.id)
    renewal = asyncio.create_task(_renew(store, pending_id, holder, seconds))
    try:
        yield holder
    finally:
        renewal.cancel()
        _LIVE_ATTEMPTS.discard(holder.id)
        _ATTEMPT.reset(token)
        store.release_lease(pending_id, holder)


async def _renew(store: Store, pending_id: str, holder: Holder, seconds: float) -> None:
    # Real time, not the flow's sleep: tests that skip the flow's waits must not spin here.
    while True:
        await asyncio.sleep(seconds / 3)
        try:
            if not store.acquire_lease(pending_id, holder, seconds):
                return  # taken over: the state machine's expected states still guard us
        except StoreError:
            return
