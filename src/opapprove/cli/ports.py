"""The loopback ports the CLI serves on (``listen``, ``sandbox``): bound here so that a port
in use is one line saying which (exit 4), not a server's log and a traceback."""

from __future__ import annotations

import socket

from opapprove.cli.errors import CliError


def listening_socket(address: str, port: int, *, hint: str) -> socket.socket:
    """A TCP socket listening on ``address:port``, bound the way uvicorn binds (reusing a
    port in TIME_WAIT)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise CliError(
            f"cannot listen on {address}:{port}: {exc.strerror or exc}", hint=hint, kind="transport"
        ) from exc
    return sock
