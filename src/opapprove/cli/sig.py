"""``opapprove sig verify``: does a captured request's signature verify, and what differs?

The capture is a ``--trace-file`` (every signed line, or ``--line N``) or raw request
headers (``--raw FILE``, with the body after a blank line or in ``--body FILE``). The keys
come from ``--jwks FILE|URL``, ``--wallet URL``, the client wallet a grant request names,
or the default seller's wallet.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from opapprove.cli import exitcodes
from opapprove.cli.errors import CliError
from opapprove.cli.runtime import Runtime
from opapprove.openpayments.redaction import redact_text

if TYPE_CHECKING:
    from rich.console import Console

    from opapprove.diagnostics.sigcheck import CapturedRequest, SigCheck
    from opapprove.openpayments.keys import Jwk

app = typer.Typer(help="Check Open Payments request signatures.", no_args_is_help=True)


def _read_text(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.expanduser().read_text("utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", hint="check the path") from exc
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8 text", hint="give a trace or request text") from exc


def _captures(
    trace: Path | None, line: int | None, raw: Path | None, body: Path | None, url: str | None
) -> list[CapturedRequest]:
    from opapprove.diagnostics.sigcheck import CaptureError, parse_raw_request, read_trace

    if (trace is None) == (raw is None):
        raise CliError(
            "give a trace file, or --raw FILE (not both)",
            hint="opapprove sig verify TRACE.jsonl [--line N], or --raw request.txt",
        )
    try:
        if raw is not None:
            if line is not None:
                raise CliError("--line goes with a trace file, not --raw")
            body_bytes = None
            if body is not None:
                try:
                    body_bytes = body.expanduser().read_bytes()
                except OSError as exc:
                    raise CliError(f"cannot read {body}: {exc.strerror or exc}") from exc
            return [parse_raw_request(_read_text(raw), body_bytes, url=url)]
        assert trace is not None
        if body is not None or url is not None:
            raise CliError("--body and --url go with --raw", hint="a trace line holds both")
        captures = read_trace(_read_text(trace))
    except CaptureError as exc:
        raise CliError(exc.message, hint=exc.hint) from exc
    if line is not None:
        chosen = [c for c in captures if c.line == line]
        if not chosen:
            raise CliError(f"{trace} has no request on line {line}", hint="lines count from 1")
        return chosen
    signed = [c for c in captures if c.signed]
    if not signed:
        raise CliError(
            f"no signed request in {trace}",
            hint="only POSTs and requests carrying an access token are signed",
        )
    return signed


class _Keys:
    """Where each capture's keys come from, fetched once per source."""

    def __init__(self, runtime: Runtime, jwks: str | None, wallet: str | None) -> None:
        self.runtime = runtime
        self.jwks = jwks
        self.wallet = wallet
        self.cache: dict[str, dict[str, Jwk]] = {}

    def source_for(self, captured: CapturedRequest, clients: list[str]) -> str:
        from opapprove.diagnostics.sigcheck import client_wallet

        if self.jwks is not None:
            return self.jwks
        if self.wallet is not None:
            return self.wallet
        own = client_wallet(captured)
        if own is not None:
            return own
        if len(clients) == 1:
            return clients[0]
        from opapprove.cli.seller import seller_or_default

        seller, _ = seller_or_default(self.runtime, None)
        if seller is not None:
            return seller.wallet_address_url
        raise CliError(
            f"no keys to check {captured.describe()} against",
            hint="pass --jwks FILE|URL or --wallet URL (the client wallet whose jwks.json "
            "holds the signing key)",
        )

    def keys(self, source: str) -> dict[str, Jwk]:
        if source not in self.cache:
            self.cache[source] = self._load(source)
        return self.cache[source]

    def _load(self, source: str) -> dict[str, Jwk]:
        from opapprove.diagnostics.sigcheck import fetch_jwks, load_jwks_file

        path = Path(source).expanduser()
        if not source.lower().startswith(("http://", "https://")):
            if not path.is_file():
                raise CliError(
                    f"--jwks {source} is neither a file nor an http(s) URL",
                    hint="give a JWKS file, a jwks.json URL or a wallet address",
                )
            return load_jwks_file(path)
        settings = self.runtime.settings()
        return self.runtime.run(
            fetch_jwks(
                source,
                timeout=float(settings.timeout),
                use_http=bool(settings.use_http),
                allow_http=bool(settings.allow_http),
            )
        )


