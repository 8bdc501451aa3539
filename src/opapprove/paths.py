"""Where opapprove keeps its config file and its store on each platform.

No third-party dependency: the XDG base-directory rules on Linux and other Unixes,
``~/Library/Application Support`` on macOS, ``%APPDATA%`` on Windows.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

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


def platform_config_dir(
    *, platform: str | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """The per-user config base directory (without the ``opapprove`` part)."""
    platform = platform or sys.platform
    env = os.environ if env is None else env
    if platform == "win32":
        return _windows_appdata(env)
    if platform == "darwin":
        return _home(env) / "Library" / "Application Support"
    return _xdg(env, "XDG_CONFIG_HOME", ".config")


def platform_data_dir(*, platform: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The per-user data base directory (without the ``opapprove`` part)."""
    platform = platform or sys.platform
    env = os.environ if env is None else env
    if platform == "win32":
        return _windows_appdata(env)
    if platform == "darwin":
        return _home(env) / "Library" / "Application Support"
    return _xdg(env, "XDG_DATA_HOME", ".local/share")


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
