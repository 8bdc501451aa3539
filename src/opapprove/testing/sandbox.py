"""The sandbox for other people's tests: started in a thread, driven over its admin routes.

``running_sandbox()`` serves a fresh sandbox on a free loopback port (in this process, so
start-up costs no interpreter) and yields an ``OpSandbox``. Its helpers talk to the
sandbox's ``/_admin`` routes over HTTP, the way a test would drive a sandbox started by
``opapprove sandbox`` in another process; ``OpSandbox.attach(url)`` does exactly that.

Every sandbox keeps its own log (requests, errors, uvicorn's start-up lines) so a fixture
that fails can say why with the sandbox's own words.
"""

from __future__ import annotations

import collections
import logging
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Unpack

import httpx

from opapprove.openpayments.keys import Jwk
from opapprove.openpayments.transport import system_tls
from opapprove.servers.sandbox import SandboxConfig, SandboxConfigError, SandboxState, create_app
from opapprove.servers.sandbox.faults import FaultSpec
from opapprove.servers.serving import RunningServer, ServerStartError, serve_in_thread

LOG_LINES = 2000


class SandboxStartError(RuntimeError):
    """The sandbox did not start; ``log`` holds what it said before giving up."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.message = message
        self.log = log


class SandboxAdminError(RuntimeError):
    """An ``/_admin`` call the sandbox refused; the message is the sandbox's description."""


class SandboxLog:
    """The last ``LOG_LINES`` lines a sandbox wrote, stamped with wall-clock time."""

    def __init__(self) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self._count = 0

    def write(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime())
        self._lines.append(f"{stamp} {line}")
        self._count += 1

    def mark(self) -> int:
        """A position to read from later: ``text(since=mark)`` is what came after it."""
        return self._count

    def text(self, since: int = 0) -> str:
        lines = list(self._lines)
        skip = max(0, len(lines) - (self._count - since))
        return "\n".join(lines[skip:])


class _LogHandler(logging.Handler):
    def __init__(self, log: SandboxLog) -> None:
        super().__init__(logging.INFO)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        self._log.write(f"uvicorn {record.levelname}: {record.getMessage()}")


