"""The hash chain: canonical event bodies, chain hashing, linking, signed checkpoints.

An event's body is the canonical JSON of six fields; its hash is
``SHA-256(prev_hash || body)``; a checkpoint is an Ed25519 signature of the
head hash by the audit key. The design, and what it does and does not prove,
is in ``docs/audit.md``. Pure: no clock (every time is an argument), no I/O.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from .errors import AuditError, AuditKeyError, InvalidAuditEvent
from .keys import audit_key_fingerprint

__all__ = [
    "JsonValue",
    "JsonObject",
    "GENESIS_HASH",
    "GENESIS_HEX",
    "CHECKPOINT_DOMAIN",
    "MAX_BODY_BYTES",
    "canonical_json",
    "chain_hash",
    "format_at",
    "AuditEvent",
    "make_event",
    "Checkpoint",
    "checkpoint_payload",
    "sign_checkpoint",
    "verify_checkpoint",
]

#: What event 1 links to.
GENESIS_HASH: Final[bytes] = bytes(32)
GENESIS_HEX: Final[str] = GENESIS_HASH.hex()
#: Signed inside every checkpoint payload; "v1" so a future payload layout
#: can never be confused with this one.
CHECKPOINT_DOMAIN: Final = "jit-ssh-audit-checkpoint-v1"
#: make_event refuses a larger body: an audit event records a decision, not a
#: file, and a bound keeps a hostile export from exhausting memory.
MAX_BODY_BYTES: Final = 64 * 1024

#: What canonical JSON holds: no floats (see canonical_json).
JsonValue: TypeAlias = "None | bool | int | str | list[JsonValue] | dict[str, JsonValue]"
#: An event's ``data``.
JsonObject: TypeAlias = dict[str, JsonValue]

_MAX_DEPTH = 32
_MAX_NAME = 256
# Shared with export and verify: what a stored hash must look like.
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_TYPE = re.compile(r"[a-z][a-z0-9_.\-]{0,63}\Z")
# One spelling per instant, fixed width (always microseconds, always Z), as
# format_at writes it: string order is then time order, and the hashed text
# of a time never depends on how a caller chose to print it.
_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")


# ------------------------------------------------------------ canonical JSON


def _check_json(obj: object, path: str, depth: int) -> None:
    # json.dumps alone would accept floats, tuples, int-keyed dicts (turning
    # the keys into strings) and int/str subclasses (IntEnum prints as its
    # name in some versions): each a way for two equal-looking values to hash
    # differently, or for a value to change on a round trip. So walk first.
    t = type(obj)
    if t is str or t is bool or obj is None:
        return
    if t is int:
        return
    if isinstance(obj, dict) and t is dict:
        if depth >= _MAX_DEPTH:
            raise InvalidAuditEvent(f"{path}: nested deeper than {_MAX_DEPTH} levels", field=path)
        for k, v in obj.items():
            if type(k) is not str:
                raise InvalidAuditEvent(
                    f"{path}: keys must be strings, not {type(k).__name__} ({k!r})", field=path
                )
            _check_json(v, f"{path}.{k}", depth + 1)
        return
    if isinstance(obj, list) and t is list:
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


def _dumps(obj: object) -> bytes:
    """The canonical encoding, without the type walk (see canonical_json)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def canonical_json(obj: object) -> bytes:
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
        return _dumps(obj)
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
    # isoformat, not strftime: glibc's %Y does not pad years before 1000 to
    # four digits, and the result would fail the check every reader applies.
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _check_at(at: object, field: str = "at") -> str:
    if not isinstance(at, str) or type(at) is not str or not _AT.match(at):
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


def _check_name(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or type(value) is not str or not value or len(value) > _MAX_NAME:
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

    Built by :func:`make_event` (which validates and hashes), or from a stored
    row or an export line (which the verifier then checks: the fields are not
    trusted to be what was hashed). ``data`` is a plain dict (a frozen
    dataclass cannot freeze it): do not mutate it; :func:`make_event` gives
    each event its own copy.
    """

    id: int
    at: str
    type: str
    actor: str | None
    request_id: str | None
    data: JsonObject = field(hash=False)
    prev_hash: str
    hash: str

    def body_dict(self) -> JsonObject:
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
    data: Mapping[str, JsonValue],
) -> AuditEvent:
    """The event that follows ``prev`` (``None`` for the first, id 1).

    Validates every field (naming it in :class:`InvalidAuditEvent`): ids are
    consecutive, ``at`` is a UTC time string (:func:`format_at`; the caller's
    clock, never read here), ``type`` is a short lowercase name such as
    ``certificate.issued``, ``data`` is canonical-JSON-able and the body at
    most :data:`MAX_BODY_BYTES`.
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
    own_data: JsonObject = json.loads(body)["data"]
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


def _body_hash_ok(ev: AuditEvent) -> bool:
    """Whether ``ev``'s body, linked to its ``prev_hash``, hashes to its ``hash``.

    No canonical_json type walk here: that guards what gets *hashed*
    (make_event). Anything it would refuse (a float, NaN) encodes to text the
    server never hashed, so the comparison fails on its own; skipping the walk
    halves the cost per event.
    """
    prev = ev.prev_hash
    if type(prev) is not str or not _HEX64.match(prev):
        return False
    try:
        body = _dumps(ev.body_dict())
    except (TypeError, ValueError):  # unsortable keys, NaN, lone surrogates, huge ints
        return False
    return hashlib.sha256(bytes.fromhex(prev) + body).hexdigest() == ev.hash


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
    # A checkpoint read from a row or a file may hold anything: refuse, never raise.
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
