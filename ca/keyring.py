"""The CA keys a data directory holds, and which one signs.

Layout (all under the data directory)::

    ca/                          mode 0700
      ca-20261129T104500Z-ed25519      private key, OpenSSH format, mode 0600
      ca-20261129T104500Z-ed25519.pub  its public half
      keyring.json                     which key signs, which are only trusted, which are retired

Rotation is staged, so that hosts never meet a certificate from a key they do
not trust yet:

* ``staged``: trusted and published (TrustedUserCAKeys lists it, KRLs cover
  it), but it signs nothing. :func:`init_keyring` on a data directory that
  already holds keys adds one in this state.
* ``signing``: the one key that signs. Exactly one. A staged key becomes the
  signer only by an explicit :func:`promote`, once hosts have it; the old
  signer then stays trusted (``staged``) for the certificates it issued.
* ``retired``: no longer trusted or published. :func:`retire` refuses the
  signer.

``keyring.json`` is this data directory's copy of that state. The service
keeps the authoritative one in its database (every replica reads it there)
and passes it to :func:`load_keyring` as ``states``; the file serves the
commands that run without a database (``ca show``, ``krl build``, a
``ca sign --no-record`` while the database is down) and is rewritten
whenever the state changes here. A data directory from before staged
rotation has no file: every key is trusted and the newest (by the UTC time
in its name) signs, as it always did.

This module is pure: files, keys and the state transitions, no database.
"""

from __future__ import annotations

import enum
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .errors import CAKeyError
from .keys import (
    CAKey,
    CAKeyType,
    PublicKey,
    generate_ca_key,
    keys_for_trust,
    load_ca_key,
    parse_public_key,
    save_ca_key,
)

__all__ = [
    "Keyring",
    "KeyState",
    "InvalidRotation",
    "init_keyring",
    "load_keyring",
    "ca_dir",
    "key_files",
    "read_states",
    "write_states",
    "legacy_states",
    "local_states",
    "promote",
    "retire",
    "load_private_key_for",
]

# The type is spelled out: with a catch-all ``[a-z0-9-]+`` the greedy match
# swallowed the ``-<n>`` sequence suffix ("ecdsa-p256-2" read as one type).
_NAME = re.compile(
    r"^ca-(\d{8}T\d{6}Z)-(" + "|".join(re.escape(t.value) for t in CAKeyType) + r")(?:-(\d+))?$"
)
STATE_FILE = "keyring.json"


class KeyState(enum.StrEnum):
    STAGED = "staged"
    SIGNING = "signing"
    RETIRED = "retired"

    def __str__(self) -> str:
        return self.value


class InvalidRotation(CAKeyError):
    """A rotation step that would break trust (promote a retired key, retire the signer, ...)."""

    code = "invalid_rotation"
    http_status = 409


def ca_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "ca"


@dataclass(frozen=True)
class Keyring:
    """Trusted CA keys (staged and signing), oldest first, and the one that signs."""

    keys: tuple[CAKey, ...]
    signing: CAKey | None = None

    @property
    def signing_key(self) -> CAKey:
        return self.signing if self.signing is not None else self.keys[-1]

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


def key_files(data_dir: str | os.PathLike[str]) -> list[tuple[Path, PublicKey]]:
    """Every CA key pair in the data directory (whatever its state), oldest
    first: the private key's path and its public half (from the ``.pub``)."""
    out = []
    for path in _key_files(ca_dir(data_dir)):
        if path.name.endswith(".pub"):
            continue
        pub = path.with_name(path.name + ".pub")
        if not pub.exists():
            raise CAKeyError(f"{pub} is missing (the public half of {path.name})", field="data_dir")
        out.append((path, parse_public_key(pub.read_text(), field=str(pub), min_rsa_bits=3072)))
    return out


