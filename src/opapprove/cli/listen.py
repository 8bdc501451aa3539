"""``opapprove listen``: catch the wallet's redirect on loopback and finish the payment.

The seed's ``GET /payments/finish`` (and with ``--api`` its payments-service routes),
served by uvicorn in this process's event loop so the Flow, its HTTP clients and the
server share one loop and close together. One line per event, or one JSON line each.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from opapprove.cli import exitcodes
from opapprove.cli.errors import CliError
from opapprove.cli.options import seconds_option
from opapprove.cli.ports import listening_socket
from opapprove.cli.runtime import Runtime

if TYPE_CHECKING:
    from opapprove.settings import Settings

# Listener events that are a finish callback (what --once and --timeout wait for).
CALLBACK_EVENTS = frozenset({"finished", "callback_refused", "failed"})


# With --once, how long a paid grant's buyer page may take to show the outcome before exit.
ONCE_PAGE_GRACE_SECONDS = 5.0


@dataclass
class _Outcome:
    code: int | None = None
    pending_id: str | None = None
    callbacks: int = 0
    interrupted: bool = False
    timed_out: bool = False


def listen(
    ctx: typer.Context,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            metavar="N",
            min=0,
            max=65535,
            help="Port (default: listen_port; 0: any free).",
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            metavar="HOST",
            help="Loopback address to bind (default: listen_host, 127.0.0.1).",
        ),
    ] = None,
    once: Annotated[
        bool,
        typer.Option("--once", help="Exit after the first finish callback, with its outcome."),
    ] = False,
    timeout: Annotated[
        float | None,
        seconds_option("--timeout", "Exit 8 if no finish callback arrives within S seconds."),
    ] = None,
    api: Annotated[
        bool,
        typer.Option(
            "--api",
            help="Also serve the seed's POST /sellers and POST /offers/{offerId}/quotes/start"
            " (JSON, bearer api_token; without one, a token made for this run and printed).",
        ),
    ] = False,
) -> None:
    """Serve GET /payments/finish on loopback: verify each redirect, finish the payment.

    The buyer's page answers at once and turns into the outcome by itself while the payment
    is made in the background. With --once the exit code is the callback's outcome: 0 paid,
    6 expired, 7 refused (forged or altered); a wallet's unverified result= (a rejection,
    say) is noted and listening goes on. Ctrl-C stops it (exit 130) once payments under way
    have finished.
    """
    runtime = Runtime.of(ctx)
    settings = runtime.settings()
    bind_host = (host or settings.listen_host).strip()
    bind_port = settings.listen_port if port is None else port
    sock = _bind(bind_host, bind_port)
    outcome = _Outcome()
    try:
        runtime.run(_serve(runtime, sock, outcome, once=once, timeout=timeout, api=api))
    except KeyboardInterrupt:
        outcome.interrupted = True  # Ctrl-C before the server's own handling was in place
    finally:
        sock.close()
    output = runtime.output
    if outcome.interrupted:
        if output.json_mode:
            output.event({"event": "stopped", "reason": "interrupted"})
        else:
            output.info("listener stopped (Ctrl-C)")
        raise typer.Exit(exitcodes.INTERRUPTED)
    if outcome.timed_out:
        raise CliError(
            f"no finish callback arrived within {timeout:g} s",
            hint="did the buyer approve? Is the wallet redirecting to this listener's"
            " base_url? (`opapprove pending list` shows what is waiting)",
            kind="timeout",
        )
    if outcome.code:
        raise typer.Exit(outcome.code)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    if not _is_loopback(host):
        raise CliError(
            f"refusing to listen on {host}: the listener binds loopback only",
            hint="use --host 127.0.0.1 and put a reverse proxy in front for outside access",
        )
    address = host.strip("[]")
    if address == "localhost":
        address = "127.0.0.1"
    sock = listening_socket(
        address,
        port,
        hint="another process may be using the port: pick another with --port (and"
        " set base_url to match), or stop that process",
    )
    sock.setblocking(False)
    return sock


def _describe_base(
    settings: Settings, url: str, port: int, *, api: bool = False
) -> tuple[str, bool | None, str | None]:
    """The finish URL wallets will use, whether it reaches this listener, and a warning."""
    from urllib.parse import urlsplit

    base = settings.base_url.rstrip("/")
    finish = f"{base}/payments/finish"
    parts = urlsplit(base)
    base_port = parts.port or (443 if parts.scheme == "https" else 80)
    if not _is_loopback(parts.hostname or ""):
        return (
            finish,
            None,
            f"base_url {base} is not this machine's loopback: make sure a proxy forwards"
            f" {finish} to {url}",
        )
    if base_port != port and api:
        # The seed's marketplace is this: its own /payments/finish hands the redirect on.
        return (
            finish,
            False,
            f"wallets will redirect browsers to {finish} (base_url), not to this listener on"
            f" {url}: right if the app there hands each redirect on to {url}/payments/finish"
            f" (as the seed's marketplace does); if not, pass --port {base_port}, or set"
            f' base_url = "{url}" before starting quotes',
        )
    if base_port != port:
        return (
            finish,
            False,
            f"wallets will redirect browsers to {finish} (base_url), but this listener is on"
            f' {url}: pass --port {base_port}, or set base_url = "{url}" before starting quotes',
        )
    return finish, True, None


def _code_for(event: dict[str, Any]) -> int:
    kind = event.get("event")
    if kind == "finished":
        return exitcodes.for_state(str(event.get("state"))) or exitcodes.OK
    if kind == "callback_refused":
        return exitcodes.VERIFICATION
    return exitcodes.exit_code(str(event.get("kind")))


# A listener event as one line on the operator's terminal: fields the event lacks show as
# None; the tail is added when the event has its field.
_EVENT_LINES = {
    "finished": "finished  {pid}  offer {offerId}  {state}",
    "callback_refused": "REFUSED   {pid}  {why}",
    "failed": "failed    {pid}  {kind}: {error}",
    "wallet_result": "wallet    {pid}  result={result} (unverified: the grant stays {state})",
    "quote_started": "quote     {pid}  offer {offerId}  awaiting approval",
    "seller_added": "seller    {sellerId} added",
}
_EVENT_TAILS = {"finished": ("outgoingPayment", "  payment {}"), "failed": ("hint", " — {}")}


class _EventFields(dict[str, Any]):
    def __missing__(self, key: str) -> None:
        return None


def _event_line(event: dict[str, Any]) -> str:
    kind = event.get("event", "?")
    pid = event.get("pendingId") or "-"
    why = event.get("error") or event.get("reason") or "refused"
    template = _EVENT_LINES.get(kind)
    line = (
        f"{kind}  {pid}"
        if template is None
        else template.format_map(_EventFields(event, pid=pid, why=why))
    )
    field, tail = _EVENT_TAILS.get(kind, ("", ""))
    if field and event.get(field):
        line += tail.format(event[field])
    # Values come from URLs and bodies: no escape sequence may reach the operator's terminal.
    return " ".join("".join(ch if ch.isprintable() else " " for ch in line).split())


async def _serve(
    runtime: Runtime,
    sock: socket.socket,
    outcome: _Outcome,
    *,
    once: bool,
    timeout: float | None,
    api: bool,
) -> None:
    import asyncio
    import signal
    import time

    import uvicorn

    from opapprove.cli.flows import open_flow
    from opapprove.cli.output import iso
    from opapprove.cli.views import clock_time
    from opapprove.servers.listener import create_listener_app
    from opapprove.servers.serving import GuardedH11Protocol

    class Server(uvicorn.Server):
        # Ctrl-C is this command's to handle (exit 130), not uvicorn's to re-raise.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    settings = runtime.settings()
    output = runtime.output
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    finish, matches, warning = _describe_base(settings, url, port, api=api)
    token = settings.api_token.get_secret_value() if settings.api_token else None
    made_token = api and not token
    if made_token:
        import secrets

        token = secrets.token_urlsafe(24)  # for this run only; printed once below
    server: Server | None = None
    loop = asyncio.get_running_loop()

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    def interrupted() -> None:
        outcome.interrupted = True
        stop()

    def timed_out() -> None:
        if outcome.callbacks == 0:
            outcome.timed_out = True
            stop()

    def heard(event: dict[str, Any]) -> None:
        if event.get("event") == "page_shown":
            if once and outcome.code is not None and event.get("pendingId") == outcome.pending_id:
                stop()
            return  # not news to the operator: the outcome was reported already
        now = time.time()
        if output.json_mode:
            output.event({**event, "at": iso(now)})
        else:
            output.out.print(f"{clock_time(now)}  {_event_line(event)}", markup=False)
            output.out.file.flush()
        if event.get("event") in CALLBACK_EVENTS:
            outcome.callbacks += 1
            if once and outcome.code is None:
                outcome.code = _code_for(event)
                if event.get("event") == "finished" or event.get("background"):
                    # Paid in the background: let the buyer's page turn to the outcome first.
                    outcome.pending_id = event.get("pendingId")
                    loop.call_later(ONCE_PAGE_GRACE_SECONDS, stop)
                else:
                    stop()

    # Before anything is printed: once "Listening" shows, Ctrl-C is handled here.
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, interrupted)
            handled.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or a platform without it: Ctrl-C still ends us
    timer = loop.call_later(timeout, timed_out) if timeout is not None else None
    try:
        async with open_flow(runtime, background_webhooks=True) as session:
            app = create_listener_app(session.flow, on_event=heard, api=api, api_token=token)
            config = uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_keep_alive=2,
                http=GuardedH11Protocol,  # a head that trickles in is cut off
            )
            server = Server(config)
            if outcome.interrupted or outcome.timed_out:
                return
            _announce(
                runtime, url, finish, matches, warning, api, token, made_token, session.webhooks
            )
            try:
                await server.serve(sockets=[sock])
            finally:
                # Payments under way finish first (bounded); a stopped one is left for replay.
                await app.state.finisher.aclose(float(settings.timeout) * 2)
    finally:
        if timer is not None:
            timer.cancel()
        for sig in handled:
            loop.remove_signal_handler(sig)


def _announce(
    runtime: Runtime,
    url: str,
    finish: str,
    matches: bool | None,
    warning: str | None,
    api: bool,
    token: str | None,
    made_token: bool,
    webhooks: object,
) -> None:
    output = runtime.output
    if output.json_mode:
        event: dict[str, Any] = {
            "event": "listening",
            "url": url,
            "finishUrl": finish,
            "matchesBaseUrl": matches,
            "api": api,
            "webhooks": bool(webhooks),
        }
        if made_token:
            event["runApiToken"] = token
        output.event(event)
    else:
        output.out.print(f"Listening on {url} (Ctrl-C stops)", markup=False)
        output.out.print(f"Finish URL for new quotes: {finish}?pendingId=...", markup=False)
        if api:
            output.out.print(
                f"API: POST {url}/sellers, POST {url}/offers/{{offerId}}/quotes/start, GET"
                f" {url}/payments/{{pendingId}} (Authorization: Bearer <token>, JSON only)",
                markup=False,
            )
            if made_token:
                output.out.print(f"API token for this run: {token}", markup=False)
        output.out.file.flush()
    if warning:
        output.warn(warning)
    if made_token:
        output.warn("api_token is not set: the API token above is new each run; set api_token")
