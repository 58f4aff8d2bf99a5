"""The tamper-evident audit log: hash chain, signed checkpoints, export, verify.

This is the pure core (standard library and ``cryptography`` only; no Flask,
no SQLAlchemy, no clock). The database layer calls :func:`make_event` and
:func:`sign_checkpoint` and stores what they return; ``jit-ssh audit export``
writes :func:`export_lines`; ``jit-ssh audit verify`` calls
:func:`verify_export_file` on that file, offline.

The chain
---------
Each event has a *body*, the canonical JSON (:func:`canonical_json`) of exactly
these six fields::

    {"actor": str|null, "at": "YYYY-MM-DDTHH:MM:SS.ffffffZ", "data": {...},
     "id": int, "request_id": str|null, "type": str}

and ``hash = SHA-256(prev_hash || body)`` over the raw 32-byte previous hash
(:func:`chain_hash`); event 1 links to :data:`GENESIS_HASH` (32 zero bytes).
``prev_hash`` and ``hash`` are stored as 64 lowercase hex digits. The id is
inside the body, so moving an event, or deleting one and renumbering the
rest, changes what is hashed.

A *checkpoint* is an Ed25519 signature, by the audit key (never the CA key),
over ``canonical_json({"domain": "jit-ssh-audit-checkpoint-v1", "event_id": N,
"head_hash": hex, "at": time})``. The domain tag keeps a checkpoint signature
from ever being valid as anything else signed with the same key.

What verify detects, and what it cannot
---------------------------------------
:func:`verify_chain` / :func:`verify_export_file` stop at the FIRST problem
and name the event (:class:`Problem`):

* ``edited``: an event whose body does not hash to its stored hash; or an
  event whose hash was recomputed on its own, so the next event no longer
  links to it (the recomputed event is named).
* ``deleted``: a gap in the ids (the first missing id is named); a checkpoint
  signing an event past the end of the export (events were cut off the
  tail); an export that does not start at ``expect_first_id``.
* ``inserted``: an id that appears twice, or an extra event spliced in
  between two events that still link to each other.
* ``reordered``: ids out of order (the first id not in its place is named).
* ``rewritten``: the chain verifies link by link but a checkpoint's signed head
  hash does not match: an attacker rewrote the events and recomputed every
  hash after them. The hashes cannot say where the rewrite began, so the
  first event after the last checkpoint that still matched is named, and
  ``until_id`` is the checkpoint that caught it. Denser checkpoints narrow it.
  Also: the first event does not link to ``start_hash`` or to a checkpoint
  of the event just before the export.
* ``bad_checkpoint``: a checkpoint whose signature does not verify, or
  signed by a key not in ``public_keys`` (give every audit key, old ones too).
* ``unsigned_tail``: with ``public_keys`` given, events after the last valid
  checkpoint. Nothing vouches for them (an attacker can append or rewrite
  freely after the last signature), so they fail unless the caller passes
  ``allow_unsigned_tail=True``. The server signs a checkpoint of the head on
  every export, so an honest export has no unsigned tail.

Not detected, by design of a hash chain:

* Events forged by someone who could write to the database *before* the next
  checkpoint was signed: the server then signs them into the chain. A
  checkpoint proves the log was not changed after it was signed, not that the
  server wrote every event. (The one-JSON-line-per-event server log, shipped
  to a SIEM, is the independent copy.)
* Truncation of the tail *together with* the checkpoints that covered it,
  before an export is made: the server then signs the shorter head. Keep
  earlier exports (or their last checkpoint) and pass their checkpoints as
  ``extra_checkpoints``: a checkpoint past the end is reported as ``deleted``.
* Deletion of the first events of an export is indistinguishable from an
  export made with ``--since``: the result says ``first_id``; pass
  ``expect_first_id`` (1 for a full export) to make it a failure.
* Without ``public_keys`` nothing is authenticated: the chain and the head
  hashes are checked, which finds careless edits but not an attacker who
  recomputes hashes and checkpoint heads.

Export format
-------------
JSON lines, UTF-8, one object per line, events in id order, each checkpoint
right after the event it signs (:func:`export_lines`)::

    {"kind":"event","prev_hash":"<hex>","hash":"<hex>","actor":...,"type":"..."}
    {"kind":"checkpoint","at":"...","event_id":N,"head_hash":"<hex>","key_fingerprint":"SHA256:...","signature":"<base64>"}

An event line is the two hashes followed by the body's own keys, so the body
bytes are a literal slice of the line: the verifier hashes them without
parsing or re-encoding JSON (that is what makes a million events fit in a few
seconds). Every line must be byte for byte what :func:`export_lines` writes:
a line that is not (a duplicate key, which JSON parsers resolve to the last
one while a reader sees the first; other key order, whitespace or escapes, as
``jq`` writes) is refused as :class:`InvalidAuditExport` naming its line
number. A line taken by the fast path needs no parsing for that: its bytes
hash to its stored hash, and with ``public_keys`` the signed chain binds that
hash to the server's own (canonical) body, so other bytes would be a SHA-256
collision; without ``public_keys`` (nothing authenticated) those lines are
parsed and compared too. Checkpoint lines may stand anywhere (all at the end,
say): the streaming verifier keeps each event's 32-byte hash (32 MB per
million events) to check a checkpoint that comes after later events.

Errors::

    JitSshError (ca.errors)
    └── AuditError              code "audit_error"
        ├── InvalidAuditEvent   "invalid_audit_event"   make_event/canonical_json input, naming the field
        ├── InvalidAuditExport  "invalid_audit_export"  a malformed export line (``.line`` is its number)
        └── AuditKeyError       "audit_key_error"       not an Ed25519 key, unreadable key file
    ca.errors.InsecureKeyFile / PassphraseRequired / BadPassphrase for the key file itself.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import builtins
import enum
import errno
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca.errors import JitSshError
from ca.keys import fingerprint_of_blob, load_private_key_file, parse_public_key, write_new_file

__all__ = [
    "GENESIS_HASH",
    "GENESIS_HEX",
    "CHECKPOINT_DOMAIN",
    "MAX_BODY_BYTES",
    "MAX_LINE_BYTES",
    "AuditError",
    "InvalidAuditEvent",
    "InvalidAuditExport",
    "AuditKeyError",
    "AuditKey",
    "canonical_json",
    "chain_hash",
    "format_at",
    "AuditEvent",
    "make_event",
    "Checkpoint",
    "checkpoint_payload",
    "sign_checkpoint",
    "verify_checkpoint",
    "generate_audit_key",
    "save_audit_key",
    "load_audit_key",
    "audit_public_key_text",
    "audit_key_fingerprint",
    "load_audit_public_keys",
    "event_line",
    "checkpoint_line",
    "export_lines",
    "iter_export",
    "parse_export",
    "ProblemKind",
    "Problem",
    "VerifyResult",
    "verify_chain",
    "verify_export_lines",
    "verify_export_file",
]

#: What event 1 links to.
GENESIS_HASH: bytes = bytes(32)
GENESIS_HEX: str = GENESIS_HASH.hex()
#: Signed inside every checkpoint payload; "v1" so a future payload layout
#: can never be confused with this one.
CHECKPOINT_DOMAIN = "jit-ssh-audit-checkpoint-v1"
#: make_event refuses a larger body: an audit event records a decision, not a
#: file, and a bound keeps a hostile export from exhausting memory.
MAX_BODY_BYTES = 64 * 1024
#: The verifier refuses longer export lines (the largest event line is about
#: MAX_BODY_BYTES + 200 bytes).
MAX_LINE_BYTES = 1024 * 1024

_MAX_DEPTH = 32
_MAX_NAME = 256
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_TYPE = re.compile(r"[a-z][a-z0-9_.\-]{0,63}\Z")
# One spelling per instant, fixed width (always microseconds, always Z), as
# format_at writes it: string order is then time order, and the hashed text
# of a time never depends on how a caller chose to print it.
_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
_BODY_KEYS = frozenset({"id", "at", "type", "actor", "request_id", "data"})
_EVENT_KEYS = _BODY_KEYS | {"kind", "prev_hash", "hash"}
_CHECKPOINT_KEYS = frozenset(
    {"kind", "event_id", "head_hash", "at", "key_fingerprint", "signature"}
)


# --------------------------------------------------------------------- errors


class AuditError(JitSshError):
    code = "audit_error"


class InvalidAuditEvent(AuditError):
    code = "invalid_audit_event"


class InvalidAuditExport(AuditError):
    """A line of an export that is not an event or a checkpoint. ``line`` is 1-based."""

    code = "invalid_audit_export"

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message, field=field)
        self.line = line


class AuditKeyError(AuditError):
    code = "audit_key_error"
    http_status = 500


# ------------------------------------------------------------ canonical JSON


def _check_json(obj: Any, path: str, depth: int) -> None:
    # json.dumps alone would accept floats, tuples, int-keyed dicts (turning
    # the keys into strings) and int/str subclasses (IntEnum prints as its
    # name in some versions): each a way for two equal-looking values to hash
    # differently, or for a value to change on a round trip. So walk first.
    t = type(obj)
    if t is str or t is bool or obj is None:
        return
    if t is int:
        return
    if t is dict:
        if depth >= _MAX_DEPTH:
            raise InvalidAuditEvent(f"{path}: nested deeper than {_MAX_DEPTH} levels", field=path)
        for k, v in obj.items():
            if type(k) is not str:
                raise InvalidAuditEvent(
                    f"{path}: keys must be strings, not {type(k).__name__} ({k!r})", field=path
                )
            _check_json(v, f"{path}.{k}", depth + 1)
        return
    if t is list:
        if depth >= _MAX_DEPTH:
            raise InvalidAuditEvent(f"{path}: nested deeper than {_MAX_DEPTH} levels", field=path)
        for i, v in enumerate(obj):
            _check_json(v, f"{path}[{i}]", depth + 1)
        return
    if t is float:
        # Floats have no single canonical text across languages (1e16 vs
        # 10000000000000000.0), and NaN/inf are not JSON at all.
        raise InvalidAuditEvent(
            f"{path}: floats are not allowed (got {obj!r}); use an int or a string", field=path
        )
    if isinstance(obj, datetime):
        raise InvalidAuditEvent(
            f"{path}: a datetime must be given as an ISO string (format_at)", field=path
        )
    raise InvalidAuditEvent(
        f"{path}: {t.__name__} is not allowed; only str, int, bool, None, list and dict", field=path
    )


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes for hashing and signing.

    Sorted keys, no insignificant whitespace, UTF-8 with non-ASCII characters
    written as themselves (``ensure_ascii=False``: shorter, and string escapes
    then match RFC 8785; keys sort by code point, not UTF-16 units, so this is
    not claimed to be JCS). Only ``str``, ``int``, ``bool``, ``None``, ``list``
    and ``dict`` with ``str`` keys (exact types, not subclasses); no floats,
    so no NaN or infinity; strings must be valid Unicode (no lone surrogates).
    Raises :class:`InvalidAuditEvent` naming the offending path.
    """
    _check_json(obj, "$", 0)
    try:
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidAuditEvent(
            "$: a string holds a lone surrogate (not valid Unicode)", field="$"
        ) from None
    except ValueError as e:  # an int over sys.get_int_max_str_digits()
        raise InvalidAuditEvent(f"$: {e}", field="$") from None


