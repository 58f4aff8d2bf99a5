"""The engineer's client settings.

``~/.config/jit-ssh/config.toml`` (or ``$XDG_CONFIG_HOME/jit-ssh/config.toml``)::

    server = "https://jit.example.com"
    user = "alice"
    identity = "~/.ssh/id_ed25519"     # the enrolled key that signs API calls
    use_agent = true                   # sign through ssh-agent when it holds that key
    default_duration = "30m"
    ca_bundle = "/etc/ssl/certs/company-ca.pem"   # optional

overridden by ``JIT_SSH_SERVER``, ``JIT_SSH_USER``, ``JIT_SSH_IDENTITY``, then by flags.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ca import paths
from ca.errors import JitSshError

__all__ = [
    "ClientSettings",
    "InvalidSettings",
    "load_settings",
    "config_path",
    "keys_dir",
    "read_file_settings",
    "update_settings",
]


class InvalidSettings(JitSshError):
    code = "invalid_settings"


def config_path(env: Mapping[str, str] = os.environ) -> Path:
    return paths.config_dir(env) / "config.toml"


def keys_dir() -> Path:
    """Where per-access keys and certificates live (``~/.ssh/jit-ssh``)."""
    return Path.home() / ".ssh" / "jit-ssh"


@dataclass(frozen=True)
class ClientSettings:
    server: str | None = None
    user: str | None = None
    identity: str | None = None
    use_agent: bool = True
    default_duration: str | None = None
    ca_bundle: str | None = None
    timeout: float = 15.0
    source: str = "defaults"

    def need(self, name: str) -> str:
        value = getattr(self, name)
        if not value:
            flag = {"server": "--server or $JIT_SSH_SERVER", "user": "--user or $JIT_SSH_USER"}.get(
                name, name
            )
            raise InvalidSettings(
                f"no {name} configured: run `jit-ssh config init`, or give {flag}", field=name
            )
        return str(value)


_KEYS = {f.name for f in fields(ClientSettings)} - {"source"}


def read_file_settings(path: Path) -> dict[str, Any]:
    """The settings the config file itself holds (none when it does not exist), checked as
    :func:`load_settings` checks them; the environment and flags left out."""
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise InvalidSettings(f"{path}: {e}", field="config") from None
    unknown = set(data) - _KEYS
    if unknown:
        raise InvalidSettings(
            f"{path}: unknown setting(s) {', '.join(sorted(unknown))}", field=sorted(unknown)[0]
        )
    for k, v in data.items():
        expected = bool if k == "use_agent" else float if k == "timeout" else str
        if expected is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
            data[k] = v
        if not isinstance(v, expected):
            raise InvalidSettings(f"{path}: {k} must be a {expected.__name__}", field=k)
    return data


def update_settings(values: Mapping[str, str], path: Path | None = None) -> Path:
    """Set string settings in the config file (made if missing), keeping every other line,
    comments included: a ``key = ...`` line is replaced in place, a new key is appended.

    The result is parsed again before it is written: if it does not hold exactly the old
    settings with ``values`` applied (a multi-line value, say), nothing is written and
    :class:`InvalidSettings` says what to set by hand.
    """
    p = path or config_path()
    for k in values:
        if k not in _KEYS:
            raise InvalidSettings(f"unknown setting {k}", field=k)
    before = read_file_settings(p)
    lines = p.read_text("utf-8").splitlines(keepends=True) if p.exists() else []
    for k, v in values.items():
        # A JSON string literal is a valid TOML basic string.
        line = f"{k} = {json.dumps(v)}\n"
        at = next((i for i, t in enumerate(lines) if re.match(rf"\s*{k}\s*=", t)), None)
        if at is None:
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            lines.append(line)
        else:
            lines[at] = line
    text = "".join(lines)
    by_hand = ", ".join(f"{k} = {json.dumps(v)}" for k, v in values.items())
    try:
        after = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        after = None
    if after != {**before, **values}:
        raise InvalidSettings(
            f"{p}: cannot update it safely; set by hand: {by_hand}", field="config"
        )
    mode = stat.S_IMODE(p.stat().st_mode) if p.exists() else 0o644
    p.parent.mkdir(parents=True, exist_ok=True)
    from client.files import write_atomic

    write_atomic(p, text, mode=mode)
    return p


def load_settings(
    path: Path | None = None, env: Mapping[str, str] = os.environ, **flags: Any
) -> ClientSettings:
    p = path or config_path(env)
    values: dict[str, Any] = read_file_settings(p)
    source = str(p) if p.exists() else "defaults"
    for var, key in (
        ("JIT_SSH_SERVER", "server"),
        ("JIT_SSH_USER", "user"),
        ("JIT_SSH_IDENTITY", "identity"),
    ):
        if env.get(var):
            values[key] = env[var]
    for k, v in flags.items():
        if v is not None:
            values[k] = v
    settings = ClientSettings(source=source, **values)
    if settings.identity:
        settings = replace(settings, identity=str(Path(settings.identity).expanduser()))
    return settings
