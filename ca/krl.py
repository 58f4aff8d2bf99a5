"""OpenSSH key revocation lists (KRLs, ``PROTOCOL.krl``), written and read by hand.

No package on PyPI writes KRLs, and the format is small::

    KRL      = "SSHKRL\\n\\0" u32:format_version(=1) u64:krl_version
               u64:generated_date u64:flags string:reserved string:comment
               section*
    section  = u8:type string:body
      1  certificates:  string:ca_key (empty = any CA) string:reserved subsection*
           subsection = u8:type string:body
           0x20 serial list    u64*
           0x21 serial range   u64:lo u64:hi
           0x22 serial bitmap  u64:lo mpint:bits (bit i revokes lo + i)
           0x23 key ids        string*
      2  explicit keys:        string:key_blob*
      3  SHA1 fingerprints:    string(20 bytes)*
      5  SHA256 fingerprints:  string(32 bytes)*

What we write (:func:`build_krl`): serial list and range subsections only
(never bitmaps, see below), key-id subsections, explicit keys and SHA256
fingerprints. Everything is sorted and de-duplicated, so the same input always
gives the same bytes.

What we read (:func:`parse_krl`): everything OpenSSH 9.2's ``ssh-keygen -k``
writes, bitmaps included, and we refuse everything OpenSSH 9.2 itself would
refuse, because a KRL that sshd cannot parse makes it refuse *every* key. We
refuse a little more than OpenSSH does, on purpose:

- signature sections (type 4): jit-ssh does not sign KRLs (the host fetches
  them over an authenticated channel), and a signature we do not verify would
  only give false comfort;
- extension sections (255, and 0x39 inside a certificate section): OpenSSH 9.2
  does not know them and refuses the whole file, critical or not;
- key blobs in the explicit-key section that are not well-formed public keys
  (OpenSSH stores those without parsing them, so they are harmless there, but
  they can only come from a bug);
- key ids and comments that are not UTF-8 (we represent them as ``str``).

Flags and the two "reserved" strings are read and ignored, as OpenSSH does.

Facts about OpenSSH 9.2's parser (``krl.c``) that shape this module:

- Serial subsections may come in any order, overlap and repeat: OpenSSH
  inserts each serial or range into a tree that merges neighbours. We still
  write them in ascending order.
- Serial 0, a range with ``lo == 0`` or ``lo > hi`` make ``ssh_krl_from_blob``
  fail with "invalid argument": the whole KRL is refused.
- A bitmap is read as an SSH mpint, which sshbuf caps at 16,384 bits
  (``SSHBUF_MAX_BIGNUM``): ``ssh-keygen -k`` happily writes longer bitmaps that
  it and sshd then cannot read. Hence: never write bitmaps; refuse long ones.
- Several certificate sections for the same CA key are merged.
- sshd re-reads and re-parses the whole file on every public-key
  authentication attempt, so a new KRL takes effect at once, and its size is
  paid for on every login attempt.
- sshbuf refuses files over 128 MiB (``SSHBUF_SIZE_MAX``); see
  :data:`MAX_KRL_SIZE`.
- Nothing marks the end of a KRL: one truncated at a section boundary is a
  valid KRL that revokes less. Check length or digest in transport.

Versions (:func:`krl_version_at`). OpenSSH ignores ``krl_version``; jit-ssh's
hosts use it to refuse a KRL older than the one installed. A version is a
moment, in microseconds since the Unix epoch: the server's is the newest
``revoked_at`` over every revocation row it holds (expired ones included, so
dropping expired serials from the list never lowers it), read from the
database, so every replica serves the same version for the same rows. Why a
time and not a counter:

- a counter (the highest revocation id, as before) is frozen by one huge
  value: nothing can ever exceed it. A time has a plausible range: a host
  refuses a version that lies beyond its own clock plus the allowed skew,
  so no KRL can push it into the far future;
- after the database is restored from an older backup, the version drops
  (the host reports that loudly and keeps its KRL), and the next revocation,
  stamped with the current time, is again newer than anything installed
  before the restore, with no counter to repair;
- revocation-id versions (small numbers) and the Unix-seconds versions
  ``jit-ssh krl build`` wrote before (read as microseconds, about half an
  hour after the epoch) are far below any version written now, so hosts move
  to the new scheme on their own, with no flag day.

What a host installs (:func:`accept_krl`): only what jit-ssh itself emits.
Certificate sections that name a CA key, revoking serials (lists and ranges)
or key ids. Everything else could hurt a host and is refused: explicit keys
and SHA1/SHA256 fingerprints revoke keys jit-ssh never issued (a non-jit key,
or the CA key itself, locking everyone out), a section without a CA key
revokes certificates from *any* CA, and a bitmap is what makes OpenSSH's own
reader fail. A section for a CA key the host does not trust is harmless
(sshd refuses that CA's certificates anyway) and is allowed, so the KRL keeps
reaching hosts while a new CA key is being rolled out; a KRL none of whose
sections is for a trusted key is refused (wrong server, or a host whose
trusted keys are out of date).
"""

from __future__ import annotations

import base64
import hashlib
import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from . import wire
from .errors import (
    CertificateAsKey,
    InvalidKeyError,
    InvalidKeyId,
    InvalidKRL,
    InvalidSerial,
    UnacceptableKRL,
    UnsupportedKeyType,
)

__all__ = [
    "MAX_KRL_SIZE",
    "DEFAULT_MAX_CLOCK_SKEW",
    "KRL",
    "KRLCertSection",
    "build_krl",
    "parse_krl",
    "accept_krl",
    "restrict_krl",
    "MAX_HOST_SERIAL_RUN",
    "empty_krl",
    "krl_version_at",
    "krl_version_time",
    "krl_version_plausible",
]

#: OpenSSH loads a KRL into one sshbuf, and sshbuf refuses to grow past
#: ``SSHBUF_SIZE_MAX`` (128 MiB): a bigger file is unreadable to sshd.
MAX_KRL_SIZE = 0x8000000

#: How far ahead of a host's clock a KRL version may lie before the host calls
#: it implausible (NTP-synced clocks differ by far less).
DEFAULT_MAX_CLOCK_SKEW = timedelta(minutes=5)
#: The widest run of consecutive serials a host accepts in one KRL section
#: (:func:`accept_krl`). Serials are random 64-bit numbers, so two revoked
#: certificates almost never have neighbouring serials; an admin's
#: ``jit-ssh krl build`` range may be wider, but a KRL sent to hosts that
#: revokes (1, 2**64-1) would lock every jit-ssh user out.
MAX_HOST_SERIAL_RUN = 65536

_MAGIC = b"SSHKRL\n\0"
_FORMAT_VERSION = 1
_U64_MAX = 2**64 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_SECTION_CERTIFICATES = 1
_SECTION_EXPLICIT_KEY = 2
_SECTION_FINGERPRINT_SHA1 = 3
_SECTION_SIGNATURE = 4
_SECTION_FINGERPRINT_SHA256 = 5
_SECTION_EXTENSION = 255