def read_states(data_dir: str | os.PathLike[str]) -> dict[str, KeyState] | None:
    """``keyring.json``: fingerprint -> state, or ``None`` when there is none (a legacy directory)."""
    path = ca_dir(data_dir) / STATE_FILE
    try:
        raw = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as e:
        raise CAKeyError(f"{path}: not valid JSON ({e})", field="data_dir") from None
    keys = raw.get("keys") if isinstance(raw, dict) else None
    if not isinstance(keys, dict):
        raise CAKeyError(f'{path}: expected {{"keys": {{fingerprint: state}}}}', field="data_dir")
    try:
        states = {str(fp): KeyState(v) for fp, v in keys.items()}
    except ValueError:
        raise CAKeyError(
            f"{path}: a state must be one of staged, signing, retired", field="data_dir"
        ) from None
    _check_one_signer(states, str(path))
    return states


def write_states(data_dir: str | os.PathLike[str], states: Mapping[str, KeyState]) -> None:
    """Replace ``keyring.json`` atomically."""
    _check_one_signer(states, STATE_FILE)
    directory = ca_dir(data_dir)
    path = directory / STATE_FILE
    tmp = directory / f".{STATE_FILE}.tmp-{os.getpid()}"
    data = (
        json.dumps({"keys": {fp: str(KeyState(st)) for fp, st in sorted(states.items())}}, indent=1)
        + "\n"
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _check_one_signer(states: Mapping[str, KeyState], where: str) -> None:
    signers = [fp for fp, st in states.items() if st is KeyState.SIGNING]
    if states and len(signers) != 1:
        raise CAKeyError(
            f"{where}: exactly one key must be signing, not {len(signers)}", field="data_dir"
        )


def legacy_states(files: list[tuple[Path, PublicKey]]) -> dict[str, KeyState]:
    """The rule before staged rotation: every key trusted, the newest signs."""
    states = {pub.fingerprint: KeyState.STAGED for _, pub in files}
    if files:
        states[files[-1][1].fingerprint] = KeyState.SIGNING
    return states


def local_states(data_dir: str | os.PathLike[str]) -> dict[str, KeyState]:
    """This directory's idea of the state: ``keyring.json``, else :func:`legacy_states`.

    A key file that ``keyring.json`` does not name is not trusted (it was
    copied in by hand, or made elsewhere): only :func:`init_keyring` adds keys.
    """
    states = read_states(data_dir)
    return legacy_states(key_files(data_dir)) if states is None else states


def init_keyring(
    data_dir: str | os.PathLike[str],
    *,
    now: datetime,
    key_type: CAKeyType | str = CAKeyType.ED25519,
    bits: int | None = None,
    passphrase: bytes | None = None,
    record: bool = True,
) -> CAKey:
    """Create a new CA key in ``data_dir``.

    The first key signs. With keys already there the new one is *staged*:
    trusted and published, but the signer stays the same until
    :func:`promote` (hosts must trust a key before it signs). ``record``:
    write the new state to ``keyring.json`` (the service passes ``False`` and
    records it in its database first).
    """
    kind = CAKeyType.parse(key_type)
    directory = ca_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    before = local_states(data_dir)
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    # The sequence number counts keys of every type made in the same second,
    # so the newest key sorts last whatever its type (see _key_files).
    taken = [
        m
        for p in directory.iterdir()
        if (m := _NAME.match(p.name.removesuffix(".pub"))) and m.group(1) == stamp
    ]
    n = max((int(m.group(3) or 1) for m in taken), default=0) + 1
    name = f"ca-{stamp}-{kind.value}" if n == 1 else f"ca-{stamp}-{kind.value}-{n}"
    while (directory / name).exists() or (directory / (name + ".pub")).exists():
        n += 1
        name = f"ca-{stamp}-{kind.value}-{n}"
    private = generate_ca_key(kind, bits=bits)
    key = save_ca_key(directory / name, private, passphrase=passphrase, comment=f"jit-ssh-{name}")
    if record:
        signer = any(st is KeyState.SIGNING for st in before.values())
        write_states(
            data_dir, {**before, key.fingerprint: KeyState.STAGED if signer else KeyState.SIGNING}
        )
    return key


def promote(states: Mapping[str, KeyState], fingerprint: str) -> dict[str, KeyState]:
    """The state after ``fingerprint`` (a staged key) becomes the signer; the
    old signer stays trusted (staged) for the certificates it issued."""
    current = states.get(fingerprint)
    if current is None:
        raise InvalidRotation(f"no CA key {fingerprint} (see jit-ssh ca list)", field="fingerprint")
    if current is KeyState.SIGNING:
        raise InvalidRotation(f"{fingerprint} already signs", field="fingerprint")
    if current is KeyState.RETIRED:
        raise InvalidRotation(
            f"{fingerprint} is retired: hosts no longer trust it; add a new key",
            field="fingerprint",
        )
    out: dict[str, KeyState] = {
        fp: (KeyState.STAGED if st is KeyState.SIGNING else st) for fp, st in states.items()
    }
    out[fingerprint] = KeyState.SIGNING
    return out


def retire(states: Mapping[str, KeyState], fingerprint: str) -> dict[str, KeyState]:
    """The state after ``fingerprint`` is no longer trusted nor published. Never the signer."""
    current = states.get(fingerprint)
    if current is None:
        raise InvalidRotation(f"no CA key {fingerprint} (see jit-ssh ca list)", field="fingerprint")
    if current is KeyState.SIGNING:
        raise InvalidRotation(
            f"{fingerprint} is the signing key: promote another key first (jit-ssh ca promote)",
            field="fingerprint",
        )
    if current is KeyState.RETIRED:
        raise InvalidRotation(f"{fingerprint} is already retired", field="fingerprint")
    return {**states, fingerprint: KeyState.RETIRED}


def load_private_key_for(
    data_dir: str | os.PathLike[str], fingerprint: str, *, passphrase: bytes | None = None
) -> CAKey:
    """The private key with ``fingerprint`` from the data directory."""
    for path, pub in key_files(data_dir):
        if pub.fingerprint == fingerprint:
            key = load_ca_key(path, passphrase=passphrase)
            if key.public != pub:
                raise CAKeyError(
                    f"{path} and {path.name}.pub are not one key pair", field="data_dir"
                )
            return key
    raise CAKeyError(
        f"the private key of CA key {fingerprint} is not in {ca_dir(data_dir)}", field="data_dir"
    )


def load_keyring(
    data_dir: str | os.PathLike[str],
    *,
    passphrase: bytes | None = None,
    private: bool = True,
    states: Mapping[str, KeyState] | None = None,
    public_keys: Mapping[str, PublicKey] | None = None,
) -> Keyring:
    """Load the trusted CA keys, oldest first, and the signer.

    ``states`` (fingerprint -> state) says which key signs and which are
    trusted; by default this directory's own (:func:`local_states`). With
    ``private`` the signer's private half is loaded too (it alone signs).
    ``public_keys``: public halves of trusted keys this directory may lack
    (the service's database has them); a trusted key found in neither is an
    error only when it is the signer.
    """
    directory = ca_dir(data_dir)
    files = key_files(data_dir)
    if states is None:
        states = local_states(data_dir)
    if not files or not states:
        raise CAKeyError(
            f"no CA key in {directory}; create one with: jit-ssh ca init", field="data_dir"
        )
    by_fp = {pub.fingerprint: (path, pub) for path, pub in files}
    extra = dict(public_keys or {})
    signer_fp = next((fp for fp, st in states.items() if st is KeyState.SIGNING), None)
    if signer_fp is None:
        raise CAKeyError(f"{directory}: no key is marked signing", field="data_dir")
    keys: list[CAKey] = []
    signing: CAKey | None = None
    # File order (oldest first) for the keys this directory holds, then any others.
    order = [fp for fp in by_fp if fp in states] + sorted(fp for fp in states if fp not in by_fp)
    for fp in order:
        st = states[fp]
        if st is KeyState.RETIRED:
            continue
        if fp in by_fp:
            path, pub = by_fp[fp]
            if fp == signer_fp and private:
                key = load_ca_key(path, passphrase=passphrase)
            else:
                key = CAKey(public=pub, path=path)
        elif fp == signer_fp:
            raise CAKeyError(f"the signing CA key {fp} is not in {directory}", field="data_dir")
        elif fp in extra:
            key = CAKey(public=extra[fp])
        else:
            continue
        keys.append(key)
        if fp == signer_fp:
            signing = key
    return Keyring(keys=tuple(keys), signing=signing)


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
__all__.append("STATE_FILE")
