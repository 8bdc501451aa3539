"""One async client for every Open Payments operation: wallet address, GNAP AS, resource server.

It behaves like the Node SDK 7.4 (``@interledger/open-payments``): ``Accept:
application/json`` on every request, compact JSON bodies, RFC 9421 signatures on every
POST and on anything carrying an access token, ``authServer`` / ``resourceServer`` used
verbatim, responses checked against the spec's shapes. Every failure comes out as an
``errors.OpenPaymentsError`` with a hint a person can act on; no httpx exception leaks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeGuard, TypeVar

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel

from opapprove import __version__
from opapprove.openpayments import errors
from opapprove.openpayments import operations as ops
from opapprove.openpayments.error_hints import one_line
from opapprove.openpayments.exchange import Exchange
from opapprove.openpayments.models import (
    JWKS,
    AccessToken,
    ContinueRequest,
    CreateIncomingPayment,
    CreateOutgoingPayment,
    CreateQuote,
    Grant,
    GrantRequest,
    GrantSpentAmounts,
    IncomingPayment,
    IncomingPaymentWithMethods,
    OutgoingPayment,
    OutgoingPaymentWithSpentAmounts,
    Page,
    PendingGrant,
    PublicIncomingPayment,
    Quote,
    WalletAddress,
    client_url,
)
from opapprove.openpayments.responses import check_status, next_cursor, parse_body
from opapprove.openpayments.signatures import (
    OpenPaymentsAuth,
    SignedParts,
    compact_json,
    should_sign,
)
from opapprove.openpayments.transport import (
    MAX_RESPONSE_BYTES,
    SchemeTransport,
    read_at_most,
    transport_hint,
)
from opapprove.openpayments.urls import apply_use_http, check_url

M = TypeVar("M")
P = TypeVar("P", IncomingPayment, OutgoingPayment)

__all__ = ["Exchange", "GrantTimeout", "OpenPaymentsClient", "is_pending"]


# --------------------------------------------------------------------------- helpers


class GrantTimeout(errors.OpenPaymentsError):
    """``poll_grant`` gave up: the user did not approve within the timeout."""

    kind = "timeout"


def is_pending(grant: PendingGrant | Grant) -> TypeGuard[PendingGrant]:
    """True while the grant still waits for the user (the SDK's ``isPendingGrant``)."""
    return isinstance(grant, PendingGrant)


def _join(base: str, path: str) -> str:
    return f"{base.rstrip('/')}/{path}"


# --------------------------------------------------------------------------- the client


class OpenPaymentsClient:
    """An async Open Payments client; use it as ``async with OpenPaymentsClient(...) as op:``.

    ``key``/``key_id`` sign requests (needed for everything but the unauthenticated GETs).
    ``use_http`` rewrites every URL to http (a local Rafiki); plain http goes only to
    loopback unless ``allow_http``. GETs are retried ``retries`` times on connection
    errors and 5xx answers; nothing else is. ``on_exchange`` sees every attempt.
    ``validate=False`` skips the status and consistency checks, but a body must still
    parse into its model.
    """

    def __init__(
        self,
        *,
        wallet_address_url: str | None = None,
        key: Ed25519PrivateKey | None = None,
        key_id: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        use_http: bool = False,
        allow_http: bool = False,
        validate: bool = True,
        retries: int = 2,
        retry_backoff: float = 0.2,
        on_exchange: Callable[[Exchange], None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if (key is None) != (key_id is None):
            raise errors.KeyLoadError(
                "a signing key needs its key id, and a key id needs its key",
                hint="give both the private key and the key id (the JWK's kid)",
            )
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self.wallet_address_url = wallet_address_url
        self.key_id = key_id
        self.timeout = timeout
        self.use_http = use_http
        self.allow_http = allow_http
        self.validate = validate
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.on_exchange = on_exchange
        self._sleep = sleep
        self._auth = OpenPaymentsAuth(key, key_id, clock=clock) if key and key_id else None
        self._http = httpx.AsyncClient(
            transport=transport or SchemeTransport(),
            timeout=timeout,
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": f"opapprove/{__version__}"},
        )

    def __repr__(self) -> str:
        return (
            f"OpenPaymentsClient(wallet_address_url={self.wallet_address_url!r}, "
            f"key_id={self.key_id!r}, signing={self._auth is not None})"
        )

    async def __aenter__(self) -> OpenPaymentsClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ----------------------------------------------------------------- wallet addresses

    async def get_wallet_address(self, url: str) -> WalletAddress:
        return await self._call(ops.GET_WALLET_ADDRESS, url)

    async def get_keys(self, url: str) -> JWKS:
        """``GET {url}/jwks.json`` (one slash, whatever ``url`` ends with)."""
        return await self._call(ops.GET_KEYS, _join(url, "jwks.json"))

    # ----------------------------------------------------------------- grants

    async def request_grant(self, auth_server: str, body: GrantRequest) -> PendingGrant | Grant:
        client = client_url(body.client)  # None: this client's own wallet (see _send)
        return await self._call(ops.REQUEST_GRANT, auth_server, body=body, client=client)

    async def continue_grant(
        self, uri: str, token: str, interact_ref: str | None = None
    ) -> PendingGrant | Grant:
        """Continue after the redirect (``interact_ref``) or poll (``None``: no body).

        While the user has not approved, the answer is a ``PendingGrant`` without
        ``interact``: only ``continue`` (possibly with a new token, uri and wait).
        """
        body = ContinueRequest(interact_ref=interact_ref) if interact_ref is not None else None
        return await self._call(ops.CONTINUE_GRANT, uri, token=token, body=body)

    async def poll_grant(
        self,
        uri: str,
        token: str,
        *,
        wait: float,
        timeout: float,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        min_interval: float = 0.0,
    ) -> Grant:
        """Poll a grant (one without a finish redirect) until the user approves it.

        Waits ``wait`` seconds before the first poll and then whatever ``continue.wait``
        says; a ``too_fast`` answer means waiting again. Raises ``GrantTimeout`` once
        ``timeout`` seconds have gone by, and ``GrantError`` if the AS refuses.
        ``min_interval`` is a floor under the server's ``wait`` (a ``wait`` of 0 would spin).
        ``sleep`` defaults to the client's own (its constructor's ``sleep``).
        """
        sleep = sleep or self._sleep
        started = time.monotonic()
        slept = 0.0
        delay = max(wait, 0.0)
        while True:
            # Time passes either for real or, with a fake sleep, only in what was slept.
            spent = max(time.monotonic() - started, slept)
            if spent + delay > timeout:
                raise GrantTimeout(
                    f"the grant was not approved within {timeout:g}s",
                    hint="approve it at the interaction URL and poll again, or cancel it",
                )
            await sleep(delay)
            slept += delay
            try:
                grant = await self.continue_grant(uri, token)
            except errors.GrantError as exc:
                if exc.code != "too_fast":
                    raise
                delay = max(wait, 1.0)
                continue
            if isinstance(grant, Grant):
                return grant
            uri, token = grant.continue_.uri, grant.continue_.token
            server_wait = grant.continue_.wait
            delay = float(server_wait) if server_wait is not None else wait
            delay = max(delay, min_interval)

    async def cancel_grant(self, uri: str, token: str) -> None:
        await self._send(ops.CANCEL_GRANT, uri, token=token)

    async def rotate_token(self, manage: str, token: str) -> AccessToken:
        """``POST manage``: a new token value and a new manage URL; the old token dies."""
        rotated = await self._call(ops.ROTATE_TOKEN, manage, token=token)
        return rotated.access_token

    async def revoke_token(self, manage: str, token: str) -> None:
        await self._send(ops.REVOKE_TOKEN, manage, token=token)

    # ----------------------------------------------------------------- incoming payments

    async def create_incoming_payment(
        self, resource_server: str, token: str, body: CreateIncomingPayment
    ) -> IncomingPaymentWithMethods:
        url = _join(resource_server, "incoming-payments")
        return await self._call(ops.CREATE_INCOMING_PAYMENT, url, token=token, body=body)

    async def get_incoming_payment(self, url: str, token: str) -> IncomingPaymentWithMethods:
        return await self._call(ops.GET_INCOMING_PAYMENT, url, token=token)

    async def get_public_incoming_payment(self, url: str) -> PublicIncomingPayment:
        """The unauthenticated, unsigned view: ``authServer`` and maybe ``receivedAmount``."""
        return await self._call(ops.GET_PUBLIC_INCOMING_PAYMENT, url)

    async def complete_incoming_payment(self, url: str, token: str) -> IncomingPayment:
        return await self._call(ops.COMPLETE_INCOMING_PAYMENT, _join(url, "complete"), token=token)

    async def list_incoming_payments(
        self,
        resource_server: str,
        token: str,
        wallet_address: str,
        *,
        first: int | None = None,
        last: int | None = None,
        cursor: str | None = None,
    ) -> Page[IncomingPayment]:
        url = _join(resource_server, "incoming-payments")
        params = _page_params(wallet_address, first, last, cursor)
        return await self._call(ops.LIST_INCOMING_PAYMENTS, url, token=token, params=params)

    def iter_incoming_payments(
        self,
        resource_server: str,
        token: str,
        wallet_address: str,
        *,
        page_size: int = 100,
    ) -> AsyncIterator[IncomingPayment]:
        """Every incoming payment of ``wallet_address``, following ``endCursor`` forward."""
        return self._iter_all(
            self.list_incoming_payments,
            ops.LIST_INCOMING_PAYMENTS,
            resource_server,
            token,
            wallet_address,
            page_size,
        )

    # ----------------------------------------------------------------- quotes

    async def create_quote(self, resource_server: str, token: str, body: CreateQuote) -> Quote:
        url = _join(resource_server, "quotes")
        return await self._call(ops.CREATE_QUOTE, url, token=token, body=body)

    async def get_quote(self, url: str, token: str) -> Quote:
        return await self._call(ops.GET_QUOTE, url, token=token)

    # ----------------------------------------------------------------- outgoing payments

    async def create_outgoing_payment(
        self, resource_server: str, token: str, body: CreateOutgoingPayment
    ) -> OutgoingPaymentWithSpentAmounts:
        url = _join(resource_server, "outgoing-payments")
        return await self._call(ops.CREATE_OUTGOING_PAYMENT, url, token=token, body=body)

    async def get_outgoing_payment(self, url: str, token: str) -> OutgoingPayment:
        return await self._call(ops.GET_OUTGOING_PAYMENT, url, token=token)

    async def list_outgoing_payments(
        self,
        resource_server: str,
        token: str,
        wallet_address: str,
        *,
        first: int | None = None,
        last: int | None = None,
        cursor: str | None = None,
    ) -> Page[OutgoingPayment]:
        url = _join(resource_server, "outgoing-payments")
        params = _page_params(wallet_address, first, last, cursor)
        return await self._call(ops.LIST_OUTGOING_PAYMENTS, url, token=token, params=params)

    def iter_outgoing_payments(
        self,
        resource_server: str,
        token: str,
        wallet_address: str,
        *,
        page_size: int = 100,
    ) -> AsyncIterator[OutgoingPayment]:
        """Every outgoing payment of ``wallet_address``, following ``endCursor`` forward."""
        return self._iter_all(
            self.list_outgoing_payments,
            ops.LIST_OUTGOING_PAYMENTS,
            resource_server,
            token,
            wallet_address,
            page_size,
        )

    async def _iter_all(
        self,
        lister: Callable[..., Awaitable[Page[P]]],
        operation: ops.Operation,
        resource_server: str,
        token: str,
        wallet_address: str,
        page_size: int,
    ) -> AsyncIterator[P]:
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = await lister(
                resource_server, token, wallet_address, first=page_size, cursor=cursor
            )
            for item in page.result:
                yield item
            cursor = next_cursor(page, seen, operation.name, resource_server)
            if cursor is None:
                return

    async def get_grant_spent_amounts(self, resource_server: str, token: str) -> GrantSpentAmounts:
        """What the grant behind ``token`` (outgoing-payment create) has spent this interval."""
        url = _join(resource_server, "outgoing-payment-grant")
        return await self._call(ops.GET_GRANT_SPENT_AMOUNTS, url, token=token)

    # ----------------------------------------------------------------- plumbing

    def _target(self, url: str) -> str:
        target = apply_use_http(url) if self.use_http else url
        return check_url(target, allow_http=self.allow_http)

    async def _call(
        self,
        op: ops.Returning[M],
        url: str,
        *,
        token: str | None = None,
        body: BaseModel | None = None,
        params: dict[str, str] | None = None,
        client: str | None = None,
    ) -> M:
        """``_send``, then the answer read into its model and (with ``validate``) checked."""
        response = await self._send(op, url, token=token, body=body, params=params, client=client)
        result = parse_body(response, op.parse, op.what)
        if self.validate and op.check is not None:
            op.check(response, result)
        return result

    async def _send(
        self,
        op: ops.Operation,
        url: str,
        *,
        token: str | None = None,
        body: BaseModel | None = None,
        params: dict[str, str] | None = None,
        client: str | None = None,
    ) -> httpx.Response:
        target = self._target(url)
        method = op.method
        headers: dict[str, str] = {}
        if token is not None:
            headers["Authorization"] = f"GNAP {token}"
        content: bytes | None = None
        if body is not None:
            content = compact_json(body.model_dump(by_alias=True, exclude_none=True, mode="json"))
            headers["Content-Type"] = "application/json"
        signed = should_sign(method, headers)
        if signed and self._auth is None:
            raise errors.KeyLoadError(
                f"{method} {target} must be signed, but this client has no private key",
                hint="give the client wallet's private key and its key id",
            )
        # Hints name the client only where it signs as one.
        asker = (client or self.wallet_address_url) if signed else None
        # Only reads are retried: a POST or DELETE that timed out may have happened,
        # and money must move once.
        attempts = 1 + self.retries if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            response, failure = await self._attempt(
                op, target, headers, content, params, attempt, signed
            )
            retryable = failure is not None or (
                response is not None and response.status_code >= 500
            )
            if retryable and attempt < attempts:
                await self._sleep(self.retry_backoff * 2 ** (attempt - 1))
                continue
            if failure is not None:
                raise failure
            assert response is not None
            check_status(op, response, validate=self.validate, key_id=self.key_id, client=asker)
            return response
        raise AssertionError("unreachable")

    async def _attempt(
        self,
        op: ops.Operation,
        target: str,
        headers: dict[str, str],
        content: bytes | None,
        params: dict[str, str] | None,
        attempt: int,
        signed: bool,
    ) -> tuple[httpx.Response | None, errors.TransportError | None]:
        method = op.method
        try:
            request = self._http.build_request(
                method, target, headers=headers, content=content, params=params
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise errors.TransportError(
                f"cannot {method} {target}: {exc}",
                method=method,
                url=target,
                hint="check the URL",
            ) from exc
        started = time.perf_counter()
        response: httpx.Response | None = None
        failure: errors.TransportError | None = None
        try:
            streamed = await self._http.send(
                request, auth=self._auth if signed else None, stream=True
            )
            try:
                whole = await read_at_most(streamed, MAX_RESPONSE_BYTES, within=self.timeout)
            finally:
                await streamed.aclose()
            if whole:
                response = streamed
            else:
                failure = errors.TransportError(
                    f"{method} {request.url} answered {streamed.status_code} with a body over"
                    f" {MAX_RESPONSE_BYTES // (1 << 20)} MiB; not read further",
                    method=method,
                    url=str(request.url),
                    hint="no Open Payments answer is that large: the URL is not an Open Payments"
                    " endpoint, or the server is faulty; report it to the wallet's operator",
                )
        except httpx.TimeoutException as exc:
            failure = errors.TransportError(
                f"{method} {request.url} timed out after {self.timeout:g}s ({type(exc).__name__})",
                method=method,
                url=str(request.url),
                hint="the server is slow or unreachable: try again, or raise the timeout",
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            failure = errors.TransportError(
                f"{method} {request.url} failed: {one_line(str(exc) or type(exc).__name__)}",
                method=method,
                url=str(request.url),
                hint=transport_hint(exc, str(request.url)),
            )
        elapsed = time.perf_counter() - started
        if self.on_exchange is not None:
            signature = request.extensions.get("opapprove_signature")
            self.on_exchange(
                Exchange(
                    method=method,
                    url=str(request.url),
                    request_headers=dict(request.headers),
                    request_body=request.content,
                    signature=signature if isinstance(signature, SignedParts) else None,
                    status=response.status_code if response is not None else None,
                    response_headers=dict(response.headers) if response is not None else {},
                    response_body=response.content if response is not None else b"",
                    elapsed=elapsed,
                    error=str(failure) if failure is not None else None,
                    operation=op.name,
                    attempt=attempt,
                )
            )
        return response, failure


def _page_params(
    wallet_address: str, first: int | None, last: int | None, cursor: str | None
) -> dict[str, str]:
    if first is not None and last is not None:
        raise ValueError("give first (forward) or last (backward), not both")
    params = {"wallet-address": wallet_address}
    for name, value in (("first", first), ("last", last)):
        if value is not None:
            if not 1 <= value <= 100:
                raise ValueError(f"{name} must be from 1 to 100, not {value}")
            params[name] = str(value)
    if cursor is not None:
        if not cursor:
            raise ValueError("cursor must not be empty")
        params["cursor"] = cursor
    return params
