"""Settings: flag > env > TOML > default, which config file is read, and the example file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from opapprove import paths
from opapprove.settings import Settings, SettingsError, load_settings

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"

pytestmark = pytest.mark.usefixtures("isolated_env")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_config(tmp_path: Path) -> None:
    s = load_settings()
    assert s.config_file is None
    assert s.store == tmp_path / "xdg-data" / "opapprove" / "opapprove.db"
    assert s.seller_id == "default-seller"
    assert s.base_url == "http://127.0.0.1:3999"
    assert (s.listen_host, s.listen_port) == ("127.0.0.1", 3999)
    assert s.webhook_url is None and s.webhook_secret is None and s.api_token is None
    assert s.webhook_retries == 5
    assert (s.timeout, s.use_http, s.allow_http) == (10.0, False, False)
    assert (s.poll_timeout, s.stuck_after, s.approval_timeout) == (600, 900, 600)


@pytest.mark.parametrize(
    ("key", "toml_value", "env_value", "flag_value", "expected"),
    [
        ("listen_port", "1111", "2222", 3333, [3333, 2222, 1111, 3999]),
        ("timeout", "1.5", "2.5", 3.5, [3.5, 2.5, 1.5, 10.0]),
        (
            "base_url",
            '"http://toml.test:1"',
            "http://env.test:2",
            "http://flag.test:3",
            ["http://flag.test:3", "http://env.test:2", "http://toml.test:1", None],
        ),
        ("allow_http", "true", "false", True, [True, False, True, False]),
    ],
)
def test_each_level_beats_the_next(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    key: str,
    toml_value: str,
    env_value: str,
    flag_value: object,
    expected: list[object],
) -> None:
    config = write(tmp_path / "c.toml", f"{key} = {toml_value}\n")
    env = f"OPAPPROVE_{key.upper()}"
    monkeypatch.setenv(env, env_value)
    assert getattr(load_settings(config, **{key: flag_value}), key) == expected[0]
    assert getattr(load_settings(config), key) == expected[1]
    monkeypatch.delenv(env)
    assert getattr(load_settings(config), key) == expected[2]
    default = expected[3] if expected[3] is not None else Settings.model_fields[key].default
    assert getattr(load_settings(), key) == default


def test_a_flag_left_as_none_does_not_override(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPAPPROVE_LISTEN_PORT", "4000")
    assert load_settings(listen_port=None).listen_port == 4000


def test_store_from_env_and_empty_env_means_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPAPPROVE_STORE", str(tmp_path / "s.db"))
    monkeypatch.setenv("OPAPPROVE_WEBHOOK_URL", "")
    s = load_settings()
    assert s.store == tmp_path / "s.db"
    assert s.webhook_url is None


def test_config_flag_beats_config_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    by_flag = write(tmp_path / "flag.toml", 'seller_id = "from-flag"\n')
    by_env = write(tmp_path / "env.toml", 'seller_id = "from-env"\n')
    monkeypatch.setenv("OPAPPROVE_CONFIG", str(by_env))
    s = load_settings(by_flag)
    assert (s.seller_id, s.config_file) == ("from-flag", by_flag)
    s = load_settings()
    assert (s.seller_id, s.config_file) == ("from-env", by_env)


def test_default_config_file_is_read_when_present(tmp_path: Path) -> None:
    default = write(tmp_path / "xdg-config" / "opapprove" / "config.toml", "listen_port = 4242\n")
    s = load_settings()
    assert s.config_file == default
    assert s.listen_port == 4242


def test_missing_default_config_is_fine_but_a_named_one_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_settings().config_file is None
    missing = tmp_path / "nope.toml"
    with pytest.raises(SettingsError) as err:
        load_settings(missing)
    assert str(missing) in str(err.value) and "--config" in str(err.value)
    monkeypatch.setenv("OPAPPROVE_CONFIG", str(missing))
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(missing) in str(err.value) and "OPAPPROVE_CONFIG" in str(err.value)


def test_a_directory_as_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not a file"):
        load_settings(tmp_path)


def test_bad_toml_names_the_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.toml", 'seller_id = "ok"\nlisten_port = \n')
    with pytest.raises(SettingsError) as err:
        load_settings(bad)
    text = str(err.value)
    assert str(bad) in text and "not valid TOML" in text and "line 2" in text
    assert "\n" not in text


def test_unknown_key_in_toml_is_named(tmp_path: Path) -> None:
    typo = write(tmp_path / "typo.toml", "listen_prot = 1\n")
    with pytest.raises(SettingsError) as err:
        load_settings(typo)
    assert err.value.key == "listen_prot"
    assert "unknown setting 'listen_prot'" in str(err.value) and str(typo) in str(err.value)


def test_bad_value_error_says_where_it_came_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = write(tmp_path / "c.toml", 'listen_port = "many"\n')
    with pytest.raises(SettingsError) as err:
        load_settings(config)
    assert err.value.key == "listen_port"
    assert str(config) in str(err.value) and "'many'" in str(err.value)

    monkeypatch.setenv("OPAPPROVE_LISTEN_PORT", "70000")
    with pytest.raises(SettingsError, match="OPAPPROVE_LISTEN_PORT"):
        load_settings()
    monkeypatch.delenv("OPAPPROVE_LISTEN_PORT")

    with pytest.raises(SettingsError, match="--webhook-url"):
        load_settings(webhook_url="ftp://example.test/hook")

    with pytest.raises(SettingsError, match="base_url"):
        load_settings(base_url="not a url")


def test_unknown_override_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="listen_prot"):
        load_settings(listen_prot=1)


def test_secrets_never_print(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", 'webhook_secret = "hush-toml"\n')
    monkeypatch.setenv("OPAPPROVE_API_TOKEN", "hush-env")
    s = load_settings(config)
    assert s.webhook_secret is not None and s.webhook_secret.get_secret_value() == "hush-toml"
    assert s.api_token is not None and s.api_token.get_secret_value() == "hush-env"
    shown = repr(s) + str(s) + str(s.model_dump()) + s.model_dump_json()
    assert "hush" not in shown


def test_paths_in_a_config_file_are_relative_to_it(tmp_path: Path) -> None:
    config = write(
        tmp_path / "conf" / "c.toml",
        'store = "data/op.db"\nseller_private_key_path = "~/keys/seller.key"\n',
    )
    s = load_settings(config)
    assert s.store == tmp_path / "conf" / "data" / "op.db"
    assert s.seller_private_key_path == Path.home() / "keys" / "seller.key"


def test_empty_string_in_toml_means_not_set(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", 'webhook_url = ""\napi_token = ""\n')
    s = load_settings(config)
    assert s.webhook_url is None and s.api_token is None


def test_relative_paths_from_env_are_made_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPAPPROVE_STORE", "here.db")
    assert load_settings().store == tmp_path / "here.db"


def test_base_url_trailing_slash_is_dropped() -> None:
    assert load_settings(base_url="https://shop.test/pay/").base_url == "https://shop.test/pay"


# -- the example file ------------------------------------------------------------------------

_COMMENTED_SETTING = re.compile(r"^# (?P<key>[a-z_]+) = (?P<value>.+)$", re.MULTILINE)


def test_example_config_loads_and_sets_only_defaults() -> None:
    s = load_settings(EXAMPLE)
    active = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert active, "the example sets nothing"
    for key, value in active.items():
        assert getattr(s, key) == value, key
        assert getattr(s, key) == Settings.model_fields[key].default, key


def test_example_config_documents_every_setting_and_its_env_var() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    active = set(tomllib.loads(text))
    commented = {m["key"] for m in _COMMENTED_SETTING.finditer(text)}
    fields = set(Settings.model_fields)
    assert fields - (active | commented) == set()
    assert (active | commented) - fields == set()
    for key in fields:
        assert f"OPAPPROVE_{key.upper()}" in text, key


def test_example_config_commented_settings_are_valid(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    uncommented = _COMMENTED_SETTING.sub(lambda m: f"{m['key']} = {m['value']}", text)
    config = write(tmp_path / "all.toml", uncommented)
    s = load_settings(config)
    assert s.seller_wallet_address_url == "https://ilp.interledger-test.dev/alice"
    assert s.webhook_secret is not None
    assert s.seller_private_key_path == tmp_path / "privates" / "alice.key"


def test_example_config_names_the_seed_variables() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for seed_var in (
        "SELLER_ID",
        "DEFAULT_SELLER_ID",
        "SELLER_WALLET_ADDRESS_URL",
        "SELLER_KEY_ID",
        "SELLER_PRIVATE_KEY_PATH",
        "BASE_URL",
        "DJANGO_BASE_URL",
        "PAYMENTS_SERVICE_URL",
    ):
        assert f"[{seed_var}]" in text or seed_var in text, seed_var


# -- platform directories --------------------------------------------------------------------


def test_linux_uses_xdg_dirs() -> None:
    env = {"HOME": "/home/u", "XDG_CONFIG_HOME": "/cfg", "XDG_DATA_HOME": "/data"}
    assert paths.default_config_path(platform="linux", env=env) == Path(
        "/cfg/opapprove/config.toml"
    )
    assert paths.default_store_path(platform="linux", env=env) == Path(
        "/data/opapprove/opapprove.db"
    )


def test_linux_falls_back_to_home_and_ignores_relative_xdg() -> None:
    env = {"HOME": "/home/u", "XDG_CONFIG_HOME": "relative/cfg"}
    assert paths.platform_config_dir(platform="linux", env=env) == Path("/home/u/.config")
    assert paths.platform_data_dir(platform="linux", env=env) == Path("/home/u/.local/share")


def test_macos_and_windows_dirs() -> None:
    mac = paths.default_store_path(platform="darwin", env={"HOME": "/Users/u"})
    assert mac == Path("/Users/u/Library/Application Support/opapprove/opapprove.db")
    win = paths.default_config_path(platform="win32", env={"APPDATA": "/appdata"})
    assert win == Path("/appdata/opapprove/config.toml")
    assert paths.platform_data_dir(platform="win32", env={"HOME": "/h"}) == Path(
        "/h/AppData/Roaming"
    )
