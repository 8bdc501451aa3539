"""``OpenPaymentsClient`` for code that is not async: scripts, the REPL, sync web apps.

Each call runs the async client's coroutine on a private event loop that lives as long as
this client, so its connection pool carries over from one call to the next (a fresh
``asyncio.run`` per call would reconnect every time). Errors are the async client's own.

A notebook (Jupyter) already runs an event loop, and so does any ``async def``: there,
use ``OpenPaymentsClient`` with ``await``. One client serves one thread at a time.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opapprove.openpayments.client import OpenPaymentsClient
from opapprove.openpayments.exchange import Exchange
from opapprove.openpayments.models import Grant

__all__ = ["SyncOpenPaymentsClient"]

T = TypeVar("T")
A = ParamSpec("A")

IN_RUNNING_LOOP = (
    "SyncOpenPaymentsClient cannot be used while an event loop is running in this thread "
    "(async code, a notebook): use OpenPaymentsClient there, with await"
)
CLOSED = "this SyncOpenPaymentsClient is closed"


def _blocking(
    method: Callable[Concatenate[OpenPaymentsClient, A], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncOpenPaymentsClient, A], T]:
    """``method`` of the async client as a blocking one, with its parameters and its words."""

    @functools.wraps(method)
    def blocking(self: SyncOpenPaymentsClient, /, *args: A.args, **kwargs: A.kwargs) -> T:
        return self._run(method(self._client, *args, **kwargs))

    blocking.__qualname__ = f"SyncOpenPaymentsClient.{method.__name__}"
    return blocking


def _blocking_walk(
    method: Callable[Concatenate[OpenPaymentsClient, A], AsyncIterator[T]],
) -> Callable[Concatenate[SyncOpenPaymentsClient, A], Iterator[T]]:
    """``method``, an async walk over pages, as an iterator that fetches a page when it is
    reached."""

    @functools.wraps(method)
    def walk(self: SyncOpenPaymentsClient, /, *args: A.args, **kwargs: A.kwargs) -> Iterator[T]:
        self._check_usable()
        return self._pull(method(self._client, *args, **kwargs))

    walk.__qualname__ = f"SyncOpenPaymentsClient.{method.__name__}"
    # help() and inspect read the signature through __wrapped__: say what this one returns.
    signature = inspect.signature(method)
    returns = str(signature.return_annotation).replace("AsyncIterator", "Iterator")
    walk.__signature__ = signature.replace(return_annotation=returns)  # type: ignore[attr-defined]
    return walk


class SyncOpenPaymentsClient:
    """A blocking Open Payments client; use it as ``with SyncOpenPaymentsClient(...) as op:``.

    Takes the same arguments as ``OpenPaymentsClient`` and has the same methods, without
    ``await``; ``transport`` is a blocking httpx transport (``httpx.MockTransport``,
    ``httpx.HTTPTransport(proxy=...)``) and ``sleep`` a blocking sleep (``time.sleep``).
    ``poll_grant`` has no ``sleep`` argument: the client's own is used.
    """

    def __init__(
        self,
        *,
        wallet_address_url: str | None = None,
        key: Ed25519PrivateKey | None = None,
        key_id: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        use_http: bool = False,
        allow_http: bool = False,
        validate: bool = True,
        retries: int = 2,
        retry_backoff: float = 0.2,
        on_exchange: Callable[[Exchange], None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._client = OpenPaymentsClient(
            wallet_address_url=wallet_address_url,
            key=key,
            key_id=key_id,
            transport=None if transport is None else _BlockingTransport(transport),
            timeout=timeout,
            use_http=use_http,
            allow_http=allow_http,
            validate=validate,
            retries=retries,
            retry_backoff=retry_backoff,
            on_exchange=on_exchange,
            clock=clock,
            sleep=asyncio.sleep if sleep is None else _blocking_sleep(sleep),
        )
        # With a loop_factory the runner leaves the thread's current event loop alone;
        # without one it would set it, and unset it on close, under the caller's feet.
        self._runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
        self._closed = False

    def __repr__(self) -> str:
        return f"Sync{self._client!r}"

    def __enter__(self) -> SyncOpenPaymentsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections, then the event loop; closing again does nothing."""
        if self._closed:
            return
        self._check_usable()
        try:
            self._runner.run(self._client.aclose())
        finally:
            self._closed = True
            self._runner.close()

    # The operations are the async client's own, each run to its end on this client's loop;
    # only those whose arguments or answers would be async are written out here.

    get_wallet_address = _blocking(OpenPaymentsClient.get_wallet_address)
    get_keys = _blocking(OpenPaymentsClient.get_keys)

    request_grant = _blocking(OpenPaymentsClient.request_grant)
    continue_grant = _blocking(OpenPaymentsClient.continue_grant)

    def poll_grant(
        self,
        uri: str,
        token: str,
        *,
        wait: float,
        timeout: float,
        min_interval: float = 0.0,
    ) -> Grant:
        """Poll a grant (one without a finish redirect) until the user approves it.

        See ``OpenPaymentsClient.poll_grant``; this blocks for the whole wait.
        """
        return self._run(
            self._client.poll_grant(
                uri, token, wait=wait, timeout=timeout, min_interval=min_interval
            )
        )

    cancel_grant = _blocking(OpenPaymentsClient.cancel_grant)
    rotate_token = _blocking(OpenPaymentsClient.rotate_token)
    revoke_token = _blocking(OpenPaymentsClient.revoke_token)

    create_incoming_payment = _blocking(OpenPaymentsClient.create_incoming_payment)
    get_incoming_payment = _blocking(OpenPaymentsClient.get_incoming_payment)
    get_public_incoming_payment = _blocking(OpenPaymentsClient.get_public_incoming_payment)
    complete_incoming_payment = _blocking(OpenPaymentsClient.complete_incoming_payment)
    list_incoming_payments = _blocking(OpenPaymentsClient.list_incoming_payments)

    iter_incoming_payments = _blocking_walk(OpenPaymentsClient.iter_incoming_payments)

    create_quote = _blocking(OpenPaymentsClient.create_quote)
    get_quote = _blocking(OpenPaymentsClient.get_quote)

    create_outgoing_payment = _blocking(OpenPaymentsClient.create_outgoing_payment)
    get_outgoing_payment = _blocking(OpenPaymentsClient.get_outgoing_payment)
    list_outgoing_payments = _blocking(OpenPaymentsClient.list_outgoing_payments)

    iter_outgoing_payments = _blocking_walk(OpenPaymentsClient.iter_outgoing_payments)

    get_grant_spent_amounts = _blocking(OpenPaymentsClient.get_grant_spent_amounts)

    # ----------------------------------------------------------------- plumbing

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError(CLOSED)
        # Checked up front rather than by catching the runner's RuntimeError, which could
        # not be told apart from a RuntimeError raised by the call itself.
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        raise RuntimeError(IN_RUNNING_LOOP)

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        try:
            self._check_usable()
        except RuntimeError:
            # Never started, so close it: otherwise it warns "was never awaited".
            call.close()
            raise
        return self._runner.run(call)

    def _pull(self, items: AsyncIterator[T]) -> Iterator[T]:
        # A walk abandoned half-way leaves the async generator suspended; the runner's
        # loop closes it when it is collected, or at the latest when this client closes.
        while (item := self._run(_next_or_none(items))) is not None:
            yield item


async def _next_or_none(items: AsyncIterator[T]) -> T | None:
    # The items are models, never None, so None can stand for "no more".
    return await anext(items, None)


def _blocking_sleep(sleep: Callable[[float], None]) -> Callable[[float], Awaitable[None]]:
    async def slept(seconds: float) -> None:
        sleep(seconds)

    return slept


class _BlockingTransport(httpx.AsyncBaseTransport):
    """A caller's blocking httpx transport under the async client.

    It runs on the client's private loop, which serves one call of one thread at a time,
    so blocking that loop holds up nothing else. Bodies are whole: the client signs them.
    """

    def __init__(self, transport: httpx.BaseTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        blocking = httpx.Request(
            request.method,
            request.url,
            headers=request.headers,
            content=await request.aread(),
            extensions=request.extensions,
        )
        response = self._transport.handle_request(blocking)
        if response.is_stream_consumed:
            return response  # read already (httpx.MockTransport's): it holds its content
        try:
            # Raw bytes: the client decodes any Content-Encoding itself, once.
            raw = b"".join(response.iter_raw())
        finally:
            response.close()
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=httpx.ByteStream(raw),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        self._transport.close()
