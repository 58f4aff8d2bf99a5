"""Where jit-ssh keeps its files, for the server and the client alike: pure functions of the environment.

Each takes the environment as an argument (``os.environ`` at the edge, a dict
in tests) and reads nothing else, not even the home directory from the
process: ``HOME`` comes from ``env`` too (only when it is unset does the
account's home directory count).

* :func:`data_dir`: ``$JIT_SSH_DATA_DIR``, else ``$XDG_DATA_HOME/jit-ssh``,
  else ``~/.local/share/jit-ssh``: the CA keys, the server's SQLite database
  and audit key;
* :func:`config_dir`: ``$XDG_CONFIG_HOME/jit-ssh``, else ``~/.config/jit-ssh``:
  the client's ``config.toml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["data_dir", "config_dir", "expand_home"]

_APP = "jit-ssh"


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME")
    # Without HOME (a bare service environment), the account's home from the password database.
    return Path(home) if home else Path.home()


def expand_home(value: str, env: Mapping[str, str]) -> Path:
    """``value`` as a path: a leading ``~`` (alone or before ``/``) is ``$HOME``, and a leading
    ``~user`` that account's home directory, as the shell would expand them."""
    if value == "~" or value.startswith("~/"):
        return _home(env) / value[2:]
    if value.startswith("~"):
        # ~user: only the password database knows it (Path.expanduser raises if it does not).
        try:
            return Path(value).expanduser()
        except RuntimeError:
            return Path(value)
    return Path(value)


def _xdg(env: Mapping[str, str], variable: str, *fallback: str) -> Path:
    base = env.get(variable)
    expanded = expand_home(base, env) if base else None
    # The XDG base directory spec: a relative path in these variables is invalid and ignored,
    # so a stray value never puts keys and a database under the working directory.
    if expanded is None or not expanded.is_absolute():
        expanded = _home(env).joinpath(*fallback)
    return expanded / _APP


def data_dir(env: Mapping[str, str]) -> Path:
    """The data directory: ``$JIT_SSH_DATA_DIR``, else ``$XDG_DATA_HOME/jit-ssh``, else
    ``~/.local/share/jit-ssh``."""
    explicit = env.get("JIT_SSH_DATA_DIR")
    if explicit:
        return expand_home(explicit, env)
    return _xdg(env, "XDG_DATA_HOME", ".local", "share")


def config_dir(env: Mapping[str, str]) -> Path:
    """The client's configuration directory: ``$XDG_CONFIG_HOME/jit-ssh``, else ``~/.config/jit-ssh``."""
    return _xdg(env, "XDG_CONFIG_HOME", ".config")
