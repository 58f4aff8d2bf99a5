"""The ``[slack]`` table of the server TOML: the Slack app's bot token, signing secret, channel.

::

    [slack]
    bot_token_file = "/etc/jit-ssh/slack-bot-token"        # or $JIT_SSH_SLACK_BOT_TOKEN
    signing_secret_file = "/etc/jit-ssh/slack-signing-secret"  # or $JIT_SSH_SLACK_SIGNING_SECRET
    channel = "#access-requests"
    api_url = "https://slack.com/api/"
    users = { "U0123ABCD" = "alice" }
    match_email = true
    http_timeout = 10
    team_id = "T0123ABCD"

:func:`parse_slack_settings` turns the table into a frozen :class:`SlackSettings`; every refusal
is an :class:`~server.config.InvalidConfig` whose message and ``field`` name the key
(``slack.channel``...).

Neither secret is ever written in the TOML file (a ``bot_token`` or ``signing_secret`` key is
refused), nor kept in this object: :meth:`SlackSettings.bot_token` and
:meth:`SlackSettings.signing_secret` read the file (or the environment variable) each time, so
neither is in a ``repr``, a log line, or a long-lived object's traceback locals, and a rotated
secret takes effect without a restart.

Standard library only: :mod:`server.config` imports this module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit

from server.config import InvalidConfig

__all__ = [
    "SlackSettings",
    "parse_slack_settings",
    "DEFAULT_API_URL",
    "ENV_BOT_TOKEN",
    "ENV_SIGNING_SECRET",
    "SLACK_USER_ID",
    "SLACK_CHANNEL",
]

DEFAULT_API_URL = "https://slack.com/api/"
ENV_BOT_TOKEN = "JIT_SSH_SLACK_BOT_TOKEN"
ENV_SIGNING_SECRET = "JIT_SSH_SLACK_SIGNING_SECRET"
MAX_HTTP_TIMEOUT = 120

#: A Slack user id: "U" (or "W", Enterprise Grid) and upper-case letters and digits.
SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")
#: A channel as the policy names one (policies/loader.py's pattern): an id, or "#name".
SLACK_CHANNEL = re.compile(r"[CGD][A-Z0-9]{2,20}|#[a-z0-9][a-z0-9_-]{0,79}")
# jit-ssh user names, as server.admin accepts them.
_USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,63}")
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
# A token or secret larger than this is not one but the wrong file.
_MAX_SECRET_BYTES = 4096
_MAX_USERS = 10000
_TEAM_ID = re.compile(r"T[A-Z0-9]{2,20}")

_KEYS = (
    "bot_token_file",
    "signing_secret_file",
    "channel",
    "api_url",
    "users",
    "match_email",
    "http_timeout",
    "team_id",
)
#: Keys that would put a secret in the file itself.
_LITERAL_SECRETS = {"bot_token": "bot_token_file", "signing_secret": "signing_secret_file"}


def _fail(key: str, message: str) -> InvalidConfig:
    return InvalidConfig(f"[slack] {key} {message}", field=f"slack.{key}")


def _check_file(key: str, value: object) -> Path | None:
    if value is None:
        return None
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value or "\x00" in value:
        raise _fail(key, "must be the path of a file")
    return Path(value).expanduser()


def _check_channel(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not SLACK_CHANNEL.fullmatch(value):
        raise _fail(
            "channel", f"{str(value)[:80]!r} is not a Slack channel: its id (C0123ABCD) or #name"
        )
    return value


def _check_api_url(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise _fail("api_url", "must be the Web API's URL, e.g. 'https://slack.com/api/'")
    if any(c.isspace() or ord(c) < 0x20 for c in value):
        raise _fail("api_url", f"{value[:80]!r} is not a URL")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise _fail("api_url", f"{value[:80]!r} is not a URL ({e})") from None
    if not host or parts.scheme not in ("https", "http"):
        raise _fail("api_url", f"{value[:80]!r} must be an https:// URL")
    if parts.scheme == "http" and host not in _LOOPBACK and not host.startswith("127."):
        raise _fail(
            "api_url",
            f"{value[:80]!r} must use https (plain http only to 127.0.0.1, localhost or [::1]): "
            "the bot token travels with every call",
        )
    if parts.query or parts.fragment or parts.username is not None or parts.password is not None:
        raise _fail("api_url", f"{value[:80]!r} must have no query, fragment or user name")
    # slack-sdk joins the method name to it: without the slash, ".../api" + "chat.update"
    # would replace the last segment.
    return value if value.endswith("/") else value + "/"


def _check_users(value: object) -> Mapping[str, str]:
    if isinstance(value, MappingProxyType):
        value = dict(value)
    if not isinstance(value, dict) or len(value) > _MAX_USERS:
        raise _fail(
            "users",
            'must be a table of Slack user id = jit-ssh user name, e.g. { "U0123ABCD" = "alice" }',
        )
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not SLACK_USER_ID.fullmatch(k):
            raise _fail("users", f"key {str(k)[:40]!r} is not a Slack user id (U0123ABCD)")
        if not isinstance(v, str) or not _USER_NAME.fullmatch(v):
            raise _fail("users", f"{k!r} maps to {str(v)[:80]!r}, which is not a jit-ssh user name")
        out[k] = v
    if len(set(out.values())) != len(out):
        raise _fail("users", "maps two Slack users to one jit-ssh user")
    return MappingProxyType(out)


def _check_timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail("http_timeout", f"must be a number of seconds, not {value!r}")
    if not 0 < value <= MAX_HTTP_TIMEOUT:
        raise _fail("http_timeout", f"must be more than 0 and at most {MAX_HTTP_TIMEOUT} seconds")
    return float(value)


def _read_secret(key: str, path: Path) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_SECRET_BYTES + 1)
    except OSError as e:
        raise _fail(key, f"{str(path)!r} cannot be read ({e.strerror or e})") from None
    if len(raw) > _MAX_SECRET_BYTES:
        raise _fail(key, f"{str(path)!r} is too large")
    try:
        secret = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _fail(key, f"{str(path)!r} is not UTF-8 text") from None
    if not secret or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in secret):
        raise _fail(key, f"{str(path)!r} must hold the secret on one line, without spaces")
    return secret


@dataclass(frozen=True)
class SlackSettings:
    """What jit-ssh needs to talk to Slack. Built by :func:`parse_slack_settings` from the
    ``[slack]`` table; the constructor checks every value as the parser does."""

    #: The bot token's file (xoxb-...); None: ``$JIT_SSH_SLACK_BOT_TOKEN``.
    bot_token_file: Path | None = None
    #: The signing secret's file; None: ``$JIT_SSH_SLACK_SIGNING_SECRET``.
    signing_secret_file: Path | None = None
    #: Where a request is posted when its rule names no ``slack_channel``; None: not posted.
    channel: str | None = None
    api_url: str = DEFAULT_API_URL
    #: Slack user id -> jit-ssh user name; looked up before any email.
    users: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Whether a Slack user's confirmed email may name the jit-ssh user with that (verified) email.
    match_email: bool = True
    #: Seconds for each Web API call.
    http_timeout: float = 10.0
    #: The Slack workspace the app is installed in: a callback from any other is refused.
    #: None: not checked (an app installed in one workspace only gets its callbacks).
    team_id: str | None = None
    #: Where the environment variables are read (the process's, unless a test says otherwise).
    env: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "bot_token_file", _check_file("bot_token_file", self.bot_token_file))
        set_(
            self,
            "signing_secret_file",
            _check_file("signing_secret_file", self.signing_secret_file),
        )
        set_(self, "channel", _check_channel(self.channel))
        set_(self, "api_url", _check_api_url(self.api_url))
        set_(self, "users", _check_users(self.users))
        if not isinstance(self.match_email, bool):
            raise _fail("match_email", "must be true or false")
        set_(self, "http_timeout", _check_timeout(self.http_timeout))
        if self.team_id is not None and not (
            isinstance(self.team_id, str) and _TEAM_ID.fullmatch(self.team_id)
        ):
            raise _fail("team_id", "must be a Slack workspace id such as T0123ABCD")

    def bot_token(self) -> str:
        """The bot token, read now (the file, else the environment variable)."""
        return self._secret("bot_token_file", self.bot_token_file, ENV_BOT_TOKEN)

    def signing_secret(self) -> str:
        """The signing secret, read now (the file, else the environment variable)."""
        return self._secret("signing_secret_file", self.signing_secret_file, ENV_SIGNING_SECRET)

    def _secret(self, key: str, path: Path | None, var: str) -> str:
        if path is not None:
            return _read_secret(key, path)
        value = self.env.get(var, "").strip()
        if not value or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
            raise _fail(key, f"is not set, and ${var} is empty or not one word")
        return value

    def slack_user_for(self, name: str) -> str | None:
        """The Slack user id the explicit mapping gives jit-ssh user ``name``, or None."""
        for slack_id, user in self.users.items():
            if user == name:
                return slack_id
        return None


def parse_slack_settings(
    table: object, *, source: str = "[slack]", env: Mapping[str, str] = os.environ
) -> SlackSettings:
    """The :class:`SlackSettings` of a server TOML's ``[slack]`` table.

    A token and a secret must each come from somewhere: the ``*_file`` key or its
    environment variable (``$JIT_SSH_SLACK_BOT_TOKEN``, ``$JIT_SSH_SLACK_SIGNING_SECRET``).
    """
    try:
        if not isinstance(table, dict):
            raise InvalidConfig("[slack] must be a table", field="slack")
        for key in table:
            if key in _LITERAL_SECRETS:
                raise _fail(
                    key,
                    f"must not be written in the configuration file: put it in a file named by "
                    f"{_LITERAL_SECRETS[key]} (mode 0600), or in the environment",
                )
            if key not in _KEYS:
                raise InvalidConfig(
                    f"[slack] unknown setting {key!r} (known: {', '.join(sorted(_KEYS))})",
                    field=f"slack.{key}",
                )
        if "bot_token_file" not in table and not env.get(ENV_BOT_TOKEN):
            raise _fail("bot_token_file", f"is required (or ${ENV_BOT_TOKEN})")
        if "signing_secret_file" not in table and not env.get(ENV_SIGNING_SECRET):
            raise _fail("signing_secret_file", f"is required (or ${ENV_SIGNING_SECRET})")
        return SlackSettings(**table, env=env)
    except InvalidConfig as e:
        raise InvalidConfig(f"{source}: {e.message}", field=e.field) from None
