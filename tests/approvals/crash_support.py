"""Making the flow "die" at a chosen request, and coming back as a fresh process.

Two ways to die right after a request left:
- ``drop``: the sandbox's own fault mode ``drop: after_commit`` (the server acted, the
  client saw the connection close without an answer);
- ``kill``: our side dies after the answer arrived but before anything was committed,
  by raising :class:`Killed` (a BaseException, like SIGKILL nothing in the flow catches);
- ``kill_before``: our side dies just before the request leaves (for seeding states).

``STEPS`` are a single payment's requests; ``SPLIT_STEPS`` a three-seller split payment's,
where a step of one leg is the ``nth`` request of its kind.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from opapprove.approvals.errors import FlowError
from opapprove.approvals.flow import Flow
from opapprove.approvals.records import Pending
from opapprove.approvals.store import Store
from tests.approvals.conftest import FlowKit


class Killed(BaseException):
    """The process was killed: no ``except Exception`` in the flow sees this."""


@dataclass(frozen=True)
class Step:
    name: str
    method: str
    path: str  # a regex over the URL path
    body: str | None = None  # a fragment the body must contain
    nth: int = 1  # dies at the nth request that matches (a split payment's leg n)

    def matches(self, request: httpx.Request) -> bool:
        if request.method != self.method or not re.fullmatch(self.path, request.url.path):
            return False
        return self.body is None or self.body.encode() in request.content


# Every request the flow makes, in order (the wallet GETs and the first two grants run
# concurrently).
STEPS: list[Step] = [
    Step("wallet GET (buyer)", "GET", r"/buyer"),
    Step("wallet GET (seller)", "GET", r"/seller"),
    Step("grant incoming-payment", "POST", r"/auth", '"type":"incoming-payment"'),
    Step("grant quote", "POST", r"/auth", '"type":"quote"'),
    Step("create incoming payment", "POST", r"/op/incoming-payments"),
    Step("create quote", "POST", r"/op/quotes"),
    Step("grant outgoing-payment (interactive)", "POST", r"/auth", '"type":"outgoing-payment"'),
    Step("continue grant", "POST", r"/auth/continue/[^/]+"),
    Step("create outgoing payment", "POST", r"/op/outgoing-payments"),
    Step("get outgoing payment", "GET", r"/op/outgoing-payments/[^/]+"),
    # The seller's own wallet confirms the payment arrived (the seller's token).
    Step("get incoming payment", "GET", r"/op/incoming-payments/[^/]+"),
]
STEP_BY_NAME = {s.name: s for s in STEPS}

# A split payment to three sellers: each leg has its own incoming-payment grant (its seller's
# key), incoming payment, quote, outgoing payment, read of it and read of what its seller
# received; the rest is the grant's.
SPLIT_SELLERS = ("seller-a", "seller-b", "seller-c")
LEGS = range(1, len(SPLIT_SELLERS) + 1)
SPLIT_STEPS: list[Step] = [
    Step("wallet GET (buyer)", "GET", r"/buyer"),
    *(Step(f"wallet GET ({s})", "GET", f"/{s}") for s in SPLIT_SELLERS),
    *(
        step
        for n in LEGS
        for step in (
            Step(f"grant incoming-payment (leg {n})", "POST", r"/auth", '"incoming-payment"', n),
            Step(f"create incoming payment (leg {n})", "POST", r"/op/incoming-payments", nth=n),
        )
    ),
    Step("grant quote", "POST", r"/auth", '"type":"quote"'),
    *(Step(f"create quote (leg {n})", "POST", r"/op/quotes", nth=n) for n in LEGS),
    Step("grant outgoing-payment (interactive)", "POST", r"/auth", '"type":"outgoing-payment"'),
    Step("continue grant", "POST", r"/auth/continue/[^/]+"),
    *(
        Step(f"create outgoing payment (leg {n})", "POST", r"/op/outgoing-payments", nth=n)
        for n in LEGS
    ),
    *(
        Step(f"get outgoing payment (leg {n})", "GET", r"/op/outgoing-payments/[^/]+", nth=n)
        for n in LEGS
    ),
    # Each leg's seller confirms with its own wallet (its own token) that the leg arrived.
    *(
        Step(f"get incoming payment (leg {n})", "GET", r"/op/incoming-payments/[^/]+", nth=n)
        for n in LEGS
    ),
]
GET_ATTEMPTS = 3  # the client retries a GET twice: a drop must outlast all three tries


class CrashingTransport(httpx.AsyncBaseTransport):
    """Passes requests to ``inner``; once armed, dies at the first request matching a step."""

    def __init__(self, inner: httpx.AsyncBaseTransport, sandbox_state: Any) -> None:
        self.inner = inner
        self.sandbox_state = sandbox_state
        self.step: Step | None = None
        self.mode = ""
        self.fired = False
        self.seen = 0

    def arm(self, step: Step, mode: str) -> None:
        assert mode in ("drop", "kill", "kill_before")
        self.step, self.mode, self.fired, self.seen = step, mode, False, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        step = self.step
        if step is None or not step.matches(request):
            return await self.inner.handle_async_request(request)
        self.seen += 1
        if self.seen < step.nth:
            return await self.inner.handle_async_request(request)
        if self.mode == "kill_before":
            self.step, self.fired = None, True
            raise Killed(f"killed before {step.name}")
        if self.mode == "kill":
            response = await self.inner.handle_async_request(request)
            await response.aread()
            self.step, self.fired = None, True
            raise Killed(f"killed after {step.name}")
        # drop: the sandbox drops this request (and the client's retries of a GET) after
        # doing it. Arming just before forwarding, with no await in between, targets
        # exactly this request even while another one to the same route is in flight.
        self.step = None
        times = GET_ATTEMPTS if request.method == "GET" else 1
        self.sandbox_state.set_fault(
            f"{request.method} {request.url.path}", drop="after_commit", times=times
        )
        try:
            return await self.inner.handle_async_request(request)
        except httpx.RemoteProtocolError:
            self.fired = True
            raise


def fresh_flow(kit: FlowKit, *, clock: Any = None, **kwargs: Any) -> tuple[Store, Flow]:
    """What a new process would have: its own Store and Flow on the same store file."""
    store = Store(kit.store.location, clock=clock or kit.sandbox.clock)
    flow = Flow(
        store,
        kit.settings,
        transport=httpx.ASGITransport(app=kit.sandbox.asgi),
        clock=kit.sandbox.clock,
        sleep=no_sleep,
        **kwargs,
    )
    return store, flow


async def no_sleep(seconds: float) -> None:
    return None


def payments_by_pending(sandbox_state: Any) -> dict[str, int]:
    """How many outgoing payments the sandbox holds for each pendingId (from metadata)."""
    counts: dict[str, int] = {}
    for payment in sandbox_state.outgoing_payments():
        metadata = getattr(payment, "metadata", None) or {}
        key = str(metadata.get("pendingId"))
        counts[key] = counts.get(key, 0) + 1
    return counts


Start = Callable[[Flow], Awaitable[Pending]]


async def die_at(
    kit: FlowKit, step: Step, mode: str, *, amount: str = "12.34", start: Start | None = None
) -> tuple[str, bool]:
    """Run the flow until it dies at ``step``; return the grant's id and whether it died.

    ``start`` starts the grant on the dying flow (default: one seller, ``amount``)."""
    crashing = CrashingTransport(httpx.ASGITransport(app=kit.sandbox.asgi), kit.sandbox.state)
    dying = Flow(
        kit.store, kit.settings, transport=crashing, clock=kit.sandbox.clock, sleep=no_sleep
    )
    crashing.arm(step, mode)
    try:
        if start is not None:
            pending = await start(dying)
        else:
            pending = await dying.start_quote(
                offer_id="offer-crash", buyer_wallet=kit.sandbox.buyer, amount=amount
            )
        await dying.finish_url(kit.finish_url(pending.interact_redirect))
    except (Killed, FlowError):
        pass
    finally:
        await dying.aclose()
    rows = kit.store.list_pending()
    if not rows:
        # It died before a row was written (fetching the wallet documents): nothing to replay.
        return "", crashing.fired
    (pending,) = rows
    # A run that still finished (say, by retrying a GET) did not die.
    return pending.id, crashing.fired and not pending.is_final
