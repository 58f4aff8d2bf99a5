"""Issuing and inspecting OpenSSH user certificates.

The certificate is built by cryptography's :class:`SSHCertificateBuilder`;
nothing here encodes a certificate by hand. What this module adds is the
rules of DESIGN.md: the window is exactly the approved duration
(``valid_before - valid_after == duration``), the serial is random and never 0,
principals and options are validated before they reach the builder, and a
certificate is only "verified" when it was signed by a key we trust (the
builder's ``verify_cert_signature()`` alone does not say *which* key signed).
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    SSHCertificateBuilder,
    SSHCertificateType,
    load_ssh_public_identity,
)

from . import wire
from .errors import (
    InvalidCertificate,
    InvalidCriticalOption,
    InvalidDuration,
    InvalidExtension,
    InvalidPrincipal,
    InvalidSerial,
    InvalidSourceAddress,
    UntrustedCA,
)
from .keys import MAX_KEY_TEXT, CAKey, PublicKey, parse_public_key, public_key_from_crypto
from .names import MAX_PRINCIPAL_LENGTH, check_key_id, check_principal

__all__ = [
    "DEFAULT_EXTENSIONS",
    "KNOWN_EXTENSIONS",
    "KNOWN_CRITICAL_OPTIONS",
    "MAX_DURATION",
    "MAX_PRINCIPALS",
    "MAX_PRINCIPAL_LENGTH",
    "IssuedCertificate",
    "issue_certificate",
    "parse_certificate",
    "verify_certificate",
    "validate_principals",
    "validate_source_address",
    "validate_key_id",
    "make_key_id",
    "new_serial",
]

DEFAULT_EXTENSIONS: tuple[str, ...] = ("permit-pty",)
KNOWN_EXTENSIONS = frozenset(
    {
        "permit-pty",
        "permit-port-forwarding",
        "permit-agent-forwarding",
        "permit-X11-forwarding",
        "permit-user-rc",
    }
)
KNOWN_CRITICAL_OPTIONS = frozenset({"force-command", "source-address"})
#: The hard cap on any certificate's lifetime, whatever a caller asks for.
MAX_DURATION = timedelta(hours=24)
# OpenSSH's own limit (SSHKEY_CERT_MAX_PRINCIPALS) is 256.
MAX_PRINCIPALS = 256
MAX_SOURCE_ADDRESSES = 64
MAX_FORCE_COMMAND = 4096
#: Serials stay below 2**63 so they fit PostgreSQL's signed bigint.
SERIAL_LIMIT = 2**63

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# VALID_CIDR_CHARS in OpenSSH's addr.c.
_SSHD_CIDR_CHARS = frozenset("0123456789abcdefABCDEF.:/")


def new_serial() -> int:
    """A random serial in [1, 2**63): unique enough that a KRL revokes exactly one certificate."""
    return secrets.randbelow(SERIAL_LIMIT - 1) + 1


def validate_principals(principals: Iterable[str], *, field: str = "principals") -> tuple[str, ...]:
    """Check principals and return them as a tuple, in order, duplicates removed.

    Each one goes through :func:`ca.names.check_principal`: sshd matches
    principals against AuthorizedPrincipalsFile lines and splits ``-n a,b`` on
    commas, and the client writes them into ssh_config, so whitespace, commas,
    control characters or a leading ``-`` would make a principal mean
    something else on the host or on the engineer's machine.
    """
    if isinstance(principals, (str, bytes)):
        raise InvalidPrincipal(f"{field} must be a list of names, not one string", field=field)
    try:
        items = iter(principals)
    except TypeError:
        raise InvalidPrincipal(
            f"{field} must be a list of names, not {type(principals).__name__}", field=field
        ) from None
    out: list[str] = []
    for p in items:
        if not isinstance(p, str):
            raise InvalidPrincipal(
                f"{field}: each principal must be a string, got {type(p).__name__}", field=field
            )
        try:
            check_principal(p)
        except InvalidPrincipal as e:
            raise InvalidPrincipal(f"{field}: {e.message}", field=field) from None
        if p not in out:
            out.append(p)
        if len(out) > MAX_PRINCIPALS:
            raise InvalidPrincipal(f"{field}: more than {MAX_PRINCIPALS} principals", field=field)
    if not out:
        # An empty principals list means "any principal" to sshd: never issue that.
        raise InvalidPrincipal(f"{field}: at least one principal is required", field=field)
    return tuple(out)


def validate_source_address(value: str | Sequence[str], *, field: str = "source-address") -> str:
    """Normalise a source-address critical option to sshd's comma-separated CIDR list."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = [v.strip() if isinstance(v, str) else v for v in value]
    else:
        raise InvalidSourceAddress(f"{field} must be a list of CIDRs", field=field)
    if not items or len(items) > MAX_SOURCE_ADDRESSES:
        raise InvalidSourceAddress(
            f"{field} must list 1 to {MAX_SOURCE_ADDRESSES} CIDRs", field=field
        )
    nets = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise InvalidSourceAddress(f"{field}: an entry is empty or not a string", field=field)
        # sshd's addr_match_cidr_list() refuses an entry holding any other
        # character, and then refuses the certificate at every login. Python's
        # ipaddress accepts more: an IPv6 zone id ("fe80::%eth0/64").
        if not set(item) <= _SSHD_CIDR_CHARS:
            raise InvalidSourceAddress(
                f"{field}: {item[:64]!r} is not a valid CIDR for sshd (e.g. 10.0.0.0/8)",
                field=field,
            )
        try:
            # strict: "10.0.0.1/8" is refused, so what the admin wrote is what sshd enforces.
            nets.append(str(ipaddress.ip_network(item, strict=True)))
        except ValueError:
            raise InvalidSourceAddress(
                f"{field}: {item[:64]!r} is not a valid CIDR (e.g. 10.0.0.0/8)", field=field
            ) from None
    return ",".join(nets)


