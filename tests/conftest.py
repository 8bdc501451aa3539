"""For every test folder: a PostgreSQL server (the store's second backend); temp files in RAM."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.missing_parts import skip_or_fail
from tests.postgres_server import MISSING, PostgresServer, find_bindir

RAM_DISK = Path("/dev/shm")
RAM_DISK_ROOM = 1 << 30  # bytes free before the suite's files go there (a run keeps ~40 MB)


def pytest_configure(config: pytest.Config) -> None:
    """Put the run's temporary files (tmp_path, the PostgreSQL data folder) in RAM.

    The stores commit durably, and on a disk each fsync costs milliseconds (~2 ms on the
    shared 2-core test machine): the SQLite-heavy folders ran ~20% faster on /dev/shm. A RAM
    disk keeps every behaviour the tests check (a killed process still finds what it
    committed); only power loss, which no test simulates, differs. Left alone when the
    caller chose a place (--basetemp, TMPDIR) or /dev/shm has little room (a container's
    default is 64 MB)."""
    restore_ctrl_c()
    if config.option.basetemp or os.environ.get("TMPDIR"):
        return
    try:
        disk = os.statvfs(RAM_DISK)
    except OSError:
        return
    if os.access(RAM_DISK, os.W_OK) and disk.f_bavail * disk.f_frsize >= RAM_DISK_ROOM:
        tempfile.tempdir = str(RAM_DISK)


def restore_ctrl_c() -> None:
    """Let SIGINT reach the processes the tests start, as in a terminal.

    A run started in the background by a shell without job control (``make test &``, a
    script's ``&``) inherits SIGINT ignored, and so does every process it starts; the tests
    that stop ``listen`` and ``sandbox`` with Ctrl-C then wait for their timeouts. A handler
    of this process's own is reset to the default in each process it starts."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The README's blocks first: under xdist (``make test``) each file runs on one worker,
    and this longest file (its blocks mostly wait on processes) would otherwise start last
    and leave the other worker idle while it runs."""
    items.sort(key=lambda item: item.path.name != "test_readme.py")


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No OPAPPROVE_* variable or config file of the machine reaches the test: the platform's
    config and data dirs are inside ``tmp_path`` (returned)."""
    for name in [n for n in os.environ if n.upper().startswith("OPAPPROVE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    return tmp_path


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
