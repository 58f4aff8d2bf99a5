"""Server configuration, resolved ONE way for every command.

Nothing reads the environment at import time: :func:`resolve_config` is
called by ``jit-ssh serve``, ``ca sign``, the admin and audit commands and
the WSGI entry point alike, and tests build a :class:`ServerConfig` directly.

Precedence, per setting: a command-line flag (``--data-dir``) > a ``JIT_SSH_*``
environment variable > the TOML file (``--config`` or ``$JIT_SSH_CONFIG``) >
the default (the data directory, and SQLite inside it). A command that finds
the database in a different place than ``serve`` would write certificates
nobody can revoke and audit events nobody sees: so there is one resolver.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ca import paths
from ca.errors import JitSshError

if TYPE_CHECKING:
    from .slack.settings import SlackSettings
    from .sso.settings import SsoSettings

__all__ = ["ServerConfig", "InvalidConfig", "resolve_config", "load_config", "default_data_dir"]


class InvalidConfig(JitSshError):
    code = "invalid_config"


def default_data_dir(env: Mapping[str, str] = os.environ) -> Path:
    return paths.data_dir(env)


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path
    #: Default: SQLite in the data directory.
    database_url: str = ""
    #: Default: policy.toml in the data directory (the demo policy, copied there on first start).
    policy_path: Path | None = None
    #: The URL people reach the server at; used in approval links
    #: (default: http://<the address `jit-ssh serve` binds>).
    base_url: str = ""
    webhook_url: str | None = None
    #: Signed API calls older or newer than this are refused (seconds).
    max_clock_skew: int = 300
    #: Hosts' clock skew allowance for revocation (seconds): a revoked serial stays in the
    #: KRL until valid_before plus this, and KRL versions further ahead are implausible.
    krl_clock_skew: int = 300
    #: Clock-skew allowance written into certificates (seconds); at most a tenth of a grant.
    backdate_seconds: int = 0
    #: A signed audit checkpoint every N events.
    audit_checkpoint_every: int = 1000
    #: The CA key's passphrase file (or $JIT_SSH_CA_PASSPHRASE).
    ca_passphrase_file: Path | None = None
    max_body_bytes: int = 64 * 1024
    #: Create the data directory, keys, demo policy and SQLite database when missing.
    bootstrap: bool = True
    secret_key_file: Path | None = None
    #: Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For/-Proto/-Host
    #: headers are believed (see server.proxy); empty: nobody's.
    trusted_proxies: tuple[str, ...] = ()
    #: Single sign-on (the ``[sso]`` table, see server.sso.settings); None: not configured.
    sso: SsoSettings | None = None
    #: The Slack app (the ``[slack]`` table, see server.slack.settings); None: not configured.
    slack: SlackSettings | None = None
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'jit-ssh.sqlite3'}"

    @property
    def resolved_policy_path(self) -> Path:
        return self.policy_path or self.data_dir / "policy.toml"

    @property
    def ca_dir(self) -> Path:
        return self.data_dir

    @property
    def audit_key_path(self) -> Path:
        return self.data_dir / "audit" / "audit_ed25519"


_ENV = {
    "JIT_SSH_DATA_DIR": "data_dir",
    "JIT_SSH_DATABASE_URL": "database_url",
    "JIT_SSH_POLICY": "policy_path",
    "JIT_SSH_BASE_URL": "base_url",
    "JIT_SSH_WEBHOOK_URL": "webhook_url",
    "JIT_SSH_MAX_CLOCK_SKEW": "max_clock_skew",
    "JIT_SSH_KRL_CLOCK_SKEW": "krl_clock_skew",
    "JIT_SSH_BACKDATE": "backdate_seconds",
    "JIT_SSH_AUDIT_CHECKPOINT_EVERY": "audit_checkpoint_every",
    "JIT_SSH_CA_PASSPHRASE_FILE": "ca_passphrase_file",
    "JIT_SSH_SECRET_KEY_FILE": "secret_key_file",
    # Comma-separated: JIT_SSH_TRUSTED_PROXIES="10.0.0.5,10.1.0.0/16".
    "JIT_SSH_TRUSTED_PROXIES": "trusted_proxies",
}
_TYPES = {f.name: f.type for f in fields(ServerConfig)}


def _proxies(value: object, source: str) -> tuple[str, ...]:
    from .proxy import parse_networks

    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list):
        raise InvalidConfig(
            f"{source}: trusted_proxies must be a list of addresses or networks",
            field="trusted_proxies",
        )
    try:
        return tuple(str(n) for n in parse_networks(value, field=f"{source}: trusted_proxies"))
    except ValueError as e:
        raise InvalidConfig(str(e), field="trusted_proxies") from None


def _coerce(name: str, value: object, source: str, env: Mapping[str, str]) -> object:
    if name == "sso":
        # Imported here: server.sso.settings imports InvalidConfig from this module.
        from .sso.settings import parse_sso_settings

        return parse_sso_settings(value, source=source, env=env)
    if name == "slack":
        from .slack.settings import parse_slack_settings

        return parse_slack_settings(value, source=source, env=env)
    if name == "trusted_proxies":
        return _proxies(value, source)
    kind = str(_TYPES[name])
    if "int" in kind and "Path" not in kind:
        if isinstance(value, bool):
            raise InvalidConfig(f"{source}: {name} must be an integer", field=name)
        try:
            if not isinstance(value, (str, int, float)):
                raise TypeError(value)
            return int(value)
        except (TypeError, ValueError):
            raise InvalidConfig(
                f"{source}: {name} must be an integer, got {value!r}", field=name
            ) from None
    if "bool" in kind:
        if isinstance(value, bool):
            return value
        return str(value).lower() in ("1", "true", "yes", "on")
    if "Path" in kind:
        if not isinstance(value, str) or not value:
            raise InvalidConfig(f"{source}: {name} must be a path", field=name)
        return Path(value).expanduser()
    if not isinstance(value, str):
        raise InvalidConfig(f"{source}: {name} must be a string", field=name)
    return value or None if name == "webhook_url" else value


def resolve_config(
    config_path: str | os.PathLike[str] | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    database_url: str | None = None,
    env: Mapping[str, str] = os.environ,
) -> ServerConfig:
    """The configuration: flags (``data_dir``, ``database_url``) > ``JIT_SSH_*``
    variables > the TOML file (``config_path`` or ``$JIT_SSH_CONFIG``) > defaults."""
    values: dict[str, Any] = {}
    config_path = config_path or env.get("JIT_SSH_CONFIG")
    if config_path:
        p = Path(config_path).expanduser()
        try:
            data = tomllib.loads(p.read_text("utf-8"))
        except FileNotFoundError:
            raise InvalidConfig(f"{p}: no such configuration file", field="config") from None
        except tomllib.TOMLDecodeError as e:
            raise InvalidConfig(f"{p}: {e}", field="config") from None
        known = set(_TYPES) - {"extra"}
        for key, value in data.items():
            if key not in known:
                raise InvalidConfig(
                    f"{p}: unknown setting {key!r} (known: {', '.join(sorted(known))})", field=key
                )
            values[key] = _coerce(key, value, str(p), env)
    for var, name in _ENV.items():
        if env.get(var):
            values[name] = _coerce(name, env[var], var, env)
    if data_dir:
        values["data_dir"] = _coerce("data_dir", str(data_dir), "--data-dir", env)
    if database_url:
        values["database_url"] = _coerce("database_url", database_url, "--database-url", env)
    # The data directory's default needs only XDG_DATA_HOME here:
    # JIT_SSH_DATA_DIR was read above with the other variables.
    found = values.pop("data_dir", None) or default_data_dir(
        {k: v for k, v in env.items() if k != "JIT_SSH_DATA_DIR"}
    )
    cfg = ServerConfig(data_dir=Path(found), **values)
    if cfg.backdate_seconds < 0 or cfg.max_clock_skew <= 0 or cfg.audit_checkpoint_every <= 0:
        raise InvalidConfig(
            "backdate_seconds must be >= 0; max_clock_skew and audit_checkpoint_every > 0"
        )
    if cfg.krl_clock_skew < 0:
        raise InvalidConfig("krl_clock_skew must be >= 0", field="krl_clock_skew")
    return cfg


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] = os.environ
) -> ServerConfig:
    """:func:`resolve_config` without flags (kept for callers of the old name)."""
    return resolve_config(path, env=env)


def with_overrides(cfg: ServerConfig, **changes: Any) -> ServerConfig:
    return replace(cfg, **changes)


__all__.append("with_overrides")
