"""The one atomic writer of the client's files (keys, certificates, KRLs, ssh_config, settings)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically, with ``mode``.

    A temporary file beside ``path`` (same file system), written and synced,
    then renamed over it: a reader (sshd reading RevokedKeys, ssh reading a
    certificate) sees the old file or the new one, never half of one. The
    mode is set before the rename, so a private key is never readable by
    others, not even for a moment.
    """
    p = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, raw)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, p)
