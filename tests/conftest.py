"""Fixtures every test folder may use: a PostgreSQL server for the store's second backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.missing_parts import skip_or_fail
from tests.postgres_server import MISSING, PostgresServer, find_bindir


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run, on loopback, in a temporary data folder."""
    bindir = find_bindir()
    if bindir is None:
        skip_or_fail(MISSING, tests="the PostgreSQL tests")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        skip_or_fail(
            "psycopg is not installed: pip install -e '.[test]'", tests="the PostgreSQL tests"
        )
    server = PostgresServer(bindir)
    try:
        server.start()
    except Exception as exc:
        server.stop()
        pytest.fail(f"PostgreSQL did not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """The URL of an empty PostgreSQL store of this test's own."""
    return postgres.fresh_url()


# The store's two backends, for tests parametrised over both (``store_backend``).
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture
def new_store(store_backend: str, request: pytest.FixtureRequest) -> Callable[[Path], Path | str]:
    """Makes new, empty stores on this test's backend: ``new_store(folder)`` is a SQLite file
    in ``folder``, or the URL of a PostgreSQL store of its own."""
    if store_backend == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        return lambda folder: server.fresh_url()
    return lambda folder: folder / "store.db"


@pytest.fixture
def store_location(new_store: Callable[[Path], Path | str], tmp_path: Path) -> Path | str:
    """A new, empty store on each backend in turn: a SQLite file, or a PostgreSQL URL."""
    return new_store(tmp_path)
