"""The ``opapprove`` command: global options, error handling, and the command groups.

Command modules are small and import their heavy dependencies inside the command
functions; this file must stay cheap to import (``opapprove --help`` target: 150 ms).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from opapprove import __version__
from opapprove.cli import exitcodes
from opapprove.cli.errors import classify
from opapprove.cli.runtime import Runtime, hoist_global_options

# pydantic looks for plugins by scanning the entry points of every installed distribution
# the first time a model is built, a cost every command would pay (bench/RESULTS.md,
# "Start-up") for plugins a command-line tool has no use for. Set the variable yourself to
# opt back in.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


# The commands, in the order a person meets them: (module, attribute, is a group, the
# one-line summary `opapprove --help` lists). Each is built only when it is invoked:
# Typer evaluating the annotations of every command function would be paid on every run
# otherwise, `--help` included (bench/RESULTS.md, "Start-up"). tests/cli/test_main.py
# checks each summary against the built command's own.
LAZY_COMMANDS: dict[str, tuple[str, str, bool, str]] = {
    "quote": (
        "opapprove.cli.quote",
        "app",
        True,
        "Start a quote: everything up to the buyer's approval.",
    ),
    "listen": (
        "opapprove.cli.listen",
        "listen",
        False,
        "Serve GET /payments/finish on loopback: verify each redirect, finish the payment.",
    ),
    "finish": (
        "opapprove.cli.finish",
        "finish",
        False,
        "Finish a payment from the wallet's redirect URL: verify, continue the grant, pay.",
    ),
    "status": (
        "opapprove.cli.status",
        "status",
        False,
        "Show a grant: state, amounts, payments, last error, approval URL, age.",
    ),
    "pending": (
        "opapprove.cli.pending",
        "app",
        True,
        "List, show, replay, cancel and prune pending grants (the store's).",
    ),
    "demo": (
        "opapprove.cli.demo",
        "demo",
        False,
        "Run the whole approval flow on the embedded sandbox and show each step's timing.",
    ),
    "seller": (
        "opapprove.cli.seller",
        "app",
        True,
        "Add, list, show and remove sellers; generate signing keys.",
    ),
    "wallet": (
        "opapprove.cli.wallet",
        "app",
        True,
        "Check wallet addresses and the seller's published keys.",
    ),
    "sandbox": (
        "opapprove.cli.sandbox",
        "app",
        True,
        "Run the embedded, offline Open Payments sandbox; approve on it.",
    ),
    "webhook": (
        "opapprove.cli.webhook",
        "app",
        True,
        "Check marketplace webhook deliveries.",
    ),
    "doctor": (
        "opapprove.cli.doctor",
        "doctor",
        False,
        "Check config, store, seller key, wallet, servers, published JWK and clock.",
    ),
    "report": (
        "opapprove.cli.report",
        "report",
        False,
        "Approval analytics: funnel, approval rate, times, failure reasons, stuck grants.",
    ),
    "sig": ("opapprove.cli.sig", "app", True, "Check Open Payments request signatures."),
    "store": (
        "opapprove.cli.store",
        "app",
        True,
        "Migrate a store, or copy one between SQLite and PostgreSQL.",
    ),
    "smoke": (
        "opapprove.cli.smoke",
        "smoke",
        False,
        "Smoke-test real wallets up to the approval URL, then cancel the grant (for CI).",
    ),
}


def _build_command(name: str) -> Any:
    import importlib

    module_name, attr, is_group, _ = LAZY_COMMANDS[name]
    target = getattr(importlib.import_module(module_name), attr)
    command: Any
    if is_group:
        target.rich_markup_mode = None  # plain help text, like the top level (start-up cost)
        command = typer.main.get_group(target)
    else:
        single = typer.Typer(rich_markup_mode=None, add_completion=False)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class _Summary:
    """What the command list asks of a command, for one not built yet."""

    hidden = False

    def __init__(self, summary: str) -> None:
        self.summary = summary

    def get_short_help_str(self, limit: int = 45) -> str:
        from typer._click.utils import make_default_short_help

        return make_default_short_help(self.summary, limit).strip()


class OpApproveGroup(TyperGroup):
    """Runs the command and turns every failure into one line and a documented exit code.

    This lives in ``main`` (not only in ``run``) so CliRunner tests see the same behaviour.
    """

    def list_commands(self, ctx: Any) -> list[str]:
        eager = [n for n in super().list_commands(ctx) if n not in LAZY_COMMANDS]
        return [*LAZY_COMMANDS, *eager]

    _listing = False

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # The list needs only each command's summary, not the built command.
        self._listing = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing = False

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            if self._listing:
                return _Summary(LAZY_COMMANDS[cmd_name][3])
            command = _build_command(cmd_name)
            self.add_command(command, cmd_name)
        return command

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        argv = hoist_global_options(list(sys.argv[1:] if args is None else args))
        runtime = extra.pop("obj", None) or Runtime.from_argv(argv)
        code = exitcodes.OK
        try:
            rv = super().main(
                args=argv,
                prog_name=prog_name or "opapprove",
                complete_var=complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                obj=runtime,
                **extra,
            )
            code = rv if isinstance(rv, int) else exitcodes.OK
        except BaseException as exc:
            if isinstance(exc, SystemExit):
                raise
            code = _report(runtime, exc)
        finally:
            try:
                runtime.close()
            except Exception as exc:
                if code == exitcodes.OK:
                    code = _report(runtime, exc)
        if not standalone_mode:
            return code
        sys.exit(code)


def _report(runtime: Runtime, exc: BaseException) -> int:
    from typer import _click

    if isinstance(exc, _click.exceptions.NoArgsIsHelpError):
        # A bare group: its help is the most useful answer.
        if exc.ctx is not None:
            sys.stderr.write(exc.ctx.get_help() + "\n")
        return exitcodes.USAGE
    report = classify(exc)
    if runtime.debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    runtime.output.error(report)
    return report.exit_code


app = typer.Typer(
    name="opapprove",
    cls=OpApproveGroup,
    help="Run and debug Open Payments (Interledger) interactive payment approvals.",
    epilog=exitcodes.epilog(),
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"opapprove {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML config file (default: the platform config dir)."),
    ] = None,
    store_path: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="SQLite store file, or postgresql://user@host/db (overrides the config).",
        ),
    ] = None,
    json: Annotated[
        bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    trace: Annotated[
        bool, typer.Option("--trace", help="Print every HTTP exchange to stderr.")
    ] = False,
    trace_file: Annotated[
        Path | None,
        typer.Option("--trace-file", help="Append every HTTP exchange as JSON lines (0600)."),
    ] = None,
    show_secrets: Annotated[
        bool,
        typer.Option("--show-secrets", help="Do not mask tokens and secrets in traces."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            expose_value=False,
            help="Print the version.",
        ),
    ] = False,
) -> None:
    """Run and debug Open Payments (Interledger) interactive payment approvals."""
    runtime = ctx.obj if isinstance(ctx.obj, Runtime) else Runtime()
    # Each global option is named after the runtime field it sets (tests/cli/test_main.py).
    for name, value in ctx.params.items():
        setattr(runtime, name, value)
    ctx.obj = runtime


@app.command()
def version(ctx: typer.Context) -> None:
    """Print the opapprove version."""
    runtime: Runtime = ctx.obj
    runtime.output.result(
        {"version": __version__, "python": sys.version.split()[0]},
        lambda console: console.print(f"opapprove {__version__}", markup=False),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI in-process and return the exit code (for embedding and tests)."""
    command = typer.main.get_command(app)
    return int(command.main(args=argv, standalone_mode=False))


def run() -> None:
    """The console-script entry point."""
    app(prog_name="opapprove")
