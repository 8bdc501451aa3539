"""poll_grant: honours wait, survives too_fast, follows a new continue token, gives up in time."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from opapprove.openpayments import errors
from opapprove.openpayments import models as m
from opapprove.openpayments.client import GrantTimeout, OpenPaymentsClient
from tests.openpayments.client_support import (
    CONTINUE_DOC,
    CONTINUE_TOKEN,
    CONTINUE_URI,
    GRANT_DOC,
    gnap_error,
    run,
    verify,
)


class FakeSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def pending(wait: int | None, *, token: str = CONTINUE_TOKEN, uri: str = CONTINUE_URI) -> Any:
    cont: dict[str, Any] = {"access_token": {"value": token}, "uri": uri}
    if wait is not None:
        cont["wait"] = wait
    return {"continue": cont}


def poll(sleep: FakeSleep, *, wait: float = 5, timeout: float = 60) -> Any:
    async def call(op: OpenPaymentsClient) -> m.Grant:
        return await op.poll_grant(
            CONTINUE_URI, CONTINUE_TOKEN, wait=wait, timeout=timeout, sleep=sleep
        )

    return call


def test_polls_until_approved_honouring_wait_and_too_fast() -> None:
    sleep = FakeSleep()
    answers = [
        httpx.Response(400, json=gnap_error("too_fast", "continued too fast")),
        httpx.Response(200, json=pending(wait=2)),
        httpx.Response(200, json=GRANT_DOC),
    ]
    with respx.mock() as router:
        route = router.post(CONTINUE_URI).mock(side_effect=answers)
        grant = run(poll(sleep, wait=5))
    assert isinstance(grant, m.Grant)
    assert grant.access_token is not None
    assert sleep.calls == [5, 5, 2]
    assert route.call_count == 3
    for call in route.calls:
        assert call.request.content == b""  # polling sends no body
        assert verify(call.request).components == ["@method", "@target-uri", "authorization"]


def test_follows_a_new_continue_token_and_uri() -> None:
    new_uri = CONTINUE_URI + "-next"
    sleep = FakeSleep()
    with respx.mock() as router:
        first = router.post(CONTINUE_URI).respond(200, json=pending(1, token="T2", uri=new_uri))
        second = router.post(new_uri).respond(200, json=GRANT_DOC)
        run(poll(sleep, wait=0))
    assert first.calls.last.request.headers["authorization"] == f"GNAP {CONTINUE_TOKEN}"
    assert second.calls.last.request.headers["authorization"] == "GNAP T2"
    assert sleep.calls == [0, 1]


def test_pending_without_wait_keeps_the_given_wait() -> None:
    sleep = FakeSleep()
    with respx.mock() as router:
        router.post(CONTINUE_URI).mock(
            side_effect=[
                httpx.Response(200, json=pending(None)),
                httpx.Response(200, json=GRANT_DOC),
            ]
        )
        run(poll(sleep, wait=3))
    assert sleep.calls == [3, 3]


def test_too_fast_with_zero_wait_still_backs_off() -> None:
    sleep = FakeSleep()
    with respx.mock() as router:
        router.post(CONTINUE_URI).mock(
            side_effect=[
                httpx.Response(400, json=gnap_error("too_fast", "continued too fast")),
                httpx.Response(200, json=GRANT_DOC),
            ]
        )
        run(poll(sleep, wait=0))
    assert sleep.calls == [0, 1.0]


def test_gives_up_at_the_timeout() -> None:
    sleep = FakeSleep()
    with respx.mock() as router:
        route = router.post(CONTINUE_URI).respond(200, json=pending(wait=5))
        with pytest.raises(GrantTimeout) as caught:
            run(poll(sleep, wait=5, timeout=22))
    assert sleep.calls == [5, 5, 5, 5]
    assert route.call_count == 4
    assert "within 22s" in str(caught.value)
    assert caught.value.hint is not None


def test_a_grant_that_cannot_be_polled_fails_at_once() -> None:
    sleep = FakeSleep()
    with respx.mock() as router:
        route = router.post(CONTINUE_URI).respond(
            401, json=gnap_error("request_denied", "grant cannot be polled")
        )
        with pytest.raises(errors.GrantError) as caught:
            run(poll(sleep))
    assert route.call_count == 1
    assert caught.value.hint is not None and "interact_ref" in caught.value.hint


def test_pending_continue_response_is_the_pending_form() -> None:
    with respx.mock() as router:
        router.post(CONTINUE_URI).respond(200, json={"continue": CONTINUE_DOC})
        result = run(lambda op: op.continue_grant(CONTINUE_URI, CONTINUE_TOKEN))
    assert isinstance(result, m.PendingGrant)
    assert result.interact is None
    assert result.continue_.wait == CONTINUE_DOC["wait"]


def test_waits_with_the_clients_own_sleep_when_given_none() -> None:
    sleep = FakeSleep()

    async def call(op: OpenPaymentsClient) -> m.Grant:
        return await op.poll_grant(CONTINUE_URI, CONTINUE_TOKEN, wait=3, timeout=60)

    with respx.mock() as router:
        router.post(CONTINUE_URI).mock(return_value=httpx.Response(200, json=GRANT_DOC))
        run(call, sleep=sleep)
    assert sleep.calls == [3]
