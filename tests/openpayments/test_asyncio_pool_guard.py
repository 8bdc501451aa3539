"""Every private name of httpcore, httpx and asyncio that ``asyncio_pool.py`` relies on.

``AsyncioConnectionPool`` replaces one private step of httpcore's pool and reads its
private state; ``pooled_transport`` swaps httpx's private ``_pool``; the stream reads
asyncio's private read buffer. pyproject.toml pins httpcore to the release this was written
against. If one of these tests fails after an upgrade, the fork no longer fits: read the new
httpcore's ``_async/connection_pool.py`` against ``AsyncioConnectionPool`` before changing
the pin (or drop the fork for httpx's own pool: bench/RESULTS.md, "The connection pool").
"""

from __future__ import annotations

import asyncio
import inspect

import httpcore
import httpx
import pytest
from httpcore._async import connection_pool

from opapprove.openpayments import asyncio_pool

WHAT_TO_DO = "asyncio_pool.py no longer fits this httpcore; see this file's docstring"


def _source(obj: object) -> str:
    return inspect.getsource(obj)  # type: ignore[arg-type]


def test_httpcore_still_has_the_socket_check_the_stream_calls() -> None:
    from httpcore import _utils

    assert callable(getattr(_utils, "is_socket_readable", None)), WHAT_TO_DO
    assert asyncio_pool.is_socket_readable is _utils.is_socket_readable


def test_the_pool_still_assigns_in_the_one_step_the_fork_replaces() -> None:
    pool_cls = httpcore.AsyncConnectionPool
    step = getattr(pool_cls, "_assign_requests_to_connections", None)
    assert step is not None, WHAT_TO_DO
    assert list(inspect.signature(step).parameters) == ["self"], WHAT_TO_DO
    # Every place httpcore reassigns (a request starts, a response closes) goes through
    # that step and then closes what it returned: the override sees every change.
    for caller in (pool_cls.handle_async_request, connection_pool.PoolByteStream.aclose):
        text = _source(caller)
        assert "_assign_requests_to_connections()" in text, (caller, WHAT_TO_DO)
        assert "_close_connections(closing)" in text, (caller, WHAT_TO_DO)


def test_the_pool_state_the_fork_reads_is_still_there() -> None:
    pool = asyncio_pool.AsyncioConnectionPool(
        ssl_context=None, max_connections=3, max_keepalive_connections=2, keepalive_expiry=1.0
    )
    assert pool._connections == [] and pool._requests == [], WHAT_TO_DO
    assert (pool._max_connections, pool._max_keepalive_connections) == (3, 2), WHAT_TO_DO
    assert isinstance(pool._network_backend, asyncio_pool.AsyncioBackend), WHAT_TO_DO
    assert callable(pool.create_connection), WHAT_TO_DO
    request = connection_pool.AsyncPoolRequest(httpcore.Request("GET", "http://127.0.0.1/"))
    assert request.is_queued() and request.connection is None, WHAT_TO_DO
    assert request.request.url.origin is not None, WHAT_TO_DO
    assert callable(request.assign_to_connection), WHAT_TO_DO


@pytest.mark.parametrize(
    "method", ["is_closed", "is_idle", "has_expired", "can_handle_request", "is_available"]
)
def test_connections_still_answer_what_the_fork_asks(method: str) -> None:
    assert callable(getattr(httpcore.AsyncConnectionInterface, method, None)), WHAT_TO_DO


def test_httpx_still_sends_through_its_private_pool() -> None:
    transport = asyncio_pool.pooled_transport(
        False, max_connections=2, max_keepalive_connections=2, keepalive_expiry=1.0
    )
    assert isinstance(transport._pool, asyncio_pool.AsyncioConnectionPool), WHAT_TO_DO
    assert "self._pool.handle_async_request(" in _source(
        httpx.AsyncHTTPTransport.handle_async_request
    ), WHAT_TO_DO


def test_asyncio_stream_reader_still_buffers_in_buffer() -> None:
    async def check() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"408")
        assert getattr(reader, "_buffer", None) == bytearray(b"408"), WHAT_TO_DO

    asyncio.run(check())


def test_a_request_whose_connection_is_not_available_still_goes_on_another() -> None:
    # The stream raises ConnectionNotAvailable before a request's first byte when the
    # server has closed the kept-alive connection meanwhile; the pool then sends it on
    # another connection. A WriteError there would instead be swallowed (to read an early
    # answer) and the request fail.
    text = _source(httpcore.AsyncConnectionPool.handle_async_request)
    assert "except ConnectionNotAvailable" in text, WHAT_TO_DO
    assert not issubclass(httpcore.ConnectionNotAvailable, httpcore.WriteError), WHAT_TO_DO