@app.command("verify")
def verify(
    ctx: typer.Context,
    trace: Annotated[
        Path | None,
        typer.Argument(
            metavar="[TRACE_FILE]", help="A --trace-file (JSON lines); - reads standard input."
        ),
    ] = None,
    line: Annotated[
        int | None, typer.Option("--line", min=1, help="Only this line of the trace file.")
    ] = None,
    raw: Annotated[
        Path | None,
        typer.Option("--raw", help="Raw request: request line, headers, blank line, body."),
    ] = None,
    body: Annotated[
        Path | None, typer.Option("--body", help="With --raw: the body, byte for byte.")
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="With --raw: the full URL the request went to.")
    ] = None,
    jwks: Annotated[
        str | None,
        typer.Option("--jwks", metavar="FILE|URL", help="Keys: a JWKS file or URL."),
    ] = None,
    wallet: Annotated[
        str | None,
        typer.Option("--wallet", metavar="URL", help="Keys: this client wallet's jwks.json."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="The access token, for a trace that masks Authorization (visible to ps!).",
        ),
    ] = None,
) -> None:
    """Verify captured request signatures against a JWKS; say which part differs.

    Exit 0 when every request verifies, 7 when one does not, 9 when nothing failed but a
    masked Authorization header kept a signature from being checked.
    """
    from opapprove.diagnostics.sigcheck import check_signature, client_wallets

    runtime = Runtime.of(ctx)
    if jwks is not None and wallet is not None:
        raise CliError("give --jwks or --wallet, not both")
    captures = _captures(trace, line, raw, body, url)
    keys = _Keys(runtime, jwks, wallet)
    clients = client_wallets(captures)
    checked: list[tuple[CapturedRequest, str, SigCheck]] = []
    for captured in captures:
        source = keys.source_for(captured, clients)
        checked.append(
            (captured, source, check_signature(captured, keys.keys(source), token=token))
        )
    ok = all(result.ok for _, _, result in checked)
    unchecked = not ok and all(result.ok or result.unchecked for _, _, result in checked)
    data: dict[str, Any] = {
        "results": [
            {
                "request": captured.describe(),
                "line": captured.line,
                "method": captured.method,
                "url": captured.url,
                "operation": captured.operation,
                "keys": source,
                **result.to_json(),
            }
            for captured, source, result in checked
        ]
    }

    def render(console: Console) -> None:
        for captured, source, result in checked:
            _render(console, captured, source, result)

    code = exitcodes.OK if ok else exitcodes.UNCHECKED if unchecked else exitcodes.VERIFICATION
    runtime.conclude(data, render, ok=ok, exit_code=code)


def _render(console: Console, captured: CapturedRequest, source: str, result: SigCheck) -> None:
    def say(text: str) -> None:
        console.print(redact_text(text), markup=False, soft_wrap=True)

    mark = "ok  " if result.ok else ("????" if result.unchecked else "FAIL")
    say(f"{mark}  {captured.describe()}")
    say(f"      {result.message}")
    if not result.ok:
        part = f"part: {result.part}" if result.part else ""
        if result.differs:
            part += ("; " if part else "") + "differs: " + ", ".join(result.differs)
        if part:
            say(f"      {part}")
        if result.hint:
            say(f"      → {result.hint}")
    say(f"      keys from {source}")
    for note in result.notes:
        say(f"      note: {note}")
    if result.base_diff:
        say("      signature base, as signed (-) and as received (+):")
        for diff_line in result.base_diff:
            say(f"        {diff_line}")
    elif result.part == "signature" and result.rebuilt_base and not result.recorded_base:
        from opapprove.openpayments.redaction import redact_signature_base

        say("      signature base rebuilt from the request:")
        for base_line in (redact_signature_base(result.rebuilt_base) or "").split("\n"):
            say(f"        {base_line}")