def chain_hash(prev_hash: bytes, body: bytes) -> bytes:
    """``SHA-256(prev_hash || body)``: the raw 32 bytes, as DESIGN.md says."""
    if len(prev_hash) != 32:
        raise ValueError(f"prev_hash must be 32 bytes, not {len(prev_hash)}")
    return hashlib.sha256(prev_hash + body).digest()


def format_at(dt: datetime) -> str:
    """A timezone-aware datetime as the audit log writes it: UTC, microseconds, ``Z``."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise InvalidAuditEvent("at: the time must be timezone-aware (UTC)", field="at")
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_at(at: Any, field: str = "at") -> str:
    if type(at) is not str or not _AT.match(at):
        raise InvalidAuditEvent(
            f"{field}: must be a UTC time like 2026-11-29T12:00:00.000000Z (format_at), got {str(at)[:64]!r}",
            field=field,
        )
    try:
        datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidAuditEvent(
            f"{field}: {at!r} is not a real date and time", field=field
        ) from None
    return at


def _check_name(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if type(value) is not str or not value or len(value) > _MAX_NAME:
        raise InvalidAuditEvent(
            f"{field}: must be null or a string of 1 to {_MAX_NAME} characters", field=field
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidAuditEvent(f"{field}: must not hold control characters", field=field)
    return value


# --------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One link of the chain. ``prev_hash`` and ``hash`` are lowercase hex.

    ``data`` is a plain dict (a frozen dataclass cannot freeze it): do not
    mutate it; :func:`make_event` gives each event its own copy.
    """

    id: int
    at: str
    type: str
    actor: str | None
    request_id: str | None
    data: dict[str, Any] = field(hash=False)
    prev_hash: str
    hash: str

    def body_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "type": self.type,
            "actor": self.actor,
            "request_id": self.request_id,
            "data": self.data,
        }

    def body(self) -> bytes:
        """The hashed bytes: ``canonical_json`` of id, at, type, actor, request_id, data."""
        return canonical_json(self.body_dict())