_CERT_SERIAL_LIST = 0x20
_CERT_SERIAL_RANGE = 0x21
_CERT_SERIAL_BITMAP = 0x22
_CERT_KEY_ID = 0x23
_CERT_EXTENSION = 0x39

# sshbuf_get_bignum2_bytes_direct() refuses mpints longer than
# SSHBUF_MAX_BIGNUM (16384 bits) plus one leading zero byte for the sign.
_MAX_BITMAP_BITS = 16384

# Byte costs used to choose between a serial list and a range subsection:
# a range subsection is type(1) + length(4) + lo(8) + hi(8); starting a new
# list subsection costs type(1) + length(4); each listed serial costs 8.
_RANGE_COST = 21
_LIST_START_COST = 5
_LIST_ITEM_COST = 8

_SECTION_NAMES = {
    _SECTION_CERTIFICATES: "certificates",
    _SECTION_EXPLICIT_KEY: "explicit keys",
    _SECTION_FINGERPRINT_SHA1: "SHA1 fingerprints",
    _SECTION_SIGNATURE: "signature",
    _SECTION_FINGERPRINT_SHA256: "SHA256 fingerprints",
    _SECTION_EXTENSION: "extension",
}

_SUBSECTION_NAMES = {
    _CERT_SERIAL_LIST: "serial list",
    _CERT_SERIAL_RANGE: "serial range",
    _CERT_SERIAL_BITMAP: "serial bitmap",
    _CERT_KEY_ID: "key id",
    _CERT_EXTENSION: "extension",
}

# Public key types OpenSSH 9.2 can parse, with the fields that follow the
# type name in the wire blob.
_KEY_LAYOUTS: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ed25519",),
    "sk-ssh-ed25519@openssh.com": ("ed25519", "application"),
    "ssh-rsa": ("mpint", "mpint"),
    "ssh-dss": ("mpint", "mpint", "mpint", "mpint"),
    "ecdsa-sha2-nistp256": ("curve:nistp256", "point"),
    "ecdsa-sha2-nistp384": ("curve:nistp384", "point"),
    "ecdsa-sha2-nistp521": ("curve:nistp521", "point"),
    "sk-ecdsa-sha2-nistp256@openssh.com": ("curve:nistp256", "point", "application"),
}
# Types cryptography can load, so it can check the key material itself
# (an EC point on its curve, a sane RSA key). DSA is left out on purpose:
# cryptography warns that SSH DSA support is going away.
_CRYPTOGRAPHY_CHECKS = frozenset(
    {"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"}
)
# sshkey_from_blob() refuses RSA moduli below SSH_RSA_MINIMUM_MODULUS_SIZE.
_MIN_RSA_BITS = 1024


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class KRLCertSection:
    """Certificates revoked for one CA key.

    ``ca_key`` is the CA's public key in SSH wire format; ``b""`` means any CA
    (a "wildcard" section). ``serial_ranges`` are inclusive ``(lo, hi)`` pairs,
    sorted, disjoint and never adjacent (``parse_krl`` merges them);
    ``key_ids`` are sorted and unique.
    """

    ca_key: bytes
    serial_ranges: tuple[tuple[int, int], ...] = ()
    key_ids: tuple[str, ...] = ()

    @cached_property
    def _range_starts(self) -> list[int]:
        return [lo for lo, _ in self.serial_ranges]

    @cached_property
    def _key_id_set(self) -> frozenset[str]:
        return frozenset(self.key_ids)

    def __repr__(self) -> str:
        # The default repr of 100,000 ranges would flood any log it reaches.
        ca = _fingerprint(self.ca_key) if self.ca_key else "any CA"
        return (
            f"KRLCertSection({ca}, {len(self.serial_ranges)} serial range(s), "
            f"{len(self.key_ids)} key id(s))"
        )

    @property
    def serial_count(self) -> int:
        """How many serials the ranges cover."""
        return sum(hi - lo + 1 for lo, hi in self.serial_ranges)

    def revokes_serial(self, serial: int) -> bool:
        """Whether ``serial`` falls in one of the ranges (serial 0 never does)."""
        i = bisect_right(self._range_starts, serial) - 1
        return i >= 0 and serial <= self.serial_ranges[i][1]

    def revokes(self, serial: int, key_id: str) -> bool:
        """Whether a certificate from this section's CA is revoked here.

        Mirrors OpenSSH's ``is_cert_revoked()``: the key id first, then the
        serial, where serial 0 (OpenSSH's "no serial") is never revoked.
        """
        if key_id in self._key_id_set:
            return True
        return serial != 0 and self.revokes_serial(serial)


