"""Where opapprove keeps its config file and its store on each platform.

No third-party dependency: the XDG base-directory rules on Linux and other Unixes,
``~/Library/Application Support`` on macOS, ``%APPDATA%`` on Windows.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from opapprove.openpayments.redaction import redact_url

APP_NAME = "opapprove"
CONFIG_FILE_NAME = "config.toml"
STORE_FILE_NAME = "opapprove.db"


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME") or env.get("USERPROFILE")
    return Path(home) if home else Path.home()


def _xdg(env: Mapping[str, str], var: str, fallback: str) -> Path:
    value = env.get(var, "")
    # The XDG spec says relative values are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return _home(env) / fallback


def _windows_appdata(env: Mapping[str, str]) -> Path:
    value = env.get("APPDATA", "")
    return Path(value) if value else _home(env) / "AppData" / "Roaming"


def _platform_dir(
    xdg_var: str, xdg_fallback: str, platform: str | None, env: Mapping[str, str] | None
) -> Path:
    # Windows and macOS keep config and data in one per-user folder; XDG splits them.
    platform = platform or sys.platform
    env = os.environ if env is None else env
    if platform == "win32":
        return _windows_appdata(env)
    if platform == "darwin":
        return _home(env) / "Library" / "Application Support"
    return _xdg(env, xdg_var, xdg_fallback)


def platform_config_dir(
    *, platform: str | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """The per-user config base directory (without the ``opapprove`` part)."""
    return _platform_dir("XDG_CONFIG_HOME", ".config", platform, env)


def platform_data_dir(*, platform: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The per-user data base directory (without the ``opapprove`` part)."""
    return _platform_dir("XDG_DATA_HOME", ".local/share", platform, env)


def default_config_path(
    *, platform: str | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """``<config dir>/opapprove/config.toml``: read only if it exists."""
    return platform_config_dir(platform=platform, env=env) / APP_NAME / CONFIG_FILE_NAME


def default_store_path(
    *, platform: str | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """``<data dir>/opapprove/opapprove.db``: the SQLite store unless ``store`` says otherwise."""
    return platform_data_dir(platform=platform, env=env) / APP_NAME / STORE_FILE_NAME


# A store is a SQLite file (a path) or a PostgreSQL database (a URL with one of these schemes).
POSTGRES_SCHEMES = ("postgresql", "postgres")


class DatabaseURL:
    """A PostgreSQL store's place: ``postgresql://user:password@host:port/db?options``.

    ``str()`` and ``repr()`` show the password as ``***``, so printing a setting, an error
    or a trace never leaks it; :meth:`secret` gives the full URL, for connecting only.
    """

    __slots__ = ("_url",)

    def __init__(self, url: str) -> None:
        url = url.strip()
        parts = urlsplit(url)
        if parts.scheme.lower() not in POSTGRES_SCHEMES:
            raise ValueError(f"a database URL starts with postgresql://, got {redact_url(url)}")
        if parts.fragment:
            raise ValueError("a database URL has no #fragment")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError(f"the port of {redact_url(url)} is not a number") from None
        self._url = url

    def secret(self) -> str:
        """The URL with its password: hand it to the database driver, never to output."""
        return self._url

    @property
    def host(self) -> str:
        return urlsplit(self._url).hostname or "localhost (unix socket)"

    @property
    def database(self) -> str:
        path = urlsplit(self._url).path.lstrip("/")
        return unquote(path) if path else "(the user's default database)"

    def __str__(self) -> str:
        return redact_url(self._url)

    def __repr__(self) -> str:
        return f"DatabaseURL({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DatabaseURL) and other._url == self._url

    def __hash__(self) -> int:
        return hash(self._url)


StoreLocation = Path | DatabaseURL


def is_database_url(value: str) -> bool:
    """Whether ``value`` names a PostgreSQL database rather than a SQLite file."""
    scheme, sep, _ = value.strip().partition("://")
    return bool(sep) and scheme.lower() in POSTGRES_SCHEMES


def store_location(value: str | os.PathLike[str] | DatabaseURL) -> StoreLocation:
    """A ``--store``/``OPAPPROVE_STORE``/config value as a SQLite path or a database URL.

    A ``postgresql://`` or ``postgres://`` URL is PostgreSQL; anything else is a path. Any
    other ``scheme://`` is refused: taken as a path it would quietly become a folder.
    """
    if isinstance(value, DatabaseURL):
        return value
    text = os.fspath(value)
    if is_database_url(text):
        return DatabaseURL(text)
    if isinstance(value, os.PathLike) and is_database_url(text.replace(":/", "://", 1)):
        # Path("postgresql://h/db") is "postgresql:/h/db": a URL that passed through Path.
        raise ValueError("a postgresql:// URL was turned into a path; pass it as a string")
    if isinstance(value, Path):
        return value
    scheme, sep, _ = text.strip().partition("://")
    if sep and scheme.isascii() and scheme.replace("+", "").replace("-", "").isalnum():
        raise ValueError(
            f"{scheme}:// is not a store opapprove knows: give a SQLite file path or a "
            "postgresql:// URL"
        )
    return Path(text)
