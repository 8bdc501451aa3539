"""``opapprove webhook verify``: does a delivery's ``Opapprove-Signature`` match its body?

For the marketplace side: check a captured delivery (or your own receiver's logic)
against the shared ``webhook_secret``. The body must be the bytes exactly as received.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from opapprove.cli import exitcodes
from opapprove.cli.errors import CliError, config_error
from opapprove.cli.options import seconds_option
from opapprove.cli.runtime import Runtime

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(help="Check marketplace webhook deliveries.", no_args_is_help=True)

_HEADER_NAME = "opapprove-signature"


def _body(body: str | None, body_file: Path | None) -> bytes:
    if body is not None and body_file is not None:
        raise CliError("give --body or --body-file, not both", hint="see `webhook verify --help`")
    if body is not None:
        return body.encode("utf-8")
    if body_file is not None:
        try:
            return body_file.expanduser().read_bytes()
        except OSError as exc:
            raise CliError(
                f"cannot read --body-file {body_file}: {exc.strerror or exc}",
                hint="check the path",
            ) from exc
    if sys.stdin.isatty():
        raise CliError(
            "no body to check", hint="give --body TEXT or --body-file FILE, or pipe it to stdin"
        )
    return sys.stdin.buffer.read()


def _header_value(header: str) -> str:
    # Accept the whole header line as copied from a log: "Opapprove-Signature: t=...,v1=...".
    name, sep, value = header.partition(":")
    if sep and name.strip().lower() == _HEADER_NAME:
        return value.strip()
    return header.strip()


@app.command("verify")
def verify(
    ctx: typer.Context,
    header: Annotated[
        str,
        typer.Option(
            "--header", metavar="VALUE", help="The Opapprove-Signature header (t=...,v1=...)."
        ),
    ],
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret",
            metavar="S",
            help="The shared secret (default: the config's webhook_secret).",
        ),
    ] = None,
    body: Annotated[
        str | None, typer.Option("--body", metavar="TEXT", help="The raw body, as text.")
    ] = None,
    body_file: Annotated[
        Path | None, typer.Option("--body-file", metavar="FILE", help="The raw body, from a file.")
    ] = None,
    tolerance: Annotated[
        float, seconds_option("--tolerance", "Seconds a signature may be old (or early).")
    ] = 300.0,
) -> None:
    """Say whether a webhook delivery's signature is valid, and why not.

    The body comes from --body, --body-file or stdin. Exit 0 valid, 7 not.
    """
    from opapprove.approvals.webhooks import WebhookSignatureError, verify_signature

    runtime = Runtime.of(ctx)
    raw = _body(body, body_file)
    key: Any = secret
    if not key:
        key = runtime.settings().webhook_secret
        if key is None:
            raise config_error(
                "no webhook secret to check against",
                "pass --secret, or set webhook_secret in the config (OPAPPROVE_WEBHOOK_SECRET)",
            )
    value = _header_value(header)
    now = time.time()
    try:
        verify_signature(key, value, raw, tolerance=tolerance, now=now)
    except WebhookSignatureError as exc:
        why = f"INVALID ({exc.reason}): {exc.message}" + (f" — {exc.hint}" if exc.hint else "")
        data: dict[str, Any] = {
            "valid": False,
            "reason": exc.reason,
            "message": exc.message,
            "hint": exc.hint,
        }
        runtime.conclude(
            data,
            lambda console: console.print(why, markup=False, soft_wrap=True),
            ok=False,
            exit_code=exitcodes.VERIFICATION,
        )
    signed_at = _timestamp(value)
    data = {"valid": True, "signedAt": signed_at, "ageSeconds": round(now - signed_at, 1)}

    def valid(console: Console) -> None:
        console.print(
            f"VALID: the signature matches the body (signed {int(now - signed_at)} s ago)",
            markup=False,
        )

    runtime.output.result(data, valid)


def _timestamp(header: str) -> int:
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            return int(value)
    return 0