@dataclass(frozen=True, repr=False)
class KRL:
    """A parsed KRL (see :func:`parse_krl`).

    ``revoked_keys`` are public key wire blobs; ``revoked_sha256`` and
    ``revoked_sha1`` are raw digests of such blobs. ``revoked_sha1`` is only
    ever filled from KRLs other tools wrote (``ssh-keygen -k`` with ``sha1:``
    lines); :func:`build_krl` never writes SHA1.
    """

    version: int
    generated_at: datetime
    comment: str
    cert_sections: tuple[KRLCertSection, ...] = ()
    revoked_keys: tuple[bytes, ...] = ()
    revoked_sha256: tuple[bytes, ...] = ()
    revoked_sha1: tuple[bytes, ...] = ()

    def __repr__(self) -> str:
        return f"<{self.summary()}>"

    @cached_property
    def _revoked_key_set(self) -> frozenset[bytes]:
        return frozenset(self.revoked_keys)

    @cached_property
    def _sha256_set(self) -> frozenset[bytes]:
        return frozenset(self.revoked_sha256)

    @cached_property
    def _sha1_set(self) -> frozenset[bytes]:
        return frozenset(self.revoked_sha1)

    def _key_revoked(self, blob: bytes) -> bool:
        if blob in self._revoked_key_set:
            return True
        if self.revoked_sha256 and hashlib.sha256(blob).digest() in self._sha256_set:
            return True
        return bool(self.revoked_sha1) and hashlib.sha1(blob).digest() in self._sha1_set

    def is_revoked(
        self,
        serial: int,
        key_id: str,
        ca_key_blob: bytes,
        public_key_blob: bytes | None = None,
    ) -> bool:
        """Whether sshd would refuse a certificate with these details.

        Mirrors OpenSSH's ``ssh_krl_check_key()``: the certificate's public key
        (``public_key_blob``, the plain key, if given) and the CA key itself may
        be revoked as keys; then the certificate sections for ``ca_key_blob``
        and the any-CA sections are checked by key id and serial.
        """
        if isinstance(serial, bool) or not isinstance(serial, int) or not 0 <= serial <= _U64_MAX:
            raise InvalidSerial(
                f"serial must be an integer in 0..2**64-1, got {serial!r}", field="serial"
            )
        if public_key_blob is not None and self._key_revoked(public_key_blob):
            return True
        if self._key_revoked(ca_key_blob):
            return True
        for section in self.cert_sections:
            if section.ca_key in (ca_key_blob, b"") and section.revokes(serial, key_id):
                return True
        return False

    def summary(self) -> str:
        """One line: version, date, and how much is revoked."""
        serials = sum(s.serial_count for s in self.cert_sections)
        ranges = sum(len(s.serial_ranges) for s in self.cert_sections)
        key_ids = sum(len(s.key_ids) for s in self.cert_sections)
        hashes = len(self.revoked_sha256) + len(self.revoked_sha1)
        return (
            f"KRL version {self.version}, generated {_iso(self.generated_at)}: "
            f"{len(self.cert_sections)} CA section(s), {serials} serial(s) in {ranges} range(s), "
            f"{key_ids} key id(s), {len(self.revoked_keys)} key(s), {hashes} fingerprint(s)"
        )

    def to_text(self) -> str:
        """A readable dump, for ``jit-ssh krl inspect``.

        Lines use ``ssh-keygen -k``'s specification syntax (``serial:``,
        ``id:``, ``key:``, ``hash:``) under a ``# CA key`` heading, so an admin
        can read it the way they read ``ssh-keygen -Q -l``. Control characters
        in comments and key ids are escaped, so one entry stays on one line.
        """
        lines = [
            f"# KRL version {self.version}",
            f"# Generated at {_iso(self.generated_at)}",
        ]
        if self.comment:
            lines.append(f"# Comment: {_escape(self.comment)}")
        for section in self.cert_sections:
            lines.append("")
            if section.ca_key:
                lines.append(f"# CA key {_key_type(section.ca_key)} {_fingerprint(section.ca_key)}")
            else:
                lines.append("# Any CA (wildcard)")
            for lo, hi in section.serial_ranges:
                lines.append(f"serial: {lo}" if lo == hi else f"serial: {lo}-{hi}")
            lines.extend(f"id: {_escape(key_id)}" for key_id in section.key_ids)
        if self.revoked_keys or self.revoked_sha256 or self.revoked_sha1:
            lines.append("")
        for blob in self.revoked_keys:
            lines.append(f"key: {_key_type(blob)} {base64.b64encode(blob).decode('ascii')}")
        for digest in self.revoked_sha256:
            lines.append(f"hash: SHA256:{base64.b64encode(digest).decode('ascii').rstrip('=')}")
        # ssh-keygen has no specification keyword for a raw SHA1 digest.
        lines.extend(f"# sha1: {digest.hex()}" for digest in self.revoked_sha1)
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def build_krl(
    *,
    ca_keys: Sequence[bytes],
    serials: Iterable[int | tuple[int, int]] = (),
    key_ids: Iterable[str] = (),
    public_keys: Iterable[bytes] = (),
    sha256_fingerprints: Iterable[bytes] = (),
    version: int,
    now: datetime,
    comment: str = "",
) -> bytes:
    """Build a KRL that OpenSSH (7.9 and later) reads.

    ``serials`` (single serials or inclusive ``(lo, hi)`` ranges) and
    ``key_ids`` are revoked for every CA key in ``ca_keys`` (wire blobs;
    ``b""`` means any CA): a KRL for several trusted CA keys, during a key
    rotation, repeats the certificate section per key. ``public_keys`` (plain
    public key blobs) and ``sha256_fingerprints`` (raw 32-byte digests of such
    blobs) are revoked whoever signed them. ``version`` must rise with every
    KRL the caller builds; ``generated_date`` is ``now``.

    Raises :class:`InvalidSerial`, :class:`InvalidKeyId`, :class:`InvalidKeyError`
    (and its subclasses) or :class:`InvalidKRL`, naming the argument at fault.
    """
    header = _header(version, now, comment)
    cas = _normalize_ca_keys(ca_keys)
    runs = _normalize_serials(serials)
    ids = _normalize_key_ids(key_ids)
    keys = sorted(
        {_check_public_key(blob, "public_keys") for blob in _blobs(public_keys, "public_keys")}
    )
    digests = sorted(
        set(_check_sha256(d) for d in _blobs(sha256_fingerprints, "sha256_fingerprints"))
    )
    if (runs or ids) and not cas:
        raise InvalidKRL(
            "ca_keys is empty, but certificates can only be revoked for a CA key "
            "(pass b'' to revoke them whichever CA signed them)",
            field="ca_keys",
        )

    out = [header]
    if runs or ids:
        subsections = _serial_subsections(runs)
        if ids:
            subsections.append(_section(_CERT_KEY_ID, b"".join(wire.string(i) for i in ids)))
        revocations = b"".join(subsections)
        for ca_key in cas:
            out.append(
                _section(
                    _SECTION_CERTIFICATES, wire.string(ca_key) + wire.string(b"") + revocations
                )
            )
    if keys:
        out.append(_section(_SECTION_EXPLICIT_KEY, b"".join(wire.string(k) for k in keys)))
    if digests:
        out.append(_section(_SECTION_FINGERPRINT_SHA256, b"".join(wire.string(d) for d in digests)))
    data = b"".join(out)
    if len(data) > MAX_KRL_SIZE:
        raise InvalidKRL(
            f"the KRL would be {len(data)} bytes; OpenSSH cannot load a KRL over "
            f"{MAX_KRL_SIZE} bytes (128 MiB), revoke fewer or expired certificates",
            field="serials",
        )
    return data


def empty_krl(*, version: int, now: datetime) -> bytes:
    """A valid KRL that revokes nothing.

    sshd refuses every key when ``RevokedKeys`` names a missing file, so a host
    installs this before it first points sshd at the KRL.
    """
    return build_krl(ca_keys=(), version=version, now=now)


def krl_version_at(moment: datetime) -> int:
    """The KRL version for ``moment``: microseconds since the Unix epoch.

    The server passes the newest revocation time it holds (see the module
    docstring); ``jit-ssh krl build`` passes the time it builds at.
    """
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidKRL(
            f"moment must be a timezone-aware datetime, got {moment!r}", field="version"
        )
    # Integer division of timedeltas is exact: no float rounding of the microseconds.
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    if not 0 <= micros <= _U64_MAX:
        raise InvalidKRL(f"moment {moment.isoformat()} is before 1970-01-01", field="version")
    return micros


def krl_version_time(version: int) -> datetime | None:
    """The moment a KRL version stands for, or ``None`` past the year 9999.

    Versions of the earlier schemes (revocation ids, Unix seconds) read as
    moments in January 1970: old, never implausible.
    """
    try:
        return _EPOCH + timedelta(microseconds=version)
    except OverflowError:
        return None


