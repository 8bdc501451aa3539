"""`store` is a SQLite path or a PostgreSQL URL, wherever it is given; its password never shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from opapprove.cli.main import app
from opapprove.openpayments.redaction import redact_url
from opapprove.paths import DatabaseURL, store_location
from opapprove.settings import SettingsError, load_settings

SECRET = "s3cr3t-PW"
URL = f"postgresql://shop:{SECRET}@db.internal:5432/opapprove"


@pytest.fixture(autouse=True)
def in_tmp(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolated, and working in tmp_path: a relative store path lands there."""
    monkeypatch.chdir(isolated_env)


@pytest.mark.parametrize(
    ("given", "kind"),
    [
        (URL, DatabaseURL),
        ("postgres://db.internal/opapprove", DatabaseURL),
        ("POSTGRESQL://u@h/db", DatabaseURL),
        ("postgresql:///opapprove?host=/run/postgresql", DatabaseURL),
        ("store.db", Path),
        ("/var/lib/opapprove/store.db", Path),
        ("C:/data/store.db", Path),
    ],
)
def test_a_url_is_postgresql_and_a_path_stays_sqlite(given: str, kind: type) -> None:
    assert isinstance(store_location(given), kind)


def test_other_schemes_are_refused_rather_than_made_a_folder() -> None:
    with pytest.raises(ValueError, match=r"mysql:// is not a store"):
        store_location("mysql://u@h/db")
    # A URL that went through Path() lost a slash: say so instead of making a folder of it.
    with pytest.raises(ValueError, match="turned into a path"):
        store_location(Path("postgresql://u@h/db"))


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (URL, "postgresql://shop:***@db.internal:5432/opapprove"),
        (
            "postgresql://u@h/db?password=pw&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://h/db", "postgresql://h/db"),
    ],
)
def test_the_password_is_masked(url: str, masked: str) -> None:
    assert redact_url(url) == masked
    location = DatabaseURL(url)
    assert str(location) == masked and masked in repr(location)
    assert location.secret() == url


def test_every_source_of_settings_takes_a_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings(store=URL).store == DatabaseURL(URL)
    monkeypatch.setenv("OPAPPROVE_STORE", URL)
    assert load_settings().store == DatabaseURL(URL)
    monkeypatch.delenv("OPAPPROVE_STORE")
    # A config file's relative paths are resolved next to it; a URL is left as it is.
    config = tmp_path / "conf" / "config.toml"
    config.parent.mkdir()
    config.write_text(f'store = "{URL}"\n', encoding="utf-8")
    assert load_settings(config).store == DatabaseURL(URL)
    config.write_text('store = "data/op.db"\n', encoding="utf-8")
    assert load_settings(config).store == tmp_path / "conf" / "data" / "op.db"


def test_a_bad_store_url_is_one_line_without_the_password() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(store=f"postgresql://shop:{SECRET}@db:port/opapprove")
    assert "port" in str(err.value) and SECRET not in str(err.value)
    with pytest.raises(SettingsError) as err:
        load_settings(store=f"mysql://shop:{SECRET}@db/opapprove")
    assert "mysql://" in str(err.value) and SECRET not in str(err.value)


def test_cli_store_url_to_a_dead_server_is_one_line_and_makes_no_folder(tmp_path: Path) -> None:
    dead = f"postgresql://shop:{SECRET}@127.0.0.1:1/opapprove?connect_timeout=3"
    result = CliRunner().invoke(app, ["--store", dead, "pending", "list"])
    assert result.exit_code == 3, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "cannot reach the PostgreSQL server" in lines[0]
    assert SECRET not in result.output + result.stderr
    assert not (tmp_path / "postgresql:").exists()
