"""Every command, with --trace, --trace-file and --json, in one scenario: no secret gets out.

The long-running commands (listen, quote start --poll, sandbox) run as subprocesses, the
others in this process, all on real loopback HTTP against one served sandbox.

The secrets searched for are the real ones, collected afterwards from the stores, the
sandbox and the key files: access and continue tokens, the ILP shared secrets, the
private keys (PEM, its base64, the raw key), the webhook secret and the API token.
"""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
import stat
import time
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from opapprove.openpayments.keys import load_private_key_file
from opapprove.servers.serving import serve_in_thread
from tests.cli.flow_kit import Kit, Proc
from tests.e2e.conftest import Lines
from tests.servers.page_support import follow

WEBHOOK_SECRET = "whsec-e2e-Zq8nV3xK0pL7"
API_TOKEN = "api-token-e2e-Hs92LmQ4"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def key_secrets(path: Path) -> list[str]:
    pem = path.read_text()
    key = load_private_key_file(path)
    raw = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    return [
        pem.strip(),
        body,
        base64.b64encode(pem.encode()).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        base64.b64encode(raw).decode(),
    ]


def store_secrets(path: Path) -> tuple[list[str], list[str]]:
    """(tokens in the store, every event's data) of one store file."""
    with sqlite3.connect(path) as db:
        tokens = [
            v
            for row in db.execute("SELECT access_token, continue_token FROM pending")
            for v in row
            if v
        ]
        tokens += [r[0] for r in db.execute("SELECT access_token FROM cached_grants")]
        events = [r[0] for r in db.execute("SELECT data FROM events")]
    return tokens, events


def wait_for_redirect(store: Path, offer: str) -> str:
    """The approval URL of a grant another process is starting, once it is committed."""
    for _ in range(600):
        with sqlite3.connect(store) as db:
            row = db.execute(
                "SELECT interact_redirect FROM pending WHERE offer_id = ?", (offer,)
            ).fetchone()
        if row and row[0]:
            return str(row[0])
        time.sleep(0.05)
    raise AssertionError(f"no approval URL for offer {offer}")


def sandbox_secrets(kit: Kit) -> list[str]:
    state = kit.box.state
    found = [t.value for t in state.tokens.values()]
    found += [g.continue_token for g in state.grants.values()]
    found += [p.shared_secret for p in state.incoming_payments()]
    return found


