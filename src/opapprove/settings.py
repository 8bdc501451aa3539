"""opapprove's settings: CLI flags > ``OPAPPROVE_*`` env vars > a TOML config file > defaults.

``config.example.toml`` at the top of the repository documents every key and the
environment variable of the seed's services that each one replaces.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from opapprove.errors import OpapproveError
from opapprove.openpayments.redaction import redact_url
from opapprove.paths import (
    DatabaseURL,
    StoreLocation,
    default_config_path,
    default_store_path,
    store_location,
)

ENV_PREFIX = "OPAPPROVE_"
CONFIG_ENV_VAR = "OPAPPROVE_CONFIG"
STORE_ENV_VAR = "OPAPPROVE_STORE"
# Relative paths in a config file mean "next to the config file", not "wherever I run from".
_PATH_KEYS = ("store", "seller_private_key_path")
_SEE_EXAMPLE = "config.example.toml documents every setting"


class SettingsError(OpapproveError):
    """A config file or setting value that cannot be used. ``str(err)`` is one line."""

    kind = "config"

    def __init__(self, message: str, *, hint: str | None = None, key: str | None = None) -> None:
        super().__init__(message, hint)
        self.key = key


@dataclass
class _LoadContext:
    config_file: Path | None
    toml_data: dict[str, Any] = field(default_factory=dict)


# load_settings() hands the chosen config file to settings_customise_sources() through this:
# pydantic-settings gives that classmethod no per-call argument of its own.
_LOAD_CONTEXT: ContextVar[_LoadContext | None] = ContextVar("opapprove_settings_load", default=None)


class _ConfigFileSource(TomlConfigSettingsSource):
    def _read_file(self, path: Path | Traversable) -> dict[str, Any]:
        data = super()._read_file(path)
        if isinstance(path, Path):
            for key in _PATH_KEYS:
                value = data.get(key)
                if isinstance(value, str) and value and not _is_url(value):
                    resolved = Path(value).expanduser()
                    if not resolved.is_absolute():
                        resolved = path.parent / resolved
                    data[key] = str(resolved)
        return data


def _is_url(value: str) -> bool:
    return "://" in value


def _check_http_url(value: str, *, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute http(s) URL, got {value!r}")
    return value


class Settings(BaseSettings):
    """Every knob opapprove has. Build it with :func:`load_settings`, not directly.

    ``Settings()`` alone reads env vars and defaults but no config file.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        env_ignore_empty=True,
        validate_default=True,
        arbitrary_types_allowed=True,
    )

    # A SQLite file, or a PostgreSQL database named by a postgresql:// URL.
    store: StoreLocation = Field(default_factory=default_store_path)

    seller_id: str = "default-seller"
    seller_wallet_address_url: str | None = None
    seller_key_id: str | None = None
    seller_private_key_path: Path | None = None

    base_url: str = "http://127.0.0.1:3999"
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=3999, ge=0, le=65535)

    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_retries: int = Field(default=5, ge=0, le=100)
    api_token: SecretStr | None = None

    timeout: float = Field(default=10.0, gt=0)
    use_http: bool = False
    allow_http: bool = False
    poll_timeout: float = Field(default=600.0, gt=0)
    stuck_after: float = Field(default=900.0, gt=0)
    approval_timeout: float = Field(default=600.0, gt=0)

    _config_file: Path | None = PrivateAttr(default=None)

    @field_validator(
        "seller_wallet_address_url",
        "seller_key_id",
        "seller_private_key_path",
        "webhook_url",
        "webhook_secret",
        "api_token",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # TOML has no null: an empty string is how a config file says "not set".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("store", mode="before")
    @classmethod
    def _store_location(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        if isinstance(value, str | os.PathLike | DatabaseURL):
            return store_location(value)
        return value

    @field_validator("store", "seller_private_key_path")
    @classmethod
    def _absolute_path(cls, value: Any) -> Any:
        # Absolute now, so a path given relative to where the command ran stays right later.
        return value.expanduser().absolute() if isinstance(value, Path) else value

    @field_validator("seller_id", "listen_host")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        _check_http_url(value, what="base_url")
        parts = urlsplit(value)
        if parts.query or parts.fragment:
            raise ValueError(f"base_url must have no query or fragment, got {value!r}")
        return value.rstrip("/")

    @field_validator("webhook_url", "seller_wallet_address_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value, what="the URL")

    @property
    def config_file(self) -> Path | None:
        """The TOML file these settings were read from, if any."""
        return self._config_file

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        ctx = _LOAD_CONTEXT.get()
        if ctx is None or ctx.config_file is None:
            return (init_settings, env_settings)
        toml = _ConfigFileSource(settings_cls, toml_file=ctx.config_file)
        ctx.toml_data = dict(toml.toml_data)
        return (init_settings, env_settings, toml)


def _choose_config_file(config_path: Path | None, env: Mapping[str, str]) -> Path | None:
    if config_path is not None:
        chosen, origin = Path(config_path).expanduser(), "--config"
    elif env.get(CONFIG_ENV_VAR, "").strip():
        chosen, origin = Path(env[CONFIG_ENV_VAR].strip()).expanduser(), CONFIG_ENV_VAR
    else:
        default = default_config_path(env=env)
        if not default.exists():
            return None
        chosen, origin = default, "the default location"
    if not chosen.exists():
        raise SettingsError(
            f"config file {chosen} (from {origin}) does not exist",
            hint="fix the path, or copy config.example.toml there",
        )
    if not chosen.is_file():
        raise SettingsError(
            f"config file {chosen} (from {origin}) is not a file",
            hint="point it at a TOML file such as config.example.toml",
        )
    return chosen


def _env_var_set(key: str, env: Mapping[str, str]) -> str | None:
    wanted = (ENV_PREFIX + key).upper()
    for name, value in env.items():
        if name.upper() == wanted and value != "":
            return name
    return None


def _is_secret(key: str) -> bool:
    """A setting typed ``SecretStr``: its value is never echoed in an error."""
    field = Settings.model_fields.get(key)
    return field is not None and SecretStr in get_args(field.annotation)


def _error_from_validation(
    exc: ValidationError,
    overrides: Mapping[str, Any],
    ctx: _LoadContext,
    env: Mapping[str, str],
) -> SettingsError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    key = str(first["loc"][0]) if first["loc"] else "?"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        return SettingsError(
            f"unknown setting {key!r} in config file {ctx.config_file}{more}",
            hint=f"remove it or fix its spelling; {_SEE_EXAMPLE}",
            key=key,
        )
    reason = str(first["msg"]).removeprefix("Value error, ")
    if not _is_secret(key) and "input" in first and not isinstance(first["input"], dict):
        given = first["input"]
        # A store URL may carry a password.
        reason += f" (got {(redact_url(given) if isinstance(given, str) else given)!r})"
    env_name = _env_var_set(key, env)
    if key in overrides:
        flag = "--" + key.replace("_", "-")
        where, fix = f"option {flag}", f"fix the value of {flag}"
    elif env_name is not None:
        where, fix = f"environment variable {env_name}", f"fix or unset {env_name}"
    elif key in ctx.toml_data:
        where, fix = f"config file {ctx.config_file}", f"fix {key} in {ctx.config_file}"
    else:
        where, fix = "the default", "set it explicitly"
    return SettingsError(
        f"setting {key} from {where} is not valid: {reason}{more}",
        hint=f"{fix}; {_SEE_EXAMPLE}",
        key=key,
    )


def load_settings(config_path: Path | None = None, **overrides: Any) -> Settings:
    """Settings from flags (``overrides``; ``None`` means "flag not given"), env, config, defaults.

    The config file is ``config_path`` (``--config``), else ``$OPAPPROVE_CONFIG``, else
    ``<platform config dir>/opapprove/config.toml`` if it exists. A missing file that was
    asked for by name is an error. Unknown override names are a programming error.
    """
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        raise TypeError(f"load_settings() got unknown settings: {', '.join(unknown)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    env = os.environ
    ctx = _LoadContext(config_file=_choose_config_file(config_path, env))
    token = _LOAD_CONTEXT.set(ctx)
    try:
        settings = Settings(**given)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(
            f"config file {ctx.config_file} is not valid TOML: {exc}",
            hint="fix the file (config.example.toml shows the format)",
        ) from exc
    except OSError as exc:
        raise SettingsError(
            f"cannot read config file {ctx.config_file}: {exc.strerror or exc}",
            hint="check the path and that this user may read it",
        ) from exc
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"config file {ctx.config_file} is not UTF-8 text",
            hint="save it as UTF-8 TOML",
        ) from exc
    except ValidationError as exc:
        raise _error_from_validation(exc, given, ctx, env) from None
    finally:
        _LOAD_CONTEXT.reset(token)
    settings._config_file = ctx.config_file
    return settings
