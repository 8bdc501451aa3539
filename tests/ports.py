"""Loopback ports for servers a test starts (or wants nothing to answer on)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port free right now: the OS picked it, and the probe let it go again."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