def krl_version_plausible(
    version: int, *, now: datetime, max_clock_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW
) -> bool:
    """Whether ``version`` stands for a moment no later than ``now + max_clock_skew``.

    A later one cannot come from a working server (its version is the newest
    revocation time), and once installed it would make every later KRL look
    older. A host judges its installed KRL by this too: a version that is no
    longer plausible does not count as newer than the server's.
    """
    moment = krl_version_time(version)
    return moment is not None and moment <= now + max_clock_skew


def _header(version: int, now: datetime, comment: str) -> bytes:
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= _U64_MAX:
        raise InvalidKRL(
            f"version must be an integer in 0..2**64-1, got {version!r}", field="version"
        )
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise InvalidKRL(f"now must be a timezone-aware datetime, got {now!r}", field="now")
    seconds = math.floor((now - _EPOCH).total_seconds())
    if seconds < 0:
        raise InvalidKRL(f"now must not be before 1970-01-01, got {now.isoformat()}", field="now")
    if not isinstance(comment, str):
        raise InvalidKRL(f"comment must be a string, got {type(comment).__name__}", field="comment")
    try:
        comment_bytes = comment.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKRL(
            f"comment is not encodable as UTF-8: {exc.reason}", field="comment"
        ) from None
    # OpenSSH reads the comment with sshbuf_get_cstring(), which refuses NULs.
    if b"\0" in comment_bytes:
        raise InvalidKRL("comment must not contain NUL characters", field="comment")
    return (
        _MAGIC
        + wire.uint32(_FORMAT_VERSION)
        + wire.uint64(version)
        + wire.uint64(seconds)
        + wire.uint64(0)  # flags: none are defined
        + wire.string(b"")  # reserved
        + wire.string(comment_bytes)
    )


def _blobs(values: Iterable[bytes], field: str) -> Iterable[bytes]:
    # A lone bytes object is iterable (as ints): almost always a caller's slip.
    if isinstance(values, (bytes, bytearray, memoryview, str)):
        raise InvalidKeyError(
            f"{field} must be a collection of byte strings, not a single {type(values).__name__}",
            field=field,
        )
    for value in values:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise InvalidKeyError(
                f"{field} must hold byte strings, got {type(value).__name__}", field=field
            )
        yield bytes(value)


def _normalize_ca_keys(ca_keys: Sequence[bytes]) -> list[bytes]:
    cas: set[bytes] = set()
    for blob in _blobs(ca_keys, "ca_keys"):
        cas.add(blob if blob == b"" else _check_public_key(blob, "ca_keys"))
    # Sorted by bytes, so b"" (any CA) comes first and output is deterministic.
    return sorted(cas)


def _normalize_serials(serials: Iterable[int | tuple[int, int]]) -> list[tuple[int, int]]:
    if isinstance(serials, (int, str, bytes)):
        raise InvalidSerial(
            "serials must be a collection of serials or (lo, hi) ranges, "
            f"not a single {type(serials).__name__}",
            field="serials",
        )
    singles: list[int] = []
    ranges: list[tuple[int, int]] = []
    for item in serials:
        if type(item) is int:
            if not 0 < item <= _U64_MAX:
                raise InvalidSerial(_bad_serial_message(item), field="serials")
            singles.append(item)
        elif isinstance(item, tuple) and len(item) == 2:
            lo, hi = item
            for value in (lo, hi):
                if type(value) is not int or not 0 < value <= _U64_MAX:
                    raise InvalidSerial(
                        f"range {item!r}: " + _bad_serial_message(value), field="serials"
                    )
            if lo > hi:
                raise InvalidSerial(
                    f"range {item!r}: lo must not be greater than hi", field="serials"
                )
            ranges.append((lo, hi))
        else:
            raise InvalidSerial(
                f"serials must hold integers or (lo, hi) tuples, got {item!r}", field="serials"
            )
    return _merge(singles, ranges)


def _bad_serial_message(value: object) -> str:
    if type(value) is not int:
        return f"{value!r} is not an integer serial"
    if value == 0:
        # OpenSSH's "no serial": ssh_krl_revoke_cert_by_serial() refuses it,
        # and a KRL holding it makes sshd refuse every key.
        return (
            "serial 0 cannot be revoked (OpenSSH treats it as 'no serial' and refuses such a KRL)"
        )
    return f"serial {value} is out of range: OpenSSH serials are 1..2**64-1"


def _normalize_key_ids(key_ids: Iterable[str]) -> list[bytes]:
    if isinstance(key_ids, (str, bytes)):
        raise InvalidKeyId(
            "key_ids must be a collection of strings, not a single string", field="key_ids"
        )
    encoded: set[bytes] = set()
    for key_id in key_ids:
        if not isinstance(key_id, str):
            raise InvalidKeyId(
                f"key_ids must hold strings, got {type(key_id).__name__}", field="key_ids"
            )
        if not key_id:
            # An empty key id would revoke every certificate issued without one.
            raise InvalidKeyId("key_ids must not contain an empty key id", field="key_ids")
        try:
            raw = key_id.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidKeyId(
                f"key id {key_id!r} is not encodable as UTF-8: {exc.reason}", field="key_ids"
            ) from None
        # Key ids are read with sshbuf_get_cstring(), which refuses NULs.
        if b"\0" in raw:
            raise InvalidKeyId(
                f"key id {key_id!r} must not contain NUL characters", field="key_ids"
            )
        encoded.add(raw)
    # OpenSSH keeps key ids in strcmp() order, which is byte order.
    return sorted(encoded)


def _check_public_key(blob: bytes, field: str) -> bytes:
    problem = _key_blob_problem(blob)
    if problem is not None:
        kind, message = problem
        error = {"cert": CertificateAsKey, "type": UnsupportedKeyType}.get(kind, InvalidKeyError)
        raise error(f"{field}: {message}", field=field)
    return blob


def _check_sha256(digest: bytes) -> bytes:
    if len(digest) != 32:
        raise InvalidKeyError(
            f"sha256_fingerprints: a SHA256 digest is 32 raw bytes, got {len(digest)}",
            field="sha256_fingerprints",
        )
    return digest


