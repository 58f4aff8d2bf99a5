"""Strict checks for the names OpenSSH reads: principals, login users, targets, hosts, key ids.

One function per kind of value. Each returns the value unchanged or raises
an error of :mod:`ca.errors` whose message names the field and says why.
Every place that accepts such a value goes through these functions: the
policy loader, the CA (:func:`ca.certs.validate_principals`), ``host setup``
and the client, which writes them into ssh_config and passes them to ``ssh``.
So a policy that ``jit-ssh policy check`` accepts never yields a value the
client refuses, and a value the client accepts cannot mean anything else to
OpenSSH.

What OpenSSH would do with the characters refused here:

* whitespace, ``"``, ``'``, ``\\``: split or quote an ssh_config line, or an
  AuthorizedPrincipalsFile line; a newline starts a new directive (a
  principal ``x\\nProxyCommand id`` in a ``User`` line ran ``id``);
* a leading ``-``: ``ssh`` and ``ssh-keygen`` read the argument as an option
  (``-oProxyCommand=...``);
* ``%``: a token in ssh_config (``%h``, ``%d``...), expanded in ``User``,
  ``IdentityFile``, ``CertificateFile``, ``ProxyCommand``...; ``$`` starts a
  ``${VAR}`` expansion in the same directives, ``~`` a home directory;
* ``*``, ``?``, ``!``, ``,``: wildcards, negation and lists in ssh_config
  ``Host``/``Match`` patterns and sshd's ``-n a,b`` lists;
* ``#``: a comment in ssh_config and AuthorizedPrincipalsFile;
* ``=``: separates a keyword from its value in ssh_config and ``-o``;
* control and Unicode format (Cf) characters: invisible, or able to reorder
  text on screen (U+202E), so what an approver or admin reads is not the
  name; and ``@``, ``:``, ``/``, ``[``: user, port and path separators.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

from .errors import InvalidKeyId, InvalidName, InvalidPrincipal, JitSshError

__all__ = [
    "MAX_PRINCIPAL_LENGTH",
    "MAX_LOGIN_USER_LENGTH",
    "MAX_TARGET_LENGTH",
    "MAX_HOSTNAME_LENGTH",
    "MAX_KEY_ID_LENGTH",
    "check_principal",
    "check_login_user",
    "check_target",
    "check_hostname",
    "check_key_id",
]

MAX_PRINCIPAL_LENGTH = 255
#: utmp's ut_user is 32 bytes: a longer name is cut short in login records.
MAX_LOGIN_USER_LENGTH = 32
MAX_TARGET_LENGTH = 64
MAX_HOSTNAME_LENGTH = 253
MAX_KEY_ID_LENGTH = 1024

# A POSIX account name as shadow's useradd accepts it by default: lower case,
# starting with a letter or '_', an optional trailing '$' (Samba machine
# accounts). '.' is allowed after the first character: useradd accepts it
# (first.last accounts from a directory), and it is inert everywhere the name
# goes: ssh_config ``User``, ssh's ``user@host`` (split at the last '@') and
# sshd's AuthorizedPrincipalsFile ``.../principals/%u`` path (never '.' or
# '..', as the first character cannot be a dot). Upper case is refused:
# useradd refuses it, and ``host setup`` could never write its file.
_LOGIN_USER = re.compile(r"[a-z_][a-z0-9_.-]*\$?")
# Target names appear on command lines (`jit-ssh login NAME`), in file names
# under ~/.ssh/jit-ssh and in ssh_config ``Host`` lines.
_RESERVED_TARGET_ENDINGS = (".pub", ".json", "-cert")
_TARGET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A principal without '@': a name (group-like principals such as "ops").
_BARE_PRINCIPAL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?")
# What follows '@' in a principal: a target or host name.
_SCOPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# One DNS label (underscores tolerated: ssh_config aliases and some internal
# names use them); never starting or ending with '-'.
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
# Printable ASCII without space.
_KEY_ID = re.compile(r"[\x21-\x7e]+")

_LOGIN_USER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-$")
_PRINCIPAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-@$")

_WHY = {
    "%": "ssh_config expands %-tokens",
    "$": "ssh_config expands ${...} variables",
    "~": "ssh_config expands ~ to a home directory",
    '"': "ssh_config and sshd read quotes",
    "'": "ssh_config and sshd read quotes",
    "\\": "ssh_config reads backslash escapes",
    "#": "it starts a comment in ssh_config and AuthorizedPrincipalsFile",
    "*": "it is a wildcard in ssh_config patterns",
    "?": "it is a wildcard in ssh_config patterns",
    "!": "it negates an ssh_config pattern",
    "=": "it separates an option from its value (ssh -oName=value)",
    "@": "it separates the user from the host",
    ":": "it separates a host from its port",
    "/": "it is a path separator",
    ";": "a shell reads it as the end of a command",
}


def _show(value: str) -> str:
    """``repr`` of at most 64 characters: control and format characters come out escaped."""
    return repr(value[:64]) + ("..." if len(value) > 64 else "")


def _char_problem(value: str, allowed: frozenset[str]) -> str | None:
    """Why the first character of ``value`` outside ``allowed`` is refused, or None."""
    for c in value:
        if c in allowed:
            continue
        if c == ",":
            return "must not contain a comma"
        if c.isspace():
            return "must not contain whitespace"
        category = unicodedata.category(c)
        if category == "Cc":
            return "must not contain control characters, whitespace or commas"
        if category == "Cf":
            return f"must not contain invisible format characters (U+{ord(c):04X})"
        if c in _WHY:
            return f"must not contain {c!r}: {_WHY[c]}"
        return f"must not contain {c!r}"
    return None


def _need_text(value: object, field: str, error: type[JitSshError]) -> str:
    if not isinstance(value, str):
        raise error(f"{field} must be a string, not {type(value).__name__}", field=field)
    if not value:
        raise error(f"{field} must not be empty", field=field)
    return value


def _login_user_problem(value: str) -> str | None:
    if len(value) > MAX_LOGIN_USER_LENGTH:
        return f"at most {MAX_LOGIN_USER_LENGTH} characters"
    if value.startswith("-"):
        return "it must not start with '-': ssh would read it as an option"
    why = _char_problem(value, _LOGIN_USER_CHARS)
    if why:
        if any("A" <= c <= "Z" for c in value) and not _char_problem(
            value.lower(), _LOGIN_USER_CHARS
        ):
            return "upper case is not allowed"
        return f"it {why}"
    if not _LOGIN_USER.fullmatch(value):
        return "it must start with a-z or '_', and '$' may only end it"
    return None


def check_login_user(value: str, *, field: str = "login user") -> str:
    """A POSIX account name: ``[a-z_][a-z0-9_.-]*`` with an optional trailing ``$``, at most 32 characters."""
    value = _need_text(value, field, InvalidName)
    why = _login_user_problem(value)
    if why:
        raise InvalidName(
            f"{field} {_show(value)} is not a valid user name ({why}; a-z, 0-9, '_', '.', '-', "
            f"starting with a-z or '_', at most {MAX_LOGIN_USER_LENGTH})",
            field=field,
        )
    return value


def check_principal(value: str, *, field: str = "principal") -> str:
    """A certificate principal: ``LOGIN@TARGET`` (LOGIN a valid user name) or a plain name.

    Letters, digits, ``_``, ``.``, ``-``, one ``@`` and a ``$`` ending the user
    name; at most 255 characters; never starting with ``-``.
    """
    value = _need_text(value, field, InvalidPrincipal)
    if len(value) > MAX_PRINCIPAL_LENGTH:
        raise InvalidPrincipal(
            f"{field} {_show(value)} is longer than {MAX_PRINCIPAL_LENGTH} characters", field=field
        )
    if value.startswith("-"):
        raise InvalidPrincipal(
            f"{field} {_show(value)} must not start with '-': ssh and ssh-keygen would read it as an option",
            field=field,
        )
    why = _char_problem(value, _PRINCIPAL_CHARS)
    if why:
        raise InvalidPrincipal(f"{field} {_show(value)} {why}", field=field)
    if value.count("@") > 1:
        raise InvalidPrincipal(
            f"{field} {_show(value)} must hold at most one '@' (LOGIN@TARGET)", field=field
        )
    if "@" in value:
        login, scope = value.split("@")
        why = _login_user_problem(login) if login else "it is empty"
        if why:
            raise InvalidPrincipal(
                f"{field} {_show(value)}: the user name before '@' is not valid ({why})",
                field=field,
            )
        if not _SCOPE.fullmatch(scope):
            raise InvalidPrincipal(
                f"{field} {_show(value)}: after '@' comes a target or host name "
                "(letters, digits, '.', '_', '-', starting with a letter or digit)",
                field=field,
            )
    elif not _BARE_PRINCIPAL.fullmatch(value):
        raise InvalidPrincipal(
            f"{field} {_show(value)} must start with a letter, digit or '_', and '$' may only end it",
            field=field,
        )
    return value


def check_target(value: str, *, field: str = "target name") -> str:
    """A policy target name: 1-64 letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit."""
    value = _need_text(value, field, InvalidName)
    if not _TARGET.fullmatch(value):
        raise InvalidName(
            f"{field} {_show(value)} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            field=field,
        )
    # The client files an access to target T under ~/.ssh/jit-ssh as T, T.pub,
    # T-cert.pub and T.json, beside one ssh_config named "config". A target
    # named "config", or T.pub, T.json or T-cert (whose .pub is T-cert.pub),
    # would overwrite another target's files: `jit-ssh login config` would
    # write a private key over the ssh_config.
    if value == "config" or value.endswith(_RESERVED_TARGET_ENDINGS):
        raise InvalidName(
            f"{field} {_show(value)} is reserved: a target may not be named 'config' nor end in "
            f"{', '.join(repr(e) for e in _RESERVED_TARGET_ENDINGS)} (the client names its files so)",
            field=field,
        )
    return value


def check_hostname(value: str, *, field: str = "host") -> str:
    """A DNS name (labels of letters, digits, ``-``, ``_``; at most 253) or an IPv4/IPv6 literal.

    IPv6 zone ids (``fe80::1%eth0``) and brackets are refused: ``%`` is an
    ssh_config token, and ``ssh user@[::1]`` does not mean ``::1`` to ssh.
    """
    value = _need_text(value, field, InvalidName)
    if len(value) > MAX_HOSTNAME_LENGTH:
        raise InvalidName(
            f"{field} {_show(value)} is longer than {MAX_HOSTNAME_LENGTH} characters", field=field
        )
    if value.startswith("-"):
        raise InvalidName(
            f"{field} {_show(value)} must not start with '-': ssh would read it as an option",
            field=field,
        )
    if ":" in value and set(value) <= frozenset("0123456789abcdefABCDEF:."):
        try:
            ipaddress.IPv6Address(value)
            return value
        except ValueError:
            raise InvalidName(
                f"{field} {_show(value)} is not a valid IPv6 address", field=field
            ) from None
    why = _char_problem(
        value, frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    )
    if why:
        raise InvalidName(f"{field} {_show(value)} {why}", field=field)
    labels = value[:-1].split(".") if value.endswith(".") else value.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidName(
            f"{field} {_show(value)} is not a host name: dot-separated labels of 1-63 letters, digits, '-' or '_', "
            "not starting or ending with '-'",
            field=field,
        )
    return value


def check_key_id(value: str, *, field: str = "key_id") -> str:
    """A certificate key id: printable ASCII without spaces, at most 1024, not starting with ``-``.

    sshd writes the key id into its log lines: control characters and spaces
    would let a key id forge or split log entries.
    """
    if not isinstance(value, str) or not value:
        raise InvalidKeyId(f"{field} must be a non-empty string", field=field)
    if len(value) > MAX_KEY_ID_LENGTH:
        raise InvalidKeyId(f"{field} is longer than {MAX_KEY_ID_LENGTH} characters", field=field)
    if not _KEY_ID.fullmatch(value):
        raise InvalidKeyId(
            f"{field} {_show(value)} must be printable ASCII without spaces", field=field
        )
    if value.startswith("-"):
        raise InvalidKeyId(f"{field} {_show(value)} must not start with '-'", field=field)
    return value
