"""Where jit-ssh keeps its files on this machine."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["resolve_data_dir"]


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--data-dir``, else ``$JIT_SSH_DATA_DIR``, else ``$XDG_DATA_HOME/jit-ssh``
    (``~/.local/share/jit-ssh``)."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("JIT_SSH_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "jit-ssh"
