"""The asyncio network backend and connection pool, against real loopback servers.

The server here is a few lines of HTTP/1.1 on ``asyncio.start_server`` so that each test
can see what a pool does to it: how many connections it opens, how many at once, and
what happens when the server hangs up on an idle one or stalls.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from opapprove.openpayments import errors
from opapprove.openpayments.client import OpenPaymentsClient, _SchemeTransport
from opapprove.openpayments.network import AsyncioBackend, AsyncioConnectionPool


@dataclass
class Server:
    delay: float = 0.0
    hang_up_after_response: bool = False
    stall: bool = False
    url: str = ""
    accepted: int = 0
    open_now: int = 0
    most_open: int = 0
    served: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                if self.stall:
                    await asyncio.sleep(3600)
                if self.delay:
                    await asyncio.sleep(self.delay)
                self.served += 1
                body = b'{"ok":true}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
                if self.hang_up_after_response:
                    break  # no "Connection: close": the client only sees the socket close
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            return  # the test's loop is ending; asyncio would log a cancelled handler
        finally:
            self.open_now -= 1
            writer.close()


@asynccontextmanager
async def serving(server: Server, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        yield server
    finally:
        listener.close()
        for writer in server.writers:
            writer.close()


def _client(
    *,
    max_connections: int = 100,
    keepalive: int = 100,
    verify: ssl.SSLContext | bool = False,
    timeout: float = 5.0,
) -> httpx.AsyncClient:
    context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
    transport = httpx.AsyncHTTPTransport(verify=context)
    transport._pool = AsyncioConnectionPool(
        ssl_context=context,
        max_connections=max_connections,
        max_keepalive_connections=keepalive,
        keepalive_expiry=5.0,
    )
    return httpx.AsyncClient(transport=transport, timeout=timeout)


def test_the_open_payments_client_sends_through_this_pool() -> None:
    async def main() -> None:
        async with serving(Server()) as server:
            client = OpenPaymentsClient()
            try:
                await client._http.get(f"{server.url}/x")
                transport = client._http._transport
                assert isinstance(transport, _SchemeTransport) and transport._plain is not None
                pool = transport._plain._pool
                assert isinstance(pool, AsyncioConnectionPool)
                assert isinstance(pool._network_backend, AsyncioBackend)
            finally:
                await client.aclose()

    asyncio.run(main())


def test_a_burst_reuses_connections_instead_of_reconnecting() -> None:
    async def main() -> None:
        async with serving(Server(delay=0.05)) as server, _client() as client:
            for _ in range(3):
                answers = await asyncio.gather(
                    *(client.get(f"{server.url}/r/{i}") for i in range(64))
                )
                assert all(a.status_code == 200 for a in answers)
            assert server.served == 192
            # One connection per request in flight, opened once, then reused (httpx's own
            # pool keeps 20 and reconnects for the other 44 of every burst).
            assert server.accepted == 64

    asyncio.run(main())


def test_never_more_connections_than_the_limit() -> None:
    async def main() -> None:
        async with serving(Server(delay=0.02)) as server, _client(max_connections=3) as client:
            answers = await asyncio.gather(*(client.get(f"{server.url}/{i}") for i in range(20)))
            assert [a.status_code for a in answers] == [200] * 20
            assert server.most_open <= 3
            assert server.accepted == 3

    asyncio.run(main())


def test_idle_connections_beyond_the_keepalive_limit_are_closed() -> None:
    async def main() -> None:
        async with serving(Server(delay=0.05)) as server, _client(keepalive=2) as client:
            await asyncio.gather(*(client.get(f"{server.url}/{i}") for i in range(6)))
            await client.get(f"{server.url}/again")  # the pool tidies up on each request
            await asyncio.sleep(0.05)
            assert server.accepted == 6
            assert server.open_now <= 2

    asyncio.run(main())


def test_a_server_hang_up_on_an_idle_connection_costs_a_new_connection_not_an_error() -> None:
    async def main() -> None:
        async with serving(Server(hang_up_after_response=True)) as server, _client() as client:
            for i in range(5):
                await asyncio.sleep(0.02)  # the loop sees the close before the next request
                answer = await client.get(f"{server.url}/{i}")
                assert answer.json() == {"ok": True}
            assert server.accepted == 5

    asyncio.run(main())


def test_a_stalled_server_is_a_read_timeout() -> None:
    async def main() -> None:
        async with serving(Server(stall=True)) as server, _client(timeout=0.3) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(f"{server.url}/slow")

    asyncio.run(main())


def test_nothing_listening_is_a_connect_error() -> None:
    async def main() -> None:
        async with _client() as client:
            with pytest.raises(httpx.ConnectError):
                await client.get("http://127.0.0.1:1/x")

    asyncio.run(main())


def test_the_client_reports_a_stalled_server_as_its_timeout_error() -> None:
    async def main() -> None:
        async with serving(Server(stall=True)) as server:
            client = OpenPaymentsClient(timeout=0.3, retries=0)
            try:
                with pytest.raises(errors.TransportError) as caught:
                    await client.get_wallet_address(f"{server.url}/alice")
                assert "timed out" in str(caught.value).lower()
            finally:
                await client.aclose()

    asyncio.run(main())


# ----------------------------------------------------------------------------- TLS


def _self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for 127.0.0.1 and a client context that trusts only it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = tmp_path / "cert.pem"
    key_pem = tmp_path / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_pem, key_pem)
    client = ssl.create_default_context(cafile=str(cert_pem))
    return server, client


def test_https_upgrades_the_connection_and_reuses_it(tmp_path: Path) -> None:
    server_tls, client_tls = _self_signed(tmp_path)

    async def main() -> None:
        async with serving(Server(), tls=server_tls) as server, _client(verify=client_tls) as c:
            for i in range(3):
                answer = await c.get(f"{server.url}/{i}")
                assert answer.json() == {"ok": True}
            assert server.accepted == 1

    asyncio.run(main())


def test_an_untrusted_certificate_is_a_connect_error(tmp_path: Path) -> None:
    server_tls, _ = _self_signed(tmp_path)

    async def main() -> None:
        async with serving(Server(), tls=server_tls) as server, _client(verify=True) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{server.url}/x")

    asyncio.run(main())


def test_under_steady_load_each_request_is_assigned_once() -> None:
    """64 workers, each sending requests back to back over kept-alive connections.

    httpcore's own assignment can hand one idle connection to several queued requests;
    all but one then go round again, each pass scanning every connection (a bulk replay
    spent 4x its CPU there). Here each request takes one pass to send and one to finish.
    """
    passes = 0

    class Counted(AsyncioConnectionPool):
        def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
            nonlocal passes
            passes += 1
            return super()._assign_requests_to_connections()

    async def main() -> None:
        async with serving(Server(delay=0.01)) as server:
            transport = httpx.AsyncHTTPTransport()
            transport._pool = Counted(
                ssl_context=None,
                max_connections=100,
                max_keepalive_connections=100,
                keepalive_expiry=5.0,
            )
            async with httpx.AsyncClient(transport=transport) as client:

                async def worker(n: int) -> None:
                    for i in range(10):
                        answer = await client.get(f"{server.url}/{n}/{i}")
                        assert answer.status_code == 200

                await asyncio.gather(*(worker(n) for n in range(64)))
            assert server.served == 640
            assert server.accepted <= 64

    asyncio.run(main())
    assert passes <= 2 * 640 + 64


def test_closing_the_client_closes_every_connection(tmp_path: Path) -> None:
    server_tls, client_tls = _self_signed(tmp_path)

    async def main(tls: bool) -> None:
        server = Server(delay=0.02)
        context = server_tls if tls else None
        async with serving(server, tls=context):
            client = _client(verify=client_tls if tls else False)
            await asyncio.gather(*(client.get(f"{server.url}/{i}") for i in range(8)))
            assert server.open_now == 8
            await client.aclose()
            for _ in range(100):
                if server.open_now == 0:
                    break
                await asyncio.sleep(0.01)
            assert server.open_now == 0

    asyncio.run(main(tls=False))
    asyncio.run(main(tls=True))


def test_a_name_whose_first_address_refuses_still_connects() -> None:
    # "localhost" usually resolves to ::1 first; the server listens on 127.0.0.1 only.
    async def main() -> None:
        async with serving(Server()) as server, _client() as client:
            port = server.url.rsplit(":", 1)[1]
            answer = await client.get(f"http://localhost:{port}/x")
            assert answer.json() == {"ok": True}

    asyncio.run(main())


@pytest.mark.parametrize("seed", range(5))
def test_random_load_with_hang_ups_and_tight_limits(seed: int) -> None:
    """Every request answered, never more connections than allowed, whatever the mix."""
    import random

    rng = random.Random(seed)

    class Flaky(Server):
        async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.delay = rng.choice((0.0, 0.001, 0.01))
            self.hang_up_after_response = rng.random() < 0.3
            await super().handle(reader, writer)

    async def main() -> None:
        async with (
            serving(Flaky()) as server,
            _client(max_connections=5, keepalive=2) as client,
        ):

            async def worker(n: int) -> None:
                for i in range(8):
                    if rng.random() < 0.3:
                        await asyncio.sleep(rng.random() * 0.02)
                    answer = await client.get(f"{server.url}/{n}/{i}")
                    assert answer.json() == {"ok": True}

            await asyncio.gather(*(worker(n) for n in range(30)))
            assert server.served == 240
            assert server.most_open <= 5

    asyncio.run(main())
