"""Fixtures every test folder may use: a PostgreSQL server for the store's second backend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres_server import MISSING, PostgresServer, find_bindir


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must run the PostgreSQL tests)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run, on loopback, in a temporary data folder."""
    bindir = find_bindir()
    if bindir is None:
        _unavailable(MISSING)
        raise AssertionError("unreachable")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed: pip install -e '.[test]'")
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
def store_location(
    store_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Path | str:
    """A new, empty store on each backend in turn: a SQLite file, or a PostgreSQL URL."""
    if store_backend == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return tmp_path / "store.db"
