"""``opapprove store migrate`` and ``opapprove store copy SRC DST``: the store itself.

A store is a SQLite file or a ``postgresql://`` database (README: Running as a service).
Every opapprove command migrates the store it opens; ``migrate`` does it on purpose (say,
once as the database's owner, before services that may not change the schema start), and
``copy`` moves a whole store from one backend to the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opapprove.cli.errors import CliError
from opapprove.cli.runtime import Runtime

if TYPE_CHECKING:
    from opapprove.approvals.store import Store
    from opapprove.paths import StoreLocation

app = typer.Typer(
    help="Migrate a store, or copy one between SQLite and PostgreSQL.", no_args_is_help=True
)


def _location(value: str, what: str) -> StoreLocation:
    from opapprove.paths import store_location

    try:
        location = store_location(value)
    except ValueError as exc:
        raise CliError(
            f"{what} {value!r} is not a store: {exc}",
            hint="give a SQLite file path or a postgresql:// URL",
        ) from None
    return location.expanduser().absolute() if isinstance(location, Path) else location


@app.command("migrate")
def migrate(ctx: typer.Context) -> None:
    """Bring the store (--store) to this opapprove's schema version; say from which."""
    from opapprove.approvals.store import Store

    runtime = Runtime.of(ctx)
    location = runtime.settings().store
    with Store(location) as store:
        before = store.backend.migrated_from or 0
        after = store.schema_version()
    data = {
        "store": str(location),
        "backend": store.backend.kind,
        "fromVersion": before,
        "toVersion": after,
        "applied": after - before,
    }
    if after == before:
        line = f"store {location} is at schema v{after}, the newest this opapprove knows"
    else:
        line = f"store {location}: schema v{before} -> v{after} ({after - before} migration(s))"
    runtime.output.result(data, lambda console: console.print(line, markup=False, highlight=False))


@app.command("copy")
def copy(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(metavar="SRC", help="The store to copy: a file or a URL.")
    ],
    destination: Annotated[
        str, typer.Argument(metavar="DST", help="A new, empty store: a file or a URL.")
    ],
) -> None:
    """Copy every seller, grant, event, cache and webhook delivery from SRC into DST.

    DST must be empty (a new file, database or schema): nothing is merged or overwritten, and
    a copy that fails part-way writes nothing. Stop the listeners on SRC first.
    """
    from opapprove.approvals.store_copy import copy_store

    runtime = Runtime.of(ctx)
    src = _location(source, "SRC")
    dst = _location(destination, "DST")
    if src == dst:
        raise CliError("SRC and DST are the same store", hint="copy into a new, empty store")
    if isinstance(src, Path) and not src.is_file():
        raise CliError(f"there is no store file {src}", hint="check the SRC path")
    with _open(src) as from_store, _open(dst) as to_store:
        copied = copy_store(from_store, to_store)
        version = to_store.schema_version()
    data = {"source": str(src), "destination": str(dst), "schemaVersion": version, "rows": copied}
    summary = ", ".join(f"{n} {table}" for table, n in copied.items())
    runtime.output.result(
        data,
        lambda console: console.print(
            f"copied {src} -> {dst} (schema v{version}): {summary}", markup=False, highlight=False
        ),
    )


def _open(location: StoreLocation) -> Store:
    from opapprove.approvals.store import Store

    if isinstance(location, Path):
        location.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Store(location)