def test_no_secret_leaks_from_any_command(kit: Kit, tmp_path: Path) -> None:
    deliveries: list[tuple[str, bytes]] = []

    async def receive(request: Request) -> Response:
        deliveries.append((request.headers["opapprove-signature"], await request.body()))
        return Response(status_code=204)

    receiver = serve_in_thread(Starlette(routes=[Route("/hook", receive, methods=["POST"])]))
    config = kit.cli.config
    config.write_text(
        config.read_text()
        + f'webhook_url = "{receiver.url}/hook"\nwebhook_secret = "{WEBHOOK_SECRET}"\n'
        + f'api_token = "{API_TOKEN}"\n'
    )
    trace = tmp_path / "trace.jsonl"
    runs: list[Proc] = []

    def run(*args: str, stdin: str | None = None) -> Proc:
        # In this process (CliRunner) for speed; listen, --poll and sandbox run as processes.
        result = kit.cli("--json", "--trace", "--trace-file", str(trace), *args, input=stdin)
        assert "Traceback" not in result.stderr, result.stderr
        proc = Proc(args, result.exit_code, result.stdout, result.stderr)
        runs.append(proc)
        return proc

    def popen(*args: str) -> Lines:
        return Lines(kit.popen("--json", "--trace", "--trace-file", str(trace), *args))

    try:
        inline_key = base64.b64encode(kit.key_path.read_bytes()).decode()
        assert run("seller", "add", "second", "--wallet", kit.seller, "--key-id", kit.box.key_id,
                   "--key", inline_key).code == 0  # fmt: skip
        assert run("seller", "list").code == 0
        assert run("seller", "show", "default-seller").code == 0
        assert run("wallet", "check", kit.buyer).code == 0
        assert run("version").code == 0

        # A: through the listener, as a browser would.
        a = run("quote", "start", "--offer", "A", "--buyer", kit.buyer, "--amount", "1.00").json()
        listener = popen("listen", "--once", "--timeout", "30", "--api")
        listener.until(lambda line: '"listening"' in line)
        with httpx.Client(timeout=30) as browser:  # reloads until the page shows the outcome
            pages = follow(browser.get, kit.approve(a["approvalUrl"]))
        assert all(page.status_code == 200 for page in pages)
        code, rest, err = listener.finish()
        runs.append(Proc(("listen",), code, "\n".join(listener.seen), err))
        assert code == 0

        # B: the sandbox approve command, then the redirect pasted to `finish`.
        b = run("quote", "start", "--offer", "B", "--buyer", kit.buyer, "--amount", "2.00").json()
        approved = run("sandbox", "approve", b["approvalUrl"])
        assert run("finish", approved.json()["finishUrl"]).code == 0

        # C: cancelled; D: polled.
        c = run("quote", "start", "--offer", "C", "--buyer", kit.buyer, "--amount", "3.00").json()
        assert run("pending", "cancel", c["pendingId"]).code == 0
        poll = popen("quote", "start", "--offer", "D", "--buyer", kit.buyer, "--amount", "4.00",
                     "--poll", "--timeout", "30")  # fmt: skip
        redirect = wait_for_redirect(kit.cli.store, "D")
        assert kit.approve(redirect) == ""
        code, rest, err = poll.finish()
        runs.append(Proc(("quote", "--poll"), code, rest, err))
        assert code == 0 and json.loads(rest)["state"] == "completed"

        assert run("status", a["pendingId"]).code == 0
        assert run("status", b["pendingId"], "--watch").code == 0
        assert run("pending", "list").code == 0
        assert run("pending", "show", b["pendingId"]).code == 0
        assert run("pending", "replay", "--all").code == 0
        assert run("pending", "replay", a["pendingId"]).code == 0

        assert deliveries, "the webhook sender should have posted payment events"
        header, body = deliveries[-1]
        verified = run("webhook", "verify", "--header", header, stdin=body.decode())
        assert verified.code == 0 and verified.json()["valid"] is True

        # The diagnostics commands: what they exit with is their own tests' business.
        run("doctor")
        assert run("smoke", "--buyer", kit.buyer, "--amount", "0.50").code == 0
        run("sig", "verify", str(trace))

        kept = tmp_path / "demo-kept"
        assert run("demo", "--keep", str(kept)).code == 0

        sandbox = Lines(kit.popen("--json", "--trace", "sandbox", "--port", "0"))
        sandbox.until(lambda line: line.startswith("{"))
        sandbox.proc.send_signal(signal.SIGINT)
        code, rest, err = sandbox.finish()
        runs.append(Proc(("sandbox",), code, "\n".join(sandbox.seen), err))
    finally:
        receiver.stop()

    # ---- collect the real secrets, then look for each everywhere ----------------------
    tokens, events = store_secrets(kit.cli.store)
    demo_tokens, demo_events = store_secrets(kept / "opapprove.db")
    secrets: dict[str, str] = {}
    for value in tokens + demo_tokens + sandbox_secrets(kit):
        secrets[value] = "token or shared secret"
    for key_file in (kit.key_path, kept / "seller.pem"):
        for value in key_secrets(key_file):
            secrets[value] = f"private key {key_file.name}"
    secrets[WEBHOOK_SECRET] = "webhook secret"
    secrets[API_TOKEN] = "api token"
    assert len(tokens) >= 8 and len(demo_tokens) >= 2  # the search is over real values

    places: dict[str, str] = {"trace file": trace.read_text()}
    for proc in runs:
        places[f"stdout of {' '.join(proc.args[:3])}"] = proc.stdout
        places[f"stderr of {' '.join(proc.args[:3])}"] = proc.stderr
    places["store events"] = "\n".join(events)
    places["demo store events"] = "\n".join(demo_events)
    assert "--> POST" in "".join(p.stderr for p in runs)  # --trace did print exchanges
    assert len(places["trace file"].splitlines()) > 20

    leaks = [
        f"{what} in {where}"
        for value, what in secrets.items()
        for where, text in places.items()
        if value and value in text
    ]
    assert leaks == []

    private = [
        kit.cli.store,
        kit.key_path,
        kit.cli.store.parent / "keys" / "second.pem",
        trace,
        kept / "opapprove.db",
        kept / "seller.pem",
    ]
    assert {str(p): oct(mode(p)) for p in private} == {str(p): "0o600" for p in private}
