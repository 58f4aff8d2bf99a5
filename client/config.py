"""Where jit-ssh keeps its files on this machine (:mod:`ca.paths`, shared with the server)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ca import paths

__all__ = ["resolve_data_dir"]


def resolve_data_dir(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] = os.environ
) -> Path:
    """``--data-dir``, else :func:`ca.paths.data_dir` (``$JIT_SSH_DATA_DIR``, else
    ``$XDG_DATA_HOME/jit-ssh``, else ``~/.local/share/jit-ssh``)."""
    if explicit:
        return paths.expand_home(os.fspath(explicit), env)
    return paths.data_dir(env)