def make_event(
    prev: AuditEvent | None,
    *,
    id: int,
    at: str,
    type: str,
    actor: str | None,
    request_id: str | None,
    data: Mapping[str, Any],
) -> AuditEvent:
    """The event that follows ``prev`` (``None`` for the first, id 1).

    Validates every field (naming it in :class:`InvalidAuditEvent`): ids are
    consecutive, ``at`` is a UTC time string (:func:`format_at`), ``type`` is a
    short lowercase name such as ``certificate.issued``, ``data`` is
    canonical-JSON-able and the body at most :data:`MAX_BODY_BYTES`.
    """
    # ``type`` is a parameter here (it is the field's name), hence builtins.type.
    if builtins.type(id) is not int or id < 1:
        raise InvalidAuditEvent(f"id: must be a positive int, got {id!r}", field="id")
    if prev is None:
        if id != 1:
            raise InvalidAuditEvent(f"id: the first event has id 1, got {id}", field="id")
        prev_hex = GENESIS_HEX
    else:
        if id != prev.id + 1:
            raise InvalidAuditEvent(
                f"id: must be {prev.id + 1} (the previous event's id + 1), got {id}", field="id"
            )
        if builtins.type(prev.hash) is not str or not _HEX64.match(prev.hash):
            raise InvalidAuditEvent("prev.hash: must be 64 lowercase hex digits", field="prev.hash")
        prev_hex = prev.hash
    _check_at(at)
    if builtins.type(type) is not str or not _TYPE.match(type):
        raise InvalidAuditEvent(
            f"type: must be a lowercase name like 'certificate.issued' (a-z, 0-9, . _ -, at most 64), got {str(type)[:64]!r}",
            field="type",
        )
    _check_name(actor, "actor")
    _check_name(request_id, "request_id")
    if not isinstance(data, Mapping):
        raise InvalidAuditEvent(
            f"data: must be a dict, not {builtins.type(data).__name__}", field="data"
        )
    plain = dict(data)
    _check_json(plain, "data", 1)
    body = canonical_json(
        {"id": id, "at": at, "type": type, "actor": actor, "request_id": request_id, "data": plain}
    )
    if len(body) > MAX_BODY_BYTES:
        raise InvalidAuditEvent(
            f"data: the event is {len(body)} bytes, over {MAX_BODY_BYTES}", field="data"
        )
    # The event keeps a private deep copy (decoded from the very bytes that
    # were hashed), so a caller mutating its dict later cannot make the
    # stored event disagree with its hash.
    own_data = json.loads(body)["data"]
    digest = hashlib.sha256(bytes.fromhex(prev_hex) + body).hexdigest()
    return AuditEvent(
        id=id,
        at=at,
        type=type,
        actor=actor,
        request_id=request_id,
        data=own_data,
        prev_hash=prev_hex,
        hash=digest,
    )


