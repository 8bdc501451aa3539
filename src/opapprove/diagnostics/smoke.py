"""``smoke``: the approval flow up to the buyer's consent, for CI where nobody clicks Approve.

The steps: the seller's key and wallet, the buyer's wallet, steps 1-7 of the flow
(wallet addresses, incoming payment, quote, interactive grant), the approval URL
answers, and the grant is cancelled so nothing stays open at the wallet. The first
failure stops the run (later steps are skipped) except the cancel, which always runs
when a grant was started. Steps are results to print or write as JUnit XML.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx

from opapprove.approvals.errors import FlowError
from opapprove.approvals.records import Pending, State
from opapprove.approvals.sellers import resolve_seller
from opapprove.approvals.store import StoreError
from opapprove.diagnostics.finding import Finding
from opapprove.diagnostics.junit import JUnitCase, junit_xml
from opapprove.errors import EXIT_CODES
from opapprove.openpayments import errors as op_errors
from opapprove.openpayments import urls
from opapprove.openpayments.exchange import Exchange
from opapprove.openpayments.interaction import BROWSER_ACCEPT
from opapprove.openpayments.money import format_wire
from opapprove.openpayments.transport import system_tls

if TYPE_CHECKING:
    from opapprove.approvals.flow import Flow
    from opapprove.approvals.records import Seller
    from opapprove.openpayments.client import OpenPaymentsClient

T = TypeVar("T")
StepStatus = Literal["pass", "fail", "skip"]
UNEXPECTED_EXIT = 1
CLASSNAME = "opapprove.smoke"

# The flow's steps 1-7 as the store records them: (step name, the event that ends it).
FLOW_STEPS = (
    ("wallet addresses", "wallets_fetched"),
    ("incoming payment", "incoming_payment_created"),
    ("quote", "quote_created"),
    ("outgoing payment grant", "approval_requested"),
)
STEP_NAMES = (
    "seller key",
    "seller wallet",
    "seller key published",
    "buyer wallet",
    *(name for name, _ in FLOW_STEPS),
    "approval URL",
    "grant cancelled",
)


@dataclass(frozen=True)
class StepResult(Finding[StepStatus]):
    """One step; a failure's ``kind`` is a FlowError kind, and ``exit_code`` its code."""

    seconds: float = 0.0
    exit_code: int = 0

    def to_json(self) -> dict[str, Any]:
        return {**self.json_head("step"), "seconds": round(self.seconds, 3), "kind": self.kind}


@dataclass
class SmokeReport:
    steps: list[StepResult] = field(default_factory=list)
    pending_id: str | None = None
    approval_url: str | None = None

    @property
    def first_failure(self) -> StepResult | None:
        return next((s for s in self.steps if s.status == "fail"), None)

    @property
    def ok(self) -> bool:
        return self.first_failure is None

    @property
    def exit_code(self) -> int:
        failed = self.first_failure
        return 0 if failed is None else failed.exit_code

    def to_json(self) -> dict[str, Any]:
        return {
            "pendingId": self.pending_id,
            "approvalUrl": self.approval_url,
            "exitCode": self.exit_code,
            "steps": [s.to_json() for s in self.steps],
        }


def to_junit(report: SmokeReport, *, suite: str = "opapprove smoke") -> str:
    """The report as JUnit XML: one testcase per step, failures and skips marked."""
    cases = [
        JUnitCase(
            name=step.name,
            classname=CLASSNAME,
            seconds=step.seconds,
            failure=step.message if step.status == "fail" else None,
            failure_type=step.kind,
            details="\n".join(p for p in (step.message, step.hint) if p),
            skipped=step.message if step.status == "skip" else None,
        )
        for step in report.steps
    ]
    properties = {"pendingId": report.pending_id} if report.pending_id else None
    return junit_xml(suite, cases, properties=properties)


