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

import os
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


def load_settings(
    path: Path | None = None, env: Mapping[str, str] = os.environ, **flags: Any
) -> ClientSettings:
    p = path or config_path(env)
    values: dict[str, Any] = {}
    source = "defaults"
    if p.exists():
        try:
            data = tomllib.loads(p.read_text("utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise InvalidSettings(f"{p}: {e}", field="config") from None
        unknown = set(data) - _KEYS
        if unknown:
            raise InvalidSettings(
                f"{p}: unknown setting(s) {', '.join(sorted(unknown))}", field=sorted(unknown)[0]
            )
        for k, v in data.items():
            expected = bool if k == "use_agent" else float if k == "timeout" else str
            if expected is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, expected):
                raise InvalidSettings(f"{p}: {k} must be a {expected.__name__}", field=k)
            values[k] = v
        source = str(p)
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
