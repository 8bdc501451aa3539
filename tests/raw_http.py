"""A loopback HTTP server that answers every request with the bytes a test gives it, as slowly
as the test says: for clients facing a hostile or broken server (trickled, huge, odd)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def raw_server(head: bytes, body: bytes = b"", pause: float = 0.0) -> AsyncIterator[str]:
    """Its base URL. Each request gets ``head`` at once, then ``body``: whole, or with a
    ``pause`` a byte at a time, ``pause`` seconds apart. Runs in the caller's event loop."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head if pause else head + body)
            for i in range(len(body) if pause else 0):
                await writer.drain()
                await asyncio.sleep(pause)
                writer.write(body[i : i + 1])
            await writer.drain()
            await asyncio.wait_for(reader.read(1), timeout=5)  # until the client hangs up
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