def _merge(singles: list[int], ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint, non-adjacent inclusive runs covering the input."""
    singles.sort()
    runs: list[tuple[int, int]] = []
    if singles:
        lo = hi = singles[0]
        for serial in singles:
            if serial > hi + 1:
                runs.append((lo, hi))
                lo = hi = serial
            elif serial == hi + 1:
                hi = serial
        runs.append((lo, hi))
    if not ranges:
        return runs
    pending = sorted(runs + ranges)
    merged: list[tuple[int, int]] = []
    lo, hi = pending[0]
    for a, b in pending:
        if a <= hi + 1:
            if b > hi:
                hi = b
        else:
            merged.append((lo, hi))
            lo, hi = a, b
    merged.append((lo, hi))
    return merged


def _serial_subsections(runs: list[tuple[int, int]]) -> list[bytes]:
    """Encode runs as list and range subsections, smallest output first.

    Subsections are written in ascending serial order. OpenSSH does not need
    that (it merges whatever it reads), but it keeps the output canonical. A
    small dynamic programme picks, per run, a range subsection or membership
    in a list subsection, counting the cost of restarting a list after a
    range, so e.g. a run of 3 between single serials stays in the list.
    """
    as_range = _plan_ranges(runs)
    out: list[bytes] = []
    pending: list[int] = []
    for (lo, hi), is_range in zip(runs, as_range, strict=False):
        if is_range:
            if pending:
                out.append(_section(_CERT_SERIAL_LIST, wire.uint64s(pending)))
                pending = []
            out.append(_section(_CERT_SERIAL_RANGE, wire.uint64(lo) + wire.uint64(hi)))
        elif lo == hi:
            pending.append(lo)
        else:
            pending.extend(range(lo, hi + 1))
    if pending:
        out.append(_section(_CERT_SERIAL_LIST, wire.uint64s(pending)))
    return out


def _plan_ranges(runs: list[tuple[int, int]]) -> list[bool]:
    """For each run, True to write it as a range subsection, False to list it."""
    lengths = [hi - lo + 1 for lo, hi in runs]
    # Short cuts for the common shapes: a run of 1 or 2 always costs less in a
    # list (8 or 16 bytes) than as a range (21); a run of 4 or more always
    # costs more in a list (32+) than as a range plus a list restart (26).
    if all(k <= 2 for k in lengths):
        return [False] * len(runs)
    if all(k >= 4 for k in lengths):
        return [True] * len(runs)
    inf = math.inf
    listed_cost, ranged_cost = inf, 0.0  # before the first run no list is open
    came_from_listed_if_listed = bytearray(len(runs))
    came_from_listed_if_ranged = bytearray(len(runs))
    for i, k in enumerate(lengths):
        item_cost = _LIST_ITEM_COST * min(k, 4)  # beyond 4 the list never wins
        stay = listed_cost + item_cost
        start = ranged_cost + _LIST_START_COST + item_cost
        new_listed = min(stay, start)
        came_from_listed_if_listed[i] = stay <= start
        came_from_listed_if_ranged[i] = listed_cost <= ranged_cost
        ranged_cost = min(listed_cost, ranged_cost) + _RANGE_COST
        listed_cost = new_listed
    plan = [False] * len(runs)
    listed = listed_cost <= ranged_cost
    for i in range(len(runs) - 1, -1, -1):
        plan[i] = not listed
        listed = bool(came_from_listed_if_listed[i] if listed else came_from_listed_if_ranged[i])
    return plan


def _section(kind: int, body: bytes) -> bytes:
    """A section or a certificate subsection: ``byte type, string body``."""
    return wire.byte(kind) + wire.string(body)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def _fail(cur: wire.Reader, message: str, at: int | None = None) -> InvalidKRL:
    """An :class:`InvalidKRL` naming the absolute byte (``at``, else where ``cur`` stands)."""
    offset = cur.pos if at is None else at
    return InvalidKRL(f"invalid KRL at byte {offset} ({cur.context}): {message}", field="krl")


def _invalid(e: wire.WireError) -> InvalidKRL:
    """The same message for a flaw :mod:`ca.wire` found (truncation, bad text)."""
    return InvalidKRL(f"invalid KRL at byte {e.offset} ({e.context}): {e.reason}", field="krl")


class _CertAccumulator:
    __slots__ = ("singles", "ranges", "key_ids")

    def __init__(self) -> None:
        self.singles: list[int] = []
        self.ranges: list[tuple[int, int]] = []
        self.key_ids: set[str] = set()


class _HostCheck:
    """What :func:`accept_krl` adds to the parser: refusals, where they occur."""

    __slots__ = ("trusted",)

    def __init__(self, trusted: frozenset[bytes]) -> None:
        self.trusted = trusted

    @staticmethod
    def refuse(cur: wire.Reader, message: str, at: int) -> UnacceptableKRL:
        return UnacceptableKRL(f"refused KRL at byte {at} ({cur.context}): {message}", field="krl")

    def trusted_among(
        self, blobs: Iterable[bytes], digest: Callable[[bytes], bytes] | None = None
    ) -> bytes | None:
        """A trusted CA key that ``blobs`` (key blobs, or digests of them) names, if any."""
        wanted = {digest(k) if digest else k: k for k in self.trusted}
        return next((wanted[b] for b in blobs if b in wanted), None)


def parse_krl(data: bytes) -> KRL:
    """Parse and validate a whole KRL; raise :class:`InvalidKRL` on any flaw.

    Accepts what OpenSSH 9.2 accepts (including the bitmap subsections
    ``ssh-keygen -k`` writes) and refuses what it refuses, plus signature and
    extension sections, malformed explicit keys and non-UTF-8 text (see the
    module docstring). Certificate sections for the same CA are merged and
    serials normalized into sorted ranges, so equal content compares equal.

    A KRL has no overall length and no end marker: cut exactly where a
    section starts, it is a valid KRL that revokes less, for OpenSSH as for
    this parser. Whoever transports a KRL must check its length or digest
    before installing it; no parser can.

    A host installing a KRL it was sent uses :func:`accept_krl` instead.
    """
    return _parse(data, None)


def accept_krl(
    data: bytes,
    *,
    trusted_ca_keys: Iterable[bytes],
    now: datetime,
    max_clock_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW,
) -> KRL:
    """Parse ``data`` like :func:`parse_krl`, and accept it only if jit-ssh could have written it.

    The check a host runs before it installs a KRL it was sent (``jit-ssh host
    sync-krl``). ``trusted_ca_keys`` are the wire blobs of the CA keys this
    host's sshd trusts, read from the host's own TrustedUserCAKeys file, never
    from whoever sent the KRL. Accepted: certificate sections naming a CA key,
    revoking serials (lists, ranges) and key ids. Refused, with
    :class:`UnacceptableKRL` naming the byte and the reason:

    - explicit-key, SHA1 and SHA256 fingerprint sections: they revoke plain
      keys, a non-jit key or a CA key itself (the message says which);
    - a certificate section without a CA key: it revokes certificates from
      any CA, not only jit-ssh's;
    - serial bitmaps (jit-ssh never writes them; see the module docstring),
      empty key ids, non-empty reserved fields, header flags: anything
      jit-ssh does not emit;
    - a KRL with certificate sections, none of them for a trusted CA key
      (it would revoke nothing here: wrong server, or stale trusted keys);
      sections for other CA keys beside a trusted one pass here (a CA key
      being rolled out that this host does not trust yet), and the host
      installs the KRL without them (:func:`restrict_krl`);
    - a run of more than :data:`MAX_HOST_SERIAL_RUN` consecutive serials: a
      lockout of every certificate of that CA, not a revocation;
    - a version (:func:`krl_version_at`) later than ``now + max_clock_skew``
      (``field="version"``): once installed, it would make the host refuse
      every later KRL as older.

    Structural flaws raise :class:`InvalidKRL`, as :func:`parse_krl` does;
    :class:`UnacceptableKRL` is a subclass of it.
    """
    trusted: set[bytes] = set()
    for blob in _blobs(trusted_ca_keys, "trusted_ca_keys"):
        trusted.add(_check_public_key(blob, "trusted_ca_keys"))
    if not trusted:
        raise InvalidKRL(
            "trusted_ca_keys is empty: a host that trusts no CA key needs no KRL",
            field="trusted_ca_keys",
        )
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise InvalidKRL(f"now must be a timezone-aware datetime, got {now!r}", field="now")
    if not isinstance(max_clock_skew, timedelta) or max_clock_skew < timedelta(0):
        raise InvalidKRL(
            f"max_clock_skew must be a timedelta >= 0, got {max_clock_skew!r}",
            field="max_clock_skew",
        )

    krl = _parse(data, _HostCheck(frozenset(trusted)))

    if krl.cert_sections and not any(s.ca_key in trusted for s in krl.cert_sections):
        named = ", ".join(_fingerprint(s.ca_key) for s in krl.cert_sections)
        raise UnacceptableKRL(
            f"refused KRL: none of its CA keys ({named}) is one this host trusts, so it would revoke "
            "nothing here: is this the right server, or are the host's trusted CA keys out of date "
            "(run jit-ssh host setup again)?",
            field="krl",
        )
    for section in krl.cert_sections:
        for lo, hi in section.serial_ranges:
            if hi - lo + 1 > MAX_HOST_SERIAL_RUN:
                raise UnacceptableKRL(
                    f"refused KRL: it revokes serials {lo}-{hi} of CA key {_fingerprint(section.ca_key)}, "
                    f"{hi - lo + 1} serials in one run. jit-ssh's serials are random 64-bit numbers, so the "
                    f"KRLs it writes hold single serials (and runs of at most {MAX_HOST_SERIAL_RUN}); a run "
                    "this wide would revoke every certificate of that CA: a lockout, not a revocation",
                    field="krl",
                )
    if not krl_version_plausible(krl.version, now=now, max_clock_skew=max_clock_skew):
        moment = krl_version_time(krl.version)
        when = "a time past the year 9999" if moment is None else f"{_iso_us(moment)}"
        raise UnacceptableKRL(
            f"refused KRL: its version {krl.version} stands for {when}, later than this host's clock "
            f"({_iso(now)}) plus the allowed clock skew ({int(max_clock_skew.total_seconds())} s). "
            "Installed, it would make every later KRL look older and keep them all out. "
            "Check this host's clock and the server's (NTP).",
            field="version",
        )
    return krl


def restrict_krl(krl: KRL, *, trusted_ca_keys: Iterable[bytes]) -> bytes:
    """The KRL a host installs: ``krl`` (as :func:`accept_krl` returned it) with
    only the certificate sections for ``trusted_ca_keys``, written by this module.

    The server's KRL repeats its sections for every CA key it publishes,
    including one being rolled out that this host does not trust yet. Such a
    section is no use here, and it is not harmless either: sshd may trust other
    CA keys through another file or a ``Match`` block, whose certificates a
    hostile server could then revoke. So the host keeps the sections for the
    CA keys in its own TrustedUserCAKeys file and drops the rest; the version,
    date and comment stay. Raises :class:`InvalidKRL` if no section is left
    while there were some (``accept_krl`` has already refused that).
    """
    trusted = {
        _check_public_key(b, "trusted_ca_keys") for b in _blobs(trusted_ca_keys, "trusted_ca_keys")
    }
    if krl.revoked_keys or krl.revoked_sha256 or krl.revoked_sha1:
        raise InvalidKRL(
            "restrict_krl takes a KRL accept_krl passed: it revokes plain keys", field="krl"
        )
    out = [_header(krl.version, krl.generated_at, krl.comment)]
    for section in krl.cert_sections:
        if section.ca_key not in trusted:
            continue
        subsections = _serial_subsections(list(section.serial_ranges))
        if section.key_ids:
            ids = _normalize_key_ids(section.key_ids)
            subsections.append(_section(_CERT_KEY_ID, b"".join(wire.string(i) for i in ids)))
        if subsections:
            out.append(
                _section(
                    _SECTION_CERTIFICATES,
                    wire.string(section.ca_key) + wire.string(b"") + b"".join(subsections),
                )
            )
    if krl.cert_sections and len(out) == 1:
        raise InvalidKRL("none of the KRL's sections is for a trusted CA key", field="krl")
    return b"".join(out)


def _parse(data: bytes, check: _HostCheck | None) -> KRL:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidKRL(f"a KRL is bytes, got {type(data).__name__}", field="krl")
    data = bytes(data)
    if len(data) > MAX_KRL_SIZE:
        raise InvalidKRL(
            f"KRL is {len(data)} bytes; OpenSSH cannot load a KRL over {MAX_KRL_SIZE} bytes (128 MiB)",
            field="krl",
        )
    if not data.startswith(_MAGIC):
        # sshd would not even see a KRL here: it falls back to reading the
        # file as a list of public keys.
        raise InvalidKRL(
            f"invalid KRL at byte 0 (header): bad magic {data[:8]!r}, expected {_MAGIC!r}",
            field="krl",
        )
    try:
        return _parse_body(wire.Reader(data, start=len(_MAGIC), context="header"), check)
    except wire.WireError as e:
        raise _invalid(e) from None


def _parse_body(cur: wire.Reader, check: _HostCheck | None) -> KRL:
    """The KRL after its magic; :mod:`ca.wire`'s errors become :class:`InvalidKRL` in ``_parse``."""
    at = cur.pos
    format_version = cur.uint32("format version")
    if format_version != _FORMAT_VERSION:
        raise _fail(
            cur, f"unsupported format version {format_version}, OpenSSH reads only 1", at=at
        )
    version = cur.uint64("krl_version")
    at = cur.pos
    generated_date = cur.uint64("generated_date")
    try:
        generated_at = _EPOCH + timedelta(seconds=generated_date)
    except OverflowError:
        raise _fail(
            cur, f"generated_date {generated_date} is beyond the year 9999", at=at
        ) from None
    at = cur.pos
    flags = cur.uint64("flags")  # none are defined; OpenSSH ignores them too
    if check and flags:
        raise check.refuse(
            cur, f"flags are 0x{flags:x}: none are defined, and jit-ssh writes 0", at
        )
    at = cur.pos
    reserved = cur.string("reserved")  # "currently ignored", says PROTOCOL.krl
    if check and reserved:
        raise check.refuse(cur, "the reserved field is not empty, as jit-ssh writes it", at)
    comment = cur.text("comment")

    by_ca: dict[bytes, _CertAccumulator] = {}
    revoked_keys: set[bytes] = set()
    sha256: set[bytes] = set()
    sha1: set[bytes] = set()
    index = 0
    while cur.remaining():
        index += 1
        section_at = cur.pos
        cur.context = f"section #{index}"
        kind = cur.byte("section type")
        name = _SECTION_NAMES.get(kind, f"type {kind}")
        cur.context = f"{name} section #{index} at byte {section_at}"
        if kind == _SECTION_SIGNATURE:
            raise _fail(
                cur,
                "signature sections are refused: jit-ssh neither signs nor verifies KRLs",
                at=section_at,
            )
        if kind == _SECTION_EXTENSION:
            raise _fail(
                cur,
                "extension sections are refused: OpenSSH 9.2 rejects the whole KRL",
                at=section_at,
            )
        if kind not in _SECTION_NAMES:
            raise _fail(
                cur,
                f"unknown section type {kind}; OpenSSH 9.2 rejects the whole KRL",
                at=section_at,
            )
        body = cur.sub("section body")
        if kind == _SECTION_CERTIFICATES:
            _parse_cert_section(body, by_ca, check)
        elif kind == _SECTION_EXPLICIT_KEY:
            blobs: list[bytes] = []
            while body.remaining():
                key_at = body.pos
                blob = body.string("public key")
                problem = _key_blob_problem(blob)
                if problem is not None:
                    raise _fail(body, f"revoked key: {problem[1]}", at=key_at)
                blobs.append(blob)
            if check:
                ca = check.trusted_among(blobs)
                raise check.refuse(
                    cur, _plain_key_refusal("as a plain key", len(blobs), ca), section_at
                )
            revoked_keys.update(blobs)
        else:
            is_sha256 = kind == _SECTION_FINGERPRINT_SHA256
            size, target = (32, sha256) if is_sha256 else (20, sha1)
            digests: list[bytes] = []
            while body.remaining():
                digest_at = body.pos
                digest = body.string("fingerprint")
                if len(digest) != size:
                    raise _fail(
                        body, f"fingerprint must be {size} bytes, got {len(digest)}", at=digest_at
                    )
                digests.append(digest)
            if check:
                algorithm = "sha256" if is_sha256 else "sha1"

                def fingerprint(blob: bytes, algorithm: str = algorithm) -> bytes:
                    return hashlib.new(algorithm, blob).digest()

                ca = check.trusted_among(digests, fingerprint)
                how = f"by its {'SHA-256' if is_sha256 else 'SHA-1'} fingerprint"
                raise check.refuse(cur, _plain_key_refusal(how, len(digests), ca), section_at)
            target.update(digests)

    # Like OpenSSH, a certificate section that revokes nothing leaves no trace.
    sections = tuple(
        KRLCertSection(
            ca_key=ca_key,
            serial_ranges=tuple(_merge(acc.singles, acc.ranges)),
            key_ids=tuple(sorted(acc.key_ids, key=lambda k: k.encode("utf-8"))),
        )
        for ca_key, acc in sorted(by_ca.items(), key=lambda item: item[0])
        if acc.singles or acc.ranges or acc.key_ids
    )
    return KRL(
        version=version,
        generated_at=generated_at,
        comment=comment,
        cert_sections=sections,
        revoked_keys=tuple(sorted(revoked_keys)),
        revoked_sha256=tuple(sorted(sha256)),
        revoked_sha1=tuple(sorted(sha1)),
    )


def _plain_key_refusal(how: str, count: int, trusted_ca: bytes | None) -> str:
    if trusted_ca is not None:
        return (
            f"it revokes the trusted CA key {_fingerprint(trusted_ca)} itself ({how}): sshd would then "
            "refuse every certificate that CA signed"
        )
    return (
        f"it revokes {count} key(s) {how} whoever holds them, certificate or not: jit-ssh revokes "
        "only certificates (by serial or key id), and such a KRL can lock out keys jit-ssh never issued"
    )


def _parse_cert_section(
    cur: wire.Reader, by_ca: dict[bytes, _CertAccumulator], check: _HostCheck | None = None
) -> None:
    at = cur.pos
    ca_key = cur.string("CA key")
    # OpenSSH parses the CA key with sshkey_from_blob(); if that fails, the
    # whole KRL fails, and sshd refuses every key.
    if ca_key:
        problem = _key_blob_problem(ca_key)
        if problem is not None:
            raise _fail(cur, f"CA key: {problem[1]}", at=at)
    elif check:
        raise check.refuse(
            cur,
            "a certificate section without a CA key revokes matching certificates signed by ANY CA, "
            "not only jit-ssh's; jit-ssh names the CA key in every section",
            at,
        )
    at = cur.pos
    reserved = cur.string("reserved")
    if check and reserved:
        raise check.refuse(cur, "the reserved field is not empty, as jit-ssh writes it", at)
    acc = by_ca.setdefault(ca_key, _CertAccumulator())
    section_where = cur.context
    index = 0
    while cur.remaining():
        index += 1
        sub_at = cur.pos
        cur.context = f"{section_where}, subsection #{index}"
        kind = cur.byte("subsection type")
        sub_name = _SUBSECTION_NAMES.get(kind, f"type 0x{kind:02x}")
        sub = cur.sub(
            "subsection body", context=f"{section_where}, {sub_name} subsection at byte {sub_at}"
        )
        start, length = sub.pos, sub.remaining()
        if kind == _CERT_SERIAL_LIST:
            if length % 8:
                raise _fail(sub, f"serial list length {length} is not a multiple of 8", at=sub_at)
            serials = sub.uint64s(length // 8, "serial list")
            if 0 in serials:
                zero_at = start + 8 * serials.index(0)
                raise _fail(
                    sub, "serial 0 in a serial list; OpenSSH rejects the whole KRL", at=zero_at
                )
            acc.singles.extend(serials)
        elif kind == _CERT_SERIAL_RANGE:
            if length != 16:
                raise _fail(sub, f"serial range must be 16 bytes (lo, hi), got {length}", at=sub_at)
            lo, hi = sub.uint64("range start"), sub.uint64("range end")
            if lo == 0:
                raise _fail(
                    sub,
                    f"serial range {lo}-{hi} starts at 0; OpenSSH rejects the whole KRL",
                    at=start,
                )
            if lo > hi:
                raise _fail(
                    sub,
                    f"serial range {lo}-{hi} has lo > hi; OpenSSH rejects the whole KRL",
                    at=start,
                )
            acc.ranges.append((lo, hi))
        elif kind == _CERT_SERIAL_BITMAP:
            runs = _parse_bitmap(sub)
            if check:
                raise check.refuse(
                    sub,
                    "serial bitmaps are refused: jit-ssh writes serial lists and ranges only "
                    "(OpenSSH's own writer emits bitmaps that sshd then cannot read, refusing every key)",
                    sub_at,
                )
            acc.ranges.extend(runs)
        elif kind == _CERT_KEY_ID:
            while sub.remaining():
                id_at = sub.pos
                key_id = sub.text("key id")
                if check and not key_id:
                    raise check.refuse(
                        sub,
                        "an empty key id revokes every certificate issued without one; jit-ssh never writes it",
                        id_at,
                    )
                acc.key_ids.add(key_id)
        elif kind == _CERT_EXTENSION:
            raise _fail(
                sub,
                "certificate extension subsections are refused: OpenSSH 9.2 rejects the whole KRL",
                at=sub_at,
            )
        else:
            raise _fail(
                sub,
                f"unknown certificate subsection type 0x{kind:02x}; OpenSSH 9.2 rejects the whole KRL",
                at=sub_at,
            )


def _parse_bitmap(sub: wire.Reader) -> list[tuple[int, int]]:
    """Runs of serials from a bitmap subsection (``u64 lo``, ``mpint bits``)."""
    base = sub.uint64("bitmap start serial")
    at = sub.pos
    # Bytes after the bitmap are reported before a flaw inside it, so frame
    # the string first, then go back and read it as an mpint.
    sub.string("bitmap")
    if sub.remaining():
        raise _fail(sub, f"{sub.remaining()} unexpected bytes after the bitmap")
    sub.pos = at
    try:
        # The checks sshbuf_get_bignum2_bytes_direct() makes (negative, over
        # SSHBUF_MAX_BIGNUM): ssh-keygen -k writes bitmaps longer than 16,384
        # bits that it and sshd then refuse to read. Like sshbuf, tolerate
        # superfluous leading zero bytes (canonical=False).
        bits = sub.mpint("bitmap", canonical=False, max_bits=_MAX_BITMAP_BITS)
    except wire.WireError as e:
        raise _fail(sub, f"{e.reason}; OpenSSH rejects the whole KRL", at=at) from None
    nbits = bits.bit_length()
    if nbits == 0:
        return []
    # krl.c refuses a bitmap whose span wraps past 2**64-1, set bits or not.
    if base + nbits - 1 > _U64_MAX:
        raise _fail(sub, f"bitmap starting at serial {base} wraps past 2**64-1", at=at)
    if base == 0 and bits & 1:
        raise _fail(sub, "bitmap revokes serial 0; OpenSSH rejects the whole KRL", at=at)
    # Walk the binary digits from the least significant end to find runs.
    digits = format(bits, "b")[::-1]
    runs: list[tuple[int, int]] = []
    i = digits.find("1")
    while i != -1:
        j = digits.find("0", i)
        if j == -1:
            j = nbits
        runs.append((base + i, base + j - 1))
        i = digits.find("1", j)
    return runs


# ---------------------------------------------------------------------------
# Public key blobs
# ---------------------------------------------------------------------------


def _split_strings(blob: bytes) -> list[bytes] | None:
    """A key blob's fields (``string*`` up to the end), or ``None`` if they do not fit it."""
    fields = wire.Reader(blob, context="key blob")
    out: list[bytes] = []
    try:
        while fields.remaining():
            out.append(fields.string("key field"))
    except wire.WireError:
        return None
    return out


def _key_blob_problem(blob: bytes) -> tuple[str, str] | None:
    """``None`` for a public key blob OpenSSH 9.2 can parse, else (kind, reason).

    ``kind`` is ``"cert"`` (a certificate where a plain key belongs),
    ``"type"`` (a type OpenSSH does not know) or ``"bad"``.
    """
    if not blob:
        return "bad", "empty key blob"
    if len(blob) < 4:
        return "bad", "key blob is shorter than its type length prefix"
    try:
        raw_type = wire.Reader(blob, context="key blob").string("key type")
    except wire.WireError:
        raw_type = b""
    if not raw_type:
        return "bad", "key blob does not start with a key type name"
    try:
        key_type = raw_type.decode("ascii")
    except UnicodeDecodeError:
        return "bad", "key type name is not ASCII"
    if not key_type.isprintable():
        return "bad", "key type name is not printable"
    if key_type.endswith("-cert-v01@openssh.com"):
        # KRLs hold plain keys: OpenSSH strips the certificate before it
        # compares, so a certificate blob here would never match anything.
        return "cert", f"{key_type} is a certificate, not a plain public key"
    layout = _KEY_LAYOUTS.get(key_type)
    if layout is None:
        return "type", f"unknown key type {key_type!r}"
    fields = _split_strings(blob)
    if fields is None:
        return "bad", f"{key_type} key blob has a bad length prefix or trailing bytes"
    if len(fields) - 1 != len(layout):
        return "bad", f"{key_type} key blob has {len(fields) - 1} fields, expected {len(layout)}"
    for spec, value in zip(layout, fields[1:], strict=False):
        if spec == "ed25519" and len(value) != 32:
            return "bad", f"{key_type} public key is {len(value)} bytes, expected 32"
        if spec == "mpint" and (not value or value[0] & 0x80):
            return "bad", f"{key_type} key has an empty or negative integer"
        if spec.startswith("curve:") and value != spec[6:].encode("ascii"):
            return "bad", f"{key_type} key names curve {value!r}, expected {spec[6:]!r}"
        if spec == "application" and (not value or b"\0" in value):
            return "bad", f"{key_type} key has an empty or NUL-containing application"
    if key_type == "ssh-rsa" and int.from_bytes(fields[2], "big").bit_length() < _MIN_RSA_BITS:
        return "bad", f"RSA key is under {_MIN_RSA_BITS} bits, which OpenSSH refuses"
    if key_type in _CRYPTOGRAPHY_CHECKS:
        text = key_type.encode("ascii") + b" " + base64.b64encode(blob)
        try:
            serialization.load_ssh_public_key(text)
        # cryptography raises NotImplementedError for a compressed EC point,
        # which OpenSSH's sshbuf_get_ec() refuses too.
        except (ValueError, UnsupportedAlgorithm, TypeError, NotImplementedError) as exc:
            return "bad", f"{key_type} key material is invalid ({exc or type(exc).__name__})"
    elif key_type == "sk-ecdsa-sha2-nistp256@openssh.com":
        if not fields[2].startswith(b"\x04"):
            return "bad", f"{key_type} point is not in uncompressed form, which OpenSSH requires"
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), fields[2])
        except ValueError as exc:
            return "bad", f"{key_type} point is invalid ({exc})"
    return None


def _key_type(blob: bytes) -> str:
    fields = _split_strings(blob)
    if not fields:
        return "unknown"
    return fields[0].decode("ascii", "replace")


def _fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_us(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _escape(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )
