"""Who holds a grant's lease: one attempt, in one process, on one host.

A lease is taken per attempt (one finish delivery, one replay, one cancel), not per
process: two deliveries of one redirect to one listener are two attempts, and only one
of them may continue the grant. The lease records the holder's host and pid, so on the
same host a lease whose process is gone (killed, crashed) can be taken at once instead
of after it runs out.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path


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
