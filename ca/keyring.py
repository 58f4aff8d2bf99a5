"""The CA keys a data directory holds, and which one signs.

Layout (all under the data directory)::

    ca/                          mode 0700
      ca-20261129T104500Z-ed25519      private key, OpenSSH format, mode 0600
      ca-20261129T104500Z-ed25519.pub  its public half

Every key in ``ca/`` is trusted (TrustedUserCAKeys lists them all), so a new
key can be rolled out to hosts before it signs anything; the newest key (by
the UTC time in its name) signs. Retiring an old key is removing its files,
after hosts have the new one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .errors import CAKeyError
from .keys import CAKey, CAKeyType, generate_ca_key, keys_for_trust, load_ca_key, parse_public_key, save_ca_key

__all__ = ["Keyring", "init_keyring", "load_keyring", "ca_dir"]

# The type is spelled out: with a catch-all ``[a-z0-9-]+`` the greedy match
# swallowed the ``-<n>`` sequence suffix ("ecdsa-p256-2" read as one type).
_NAME = re.compile(
    r"^ca-(\d{8}T\d{6}Z)-(" + "|".join(re.escape(t.value) for t in CAKeyType) + r")(?:-(\d+))?$"
)


def ca_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "ca"


@dataclass(frozen=True)
class Keyring:
    """Trusted CA keys, oldest first. ``signing_key`` is the newest one."""

    keys: tuple[CAKey, ...]

    @property
    def signing_key(self) -> CAKey:
        return self.keys[-1]

    def trusted_user_ca_keys(self) -> str:
        """The text of a TrustedUserCAKeys file: every trusted key, one a line."""
        return keys_for_trust(self.keys)


def _key_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NAME.match(p.name)]
    # Newest last: by the creation time in the name, then by the sequence
    # number init_keyring gives keys made within one second (a rotation
    # scripted right after init). mtime alone cannot order those: file
    # timestamps are coarse (two writes a few ms apart can share one), and a
    # copy or a backup restore rewrites them. It stays as the last resort.
    def order(p: Path) -> tuple[str, int, int, str]:
        m = _NAME.match(p.name)
        assert m is not None
        return (m.group(1), int(m.group(3) or 1), p.stat().st_mtime_ns, p.name)

    return sorted(found, key=order)


def init_keyring(
    data_dir: str | os.PathLike[str],
    *,
    now: datetime,
    key_type: CAKeyType | str = CAKeyType.ED25519,
    bits: int | None = None,
    passphrase: bytes | None = None,
) -> CAKey:
    """Create a new CA key in ``data_dir``. With keys already there this is a
    rotation: the new key is trusted alongside them and signs from now on."""
    kind = CAKeyType.parse(key_type)
    directory = ca_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    # The sequence number counts keys of every type made in the same second,
    # so the newest key sorts last whatever its type (see _key_files).
    taken = [
        m for p in directory.iterdir() if (m := _NAME.match(p.name.removesuffix(".pub"))) and m.group(1) == stamp
    ]
    n = max((int(m.group(3) or 1) for m in taken), default=0) + 1
    name = f"ca-{stamp}-{kind.value}" if n == 1 else f"ca-{stamp}-{kind.value}-{n}"
    while (directory / name).exists() or (directory / (name + ".pub")).exists():
        n += 1
        name = f"ca-{stamp}-{kind.value}-{n}"
    private = generate_ca_key(kind, bits=bits)
    return save_ca_key(directory / name, private, passphrase=passphrase, comment=f"jit-ssh-{name}")


def load_keyring(
    data_dir: str | os.PathLike[str], *, passphrase: bytes | None = None, private: bool = True
) -> Keyring:
    """Load the trusted CA keys. With ``private`` the newest key's private half
    is loaded too (it alone signs); the others are read from their ``.pub``."""
    directory = ca_dir(data_dir)
    files = [p for p in _key_files(directory) if not p.name.endswith(".pub")]
    if not files:
        raise CAKeyError(
            f"no CA key in {directory}; create one with: jit-ssh ca init", field="data_dir"
        )
    keys: list[CAKey] = []
    for i, path in enumerate(files):
        if private and i == len(files) - 1:
            keys.append(load_ca_key(path, passphrase=passphrase))
            continue
        pub = path.with_name(path.name + ".pub")
        if not pub.exists():
            raise CAKeyError(f"{pub} is missing (the public half of {path.name})", field="data_dir")
        keys.append(CAKey(public=parse_public_key(pub.read_text(), field=str(pub), min_rsa_bits=3072), path=path))
    return Keyring(keys=tuple(keys))


def next_krl_version(data_dir: str | os.PathLike[str], *, now: datetime) -> int:
    """The version for a KRL built now from this data directory (``jit-ssh krl build``).

    The same scheme as the server's (``ca.krl.krl_version_at``): microseconds
    since the epoch, so hosts compare both kinds, and a version after a backup
    restore is again newer than anything built before. It is bumped past the
    last one used here when the clock has stepped back a little (two builds in
    one microsecond, an NTP correction). A last version further ahead than a
    host would accept (``ca.krl.DEFAULT_MAX_CLOCK_SKEW``) came from a wrong
    clock or a bug: following it would only give KRLs every host refuses as
    implausible, so the clock wins. Versions of the old scheme (Unix seconds)
    are far below any version now, so they are simply passed.
    """
    from .krl import DEFAULT_MAX_CLOCK_SKEW, krl_version_at

    path = Path(data_dir) / "krl_version"
    try:
        last = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        last = 0
    current = krl_version_at(now)
    plausible_until = krl_version_at(now + DEFAULT_MAX_CLOCK_SKEW)
    version = max(last + 1, current) if last < plausible_until else current
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{version}\n")
    os.replace(tmp, path)
    return version


__all__.append("next_krl_version")
