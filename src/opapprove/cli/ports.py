"""The loopback ports the CLI serves on (``listen``, ``sandbox``): bound here so that a port
in use is one line saying which (exit 4), not a server's log and a traceback."""

from __future__ import annotations

import socket

from opapprove.cli.errors import CliError
from opapprove.servers import serving


def listening_socket(address: str, port: int, *, hint: str) -> socket.socket:
    """A TCP socket listening on ``address:port`` (``serving.listening_socket``)."""
    try:
        return serving.listening_socket(address, port)
    except OSError as exc:
        raise CliError(
            f"cannot listen on {address}:{port}: {exc.strerror or exc}", hint=hint, kind="transport"
        ) from exc