class _LoggedApp:
    """ASGI wrapper: one line per request (method, path, status, time) and any traceback."""

    def __init__(self, app: Any, log: SandboxLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: list[int] = []
        reasons: list[str] = []

        async def watch(message: Any) -> None:
            if message.get("type") == "http.response.start":
                status.append(int(message["status"]))
                # The sandbox's own explanation of a refusal (X-Sandbox-Reason).
                reasons.extend(
                    v.decode("latin-1")
                    for k, v in message.get("headers", [])
                    if k.lower() == b"x-sandbox-reason"
                )
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except BaseException:
            self.log.write(f"{scope['method']} {scope['path']} raised:\n{traceback.format_exc()}")
            raise
        ms = (time.perf_counter() - started) * 1000
        answered = str(status[0]) if status else "no answer (connection dropped)"
        why = f": {reasons[0]}" if reasons else ""
        self.log.write(f"{scope['method']} {scope['path']} -> {answered} ({ms:.0f} ms){why}")


class OpSandbox:
    """A running sandbox: its wallet URLs and the operator's helpers.

    ``state`` is the sandbox's Python handle when it runs in this process (else ``None``).
    """

    def __init__(
        self,
        url: str,
        *,
        log: SandboxLog | None = None,
        state: SandboxState | None = None,
        server: RunningServer | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.log = log or SandboxLog()
        self.state = state
        self._server = server
        self._http = httpx.Client(timeout=30, verify=system_tls())

    @classmethod
    def attach(cls, url: str) -> OpSandbox:
        """Drive a sandbox that is already running (``opapprove sandbox`` elsewhere)."""
        return cls(url)

    # -- addresses -----------------------------------------------------------------
    def wallet_url(self, name: str) -> str:
        return f"{self.url}/{name}"

    @property
    def buyer_url(self) -> str:
        return self.wallet_url("buyer")

    @property
    def seller_url(self) -> str:
        return self.wallet_url("seller")

    @property
    def port(self) -> int:
        return httpx.URL(self.url).port or 80

    # -- the operator's helpers ----------------------------------------------------
    def approve(self, url: str) -> str:
        """Approve the interaction at ``url`` as the buyer would; the client's finish URL.

        The finish URL is returned, not visited: open it (or hand it to your app) to
        finish. It is ``""`` when the grant asked for no finish redirect.
        """
        return self._decide(url, reject=False)

    def reject(self, url: str) -> str:
        """Decline the interaction at ``url``; the finish URL (``result=grant_rejected``)."""
        return self._decide(url, reject=True)

    def _decide(self, url: str, *, reject: bool) -> str:
        data = self._admin("POST", "/_admin/approve", {"redirect": url, "reject": reject})
        return str(data.get("finish_url") or "")

    def accounts(self) -> list[dict[str, Any]]:
        """Every account: ``name``, ``url``, ``balance`` (minor units), asset, key ids."""
        accounts: list[dict[str, Any]] = self._admin("GET", "/_admin/accounts")["accounts"]
        return accounts

    def balance(self, name: str) -> int:
        """One account's balance in minor units (``1234`` is 12.34 USD at scale 2)."""
        for account in self.accounts():
            if account["name"] == name:
                return int(account["balance"])
        raise SandboxAdminError(f"the sandbox has no account {name!r}")

    def fault(self, route: str, **spec: Unpack[FaultSpec]) -> dict[str, Any]:
        """Make the next ``times`` requests to ``route`` fail (every one if ``times`` is None).

        ``route`` is an operation name (``create-outgoing-payment``), ``"POST /op/quotes"``
        or a path glob; give one of ``status``, ``delay`` (seconds) or ``drop``
        (``before_commit`` / ``after_commit``).
        """
        body = {route: {k: v for k, v in spec.items() if v is not None}}
        faults: dict[str, Any] = self._admin("POST", "/_admin/faults", body)["faults"]
        return faults

    def clear_faults(self) -> None:
        self._admin("DELETE", "/_admin/faults")

    def latency(self, seconds: float) -> None:
        """Delay every Open Payments answer by ``seconds`` (0 turns it off)."""
        self._admin("POST", "/_admin/latency", {"seconds": seconds})

    def add_key(self, jwk: Jwk | dict[str, Any], wallet: str = "seller") -> None:
        """Publish a public JWK in ``wallet``'s jwks.json, so its signatures are accepted."""
        data = jwk.to_dict() if isinstance(jwk, Jwk) else dict(jwk)
        if "d" in data:
            raise ValueError("add_key takes the public JWK only (this one has 'd')")
        self._admin("POST", "/_admin/keys", {"wallet": wallet, "jwk": data})

    def reset(self) -> None:
        """No faults and no latency: what the next test expects."""
        self.clear_faults()
        self.latency(0)

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            resp = self._http.request(method, f"{self.url}{path}", json=body)
        except httpx.HTTPError as exc:
            raise SandboxAdminError(
                f"{method} {path}: the sandbox at {self.url} did not answer ({exc})"
            ) from exc
        if resp.status_code >= 400:
            try:
                error = resp.json().get("error") or {}
                why = error.get("description") or resp.text
            except (ValueError, AttributeError):
                why = resp.text
            raise SandboxAdminError(f"{method} {path} -> {resp.status_code}: {why}")
        return resp.json() if resp.content else None

    # -- lifetime ------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()
        if self._server is not None:
            self._server.stop()
            self._server = None
            self.log.write("stopped")
        if self.state is not None:
            self.state.close()

    def __repr__(self) -> str:
        return f"OpSandbox({self.url})"


@contextmanager
def running_sandbox(
    *, port: int = 0, host: str = "127.0.0.1", **config: Any
) -> Iterator[OpSandbox]:
    """Serve a fresh sandbox on loopback for the ``with`` block; yield its ``OpSandbox``.

    ``config`` is passed to ``SandboxConfig`` (accounts, fee, lifetimes...). Unlike
    ``opapprove sandbox`` it answers a continue at once (``wait_seconds=0``) unless told
    otherwise: tests should not sleep through Rafiki's five seconds.
    """
    log = SandboxLog()
    config.setdefault("wait_seconds", 0)
    handler = _LogHandler(log)
    log.write(f"starting on {host}:{port or 'a free port'}")
    state: SandboxState | None = None
    try:
        state = SandboxState(SandboxConfig(**config))
        server = serve_in_thread(
            _LoggedApp(create_app(state), log), host=host, port=port, log_handler=handler
        )
    except (OSError, ServerStartError, SandboxConfigError, TypeError, ValueError) as exc:
        if state is not None:
            state.close()
        log.write(f"cannot start: {exc}")
        raise SandboxStartError(f"the sandbox could not start: {exc}", log.text()) from exc
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
    sandbox = OpSandbox(server.url, log=log, state=state, server=server)
    log.write(f"listening at {server.url}")
    try:
        yield sandbox
    finally:
        sandbox.close()
