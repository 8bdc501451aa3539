"""A throwaway PostgreSQL server for tests and the bench: initdb + pg_ctl in a temporary folder.

It listens on 127.0.0.1 on a free port (and a unix socket inside its folder), with password
authentication over TCP, so tests use real URLs with real passwords. As root it runs as an
unprivileged user (initdb refuses root). Without PostgreSQL's binaries it says how to get
them (:data:`MISSING`); the callers skip, or fail in CI.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.ports import free_port

MISSING = (
    "PostgreSQL not found: apt-get install postgresql (.ci/run does), or put initdb and"
    " pg_ctl on PATH"
)
START_TIMEOUT = 60  # seconds pg_ctl waits for the server; only guards against a hang
ADMIN = "postgres"


def find_bindir() -> Path | None:
    """Debian's /usr/lib/postgresql/<version>/bin (newest first), else initdb on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """One cluster: ``start()``, ``url(db)``, ``create_database()``, ``restart()``, ``stop()``."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        self.durable = durable  # fsync as in production (the bench); tests need not wait on disk
        self.password = secrets.token_urlsafe(12)
        self.port = 0
        self.root = Path(tempfile.mkdtemp(prefix="opapprove-pg-"))
        self.data = self.root / "data"
        self._user: pwd.struct_passwd | None = None
        self._serial = 0
        self._shared = ""
        if os.geteuid() == 0:
            self._user = _unprivileged_user()
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)

    # -- running the binaries ------------------------------------------------------------

    def _run(self, *args: str, timeout: float = START_TIMEOUT) -> None:
        user = self._user.pw_name if self._user else None
        proc = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            user=user,
            cwd=self.root,
            env={**os.environ, "LC_ALL": "C", "HOME": str(self.root)},
        )
        if proc.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {proc.stderr.strip()}\n{tail}")

    def start(self) -> PostgresServer:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._user:
            os.chown(pwfile, self._user.pw_uid, self._user.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            ADMIN,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        for attempt in range(3):  # another process may take the free port first
            self.port = free_port()
            try:
                self._pg_ctl("start")
                return self
            except RuntimeError:
                if attempt == 2:
                    raise
        return self

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-p {self.port}",
            f"-k {self.root}",
            "-c max_connections=60",
            "-c shared_buffers=32MB",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl",
            action,
            "-D",
            str(self.data),
            "-w",
            "-t",
            str(START_TIMEOUT),
            "-l",
            str(self.root / "server.log"),
            "-o",
            " ".join(options),
            *extra,
        )

    def restart(self) -> None:
        """Stop (dropping every connection) and start again on the same port."""
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass  # not running: nothing to stop
        # After a whole test run the folder holds thousands of files, seconds of deleting on
        # a slow disk that nothing waits for: a background rm (sh returns at once) does it.
        subprocess.run(
            ["sh", "-c", 'rm -rf -- "$0" >/dev/null 2>&1 &', str(self.root)], check=False
        )

    # -- URLs and databases --------------------------------------------------------------

    def url(
        self, database: str = "postgres", *, user: str = ADMIN, password: str | None = None
    ) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{user}:{secret}@127.0.0.1:{self.port}/{database}"

    def admin(
        self, sql: str, *params: object, database: str = "postgres"
    ) -> list[tuple[object, ...]]:
        """Run one statement as the superuser (autocommit); its rows, if it returns any."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cur = conn.execute(sql.encode(), params or None)  # type: ignore[call-overload]
            return list(cur.fetchall()) if cur.description else []

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; its name (about 0.3 s: prefer :meth:`fresh_url`)."""
        name = self._new_name(prefix)
        self.admin(f'CREATE DATABASE "{name}"')
        return name

    def fresh_url(self, prefix: str = "s") -> str:
        """The URL of an empty store of its own: a new schema in a shared database.

        ``options=-csearch_path=...`` makes the new schema the connection's only one, so
        to opapprove it is an empty database (and the README documents this way of
        sharing a database with other programs)."""
        if not self._shared:
            self._shared = self.create_database("shared")
        name = self._new_name(prefix)
        self.admin(f'CREATE SCHEMA "{name}"', database=self._shared)
        return f"{self.url(self._shared)}?options=-csearch_path%3D{name}"

    def _new_name(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}_{os.getpid()}_{self._serial}"


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither user postgres nor nobody exists")