def validate_key_id(key_id: str, *, field: str = "key_id") -> str:
    """See :func:`ca.names.check_key_id`."""
    return check_key_id(key_id, field=field)


def make_key_id(request_id: str, requester: str, approvers: Sequence[str] = ()) -> str:
    """``jit-ssh:req=<id>:user=<requester>:by=<a,b>``: maps every sshd log line to its request."""
    by = ",".join(approvers) if approvers else "-"
    return validate_key_id(f"jit-ssh:req={request_id}:user={requester}:by={by}")


def _check_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    if isinstance(extensions, (str, bytes)) or not isinstance(extensions, Iterable):
        raise InvalidExtension("extensions must be a list of names", field="extensions")
    out = []
    for e in extensions:
        # isinstance first: an unhashable entry (a list) would make the set
        # lookup raise TypeError.
        if not isinstance(e, str) or e not in KNOWN_EXTENSIONS:
            raise InvalidExtension(
                f"extensions: {str(e)[:64]!r} is not one of {', '.join(sorted(KNOWN_EXTENSIONS))}",
                field="extensions",
            )
        if e not in out:
            out.append(e)
    return tuple(sorted(out))


def _check_critical(options: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    for name, value in options.items():
        if name not in KNOWN_CRITICAL_OPTIONS:
            raise InvalidCriticalOption(
                f"critical_options: {str(name)[:64]!r} is not one of {', '.join(sorted(KNOWN_CRITICAL_OPTIONS))}",
                field="critical_options",
            )
        if name == "source-address":
            out[name] = validate_source_address(value)
        else:
            if not isinstance(value, str) or not value.strip():
                raise InvalidCriticalOption(
                    "force-command must be a non-empty command", field="force-command"
                )
            if len(value) > MAX_FORCE_COMMAND or any(ord(c) < 0x20 and c != "\t" for c in value):
                raise InvalidCriticalOption(
                    f"force-command must be one line of at most {MAX_FORCE_COMMAND} characters",
                    field="force-command",
                )
            out[name] = value
    return tuple(sorted(out.items()))


# How many wire strings follow the nonce for each certified key type
# (PROTOCOL.certkeys): Ed25519 "pk"; ECDSA curve and point; RSA e and n.
_KEY_FIELD_COUNT = {"ssh-ed25519": 1, "ssh-rsa": 2}


def _signature_algorithm(blob: bytes) -> str:
    """The algorithm name inside the certificate's signature (``rsa-sha2-512`` for our RSA CAs).

    cryptography does not expose it, so the certificate is walked field by
    field in PROTOCOL.certkeys order up to the signature, itself a buffer of
    ``string algorithm, string signature``.
    """
    r = wire.Reader(blob, context="certificate")
    try:
        cert_type = r.string("key type").decode("ascii").removesuffix("-cert-v01@openssh.com")
        r.string("nonce")
        for _ in range(_KEY_FIELD_COUNT.get(cert_type, 2)):
            r.string("public key field")
        r.uint64("serial")
        r.uint32("type")
        r.string("key id")
        r.string("valid principals")
        r.uint64("valid after")
        r.uint64("valid before")
        r.string("critical options")
        r.string("extensions")
        r.string("reserved")
        r.string("signature key")
        signature = r.sub("signature", context="certificate signature")
        return signature.string("algorithm").decode("ascii")
    except (wire.WireError, UnicodeDecodeError):
        return "unknown"


_MAX_DATETIME_TS = 253402300799  # 9999-12-31T23:59:59Z


def _from_ts(ts: int) -> datetime:
    # ssh-keygen writes valid_before = 2**64-1 for "forever"; datetime stops at year 9999.
    return _EPOCH + timedelta(seconds=min(ts, _MAX_DATETIME_TS))


@dataclass(frozen=True)
class IssuedCertificate:
    """Everything in a user certificate, as ``ssh-keygen -L`` shows it, plus its OpenSSH text."""

    serial: int
    key_id: str
    cert_type: str
    principals: tuple[str, ...]
    valid_after: datetime
    valid_before: datetime
    extensions: tuple[str, ...]
    critical_options: tuple[tuple[str, str], ...]
    public_key: PublicKey
    ca_public_key: PublicKey
    signature_algorithm: str
    openssh: str

    @property
    def duration(self) -> timedelta:
        return self.valid_before - self.valid_after

    @property
    def force_command(self) -> str | None:
        return dict(self.critical_options).get("force-command")

    @property
    def source_address(self) -> str | None:
        return dict(self.critical_options).get("source-address")

    @property
    def blob(self) -> bytes:
        return base64.b64decode(self.openssh.split()[1])

    def is_valid_at(self, now: datetime) -> bool:
        """True when sshd would accept the window at ``now`` (valid_after <= now < valid_before)."""
        return self.valid_after <= now < self.valid_before

    def to_text(self) -> str:
        """A readable description, laid out like ``ssh-keygen -L``."""
        # ssh-keygen writes "(none)" on the heading's own line (a certificate
        # made elsewhere may have no principals: to sshd, valid for any user).
        crit = "".join(f"\n                {k} {v}" for k, v in self.critical_options) or " (none)"
        exts = "".join(f"\n                {e}" for e in self.extensions) or " (none)"
        princ = "".join(f"\n                {p}" for p in self.principals) or " (none)"
        return (
            f"        Type: {self.public_key.key_type}-cert-v01@openssh.com {self.cert_type} certificate\n"
            f"        Public key: {_label(self.public_key)}-CERT {self.public_key.fingerprint}\n"
            f"        Signing CA: {_label(self.ca_public_key)} {self.ca_public_key.fingerprint}"
            f" (using {self.signature_algorithm})\n"
            f'        Key ID: "{self.key_id}"\n'
            f"        Serial: {self.serial}\n"
            f"        Valid: from {_fmt(self.valid_after)} to {_fmt(self.valid_before)}"
            f" ({int(self.duration.total_seconds())} s)\n"
            f"        Principals:{princ}\n"
            f"        Critical Options:{crit}\n"
            f"        Extensions:{exts}\n"
        )


def _label(key: PublicKey) -> str:
    """The short type name ssh-keygen prints: ED25519, ECDSA, RSA."""
    if key.key_type.startswith("ecdsa-"):
        return "ECDSA"
    return key.key_type.removeprefix("ssh-").upper()


def _fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _to_ts(name: str, t: datetime) -> int:
    if not isinstance(t, datetime) or t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    # Floor to the second: certificates carry whole seconds.
    return int((t - _EPOCH) // timedelta(seconds=1))


def _check_duration(duration: timedelta, max_duration: timedelta) -> int:
    if not isinstance(duration, timedelta):
        raise InvalidDuration("duration must be a timedelta", field="duration")
    if duration.microseconds:
        raise InvalidDuration("duration must be a whole number of seconds", field="duration")
    seconds = int(duration.total_seconds())
    if seconds <= 0:
        raise InvalidDuration(
            f"duration must be longer than 0 seconds, got {seconds}", field="duration"
        )
    cap = min(max_duration, MAX_DURATION)
    if duration > cap:
        raise InvalidDuration(
            f"duration {seconds} s is over the maximum of {int(cap.total_seconds())} s",
            field="duration",
        )
    return seconds


def issue_certificate(
    ca: CAKey,
    public_key: PublicKey | str,
    *,
    principals: Sequence[str],
    duration: timedelta,
    key_id: str,
    now: datetime,
    backdate: timedelta = timedelta(0),
    serial: int | None = None,
    extensions: Iterable[str] = DEFAULT_EXTENSIONS,
    force_command: str | None = None,
    source_address: str | Sequence[str] | None = None,
    max_duration: timedelta = MAX_DURATION,
) -> IssuedCertificate:
    """Sign a user certificate for ``public_key``.

    The window is ``[now - backdate, now - backdate + duration)``: its length
    is exactly ``duration``. ``backdate`` (clock-skew allowance) is at most a
    tenth of the duration, so a short grant is not spent on arrival.
    """
    if ca.private is None:
        raise ValueError("the CA key has no private half loaded")
    user_key = parse_public_key(public_key) if isinstance(public_key, str) else public_key
    if not isinstance(user_key, PublicKey):
        raise TypeError("public_key must be a PublicKey or an OpenSSH public key line")
    princ = validate_principals(principals)
    seconds = _check_duration(duration, max_duration)
    if not isinstance(backdate, timedelta) or backdate < timedelta(0) or backdate.microseconds:
        raise InvalidDuration(
            "backdate must be a non-negative whole number of seconds", field="backdate"
        )
    if backdate * 10 > duration:
        raise InvalidDuration(
            f"backdate {int(backdate.total_seconds())} s is more than a tenth of the duration ({seconds} s)",
            field="backdate",
        )
    validate_key_id(key_id)
    if serial is None:
        serial = new_serial()
    elif not isinstance(serial, int) or isinstance(serial, bool) or not 0 < serial < 2**64:
        raise InvalidSerial("serial must be an integer between 1 and 2**64-1", field="serial")
    exts = _check_extensions(extensions)
    crit: dict[str, str] = {}
    if force_command is not None:
        crit["force-command"] = force_command
    if source_address is not None:
        crit["source-address"] = source_address  # type: ignore[assignment]
    crit_items = _check_critical(crit)

    valid_after = _to_ts("now", now) - int(backdate.total_seconds())
    valid_before = valid_after + seconds

    builder = (
        SSHCertificateBuilder()
        .public_key(user_key.key)
        .serial(serial)
        .type(SSHCertificateType.USER)
        .key_id(key_id.encode("ascii"))
        .valid_principals([p.encode("utf-8") for p in princ])
        .valid_after(valid_after)
        .valid_before(valid_before)
    )
    for name, value in crit_items:
        builder = builder.add_critical_option(name.encode("ascii"), value.encode("utf-8"))
    for e in exts:
        builder = builder.add_extension(e.encode("ascii"), b"")
    cert = builder.sign(ca.private)
    text = cert.public_bytes().decode("ascii")
    return IssuedCertificate(
        serial=serial,
        key_id=key_id,
        cert_type="user",
        principals=princ,
        valid_after=_from_ts(valid_after),
        valid_before=_from_ts(valid_before),
        extensions=exts,
        critical_options=crit_items,
        public_key=user_key,
        ca_public_key=ca.public,
        signature_algorithm=_signing_algorithm(ca.public),
        openssh=text,
    )


def _signing_algorithm(ca_key: PublicKey) -> str:
    """What cryptography's builder signs with for this CA key (no need to parse it back out)."""
    if ca_key.key_type == "ssh-rsa":
        return "rsa-sha2-512"  # cryptography always signs RSA certificates with SHA-512
    return ca_key.key_type


def _load(text: str | bytes) -> SSHCertificate:
    if isinstance(text, str):
        try:
            text = text.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidCertificate(
                "certificate must be ASCII text", field="certificate"
            ) from None
    if not isinstance(text, (bytes, bytearray)):
        raise InvalidCertificate("certificate must be text", field="certificate")
    if len(text) > MAX_KEY_TEXT:
        raise InvalidCertificate("certificate is larger than 16 KiB", field="certificate")
    data = bytes(text).strip()
    if not data:
        raise InvalidCertificate("certificate is empty", field="certificate")
    # NotImplementedError: cryptography's answer to an ECDSA point that is not
    # in uncompressed form.
    errors = (ValueError, UnsupportedAlgorithm, TypeError, NotImplementedError)
    try:
        ident = load_ssh_public_identity(data)
    except errors as e:
        raise InvalidCertificate(f"not an OpenSSH certificate: {e}", field="certificate") from None
    if not isinstance(ident, SSHCertificate):
        raise InvalidCertificate(
            "this is a plain public key, not a certificate", field="certificate"
        )
    try:
        # cryptography decodes the signature key only when asked: do it here,
        # so a malformed one is an InvalidCertificate, not a stray ValueError.
        ident.signature_key()
    except errors as e:
        raise InvalidCertificate(
            f"certificate's signing key is malformed: {e}", field="certificate"
        ) from None
    return ident


def _from_crypto(cert: SSHCertificate) -> IssuedCertificate:
    def s(b: bytes) -> str:
        return b.decode("utf-8", "replace")

    text = cert.public_bytes().decode("ascii")
    blob = base64.b64decode(text.split()[1])
    return IssuedCertificate(
        serial=cert.serial,
        key_id=s(cert.key_id),
        cert_type="user" if cert.type == SSHCertificateType.USER else "host",
        principals=tuple(s(p) for p in cert.valid_principals),
        valid_after=_from_ts(cert.valid_after),
        valid_before=_from_ts(cert.valid_before),
        extensions=tuple(sorted(s(k) for k in cert.extensions)),
        critical_options=tuple(sorted((s(k), s(v)) for k, v in cert.critical_options.items())),
        public_key=public_key_from_crypto(cert.public_key()),
        ca_public_key=public_key_from_crypto(cert.signature_key()),
        signature_algorithm=_signature_algorithm(blob),
        openssh=text,
    )


def parse_certificate(text: str | bytes) -> IssuedCertificate:
    """Read an OpenSSH certificate (``*-cert.pub`` text) into an :class:`IssuedCertificate`.

    This does not say who signed it: use :func:`verify_certificate` for that.
    """
    return _from_crypto(_load(text))


def verify_certificate(
    text: str | bytes | IssuedCertificate, trusted: Sequence[PublicKey | CAKey]
) -> IssuedCertificate:
    """Parse a certificate and check it was signed by one of the ``trusted`` CA keys.

    cryptography's ``verify_cert_signature()`` only proves the certificate is
    signed by the key embedded in it; anyone can make such a certificate. So
    the embedded signature key must first equal a trusted CA key.
    """
    raw = text.openssh if isinstance(text, IssuedCertificate) else text
    cert = _load(raw)
    info = _from_crypto(cert)
    blobs = {(k.public if isinstance(k, CAKey) else k).blob for k in trusted}
    if info.ca_public_key.blob not in blobs:
        raise UntrustedCA(
            f"certificate was signed by {info.ca_public_key.fingerprint}, which is not a trusted CA key",
            field="certificate",
        )
    try:
        cert.verify_cert_signature()
    except (InvalidSignature, ValueError, UnsupportedAlgorithm, TypeError, NotImplementedError):
        raise UntrustedCA("certificate signature does not verify", field="certificate") from None
    return info