# ---------------------------------------------------------------- checkpoints


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signature of the chain head at ``event_id`` (``head_hash``, hex) by the audit key."""

    event_id: int
    head_hash: str
    at: str
    key_fingerprint: str
    signature: str  # base64 of the 64-byte Ed25519 signature

    def payload(self) -> bytes:
        return checkpoint_payload(self.event_id, self.head_hash, self.at)


def checkpoint_payload(event_id: int, head_hash: str, at: str) -> bytes:
    """The exact bytes a checkpoint signs."""
    return canonical_json(
        {"domain": CHECKPOINT_DOMAIN, "event_id": event_id, "head_hash": head_hash, "at": at}
    )


def sign_checkpoint(
    private_key: ed25519.Ed25519PrivateKey, event: AuditEvent, at: str
) -> Checkpoint:
    """Sign the chain head ``event`` (the newest event the database holds) at time ``at``."""
    if not isinstance(private_key, ed25519.Ed25519PrivateKey):
        raise AuditKeyError("the audit key must be an Ed25519 private key", field="audit_key")
    if type(event.id) is not int or event.id < 1:
        raise InvalidAuditEvent(
            f"event.id: must be a positive int, got {event.id!r}", field="event.id"
        )
    if type(event.hash) is not str or not _HEX64.match(event.hash):
        raise InvalidAuditEvent("event.hash: must be 64 lowercase hex digits", field="event.hash")
    _check_at(at)
    sig = private_key.sign(checkpoint_payload(event.id, event.hash, at))
    return Checkpoint(
        event_id=event.id,
        head_hash=event.hash,
        at=at,
        key_fingerprint=audit_key_fingerprint(private_key),
        signature=base64.b64encode(sig).decode("ascii"),
    )


def _signature_ok(cp: Checkpoint, public_key: ed25519.Ed25519PublicKey) -> bool:
    if (
        type(cp.event_id) is not int
        or type(cp.head_hash) is not str
        or type(cp.at) is not str
        or type(cp.signature) is not str
    ):
        return False
    try:
        sig = base64.b64decode(cp.signature, validate=True)
        payload = cp.payload()
    except (binascii.Error, ValueError, AuditError):
        return False
    if len(sig) != 64:
        return False
    try:
        public_key.verify(sig, payload)
    except InvalidSignature:
        return False
    return True


def verify_checkpoint(cp: Checkpoint, public_key: ed25519.Ed25519PublicKey) -> bool:
    """True when ``cp`` names ``public_key`` and its signature verifies under it."""
    if not isinstance(public_key, ed25519.Ed25519PublicKey):
        return False
    return cp.key_fingerprint == audit_key_fingerprint(public_key) and _signature_ok(cp, public_key)


# ------------------------------------------------------------------ audit key

AuditKey = ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey


def generate_audit_key() -> ed25519.Ed25519PrivateKey:
    """A new audit signing key (Ed25519; kept apart from the CA key so that
    one leaking does not let the holder forge the other's signatures)."""
    return ed25519.Ed25519PrivateKey.generate()


def _public(key: AuditKey) -> ed25519.Ed25519PublicKey:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.public_key()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise AuditKeyError(
        f"the audit key must be Ed25519, not {type(key).__name__}", field="audit_key"
    )


def audit_public_key_text(key: AuditKey, comment: str = "") -> str:
    """The public half as one OpenSSH line (``ssh-ed25519 AAAA... comment``), no newline."""
    line = (
        _public(key)
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return f"{line} {comment}" if comment else line


def audit_key_fingerprint(key: AuditKey) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it; what a checkpoint names its key by."""
    blob = (
        _public(key)
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .split()[1]
    )
    return fingerprint_of_blob(base64.b64decode(blob))


def save_audit_key(
    path: str | os.PathLike[str],
    private_key: ed25519.Ed25519PrivateKey,
    *,
    passphrase: bytes | None = None,
    comment: str = "jit-ssh audit key",
) -> str:
    """Write the key to ``path`` (OpenSSH format, 0600) and its public half to
    ``path.pub`` (0644); never overwrites either. Returns the public key line."""
    if not isinstance(private_key, ed25519.Ed25519PrivateKey):
        raise AuditKeyError("the audit key must be an Ed25519 private key", field="audit_key")
    p = Path(path)
    pub_path = p.with_name(p.name + ".pub")
    # Check the .pub first: a stale one beside a new key would make every
    # checkpoint fail against the key an auditor was given.
    if pub_path.exists():
        raise FileExistsError(
            errno.EEXIST, "refusing to overwrite an existing audit public key", str(pub_path)
        )
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, enc
    )
    pub = audit_public_key_text(private_key, comment)
    write_new_file(p, pem, 0o600)
    write_new_file(pub_path, (pub + "\n").encode("ascii"), 0o644)
    return pub


def load_audit_key(
    path: str | os.PathLike[str], *, passphrase: bytes | None = None
) -> ed25519.Ed25519PrivateKey:
    """Load the audit private key (OpenSSH format), as ``ca.keys.load_ca_key`` does:
    refuses a file group or others may read (:class:`InsecureKeyFile`), an
    encrypted key without passphrase, a wrong passphrase, and non-Ed25519 keys."""
    p = Path(path)
    key = load_private_key_file(
        p, passphrase=passphrase, what="audit", field="audit_key", error=AuditKeyError
    )
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise AuditKeyError(
            f"{p}: the audit key must be Ed25519, not {type(key).__name__}", field="audit_key"
        )
    return key


def load_audit_public_keys(text: str) -> list[ed25519.Ed25519PublicKey]:
    """Every key in ``.pub``-style text (one a line; blank and ``#`` lines skipped)."""
    keys = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pub = parse_public_key(line, field=f"audit key line {n}")
        if pub.key_type != "ssh-ed25519":
            raise AuditKeyError(
                f"audit key line {n}: must be ssh-ed25519, not {pub.key_type}", field="pubkey"
            )
        keys.append(pub.key)
    return keys


# ---------------------------------------------------------------------- export

_EV_PREFIX = b'{"kind":"event","prev_hash":"'
_P0 = len(_EV_PREFIX)  # prev_hash hex starts here
_P1 = _P0 + 64
_MID = b'","hash":"'
_H0 = _P1 + len(_MID)  # hash hex starts here
_H1 = _H0 + 64
_B0 = _H1 + 2  # after '",': the body's first key; the body is b"{" + line[_B0:]


def event_line(event: AuditEvent) -> str:
    """One export line (no newline). Also the event's line in the server log."""
    try:
        body = event.body()
    except AuditError:
        body = None
    if (
        body is not None
        and type(event.prev_hash) is str
        and type(event.hash) is str
        and _HEX64.match(event.prev_hash)
        and _HEX64.match(event.hash)
    ):
        return f'{{"kind":"event","prev_hash":"{event.prev_hash}","hash":"{event.hash}",{body[1:].decode("utf-8")}'
    # A row the database holds but make_event would never have produced (a
    # float in data, a mangled hash): write it faithfully in plain JSON, so
    # that verify reports the event instead of export crashing.
    obj = {"kind": "event", "prev_hash": event.prev_hash, "hash": event.hash, **event.body_dict()}
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=repr)


def checkpoint_line(cp: Checkpoint) -> str:
    """One export line (no newline): ``kind`` first, then the fields, sorted."""
    rest = {
        "at": cp.at,
        "event_id": cp.event_id,
        "head_hash": cp.head_hash,
        "key_fingerprint": cp.key_fingerprint,
        "signature": cp.signature,
    }
    return (
        '{"kind":"checkpoint",'
        + json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)[1:]
    )


def export_lines(events: Iterable[AuditEvent], checkpoints: Iterable[Checkpoint]) -> Iterator[str]:
    """The export, line by line (each ending in ``\\n``), streaming ``events``.

    Events are written in the order given (the database's id order; they are
    not sorted here, so a tampered table shows up as it is). Each checkpoint
    follows the event it signs; checkpoints of events before the first come
    first, those past the last come last. ``checkpoints`` is read whole (there
    is one per N events).
    """
    pending = sorted(checkpoints, key=lambda c: c.event_id)
    i = 0
    for ev in events:
        while i < len(pending) and pending[i].event_id < ev.id:
            yield checkpoint_line(pending[i]) + "\n"
            i += 1
        yield event_line(ev) + "\n"
        while i < len(pending) and pending[i].event_id == ev.id:
            yield checkpoint_line(pending[i]) + "\n"
            i += 1
    for cp in pending[i:]:
        yield checkpoint_line(cp) + "\n"


def _parse_obj(obj: Any, n: int) -> AuditEvent | Checkpoint:
    if type(obj) is not dict:
        raise InvalidAuditExport(f"expected a JSON object, got {type(obj).__name__}", line=n)
    kind = obj.get("kind")
    if kind == "event":
        expected = _EVENT_KEYS
    elif kind == "checkpoint":
        expected = _CHECKPOINT_KEYS
    else:
        raise InvalidAuditExport(
            f'"kind" must be "event" or "checkpoint", got {str(kind)[:40]!r}', line=n, field="kind"
        )
    keys = set(obj)
    if keys != expected:
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        what = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(extra)}" if extra else "",
            )
            if part
        )
        raise InvalidAuditExport(f"{kind}: {what}", line=n, field=(missing or extra)[0])

    def need(name: str, types: tuple[type, ...]) -> Any:
        v = obj[name]
        if type(v) not in types:
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise InvalidAuditExport(
                f"{kind}: {name} must be {names}, got {type(v).__name__}", line=n, field=name
            )
        return v

    str_or_none = (str, type(None))
    if kind == "event":
        return AuditEvent(
            id=need("id", (int,)),
            at=need("at", (str,)),
            type=need("type", (str,)),
            actor=need("actor", str_or_none),
            request_id=need("request_id", str_or_none),
            data=need("data", (dict,)),
            prev_hash=need("prev_hash", (str,)),
            hash=need("hash", (str,)),
        )
    return Checkpoint(
        event_id=need("event_id", (int,)),
        head_hash=need("head_hash", (str,)),
        at=need("at", (str,)),
        key_fingerprint=need("key_fingerprint", (str,)),
        signature=need("signature", (str,)),
    )


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the LAST of two equal keys, while a reader (or grep)
    # may see the first: one line, two meanings. Never accept that.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return obj


