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

import fnmatch
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ca import paths
from ca.errors import JitSshError

if TYPE_CHECKING:
    from .slack.settings import SlackSettings
    from .sso.settings import SsoSettings

__all__ = [
    "ServerConfig",
    "InvalidConfig",
    "WebhookSettings",
    "NotificationSettings",
    "resolve_config",
    "load_config",
    "default_data_dir",
]


class InvalidConfig(JitSshError):
    code = "invalid_config"


def default_data_dir(env: Mapping[str, str] = os.environ) -> Path:
    return paths.data_dir(env)


@dataclass(frozen=True)
class WebhookSettings:
    """One ``[[webhooks]]`` table: a URL that receives the events it wants, signed."""

    name: str
    url: str
    #: Read when the server starts (the file's first line); or ``secret`` from
    #: ``$JIT_SSH_WEBHOOK_SECRET_<NAME>``.
    secret_file: Path | None = None
    secret: str | None = field(default=None, repr=False)
    #: Event types or globs ("request.*"); empty: every event that notifies.
    events: tuple[str, ...] = ()
    #: Seconds to connect and to wait for the answer.
    timeout: float = 5.0

    @property
    def sink_name(self) -> str:
        return f"webhook:{self.name}"

    def wants(self, event_type: str) -> bool:
        return not self.events or any(fnmatch.fnmatchcase(event_type, p) for p in self.events)


@dataclass(frozen=True)
class NotificationSettings:
    """The ``[notifications]`` table: the outbox's worker and its retries."""

    #: Run the delivery worker in each server process (else: `jit-ssh admin outbox work`).
    worker: bool = True
    #: Attempts before a message is dead (kept, and shown by `jit-ssh admin outbox`).
    max_attempts: int = 12
    #: The first retry's delay; doubled for each further one, at most ``backoff_max``.
    backoff_base: timedelta = timedelta(seconds=10)
    backoff_max: timedelta = timedelta(hours=1)
    #: How long a worker holds a message it is delivering before another may take it.
    lease: timedelta = timedelta(minutes=2)
    #: How long a delivered message is kept (then deleted by the worker); dead ones stay.
    keep_delivered: timedelta = timedelta(days=7)


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
    #: Signed JSON webhooks (``[[webhooks]]`` tables).
    webhooks: tuple[WebhookSettings, ...] = ()
    #: The outbox's worker and retries (the ``[notifications]`` table).
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    #: The Slack app (the ``[slack]`` table, see server.slack.settings); None: not configured.
    slack: SlackSettings | None = None
    #: Not settings of the file: what the loader keeps beside them (the old webhook_url's
    #: secret, from the environment). Never in the repr: it may hold secrets.
    extra: Mapping[str, object] = field(default_factory=dict, repr=False)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'jit-ssh.sqlite3'}"

    @property
    def all_webhooks(self) -> tuple[WebhookSettings, ...]:
        """``webhooks``, and the old single ``webhook_url`` as the one named "default"
        (signed when ``$JIT_SSH_WEBHOOK_SECRET_DEFAULT`` was set at load, else unsigned)."""
        if not self.webhook_url or any(w.name == "default" for w in self.webhooks):
            return self.webhooks
        secret = self.extra.get("webhook_secret_default")
        legacy = WebhookSettings(
            name="default", url=self.webhook_url, secret=secret if isinstance(secret, str) else None
        )
        return (legacy, *self.webhooks)

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


_WEBHOOK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_WEBHOOK_KEYS = {"name", "url", "secret_file", "events", "timeout"}
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def secret_variable(name: str) -> str:
    """The environment variable that holds webhook ``name``'s secret."""
    return "JIT_SSH_WEBHOOK_SECRET_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def check_webhook_url(url: object, where: str) -> str:
    """An https URL, or http to this machine only (the secret and the events would
    otherwise cross the network in the clear). A refusal names the URL's scheme and host
    only: a path or query may hold a receiver's token (Slack's incoming webhooks do)."""
    from urllib.parse import urlsplit

    if not isinstance(url, str) or not url:
        raise InvalidConfig(f"{where} must be a URL", field="webhooks")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise InvalidConfig(
            f"{where} is not a URL (a scheme, a host, a port if any)", field="webhooks"
        ) from None
    shown = f"{parts.scheme}://{host}/..." if host else "it"
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidConfig(f"{where}: {shown} must be an https:// URL", field="webhooks")
    if parts.scheme == "http" and host not in _LOCAL_HOSTS:
        raise InvalidConfig(
            f"{where}: {shown} is plain http; use https (plain http only to localhost)",
            field="webhooks",
        )
    return url


def _check_events(value: object, where: str) -> tuple[str, ...]:
    from .outbox import NOTIFYING

    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidConfig(f"{where} must be a list of event types", field="webhooks")
    for pattern in value:
        if not any(fnmatch.fnmatchcase(t, pattern) for t in NOTIFYING):
            raise InvalidConfig(
                f"{where}: {pattern!r} matches no event that notifies (known: {', '.join(sorted(NOTIFYING))})",
                field="webhooks",
            )
    return tuple(value)


