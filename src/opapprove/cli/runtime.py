"""Per-invocation state: the global options, and lazily built settings, store, trace and client.

Everything heavy is imported on first use so ``opapprove --help`` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from opapprove.cli import exitcodes
from opapprove.cli.output import Output, Render

if TYPE_CHECKING:
    import typer

    from opapprove.approvals.store import Store
    from opapprove.cli.trace import TraceSink
    from opapprove.openpayments.client import Exchange, OpenPaymentsClient
    from opapprove.settings import Settings

T = TypeVar("T")

FLAGS = ("--json", "--debug", "--trace", "--show-secrets")
VALUED = ("--config", "--store", "--trace-file")


def hoist_global_options(argv: list[str]) -> list[str]:
    """Move global options given after the command to the front, where the root parses them.

    ``opapprove seller list --json`` then means ``opapprove --json seller list``. Nothing
    after a ``--`` is touched.
    """
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        name = arg.split("=", 1)[0]
        if arg in FLAGS:
            front.append(arg)
        elif name in VALUED and "=" in arg:
            front.append(arg)
        elif arg in VALUED and i + 1 < len(argv):
            front.extend(argv[i : i + 2])
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


@dataclass
class Runtime:
    config: Path | None = None
    store_path: str | None = None  # --store: a path or a postgresql:// URL
    json: bool = False
    debug: bool = False
    trace: bool = False
    trace_file: Path | None = None
    show_secrets: bool = False
    _output: Output | None = field(default=None, repr=False)
    _settings: Settings | None = field(default=None, repr=False)
    _store: Store | None = field(default=None, repr=False)
    _trace: TraceSink | None = field(default=None, repr=False)
    # Set while a command waits on a grant: what Ctrl-C says (the grant, how to resume).
    resume: tuple[str, str] | None = field(default=None, repr=False)

    @classmethod
    def from_argv(cls, argv: list[str]) -> Runtime:
        """Enough of the options to report an error well before the parser has run."""
        head = argv[: argv.index("--")] if "--" in argv else argv
        return cls(json="--json" in head, debug="--debug" in head)

    @staticmethod
    def of(ctx: typer.Context) -> Runtime:
        """The runtime the root command put on the context, for a command's body."""
        runtime = ctx.obj
        assert isinstance(runtime, Runtime)
        return runtime

    @property
    def output(self) -> Output:
        if self._output is None or (self._output.json_mode, self._output.show_secrets) != (
            self.json,
            self.show_secrets,
        ):
            self._output = Output(json_mode=self.json, show_secrets=self.show_secrets)
        return self._output

    def settings(self) -> Settings:
        if self._settings is None:
            from opapprove.settings import load_settings

            overrides: dict[str, Any] = {}
            if self.store_path is not None:
                overrides["store"] = self.store_path
            self._settings = load_settings(self.config, **overrides)
        return self._settings

    def store(self) -> Store:
        if self._store is None:
            from opapprove.approvals.store import Store

            location = self.settings().store
            if isinstance(location, Path):
                # The data dir holds keys and grants: private to this user.
                location.expanduser().parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._store = Store(location)
        return self._store

    def store_exists(self) -> bool:
        """Whether there is a store to read: looking must not create an empty store file.

        A database always counts: it was made by whoever gave its URL, and opening it says
        clearly if it cannot be reached."""
        location = self.settings().store
        return not isinstance(location, Path) or location.expanduser().exists()

    def existing_store(self) -> Store | None:
        """The store if there is one, else None: looking must not create an empty store file."""
        return self.store() if self.store_exists() else None

    def missing_store(self) -> Path | None:
        """The store file's path when there is no store there: said beside "not found"."""
        location = self.settings().store
        return None if self.store_exists() or not isinstance(location, Path) else location

    def data_dir(self) -> Path:
        """Where key files written by the CLI go: next to a SQLite store, else the data dir."""
        location = self.settings().store
        if isinstance(location, Path):
            return location.expanduser().parent
        from opapprove.paths import default_store_path

        return default_store_path().parent

    def on_exchange(self) -> Callable[[Exchange], None] | None:
        if not (self.trace or self.trace_file):
            return None
        if self._trace is None:
            from opapprove.cli.trace import TraceSink

            self._trace = TraceSink(
                to_stderr=self.trace, path=self.trace_file, show_secrets=self.show_secrets
            )
        return self._trace

    def client(self, **kwargs: Any) -> OpenPaymentsClient:
        from opapprove.openpayments.client import OpenPaymentsClient

        settings = self.settings()
        kwargs.setdefault("timeout", float(settings.timeout))
        kwargs.setdefault("use_http", bool(settings.use_http))
        kwargs.setdefault("allow_http", bool(settings.allow_http))
        kwargs.setdefault("on_exchange", self.on_exchange())
        return OpenPaymentsClient(**kwargs)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        import asyncio

        from opapprove.cli.startup import settled

        settled()
        try:
            return asyncio.run(coro)
        except KeyboardInterrupt:
            # Said here: Typer turns a KeyboardInterrupt into a silent exit 130.
            import typer

            from opapprove.cli.errors import interrupted

            self.output.error(interrupted(self.resume))
            raise typer.Exit(exitcodes.INTERRUPTED) from None

    def conclude(
        self,
        data: dict[str, Any],
        render: Render | None = None,
        *,
        ok: bool = True,
        exit_code: int = exitcodes.OK,
    ) -> None:
        """Show the command's answer (``Output.result``), then end with ``exit_code``.

        One call, so the code in ``--json``'s ``exitCode`` is always the process's."""
        self.output.result(data, render, ok=ok, exit_code=exit_code)
        if exit_code != exitcodes.OK:
            import typer

            raise typer.Exit(exit_code)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._trace is not None:
            self._trace.close()
            self._trace = None


def is_interactive() -> bool:
    """Prompts only ever happen for a person at a terminal."""
    import sys

    return sys.stdin.isatty() and os.environ.get("CI") is None
