"""The ``[sso]`` table of the server TOML: which OpenID provider, and what its claims mean here.

::

    [sso]
    issuer = "https://login.example.com/"
    client_id = "jit-ssh"
    client_secret_file = "/etc/jit-ssh/oidc-client-secret"   # or $JIT_SSH_SSO_CLIENT_SECRET_FILE
    display_name = "Okta"
    scopes = ["openid", "email", "profile"]
    username_claim = "preferred_username"
    groups_claim = "groups"
    group_map = { "okta-sre" = "sre" }
    allowed_email_domains = ["example.com"]
    enrolment_lifetime = "12h"
    password_login = true
    break_glass_admins = ["root-admin"]
    approver_groups = ["approvers"]
    link_by_name = false
    clock_skew = 60
    http_timeout = 10

:func:`parse_sso_settings` turns the TOML table into a frozen :class:`SsoSettings`; every
refusal is an :class:`~server.config.InvalidConfig` whose message and ``field`` name the key
(``sso.issuer``...). :class:`SsoSettings` checks its values itself too, so a test that builds
one directly cannot build a nonsense one.

The client secret never lives in this object: :meth:`SsoSettings.client_secret` reads the file
each time it is needed, so it is never in a ``repr``, a log line or a traceback's locals of a
long-lived object, and a rotated secret is picked up without a restart.

Standard library only (plus :mod:`ca.durations`): :mod:`server.config` imports this module,
and the CLI's admin commands import :mod:`server.config` without Flask or httpx.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit

from ca.durations import parse_duration
from ca.errors import InvalidDuration
from server.config import InvalidConfig

__all__ = [
    "SsoSettings",
    "parse_sso_settings",
    "DEFAULT_SCOPES",
    "DEFAULT_DISPLAY_NAME",
    "ENV_CLIENT_SECRET_FILE",
    "MAX_CLOCK_SKEW",
    "is_loopback_http",
]

DEFAULT_SCOPES = ("openid", "email", "profile")
DEFAULT_DISPLAY_NAME = "single sign-on"
ENV_CLIENT_SECRET_FILE = "JIT_SSH_SSO_CLIENT_SECRET_FILE"
#: Seconds: more than five minutes of skew on iat/exp/nbf would let a stale token in.
MAX_CLOCK_SKEW = 300
MAX_HTTP_TIMEOUT = 120
MIN_ENROLMENT = timedelta(minutes=5)
MAX_ENROLMENT = timedelta(days=31)
# A secret larger than this is not a client secret but the wrong file.
_MAX_SECRET_BYTES = 16 * 1024
_MAX_URL = 2048
_MAX_GROUP_MAP = 1000

# The same patterns as server.admin's user and group names (tests/server/test_sso_settings.py
# checks they agree): a break-glass admin or a mapped group must be one admin commands accept.
_USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,63}")
_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")
# A claim name as a JSON object key we are willing to look up: printable ASCII, no spaces.
_CLAIM = re.compile(r"[\x21-\x7e]{1,64}")
# RFC 6749 section 2.2 leaves client_id open (VSCHAR); providers use ids like
# "0oa1b2c3", "123-abc.apps.googleusercontent.com" or a UUID.
_CLIENT_ID = re.compile(r"[\x21-\x7e]{1,255}")
_DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

_KEYS = (
    "issuer",
    "client_id",
    "client_secret_file",
    "display_name",
    "scopes",
    "username_claim",
    "groups_claim",
    "group_map",
    "allowed_email_domains",
    "enrolment_lifetime",
    "password_login",
    "break_glass_admins",
    "approver_groups",
    "link_by_name",
    "clock_skew",
    "http_timeout",
)


def _fail(key: str, message: str) -> InvalidConfig:
    return InvalidConfig(f"[sso] {key} {message}", field=f"sso.{key}")


def is_loopback_http(url: str) -> bool:
    """Whether ``url`` is plain http to this machine (127.0.0.1, localhost, [::1]): allowed
    for tests and local providers only."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme != "http" or not host:
        return False
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_issuer(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(
            "issuer", "must be the provider's issuer URL, e.g. 'https://login.example.com/'"
        )
    if len(value) > _MAX_URL or any(c.isspace() or ord(c) < 0x20 for c in value):
        raise _fail("issuer", f"{value[:80]!r} is not a URL")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise _fail("issuer", f"{value!r} is not a URL ({e})") from None
    if parts.scheme not in ("https", "http") or not host:
        raise _fail("issuer", f"{value!r} must be an https:// URL")
    if parts.scheme == "http" and not is_loopback_http(value):
        raise _fail(
            "issuer",
            f"{value!r} must use https (plain http only to 127.0.0.1, localhost or [::1])",
        )
    if parts.query or parts.fragment or "#" in value or "?" in value:
        # OpenID Connect Discovery 1.0, section 3: the issuer has no query or fragment.
        raise _fail("issuer", f"{value!r} must not have a query or fragment")
    if parts.username is not None or parts.password is not None:
        raise _fail("issuer", f"{value!r} must not hold a user name or password")
    return value


def _check_text(key: str, value: object, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str):
        raise _fail(key, f"must be a string ({what}), not {type(value).__name__}")
    if not pattern.fullmatch(value):
        raise _fail(key, f"{value[:80]!r} is not valid ({what})")
    return value


def _check_display_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail("display_name", "must be a non-empty string, e.g. 'Okta'")
    if len(value) > 64 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise _fail("display_name", "must be at most 64 printable characters")
    return value.strip()


def _check_scopes(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or len(value) > 32:
        raise _fail("scopes", "must be a list of at most 32 scope names, e.g. ['openid', 'email']")
    scopes = ["openid"]
    for s in value:
        _check_text("scopes", s, _SCOPE, "scope names are printable ASCII without spaces or quotes")
        if s not in scopes:
            scopes.append(s)
    return tuple(scopes)


def _check_group_map(value: object) -> Mapping[str, str]:
    if isinstance(value, MappingProxyType):
        value = dict(value)
    if not isinstance(value, dict) or len(value) > _MAX_GROUP_MAP:
        raise _fail(
            "group_map",
            f"must be a table of provider group = jit-ssh group (at most {_MAX_GROUP_MAP})",
        )
    out: dict[str, str] = {}
    for k, v in value.items():
        if (
            not isinstance(k, str)
            or not 0 < len(k) <= 256
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in k)
        ):
            raise _fail("group_map", f"key {str(k)[:80]!r} is not a provider group name")
        if not isinstance(v, str) or not _GROUP_NAME.fullmatch(v):
            raise _fail(
                "group_map",
                f"{k!r} maps to {str(v)[:80]!r}, which is not a jit-ssh group name "
                "(1-64 letters, digits, '_', '.', '-', starting with a letter or digit)",
            )
        out[k] = v
    return MappingProxyType(out)


def _check_domains(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or len(value) > 100:
        raise _fail("allowed_email_domains", "must be a list of domains, e.g. ['example.com']")
    out: list[str] = []
    for d in value:
        if not isinstance(d, str):
            raise _fail("allowed_email_domains", f"holds {d!r}, which is not a string")
        name = d.lower()
        labels = name.split(".")
        if (
            len(name) > 253
            or len(labels) < 2
            or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels)
        ):
            raise _fail(
                "allowed_email_domains",
                f"holds {d[:80]!r}, which is not a domain like 'example.com' (no '@', no wildcards)",
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def _check_admins(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise _fail("break_glass_admins", "must be a list of jit-ssh user names")
    for name in value:
        if not isinstance(name, str) or not _USER_NAME.fullmatch(name):
            raise _fail(
                "break_glass_admins",
                f"holds {str(name)[:80]!r}, which is not a jit-ssh user name",
            )
    return tuple(dict.fromkeys(value))


def _check_approver_groups(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or len(value) > _MAX_GROUP_MAP:
        raise _fail("approver_groups", "must be a list of jit-ssh group names")
    for name in value:
        if not isinstance(name, str) or not _GROUP_NAME.fullmatch(name):
            raise _fail(
                "approver_groups",
                f"holds {str(name)[:80]!r}, which is not a jit-ssh group name "
                "(1-64 letters, digits, '_', '.', '-', starting with a letter or digit)",
            )
    return tuple(dict.fromkeys(value))


def _check_lifetime(value: object) -> timedelta:
    if isinstance(value, timedelta):
        lifetime = value
    else:
        try:
            lifetime = parse_duration(value, field="[sso] enrolment_lifetime")  # type: ignore[arg-type]
        except InvalidDuration as e:
            raise InvalidConfig(str(e), field="sso.enrolment_lifetime") from None
    if not MIN_ENROLMENT <= lifetime <= MAX_ENROLMENT:
        raise _fail("enrolment_lifetime", "must be between 5m and 31d")
    return lifetime


def _check_int(key: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, f"must be a whole number of seconds, not {value!r}")
    if not low <= value <= high:
        raise _fail(key, f"must be between {low} and {high} seconds, not {value}")
    return value


def _check_timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail("http_timeout", f"must be a number of seconds, not {value!r}")
    if not 0 < value <= MAX_HTTP_TIMEOUT:
        raise _fail("http_timeout", f"must be more than 0 and at most {MAX_HTTP_TIMEOUT} seconds")
    return float(value)


def _check_secret_file(value: object) -> Path | None:
    if value is None:
        return None
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value or "\x00" in value:
        raise _fail("client_secret_file", "must be the path of a file holding the client secret")
    return Path(value).expanduser()


@dataclass(frozen=True)
class SsoSettings:
    """What jit-ssh needs to know about its OpenID provider. Built by :func:`parse_sso_settings`
    from the ``[sso]`` table; the constructor checks every value as the parser does."""

    issuer: str
    client_id: str
    #: None: a public client (PKCE only, ``token_endpoint_auth_method`` "none").
    client_secret_file: Path | None = None
    display_name: str = DEFAULT_DISPLAY_NAME
    #: Always starts with "openid".
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    username_claim: str = "preferred_username"
    #: "": the provider's groups are not used.
    groups_claim: str = "groups"
    #: provider group -> jit-ssh group; when not empty, only mapped groups count.
    group_map: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Lower case. Empty: any; else a verified email in one of them is required.
    allowed_email_domains: tuple[str, ...] = ()
    enrolment_lifetime: timedelta = timedelta(hours=12)
    #: False: only ``break_glass_admins`` may sign in with a local password.
    password_login: bool = True
    break_glass_admins: tuple[str, ...] = ()
    #: jit-ssh groups (after ``group_map``) whose members get the approver role at each
    #: sign-in, and lose it when they leave them. Empty: roles stay as the admin set them.
    #: The admin role never comes from the provider.
    approver_groups: tuple[str, ...] = ()
    #: True: a first sign-in whose user name is a local jit-ssh user's, not linked to a
    #: provider identity yet, links that user (never an admin or a break-glass admin).
    #: False (the default): refused, ``sso_name_taken``. Only safe when people cannot choose
    #: the username claim at the provider.
    link_by_name: bool = False
    #: Seconds allowed on iat/exp/nbf (0..300).
    clock_skew: int = 60
    #: Seconds for each request to the provider.
    http_timeout: float = 10.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "issuer", _check_issuer(self.issuer))
        set_(
            self,
            "client_id",
            _check_text(
                "client_id", self.client_id, _CLIENT_ID, "printable ASCII without spaces, 1-255"
            ),
        )
        set_(self, "client_secret_file", _check_secret_file(self.client_secret_file))
        set_(self, "display_name", _check_display_name(self.display_name))
        set_(self, "scopes", _check_scopes(self.scopes))
        set_(
            self,
            "username_claim",
            _check_text(
                "username_claim", self.username_claim, _CLAIM, "a claim name such as 'email'"
            ),
        )
        if self.groups_claim != "":
            _check_text("groups_claim", self.groups_claim, _CLAIM, "a claim name or ''")
        set_(self, "group_map", _check_group_map(self.group_map))
        set_(self, "allowed_email_domains", _check_domains(self.allowed_email_domains))
        set_(self, "enrolment_lifetime", _check_lifetime(self.enrolment_lifetime))
        if not isinstance(self.password_login, bool):
            raise _fail("password_login", "must be true or false")
        set_(self, "break_glass_admins", _check_admins(self.break_glass_admins))
        set_(self, "approver_groups", _check_approver_groups(self.approver_groups))
        if not isinstance(self.link_by_name, bool):
            raise _fail("link_by_name", "must be true or false")
        set_(self, "clock_skew", _check_int("clock_skew", self.clock_skew, 0, MAX_CLOCK_SKEW))
        set_(self, "http_timeout", _check_timeout(self.http_timeout))

    @property
    def discovery_url(self) -> str:
        """``{issuer}/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0, section
        4: a trailing '/' of the issuer is removed first)."""
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    @property
    def email_required(self) -> bool:
        """Whether a sign-in needs a verified email: the email names the user, or the
        allowed domains are restricted."""
        return self.username_claim == "email" or bool(self.allowed_email_domains)

    def redirect_uri(self, base_url: str) -> str:
        """The one redirect URI, to register at the provider: ``{base_url}/sso/callback``."""
        if not isinstance(base_url, str) or not base_url:
            raise InvalidConfig(
                "single sign-on needs base_url (the URL people reach the server at): "
                "the redirect URI registered at the provider is {base_url}/sso/callback",
                field="base_url",
            )
        try:
            parts = urlsplit(base_url)
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in ("https", "http")
            or not parts.hostname
            or parts.query
            or parts.fragment
            or any(c.isspace() for c in base_url)
        ):
            raise InvalidConfig(
                f"base_url {base_url[:80]!r} must be an http(s) URL without query or fragment",
                field="base_url",
            )
        return base_url.rstrip("/") + "/sso/callback"

    def client_secret(self) -> str | None:
        """The client secret, read from ``client_secret_file`` now (None for a public client).

        Raises :class:`InvalidConfig` when the file cannot be read or is empty; the message
        names the file, never its content.
        """
        path = self.client_secret_file
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                raw = f.read(_MAX_SECRET_BYTES + 1)
        except OSError as e:
            raise InvalidConfig(
                f"[sso] client_secret_file {str(path)!r} cannot be read ({e.strerror or e})",
                field="sso.client_secret_file",
            ) from None
        if len(raw) > _MAX_SECRET_BYTES:
            raise _fail("client_secret_file", f"{str(path)!r} is too large for a client secret")
        try:
            secret = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise _fail("client_secret_file", f"{str(path)!r} is not UTF-8 text") from None
        if not secret or any(ord(c) < 0x20 or ord(c) == 0x7F for c in secret):
            raise _fail(
                "client_secret_file",
                f"{str(path)!r} must hold the secret on one line (it is empty or has control characters)",
            )
        return secret

    def client_secret_mode_problem(self) -> str | None:
        """Why the secret file's permissions are too open (group or others may read it), or None."""
        if self.client_secret_file is None:
            return None
        try:
            mode = os.stat(self.client_secret_file).st_mode
        except OSError:
            return None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            return (
                f"{self.client_secret_file} is mode {stat.S_IMODE(mode):04o}: "
                "group or others may read the client secret (chmod 600)"
            )
        return None


def parse_sso_settings(
    table: object, *, source: str = "[sso]", env: Mapping[str, str] = os.environ
) -> SsoSettings:
    """The :class:`SsoSettings` of a server TOML's ``[sso]`` table.

    ``$JIT_SSH_SSO_CLIENT_SECRET_FILE``, when set, replaces ``client_secret_file``. Unknown
    keys are refused like unknown top-level settings; ``source`` (the file) prefixes messages.
    """
    try:
        if not isinstance(table, dict):
            raise InvalidConfig("[sso] must be a table", field="sso")
        for key in table:
            if key not in _KEYS:
                raise InvalidConfig(
                    f"[sso] unknown setting {key!r} (known: {', '.join(sorted(_KEYS))})",
                    field=f"sso.{key}",
                )
        for key in ("issuer", "client_id"):
            if key not in table:
                raise _fail(key, "is required")
        values = dict(table)
        if env.get(ENV_CLIENT_SECRET_FILE):
            values["client_secret_file"] = env[ENV_CLIENT_SECRET_FILE]
        if "groups_claim" in values and not isinstance(values["groups_claim"], str):
            raise _fail("groups_claim", "must be a string (a claim name, or '' for none)")
        if "username_claim" in values and not isinstance(values["username_claim"], str):
            raise _fail("username_claim", "must be a string (a claim name)")
        return SsoSettings(**values)
    except InvalidConfig as e:
        raise InvalidConfig(f"{source}: {e.message}", field=e.field) from None