async def run_smoke(
    flow: Flow,
    *,
    buyer: str,
    amount: str,
    seller_id: str | None = None,
    offer_id: str | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> SmokeReport:
    """Run every step against the wallets ``flow`` talks to; never raises for a failed step."""
    smoke = _Smoke(flow, clock)
    await smoke.run(buyer, amount, seller_id, offer_id or f"smoke-{int(time.time())}")
    return smoke.report


def failure_of(exc: BaseException) -> tuple[str, str | None, str, int]:
    """``(message, hint, kind, exit code)`` for what a step raised."""
    if isinstance(exc, FlowError):
        return exc.message, exc.hint, exc.kind, exc.exit_code
    if isinstance(exc, op_errors.OpenPaymentsError):
        if isinstance(exc, urls.InsecureUrlError | op_errors.WalletAddressError):
            kind = "input"
        elif isinstance(exc, op_errors.TransportError):
            kind = "transport"
        elif isinstance(exc, op_errors.ResponseError):
            kind = "wallet"
        elif isinstance(exc, op_errors.KeyLoadError):
            kind = "config"
        else:
            kind = "protocol"
        return exc.message, exc.hint, kind, EXIT_CODES[kind]
    if isinstance(exc, StoreError):
        return exc.message, exc.hint, "config", EXIT_CODES["config"]
    return (
        f"unexpected {type(exc).__name__}: {exc}",
        "rerun with --debug for the traceback, and report it",
        "unexpected",
        UNEXPECTED_EXIT,
    )


class _Smoke:
    def __init__(self, flow: Flow, clock: Callable[[], float]) -> None:
        self.flow = flow
        self.clock = clock
        self.report = SmokeReport()

    @property
    def failed(self) -> bool:
        return not self.report.ok

    def record(self, name: str, status: StepStatus, message: str, **extra: Any) -> None:
        self.report.steps.append(StepResult(name, status, message, **extra))

    def skip(self, *names: str, why: str = "skipped: an earlier step failed") -> None:
        for name in names:
            self.record(name, "skip", why)

    def fail(self, name: str, exc: BaseException, seconds: float = 0.0) -> None:
        message, hint, kind, code = failure_of(exc)
        self.record(
            name, "fail", message, hint=hint, seconds=seconds, kind=kind, exit_code=code or 1
        )

    async def step(self, name: str, action: Callable[[], Awaitable[tuple[T, str]]]) -> T | None:
        """Run one step unless an earlier one failed; ``action`` returns (value, message)."""
        if self.failed:
            self.skip(name)
            return None
        started = self.clock()
        try:
            value, message = await action()
        except Exception as exc:
            self.fail(name, exc, self.clock() - started)
            return None
        self.record(name, "pass", message, seconds=self.clock() - started)
        return value

    async def run(self, buyer: str, amount: str, seller_id: str | None, offer_id: str) -> None:
        flow = self.flow
        seller_and_client = await self.step("seller key", lambda: self.seller(seller_id))
        seller, client = seller_and_client or (None, None)

        async def seller_wallet() -> tuple[bool, str]:
            assert seller is not None and client is not None
            wallet = await client.get_wallet_address(seller.wallet_address_url)
            return True, f"{wallet.id} ({wallet.asset_code}, scale {wallet.asset_scale})"

        async def published() -> tuple[bool, str]:
            assert seller is not None and client is not None
            return await self.key_published(seller, client)

        async def buyer_wallet() -> tuple[str, str]:
            assert client is not None
            url = urls.parse_wallet_address(buyer, allow_http=bool(flow.settings.allow_http))
            wallet = await client.get_wallet_address(url)
            return url, f"{wallet.id} ({wallet.asset_code}, scale {wallet.asset_scale})"

        await self.step("seller wallet", seller_wallet)
        await self.step("seller key published", published)
        buyer_url = await self.step("buyer wallet", buyer_wallet)
        pending: Pending | None = None
        if buyer_url is None or seller is None:
            self.skip(*(name for name, _ in FLOW_STEPS), "approval URL")
        else:
            pending = await self.start(buyer_url, amount, seller, offer_id)
            await self.approval_url(pending)
        await self.cancel(pending)

    async def seller(self, seller_id: str | None) -> tuple[tuple[Seller, OpenPaymentsClient], str]:
        seller = resolve_seller(self.flow.settings, self.flow.store, seller_id)
        client = self.flow.client_for(seller)  # loads the private key
        return (seller, client), f"seller {seller.id!r}: key id {seller.key_id}, key file loads"

    async def key_published(self, seller: Seller, client: OpenPaymentsClient) -> tuple[bool, str]:
        from opapprove.approvals.sellers import load_key
        from opapprove.openpayments.keys import public_jwk

        jwks_url = f"{seller.wallet_address_url.rstrip('/')}/jwks.json"
        jwks = await client.get_keys(seller.wallet_address_url)
        published = jwks.find(seller.key_id)
        if published is None:
            kids = ", ".join(k.kid for k in jwks.keys) or "no keys"
            raise FlowError(
                f"key id {seller.key_id!r} is not in {jwks_url} (it has: {kids})",
                hint=f"upload the public JWK from `opapprove seller show {seller.id}` to the "
                "wallet, or fix the key id",
                kind="config",
            )
        key = load_key(seller)
        if published.x != public_jwk(key, seller.key_id).x:
            raise FlowError(
                f"the JWK published as {seller.key_id!r} in {jwks_url} is not the public key of "
                f"{seller.private_key_path}",
                hint="upload this private key's JWK, or use the private key of the published one",
                kind="config",
            )
        return True, f"key id {seller.key_id!r} is in {jwks_url} and matches"

    async def start(self, buyer: str, amount: str, seller: Seller, offer_id: str) -> Pending | None:
        flow = self.flow
        started = self.clock()
        error: Exception | None = None
        pending_id: str | None = None
        try:
            pending = await flow.start_quote(
                offer_id=offer_id, buyer_wallet=buyer, amount=amount, seller_id=seller.id
            )
            pending_id = pending.id
        except Exception as exc:
            error = exc
            pending_id = exc.pending_id if isinstance(exc, FlowError) else None
        seconds = self.clock() - started
        current = flow.store.get_pending(pending_id) if pending_id else None
        self.report.pending_id = pending_id
        if current is None:
            self.fail(FLOW_STEPS[0][0], error or RuntimeError("no pending grant"), seconds)
            self.skip(*(name for name, _ in FLOW_STEPS[1:]))
            return None
        events = flow.store.events(current.id)
        at = {e.kind: e.at for e in events}
        previous = events[0].at if events else 0.0
        for name, kind in FLOW_STEPS:
            if kind in at or (kind == "approval_requested" and _granted_outright(current)):
                end = at.get(kind, previous)
                self.record(name, "pass", _describe(name, current), seconds=max(end - previous, 0))
                previous = end
            elif not self.failed:
                self.fail(name, error or RuntimeError(f"the flow stopped in {current.state}"))
            else:
                self.skip(name)
        return current

    async def approval_url(self, pending: Pending | None) -> None:
        name = "approval URL"
        if self.failed or pending is None:
            self.skip(name)
            return
        url = pending.interact_redirect
        if not url:
            self.skip(name, why="skipped: the wallet granted without asking the buyer")
            return
        self.report.approval_url = url
        settings = self.flow.settings
        started = self.clock()
        try:
            target = urls.apply_use_http(url) if settings.use_http else url
            urls.check_url(target, allow_http=bool(settings.allow_http))
            async with httpx.AsyncClient(
                transport=self.flow.transport,
                timeout=float(settings.timeout),
                follow_redirects=False,
                verify=system_tls(),
                # What a browser sends: Rafiki answers text/html alone with 406.
                headers={"Accept": BROWSER_ACCEPT},
            ) as http:
                request = http.build_request("GET", target)
                response = await http.send(request)
        except urls.InsecureUrlError as exc:
            self.fail(name, exc, self.clock() - started)
            return
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            self._trace_probe("GET", url, None, self.clock() - started, error=str(exc))
            self.fail(
                name,
                op_errors.TransportError(
                    f"GET {url} failed: {type(exc).__name__}: {exc}",
                    method="GET",
                    url=url,
                    hint="the buyer's browser could not open the approval URL either",
                ),
                self.clock() - started,
            )
            return
        self._trace_probe("GET", url, response, self.clock() - started)
        seconds = self.clock() - started
        status = response.status_code
        if 200 <= status < 400:
            where = response.headers.get("location")
            shown = f"{status} (redirects to {where})" if where else str(status)
            self.record(name, "pass", f"{url} answers {shown}", seconds=seconds)
            return
        self._wallet_fail(
            name,
            f"the approval URL {url} answered {status}",
            "the buyer could not approve there: check the wallet's interaction server",
            seconds,
        )

    def _wallet_fail(self, name: str, message: str, hint: str, seconds: float) -> None:
        self.fail(name, FlowError(message, hint=hint, kind="wallet"), seconds)

    def _trace_probe(
        self,
        method: str,
        url: str,
        response: httpx.Response | None,
        seconds: float,
        *,
        error: str | None = None,
    ) -> None:
        """Show the probe in ``--trace`` like every other request of the run."""
        hook = self.flow.on_exchange
        if hook is None:
            return
        hook(
            Exchange(
                method=method,
                url=url,
                request_headers=dict(response.request.headers)
                if response is not None
                else {"accept": BROWSER_ACCEPT},
                request_body=b"",
                signature=None,
                status=response.status_code if response is not None else None,
                response_headers=dict(response.headers) if response is not None else {},
                response_body=response.content if response is not None else b"",
                elapsed=seconds,
                error=error,
                operation="approval-url-probe",
            )
        )

    async def cancel(self, pending: Pending | None) -> None:
        name = "grant cancelled"
        current = self.flow.store.get_pending(pending.id) if pending is not None else None
        if current is None or current.is_final:
            self.skip(name, why="skipped: no open grant to cancel")
            return
        started = self.clock()
        try:
            cancelled = await self.flow.cancel(current.id)
        except Exception as exc:
            self.fail(name, exc, self.clock() - started)
            return
        seconds = self.clock() - started
        events = self.flow.store.events(cancelled.id)
        notes = next((e.data for e in reversed(events) if e.kind == "cancelled"), {})
        answer = notes.get("grant")
        if answer not in (None, "ok", "already cancelled", "nothing to cancel"):
            self._wallet_fail(
                name,
                f"the grant is cancelled here, but the wallet answered the cancel with {answer}",
                "the grant may stay open at the wallet until it expires",
                seconds,
            )
            return
        what = "grant revoked at the wallet" if answer == "ok" else "nothing was open at the wallet"
        closed = next((e.data for e in reversed(events) if e.kind == "incoming_payment_closed"), {})
        outcome = closed.get("outcome")
        if outcome not in (None, "completed", "already closed"):
            self._wallet_fail(
                name,
                f"the grant is cancelled, but its incoming payment stays open: {outcome}",
                "the seller's incoming payment stays pending at the wallet until it expires",
                seconds,
            )
            return
        if outcome is not None:
            what += "; incoming payment closed"
        self.record(name, "pass", f"pending {cancelled.id} cancelled; {what}", seconds=seconds)


def _granted_outright(pending: Pending) -> bool:
    return pending.state == State.GRANT_ISSUED and not pending.interact_redirect


def _describe(step: str, pending: Pending) -> str:
    if step == "wallet addresses":
        buyer, seller = pending.buyer_doc or {}, pending.seller_doc or {}
        return (
            f"buyer {buyer.get('id')} ({buyer.get('assetCode')}), "
            f"seller {seller.get('id')} ({seller.get('assetCode')})"
        )
    if step == "incoming payment":
        incoming = (pending.incoming_payment or {}).get("incomingAmount")
        return f"{pending.incoming_payment_url} for {format_wire(incoming)}"
    if step == "quote":
        return (
            f"{pending.quote_url}: debit {format_wire(pending.debit_amount)}, "
            f"receive {format_wire(pending.receive_amount)}"
        )
    if _granted_outright(pending):
        return f"granted by {pending.grant_url} without asking the buyer"
    return f"interactive grant requested from {pending.grant_url}"