def _webhooks(value: object, source: str, env: Mapping[str, str]) -> tuple[WebhookSettings, ...]:
    if not isinstance(value, list):
        raise InvalidConfig(f"{source}: webhooks must be [[webhooks]] tables", field="webhooks")
    out: list[WebhookSettings] = []
    for i, table in enumerate(value):
        where = f"{source}: webhooks[{i}]"
        if not isinstance(table, dict):
            raise InvalidConfig(f"{where} must be a table", field="webhooks")
        unknown = set(table) - _WEBHOOK_KEYS
        if unknown:
            raise InvalidConfig(
                f"{where}: unknown key(s) {sorted(unknown)} (known: {', '.join(sorted(_WEBHOOK_KEYS))})",
                field="webhooks",
            )
        name = table.get("name")
        if not isinstance(name, str) or not _WEBHOOK_NAME.match(name):
            raise InvalidConfig(
                f"{where}.name must be lower-case letters, digits, - or _ (got {name!r})",
                field="webhooks",
            )
        where = f"{source}: webhook {name!r}"
        if any(w.name == name for w in out):
            raise InvalidConfig(f"{where} is configured twice", field="webhooks")
        clash = next(
            (w.name for w in out if secret_variable(w.name) == secret_variable(name)), None
        )
        if clash is not None:
            # Their secrets would come from the same variable: one receiver's secret signs both.
            raise InvalidConfig(
                f"{where} and webhook {clash!r} share ${secret_variable(name)}: rename one",
                field="webhooks",
            )
        url = check_webhook_url(table.get("url"), f"{where}: url")
        secret_file = table.get("secret_file")
        if secret_file is not None and (not isinstance(secret_file, str) or not secret_file):
            raise InvalidConfig(f"{where}: secret_file must be a path", field="webhooks")
        secret = env.get(secret_variable(name)) or None
        if secret_file is None and secret is None:
            raise InvalidConfig(
                f"{where} has no secret: set secret_file or ${secret_variable(name)}",
                field="webhooks",
            )
        timeout = table.get("timeout", 5)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout <= 60
        ):
            raise InvalidConfig(
                f"{where}: timeout must be seconds, more than 0 and at most 60", field="webhooks"
            )
        events = _check_events(table["events"], f"{where}: events") if "events" in table else ()
        out.append(
            WebhookSettings(
                name=name,
                url=url,
                secret_file=Path(secret_file).expanduser() if secret_file else None,
                secret=secret,
                events=events,
                timeout=float(timeout),
            )
        )
    return tuple(out)


def _notifications(value: object, source: str) -> NotificationSettings:
    from ca.durations import parse_duration
    from ca.errors import InvalidDuration

    if not isinstance(value, dict):
        raise InvalidConfig(f"{source}: notifications must be a table", field="notifications")
    known = {f.name for f in fields(NotificationSettings)}
    unknown = set(value) - known
    if unknown:
        raise InvalidConfig(
            f"{source}: notifications: unknown key(s) {sorted(unknown)} (known: {', '.join(sorted(known))})",
            field="notifications",
        )
    got: dict[str, Any] = {}
    if "worker" in value:
        if not isinstance(value["worker"], bool):
            raise InvalidConfig(
                f"{source}: notifications.worker must be true or false", field="notifications"
            )
        got["worker"] = value["worker"]
    if "max_attempts" in value:
        n = value["max_attempts"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1000:
            raise InvalidConfig(
                f"{source}: notifications.max_attempts must be an integer from 1 to 1000",
                field="notifications",
            )
        got["max_attempts"] = n
    for key in ("backoff_base", "backoff_max", "lease", "keep_delivered"):
        if key in value:
            v = value[key]
            try:
                got[key] = parse_duration(v, field=f"notifications.{key}")
            except InvalidDuration as e:
                raise InvalidConfig(f"{source}: {e}", field="notifications") from None
    settings = NotificationSettings(**got)
    if settings.backoff_max < settings.backoff_base:
        raise InvalidConfig(
            f"{source}: notifications.backoff_max must be at least backoff_base",
            field="notifications",
        )
    return settings


def _coerce(name: str, value: object, source: str, env: Mapping[str, str]) -> object:
    if name == "webhooks":
        return _webhooks(value, source, env)
    if name == "notifications":
        return _notifications(value, source)
    if name == "sso":
        # Imported here: server.sso.settings imports InvalidConfig from this module.
        from .sso.settings import parse_sso_settings

        return parse_sso_settings(value, source=source, env=env)
    if name == "slack":
        from .slack.settings import parse_slack_settings

        return parse_slack_settings(value, source=source, env=env)
    if name == "trusted_proxies":
        return _proxies(value, source)
    if name == "webhook_url" and value:
        return check_webhook_url(value, f"{source}: webhook_url")
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
    if values.get("webhook_url") and any(w.name == "default" for w in values.get("webhooks", ())):
        raise InvalidConfig(
            "webhook_url is the webhook named 'default': a [[webhooks]] table has that name too",
            field="webhook_url",
        )
    legacy_secret = env.get(secret_variable("default"))
    if legacy_secret:
        values["extra"] = {
            **dict(values.get("extra") or {}),
            "webhook_secret_default": legacy_secret,
        }
    cfg = ServerConfig(data_dir=Path(found), **values)
    slowest = max(
        [w.timeout for w in cfg.webhooks] + ([cfg.slack.http_timeout] if cfg.slack else []),
        default=0.0,
    )
    if cfg.notifications.lease.total_seconds() < 4 * slowest:
        raise InvalidConfig(
            f"notifications.lease must be at least four times the longest timeout of a webhook "
            f"or of Slack ({slowest:g} s): a delivery starts only while half the lease is left",
            field="notifications",
        )
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