def _canonical_line(item: AuditEvent | Checkpoint) -> bytes:
    """The exact bytes :func:`export_lines` writes for ``item`` (no newline)."""
    text = checkpoint_line(item) if type(item) is Checkpoint else event_line(item)  # type: ignore[arg-type]
    return text.encode("utf-8", "surrogatepass")


def _parse_line(line: str | bytes, n: int) -> AuditEvent | Checkpoint | None:
    """One export line, parsed, and refused unless it is byte for byte what
    :func:`export_lines` writes for the event or checkpoint it parses to.

    A line that means something other than what it shows (a duplicate key, of
    which JSON parsers keep the last) or that can be written in more than one
    way (key order, whitespace, escapes) is refused, naming the line: the
    export is evidence, and evidence has one spelling.
    """
    if len(line) > MAX_LINE_BYTES:
        raise InvalidAuditExport(f"longer than {MAX_LINE_BYTES} bytes", line=n)
    if not line.strip():
        return None
    try:
        obj = json.loads(line, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as e:
        raise InvalidAuditExport(
            f"duplicate key {str(e)[:64]!r}: not the canonical form of an export line",
            line=n,
            field=str(e)[:64],
        ) from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise InvalidAuditExport(f"not valid JSON ({e})", line=n) from None
    except RecursionError:
        raise InvalidAuditExport("nested too deeply", line=n) from None
    item = _parse_obj(obj, n)
    raw = line.encode("utf-8", "surrogatepass") if type(line) is str else line
    if raw.endswith(b"\n"):
        raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
    if raw != _canonical_line(item):
        raise InvalidAuditExport(
            f"{obj['kind']} is not in canonical form (key order, whitespace or escapes differ from what "
            "`jit-ssh audit export` writes); verify the export as it was written, not a reformatted copy",
            line=n,
        )
    return item


def iter_export(lines: Iterable[str | bytes]) -> Iterator[AuditEvent | Checkpoint]:
    """Parse an export lazily. Blank lines are skipped; anything else that is
    not an event or checkpoint object raises :class:`InvalidAuditExport` with
    its line number. Field *types* are checked here; whether the values are
    what was hashed and signed is for the verifier."""
    for n, line in enumerate(lines, 1):
        item = _parse_line(line, n)
        if item is not None:
            yield item


def parse_export(lines: Iterable[str | bytes]) -> tuple[list[AuditEvent], list[Checkpoint]]:
    """An export as (events, checkpoints), in file order. Holds everything in memory;
    :func:`verify_export_file` streams instead."""
    events: list[AuditEvent] = []
    checkpoints: list[Checkpoint] = []
    for item in iter_export(lines):
        (events if type(item) is AuditEvent else checkpoints).append(item)  # type: ignore[arg-type]
    return events, checkpoints


# ---------------------------------------------------------------------- verify


class ProblemKind(enum.StrEnum):
    EDITED = "edited"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    REWRITTEN = "rewritten"
    BAD_CHECKPOINT = "bad_checkpoint"
    UNSIGNED_TAIL = "unsigned_tail"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Problem:
    """The first thing wrong with the chain. ``event_id`` is the event named
    (see the module docstring for which one each kind names); ``until_id``
    closes a range where one is known (``rewritten``, ``deleted``,
    ``unsigned_tail``); ``line`` is the export line, when verifying a file."""

    event_id: int
    kind: ProblemKind
    message: str
    until_id: int | None = None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """``head_id``/``head_hash``: the last event that passed every check (on
    success, the export's head: keep ``head_hash`` as the ``start_hash`` of the
    next ``--since`` export). ``signed_through``: the last event id a valid
    signed checkpoint covers. ``first_id``: where the export starts."""

    ok: bool
    events_checked: int
    checkpoints_checked: int
    head_id: int | None
    head_hash: str | None
    problem: Problem | None = None
    first_id: int | None = None
    signed_through: int | None = None


class _Verifier:
    """The chain checks, fed one event at a time (so a file never sits in memory).

    Events arrive as ``(id, prev_hex, hash_hex, body_ok, line)``; whoever feeds
    them has already compared the body's hash with ``hash_hex`` (``body_ok``).
    """

    __slots__ = (
        "keys", "start_hex", "expect_first_id", "allow_unsigned_tail", "pending",
        "first_id", "start_prev", "head_id", "last_hash", "last_prev", "good",
        "signed_through", "events", "checkpoints", "problem", "log", "late",
    )  # fmt: skip

    def __init__(
        self,
        public_keys: Sequence[ed25519.Ed25519PublicKey] | None,
        start_hash: bytes | None,
        expect_first_id: int | None,
        allow_unsigned_tail: bool,
        *,
        keep_log: bool = False,
    ) -> None:
        self.keys: dict[str, ed25519.Ed25519PublicKey] | None = None
        if public_keys is not None:
            self.keys = {audit_key_fingerprint(k): k for k in public_keys}
        if start_hash is not None and len(start_hash) != 32:
            raise ValueError(f"start_hash must be 32 bytes, not {len(start_hash)}")
        self.start_hex = start_hash.hex() if start_hash is not None else None
        self.expect_first_id = expect_first_id
        self.allow_unsigned_tail = allow_unsigned_tail
        self.pending: dict[int, list[tuple[Checkpoint, int | None]]] = {}
        self.first_id: int | None = None
        self.start_prev: str | None = None  # what the first event links to
        self.head_id: int | None = None
        self.last_hash: str | None = None
        self.last_prev: str | None = None
        # Event ids confirmed by a checkpoint (or an anchored start), sorted.
        self.good: list[int] = []
        self.signed_through: int | None = None
        self.events = 0
        self.checkpoints = 0
        self.problem: Problem | None = None
        # Streaming a file, a checkpoint line may come after later events
        # (written at the end, say): keep every raw hash, 32 bytes an event,
        # to check it then. Given up front (verify_chain), none is needed.
        self.log: bytearray | None = bytearray() if keep_log else None
        self.late: list[tuple[Checkpoint, int | None]] = []

    # -- problems

    def fail(
        self,
        event_id: int,
        kind: ProblemKind,
        message: str,
        *,
        until: int | None = None,
        line: int | None = None,
    ) -> None:
        if self.problem is None:
            self.problem = Problem(event_id, kind, message, until, line)

    # -- checkpoints

    def add_checkpoint(self, cp: Checkpoint, line: int | None) -> None:
        eid = cp.event_id
        if self.head_id is None or eid > self.head_id:
            self.pending.setdefault(eid, []).append((cp, line))
        elif eid == self.head_id:
            self._check_cp(cp, line, self.last_hash)
        else:
            assert self.first_id is not None
            if eid == self.first_id - 1:
                self._check_cp(cp, line, self.start_prev, start=True)
            elif eid >= self.first_id:
                # Checked at the end, in id order, so that the range a
                # "rewritten" names does not depend on the order of the lines.
                self.late.append((cp, line))
            # else: it signs an event before this export's start; nothing here to check it against.

    def _authentic(self, cp: Checkpoint, line: int | None) -> bool:
        """Signed by one of the given keys (always true when no keys were given)."""
        if self.keys is None:
            return True
        eid = cp.event_id
        key = self.keys.get(cp.key_fingerprint)
        if key is None:
            self.fail(
                eid,
                ProblemKind.BAD_CHECKPOINT,
                f"the checkpoint of event {eid} is signed by an unknown key "
                f"{str(cp.key_fingerprint)[:80]} (give every audit public key, old ones too)",
                line=line,
            )
            return False
        if not _signature_ok(cp, key):
            self.fail(
                eid,
                ProblemKind.BAD_CHECKPOINT,
                f"the checkpoint of event {eid} has a signature that does not verify "
                f"under {cp.key_fingerprint}",
                line=line,
            )
            return False
        return True

    def _check_cp(
        self, cp: Checkpoint, line: int | None, actual: str | None, *, start: bool = False
    ) -> None:
        if not self._authentic(cp, line):
            return
        eid = cp.event_id
        self.checkpoints += 1
        if cp.head_hash != actual:
            assert self.first_id is not None
            if start:
                self.fail(
                    self.first_id,
                    ProblemKind.REWRITTEN,
                    f"a checkpoint signed at {cp.at} says event {eid} had hash {str(cp.head_hash)[:64]}, "
                    f"but event {self.first_id} links to {actual}: the events were rewritten",
                    line=line,
                )
                return
            # Checkpoints of earlier events read so far (held back, see
            # add_checkpoint) may narrow the range: check them first.
            earlier = sorted(
                (c for c in self.late if c[0].event_id < eid), key=lambda c: c[0].event_id
            )
            if earlier:
                self.late = [c for c in self.late if c[0].event_id >= eid]
                for c, cline in earlier:
                    self._check_late(c, cline)
                    if self.problem is not None:
                        return
            i = bisect.bisect_left(self.good, eid)
            since = self.good[i - 1] + 1 if i else self.first_id
            self.fail(
                since,
                ProblemKind.REWRITTEN,
                f"the checkpoint of event {eid} signed at {cp.at} says its hash was "
                f"{str(cp.head_hash)[:64]}, but the chain has {actual}: events were rewritten and their "
                f"hashes recomputed, starting somewhere in events {since}..{eid}",
                until=eid,
                line=line,
            )
            return
        bisect.insort(self.good, eid)
        if self.keys is not None and (self.signed_through is None or eid > self.signed_through):
            self.signed_through = eid

    # -- events

    def begin(self, eid: int, prev: str, line: int | None) -> None:
        """The first event: fix what it must link to, check checkpoints before it."""
        self.first_id = eid
        if self.expect_first_id is not None and eid != self.expect_first_id:
            if eid > self.expect_first_id:
                self.fail(
                    self.expect_first_id,
                    ProblemKind.DELETED,
                    f"the export should start at event {self.expect_first_id} but starts at {eid}: "
                    f"events {self.expect_first_id}..{eid - 1} are missing",
                    until=eid - 1,
                    line=line,
                )
            else:
                self.fail(
                    eid,
                    ProblemKind.INSERTED,
                    f"the export should start at event {self.expect_first_id} but starts at {eid}",
                    line=line,
                )
            return
        if self.start_hex is not None:
            self.start_prev = self.start_hex
            self.good = [eid - 1]
        elif eid == 1:
            self.start_prev = GENESIS_HEX
            self.good = [0]
        else:
            # A --since export: trust its first link; the checkpoints after it
            # vouch for it (each signed head hash commits to it).
            self.start_prev = prev if _HEX64.match(prev) else GENESIS_HEX
        self.last_hash = self.start_prev
        for cid in sorted(k for k in self.pending if k < eid):
            for cp, cline in self.pending.pop(cid):
                if cid == eid - 1:
                    self._check_cp(cp, cline, self.start_prev, start=True)
                # Earlier ones sign events outside this export: nothing to compare.

    def bad_link(self, eid: int, prev: str, body_ok: bool, line: int | None) -> None:
        if eid == self.first_id:
            if self.start_hex is not None:
                self.fail(
                    eid,
                    ProblemKind.REWRITTEN,
                    f"event {eid} links to {prev[:64]}, not to the expected start {self.start_hex}: "
                    "the chain before it, or this event, was rewritten",
                    line=line,
                )
            else:
                self.fail(
                    eid,
                    ProblemKind.EDITED,
                    f"event {eid} links to {prev[:64]}, not to {self.start_prev}",
                    line=line,
                )
        elif prev == self.last_prev:
            # The event before this one was spliced in: this one still links
            # to the event before that.
            self.fail(
                eid - 1,
                ProblemKind.INSERTED,
                f"event {eid - 1} was inserted: event {eid} links to event {eid - 2}'s hash",
                line=line,
            )
        elif body_ok:
            # This event is intact, so the previous one was rewritten and its
            # hash recomputed on its own.
            self.fail(
                eid - 1,
                ProblemKind.EDITED,
                f"event {eid - 1} was changed and its hash recomputed: event {eid} links to {prev[:64]}, "
                f"but event {eid - 1} now hashes to {self.last_hash}",
                line=line,
            )
        else:
            self.fail(
                eid,
                ProblemKind.EDITED,
                f"event {eid} does not link to event {eid - 1} and its body does not match its hash "
                "(edited, or events before it deleted and the rest renumbered)",
                line=line,
            )

    def accept(self, eid: int, prev: str, hsh: str, line: int | None) -> None:
        self.events += 1
        self.head_id = eid
        self.last_prev = prev
        self.last_hash = hsh
        if self.log is not None:
            self.log += bytes.fromhex(hsh)
        cps = self.pending.pop(eid, None)
        if cps:
            for cp, cline in cps:
                self._check_cp(cp, cline, hsh)

    def classify_order(
        self, expected: int, got: int, rest: Iterator[int], line: int | None
    ) -> None:
        """An id out of sequence. Which tampering it is depends on what comes later."""
        if got < expected:
            # Any permutation first shows a *larger* id than expected, so a
            # smaller one here is an id we have already seen: a duplicate.
            assert self.first_id is not None
            where = (
                "a second time"
                if got >= self.first_id
                else f"before the export's start ({self.first_id})"
            )
            self.fail(
                got,
                ProblemKind.INSERTED,
                f"event {got} appears {where}, after event {expected - 1}",
                line=line,
            )
            return
        seen_missing: int | None = None
        for later in rest:
            if later == got:
                self.fail(
                    got,
                    ProblemKind.INSERTED,
                    f"an extra event with id {got} appears between events {expected - 1} and {expected}",
                    line=line,
                )
                return
            if seen_missing is None and expected <= later < got:
                seen_missing = later
        if seen_missing is not None:
            self.fail(
                expected,
                ProblemKind.REORDERED,
                f"event {expected} is out of order: event {got} appears before it",
                line=line,
            )
        else:
            self.fail(
                expected,
                ProblemKind.DELETED,
                f"events {expected}..{got - 1} are missing (event {got} follows event {expected - 1})"
                if got - 1 > expected
                else f"event {expected} is missing (event {got} follows event {expected - 1})",
                until=got - 1,
                line=line,
            )

    def _check_late(self, cp: Checkpoint, line: int | None) -> None:
        assert (
            self.log is not None and self.first_id is not None
        )  # only a streamed file holds checkpoints back
        i = (cp.event_id - self.first_id) * 32
        self._check_cp(cp, line, self.log[i : i + 32].hex())

    def finish(self) -> VerifyResult:
        late, self.late = sorted(self.late, key=lambda c: c[0].event_id), []
        for cp, cline in late:
            if self.problem is not None:
                break
            self._check_late(cp, cline)
        if self.problem is None and self.pending:
            # A checkpoint past the last event: the tail it signed is gone.
            # Its signature is checked first: a forged checkpoint is reported
            # as such, not taken as evidence of deletion.
            cid = min(self.pending)
            cp, cline = self.pending[cid][0]
            if self._authentic(cp, cline):
                start = self.head_id + 1 if self.head_id is not None else cid
                end_text = (
                    f"the export ends at event {self.head_id}"
                    if self.head_id is not None
                    else "the export has no events"
                )
                self.fail(
                    start,
                    ProblemKind.DELETED,
                    f"a checkpoint signs event {cid} but {end_text}: events {start}..{cid} are missing",
                    until=cid,
                    line=cline,
                )
        if (
            self.problem is None
            and self.keys is not None
            and not self.allow_unsigned_tail
            and self.head_id is not None
            and (self.signed_through is None or self.signed_through < self.head_id)
        ):
            assert self.first_id is not None
            start = max(self.first_id, (self.signed_through or 0) + 1)
            self.fail(
                start,
                ProblemKind.UNSIGNED_TAIL,
                f"events {start}..{self.head_id} are not covered by a signed checkpoint "
                "(export again: the server signs the head on export)",
                until=self.head_id,
            )
        return VerifyResult(
            ok=self.problem is None,
            events_checked=self.events,
            checkpoints_checked=self.checkpoints,
            head_id=self.head_id,
            head_hash=self.last_hash if self.head_id is not None else None,
            problem=self.problem,
            first_id=self.first_id,
            signed_through=self.signed_through,
        )


# An event as the verifier sees it: id, prev_hash hex, hash hex, body hash ok, line number.
_Link = tuple[int, str, str, bool, int | None]


def _ids_after(items: Iterator[_Link | tuple[Checkpoint, int | None]]) -> Iterator[int]:
    """The ids of the events still to come (to tell a deletion from a reordering)."""
    try:
        for it in items:
            if len(it) != 2:
                yield it[0]  # type: ignore[misc]
    except AuditError:
        return  # a malformed line further on: classify with what was seen; the first problem stands


def _run(items: Iterator[_Link | tuple[Checkpoint, int | None]], v: _Verifier) -> VerifyResult:
    expected: int | None = None
    for item in items:
        if len(item) == 2:
            v.add_checkpoint(*item)  # type: ignore[arg-type]
            if v.problem is not None:
                break
            continue
        eid, prev, hsh, body_ok, line = item  # type: ignore[misc]
        if eid != expected:
            if expected is None:
                v.begin(eid, prev, line)
                if v.problem is not None:
                    break
            elif not body_ok and prev == v.last_hash:
                # It links where event `expected` belongs but does not hash:
                # that event, with its id changed, not a moved one.
                v.fail(
                    expected,
                    ProblemKind.EDITED,
                    f"event {expected} was edited: its id was changed to {eid}",
                    line=line,
                )
                break
            else:
                v.classify_order(expected, eid, _ids_after(items), line)
                break
        if prev != v.last_hash:
            v.bad_link(eid, prev, body_ok, line)
            break
        if not body_ok:
            v.fail(
                eid,
                ProblemKind.EDITED,
                f"event {eid} was edited: its contents do not hash to its stored hash",
                line=line,
            )
            break
        v.accept(eid, prev, hsh, line)
        if v.problem is not None:
            break
        expected = eid + 1
    return v.finish()


def _link_of(ev: AuditEvent, line: int | None) -> _Link:
    if type(ev.id) is not int:
        raise InvalidAuditEvent(f"event id must be an int, got {ev.id!r}", field="id")
    prev = ev.prev_hash if type(ev.prev_hash) is str else ""
    hsh = ev.hash if type(ev.hash) is str else ""
    ok = False
    if _HEX64.match(prev):
        # No canonical_json type walk here: it guards what gets *hashed*
        # (make_event). Anything it would refuse (a float, NaN) encodes to
        # text the server never hashed, so the comparison fails on its own;
        # skipping the walk halves the cost per event.
        try:
            body = json.dumps(
                ev.body_dict(),
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
                allow_nan=False,
            ).encode("utf-8")
        except (TypeError, ValueError):  # unsortable keys, NaN, lone surrogates, huge ints
            body = None
        ok = body is not None and hashlib.sha256(bytes.fromhex(prev) + body).hexdigest() == hsh
    return (ev.id, prev, hsh, ok, line)


def verify_chain(
    events: Iterable[AuditEvent],
    checkpoints: Iterable[Checkpoint],
    public_keys: Sequence[ed25519.Ed25519PublicKey] | None,
    *,
    start_hash: bytes | None = None,
    expect_first_id: int | None = None,
    allow_unsigned_tail: bool = False,
) -> VerifyResult:
    """Verify a chain segment (streamed) against its checkpoints.

    ``public_keys``: the audit public keys checkpoints may be signed with;
    ``None`` skips signatures (and so proves nothing against an attacker).
    ``start_hash``: the hash the first event must link to (the head of an
    earlier verified export); by default event 1 links to the genesis hash
    and a later first event is trusted as the start of a ``--since`` export.
    ``expect_first_id``: fail unless the export starts there (1 for a full
    export). ``allow_unsigned_tail``: accept events after the last checkpoint.
    Checkpoints may come in any order; one of an event before ``first_id - 1``
    has nothing in this segment to be compared with and is skipped.
    See the module docstring for what each :class:`ProblemKind` means.
    """
    v = _Verifier(public_keys, start_hash, expect_first_id, allow_unsigned_tail)
    for cp in checkpoints:
        v.pending.setdefault(cp.event_id, []).append((cp, None))
    return _run((_link_of(ev, None) for ev in events), v)


def _file_items(
    lines: Iterable[bytes | str], *, check_fast: bool = False
) -> Iterator[_Link | tuple[Checkpoint, int | None]]:
    """Export lines as links and checkpoints. ``check_fast``: also parse the
    lines the fast path accepted, to refuse non-canonical ones (needed only
    when no audit key authenticates the hashes; see the module docstring)."""
    sha256 = hashlib.sha256
    fromhex = bytes.fromhex
    prefix, mid = _EV_PREFIX, _MID
    p0, p1, h0, h1, b0 = _P0, _P1, _H0, _H1, _B0
    last_hash = b""
    last_raw = b""
    for n, line in enumerate(lines, 1):
        if type(line) is str:
            line = line.encode("utf-8")
        if len(line) > MAX_LINE_BYTES:
            raise InvalidAuditExport(f"longer than {MAX_LINE_BYTES} bytes", line=n)
        end = len(line)
        if line.endswith(b"\n"):
            end -= 2 if line.endswith(b"\r\n") else 1
        # Fast path: the layout event_line writes. The body is a literal
        # slice, so it is hashed as it stands; its id is the last top-level
        # "id" key (canonical order puts only request_id and type after it,
        # and their string values cannot hold an unescaped quote).
        if (
            line.startswith(prefix)
            and line[p1:h0] == mid
            and line[h1:b0] == b'",'
            and line[end - 1 : end] == b"}"
        ):
            prev = line[p0:p1]
            hsh = line[h0:h1]
            j = line.rfind(b',"id":', b0, end)
            k = line.find(b",", j + 6, end) if j >= 0 else -1
            digits = line[j + 6 : k]
            if (
                0 < len(digits) <= 19
                and digits.isdigit()
                and (digits[:1] != b"0" or len(digits) == 1)
            ):
                # The link check will want prev == the previous hash: reuse
                # its raw bytes rather than decoding hex again.
                if prev == last_hash:
                    raw = last_raw
                else:
                    try:
                        raw = fromhex(prev.decode("ascii"))
                    except (ValueError, UnicodeDecodeError):
                        raw = b""
                digest = sha256(raw + b"{" + line[b0:end]).digest() if len(raw) == 32 else b""
                if digest.hex().encode("ascii") == hsh:
                    if check_fast:
                        _parse_line(line, n)
                    last_hash, last_raw = hsh, digest
                    yield (int(digits), prev.decode("ascii"), hsh.decode("ascii"), True, n)
                    continue
                # No match: the slow way below parses the line, refuses it
                # unless it is canonical, and names the edit if it is.
        item = _parse_line(line, n)
        if item is None:
            continue
        if type(item) is Checkpoint:
            yield (item, n)  # type: ignore[misc]
            continue
        link = _link_of(item, n)  # type: ignore[arg-type]
        last_hash, last_raw = b"", b""
        if link[3]:
            last_hash, last_raw = link[2].encode("ascii"), bytes.fromhex(link[2])
        yield link


def verify_export_lines(
    lines: Iterable[bytes | str],
    public_keys: Sequence[ed25519.Ed25519PublicKey] | None,
    *,
    start_hash: bytes | None = None,
    expect_first_id: int | None = None,
    allow_unsigned_tail: bool = False,
    extra_checkpoints: Iterable[Checkpoint] = (),
) -> VerifyResult:
    """:func:`verify_chain` over export lines (bytes or str), streamed.

    A malformed line raises :class:`InvalidAuditExport` naming it.
    ``extra_checkpoints``: checkpoints kept from earlier exports; one past
    this export's end reports the tail as ``deleted``.
    """
    v = _Verifier(public_keys, start_hash, expect_first_id, allow_unsigned_tail, keep_log=True)
    for cp in extra_checkpoints:
        v.pending.setdefault(cp.event_id, []).append((cp, None))
    return _run(_file_items(lines, check_fast=public_keys is None), v)


def verify_export_file(
    path: str | os.PathLike[str] | BinaryIO,
    public_keys: Sequence[ed25519.Ed25519PublicKey] | None,
    *,
    start_hash: bytes | None = None,
    expect_first_id: int | None = None,
    allow_unsigned_tail: bool = False,
    extra_checkpoints: Iterable[Checkpoint] = (),
) -> VerifyResult:
    """Verify an export file (a path, or a binary file object such as
    ``sys.stdin.buffer``) without holding it in memory. Same checks and
    keywords as :func:`verify_export_lines`."""

    def run(f: BinaryIO) -> VerifyResult:
        # readline with a limit, so one hostile endless line cannot take all
        # memory; a line cut at the limit is then refused as too long.
        sentinel: Any = (
            "" if isinstance(f, io.TextIOBase) else b""
        )  # sys.stdin rather than its .buffer
        lines = iter(lambda: f.readline(MAX_LINE_BYTES + 1), sentinel)
        return verify_export_lines(
            lines,
            public_keys,
            start_hash=start_hash,
            expect_first_id=expect_first_id,
            allow_unsigned_tail=allow_unsigned_tail,
            extra_checkpoints=extra_checkpoints,
        )

    if hasattr(path, "readline"):
        return run(path)  # type: ignore[arg-type]
    with open(path, "rb") as f:  # type: ignore[arg-type]
        return run(f)
