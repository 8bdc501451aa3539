"""``opapprove listen`` in-process: --once over real loopback HTTP, --timeout, bad binds."""

from __future__ import annotations

import json
import socket
import threading

import httpx

from opapprove.cli import exitcodes
from tests.cli.conftest import Cli, one_error_line
from tests.cli.flow_kit import Kit
from tests.servers.page_support import follow


def wait_until_up(http: httpx.Client, base: str) -> None:
    for _ in range(500):
        try:
            http.get(f"{base}/health")
            return
        except httpx.TransportError:
            threading.Event().wait(0.02)


def browse_when_up(base: str, url: str, seen: list[httpx.Response]) -> threading.Thread:
    """A browser that follows the wallet's redirect as soon as the listener answers."""

    def run() -> None:
        with httpx.Client(timeout=10) as http:
            wait_until_up(http, base)
            seen.extend(follow(http.get, url))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_once_finishes_the_payment_and_exits_0(kit: Kit) -> None:
    started = kit.start()
    finish_url = kit.approve(started["approvalUrl"])
    seen: list[httpx.Response] = []
    thread = browse_when_up(kit.listener, finish_url, seen)
    result = kit.cli("--json", "listen", "--once", "--timeout", "30")
    thread.join(10)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["event"] == "listening" and events[0]["matchesBaseUrl"] is True
    assert events[0]["url"] == kit.listener
    assert events[1]["event"] == "finished" and events[1]["state"] == "completed"
    assert seen and all(page.status_code == 200 for page in seen)
    assert "completing the payment" in seen[0].text and "Payment complete" in seen[-1].text
    assert len(kit.payments()) == 1


def test_once_with_a_forged_callback_exits_7(kit: Kit) -> None:
    started = kit.start()
    forged = kit.approve(started["approvalUrl"]).replace("hash=", "hash=x")
    seen: list[httpx.Response] = []
    thread = browse_when_up(kit.listener, forged, seen)
    result = kit.cli("listen", "--once", "--timeout", "30")
    thread.join(10)
    assert result.exit_code == exitcodes.VERIFICATION
    assert "REFUSED" in result.stdout
    assert seen[0].status_code == 400
    assert kit.payments() == []


def test_timeout_without_callbacks_is_exit_8(kit: Kit) -> None:
    result = kit.cli("listen", "--port", "0", "--timeout", "0.1")
    assert result.exit_code == exitcodes.TIMEOUT
    assert "Listening on http://127.0.0.1:" in result.stdout
    # Port 0 is not base_url's port: the wallet would redirect elsewhere, so it says so.
    lines = result.stderr.splitlines()
    assert any(ln.startswith("warning: wallets will redirect") for ln in lines)
    assert [ln for ln in lines if ln.startswith("error: ")] == [
        next(ln for ln in lines if ln.startswith("error: no finish callback arrived"))
    ]


def test_api_behind_an_app_on_base_url_is_told_that_app_must_hand_redirects_on(
    cli: Cli,
) -> None:
    # The seed's marketplace: base_url is the marketplace, whose /payments/finish hands the
    # wallet's redirect on to `listen --api` on another port. A warning, not an order to move.
    result = cli("listen", "--api", "--port", "0", "--timeout", "0.1")
    assert result.exit_code == exitcodes.TIMEOUT
    (warning,) = [ln for ln in result.stderr.splitlines() if "wallets will redirect" in ln]
    assert "right if the app there hands each redirect on to http://127.0.0.1:" in warning
    assert "seed's marketplace" in warning


def test_api_without_api_token_makes_one_for_the_run_and_prints_it_once(kit: Kit) -> None:
    seen: list[httpx.Response] = []

    def call_api() -> None:
        with httpx.Client(timeout=10) as http:
            wait_until_up(http, kit.listener)
            seen.append(http.post(f"{kit.listener}/sellers", json={"id": "x"}))

    thread = threading.Thread(target=call_api, daemon=True)
    thread.start()
    result = kit.cli("listen", "--api", "--timeout", "1")
    thread.join(10)
    assert result.exit_code == exitcodes.TIMEOUT
    (line,) = [ln for ln in result.stdout.splitlines() if "API token for this run" in ln]
    token = line.rsplit(" ", 1)[-1]
    assert len(token) >= 32 and result.output.count(token) == 1
    assert seen and seen[0].status_code == 401  # the token is required, even from here
    second = kit.cli("listen", "--api", "--timeout", "0.1")
    assert token not in second.output  # a new one each run


def test_non_loopback_host_is_refused(cli: Cli) -> None:
    result = cli("listen", "--host", "0.0.0.0", "--port", "0")
    assert result.exit_code == exitcodes.USAGE
    assert "loopback" in one_error_line(result)


def test_port_in_use(cli: Cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = cli("listen", "--port", str(port), "--timeout", "1")
    assert result.exit_code == exitcodes.TRANSPORT
    assert f"cannot listen on 127.0.0.1:{port}" in one_error_line(result)


def test_event_lines_carry_no_control_characters() -> None:
    from opapprove.cli.listen import _event_line

    evil = "x\x1b]0;pwned\x07\x1b[2J\r\nFAKE"
    for event in (
        {"event": "wallet_result", "pendingId": evil, "result": evil, "state": "started"},
        {"event": "quote_started", "pendingId": "P", "offerId": evil},
        {"event": "failed", "pendingId": "P", "kind": "protocol", "error": evil, "hint": evil},
        {"event": evil, "pendingId": evil},
    ):
        line = _event_line(event)
        assert line.isprintable() and "FAKE" in line, line
