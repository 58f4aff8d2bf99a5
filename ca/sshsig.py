"""OpenSSH's SSHSIG signatures (``ssh-keygen -Y sign`` / ``-Y verify``).

The format is described in openssh-portable's ``PROTOCOL.sshsig``. A signature
is a binary blob::

    byte[6]  "SSHSIG"
    uint32   1                      (version)
    string   public key             (SSH wire format)
    string   namespace              (never empty; ties the signature to one use)
    string   reserved               (empty)
    string   hash algorithm         ("sha256" or "sha512")
    string   signature              (string algorithm + string signature bytes)

and what the key actually signs is not the message but
``"SSHSIG" || string namespace || string reserved || string hash_alg ||
string H(message)`` (see :func:`sshsig_signed_data`). ``ssh-keygen`` writes the
blob base64-armored (:func:`armor`, :func:`dearmor`).

:func:`verify` answers *which key* signed; it never decides whether that key
may act. The caller looks the returned fingerprint/blob up among enrolled
keys.

Errors::

    JitSshError
    └── InvalidSignatureError    code "invalid_signature", HTTP 401

:func:`verify` and :func:`dearmor` raise nothing but :class:`InvalidSignatureError`
for bad input, whatever the bytes. Mistakes by the *caller* (an empty
namespace, an unknown hash algorithm asked for when signing, a message that is
not bytes) raise ``ValueError``/``TypeError`` as usual.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from . import wire
from .errors import InvalidKeyError, JitSshError, UnsupportedKeyType, WeakKey
from .keys import (
    MIN_USER_RSA_BITS,
    PublicKey,
    fingerprint_of_blob,
    parse_public_key,
    public_key_from_crypto,
)

__all__ = [
    "InvalidSignatureError",
    "VerifiedSignature",
    "HASH_ALGORITHMS",
    "MAX_SIGNATURE_SIZE",
    "MAX_ARMORED_SIZE",
    "sshsig_signed_data",
    "sign",
    "sign_with",
    "armor",
    "dearmor",
    "verify",
]


class InvalidSignatureError(JitSshError):
    """A signature that is malformed, for another namespace, or does not verify."""

    code = "invalid_signature"
    http_status = 401


_MAGIC: Final = b"SSHSIG"
_VERSION: Final = 1
_BEGIN: Final = "-----BEGIN SSH SIGNATURE-----"
_END: Final = "-----END SSH SIGNATURE-----"
# ssh-keygen wraps the base64 at 70 columns (sshbuf_dtob64 with wrap), although
# PROTOCOL.sshsig says "SHOULD be broken up ... every 76 characters". We write
# what ssh-keygen writes so our .sig files are byte-identical to its own.
_ARMOR_WIDTH: Final = 70

#: The hash algorithms PROTOCOL.sshsig allows. sha512 is ssh-keygen's default.
HASH_ALGORITHMS: Final = frozenset({"sha256", "sha512"})
#: A signature blob larger than this is refused before parsing. The largest
#: legitimate one (RSA 16384: a 2 KiB key and a 2 KiB signature) is ~4.2 KiB.
MAX_SIGNATURE_SIZE: Final = 16 * 1024
#: Armored text larger than this is refused before decoding (16 KiB of base64
#: plus line breaks is ~22.3 KiB).
MAX_ARMORED_SIZE: Final = 24 * 1024

_ECDSA_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "ecdsa-sha2-nistp256": hashes.SHA256,
    "ecdsa-sha2-nistp384": hashes.SHA384,
    "ecdsa-sha2-nistp521": hashes.SHA512,
}
_ECDSA_CURVE_NAMES: Final = {
    "secp256r1": "ecdsa-sha2-nistp256",
    "secp384r1": "ecdsa-sha2-nistp384",
    "secp521r1": "ecdsa-sha2-nistp521",
}
_RSA_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "rsa-sha2-256": hashes.SHA256,
    "rsa-sha2-512": hashes.SHA512,
}
_KEY_TYPES: Final = frozenset({"ssh-ed25519", "ssh-rsa", *_ECDSA_HASHES})


@dataclass(frozen=True)
class VerifiedSignature:
    """Who signed: the signer's public key (wire blob), its type and fingerprint.

    A valid signature proves only that *this* key signed; look
    ``public_key_blob`` (or ``fingerprint``) up among enrolled keys before
    trusting the caller.
    """

    public_key_blob: bytes
    key_type: str
    #: As ``ssh-keygen -l`` prints it: ``SHA256:`` and unpadded base64.
    fingerprint: str
    hash_alg: str

    @property
    def openssh(self) -> str:
        """The signer's key as an ``authorized_keys`` line, without comment."""
        return f"{self.key_type} {base64.b64encode(self.public_key_blob).decode('ascii')}"


# --- reading wire fields ---------------------------------------------------


def _refusal(e: wire.WireError) -> InvalidSignatureError:
    """The :class:`InvalidSignatureError` for a flaw :mod:`ca.wire` found, in this module's words."""
    what = e.context
    if e.problem is wire.Problem.TRUNCATED:
        message = f"{what} is truncated (in its {e.field})"
    elif e.problem is wire.Problem.NOT_UTF8:
        message = f"{what}: the {e.field} is not UTF-8 text"
    elif e.problem is wire.Problem.NEGATIVE:
        message = f"{what}: the {e.field} is negative"
    elif e.problem is wire.Problem.NOT_MINIMAL:
        message = f"{what}: the {e.field} has a superfluous leading zero byte"
    else:
        # TRAILING ("<what> has N trailing byte(s)"): nothing else can fail
        # here, as this module sets no limits and lets NULs through to the
        # namespace and algorithm checks.
        message = e.reason
    return InvalidSignatureError(message, field="signature")


def _show(value: str, limit: int = 64) -> str:
    """A value from the wire, quoted and cut short for an error message."""
    return repr(value[:limit] + ("..." if len(value) > limit else ""))


# --- what is signed ---------------------------------------------------------


def _check_namespace(namespace: str) -> bytes:
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")
    if not namespace:
        # PROTOCOL.sshsig: "The namespace value MUST NOT be the empty string."
        raise ValueError("namespace must not be empty")
    return namespace.encode("utf-8")


def _check_hash_alg(hash_alg: str) -> str:
    if hash_alg not in HASH_ALGORITHMS:
        raise ValueError(f"hash_alg must be one of {sorted(HASH_ALGORITHMS)}, not {hash_alg!r}")
    return hash_alg


def _check_message(message: bytes) -> bytes:
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise TypeError(f"message must be bytes, not {type(message).__name__}")
    return bytes(message)


def sshsig_signed_data(message: bytes, *, namespace: str, hash_alg: str = "sha512") -> bytes:
    """The exact bytes the key signs for ``message`` (PROTOCOL.sshsig section 3).

    ``"SSHSIG" || string namespace || string reserved ("") || string hash_alg ||
    string H(message)``. The message itself is only hashed, so a signature
    through a slow agent or token costs the same for any message size.
    """
    ns = _check_namespace(namespace)
    alg = _check_hash_alg(hash_alg)
    digest = hashlib.new(alg, _check_message(message)).digest()
    # The reserved field is always signed empty: OpenSSH builds the signed
    # data with an empty reserved string whatever the blob carries.
    return (
        _MAGIC
        + wire.string(ns)
        + wire.string(b"")
        + wire.string(alg.encode("ascii"))
        + wire.string(digest)
    )


# --- signing ----------------------------------------------------------------


def _assemble(
    public_key_blob: bytes, namespace: bytes, hash_alg: str, ssh_signature: bytes
) -> bytes:
    return (
        _MAGIC
        + wire.uint32(_VERSION)
        + wire.string(public_key_blob)
        + wire.string(namespace)
        + wire.string(b"")
        + wire.string(hash_alg.encode("ascii"))
        + wire.string(ssh_signature)
    )


def sign_with(
    message: bytes,
    *,
    namespace: str,
    public_key_blob: bytes,
    sign_raw: Callable[[bytes], bytes],
    hash_alg: str = "sha512",
) -> bytes:
    """Sign through a callback: ``sign_raw(data)`` returns an SSH signature blob.

    That blob is ``string algorithm || string signature``, which is what
    ssh-agent (and paramiko's ``AgentKey.sign_ssh_data``) returns. The result
    is checked with :func:`verify` before it is returned, so an agent that
    signed with another key, or fell back to ``ssh-rsa`` (SHA-1), is caught
    here rather than by the server.
    """
    ns = _check_namespace(namespace)
    alg = _check_hash_alg(hash_alg)
    if not isinstance(public_key_blob, (bytes, bytearray)):
        raise TypeError(f"public_key_blob must be bytes, not {type(public_key_blob).__name__}")
    data = sshsig_signed_data(message, namespace=namespace, hash_alg=alg)
    raw: Any = sign_raw(data)
    if not isinstance(raw, (bytes, bytearray)):
        # paramiko's local PKey.sign_ssh_data returns a Message, not bytes
        # (its AgentKey.sign_ssh_data returns bytes): pass .asbytes().
        raise TypeError(f"sign_raw must return bytes, not {type(raw).__name__}")
    blob = _assemble(bytes(public_key_blob), ns, alg, bytes(raw))
    try:
        verify(message, blob, namespace=namespace)
    except InvalidSignatureError as e:
        raise InvalidSignatureError(
            f"the signer returned an unusable signature: {e}", field="signature"
        ) from None
    return blob


def _raw_signer(private_key: Any) -> tuple[PublicKey, Callable[[bytes], bytes]]:
    """The key's public half and a function giving SSH signature blobs."""
    if isinstance(private_key, ed25519.Ed25519PrivateKey):

        def raw(data: bytes) -> bytes:
            return wire.string(b"ssh-ed25519") + wire.string(private_key.sign(data))

    elif isinstance(private_key, ec.EllipticCurvePrivateKey):
        key_type = _ECDSA_CURVE_NAMES.get(private_key.curve.name)
        if key_type is None:
            raise UnsupportedKeyType(
                f"private_key: ECDSA curve {private_key.curve.name} is not an SSH curve "
                "(use P-256, P-384 or P-521)",
                field="private_key",
            )
        hash_cls = _ECDSA_HASHES[key_type]

        def raw(data: bytes) -> bytes:
            r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hash_cls())))
            # RFC 5656 3.1.2: the signature is "mpint r || mpint s" inside a string.
            return wire.string(key_type.encode("ascii")) + wire.string(
                wire.mpint(r) + wire.mpint(s)
            )

    elif isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < MIN_USER_RSA_BITS:
            raise WeakKey(
                f"private_key: RSA keys must have at least {MIN_USER_RSA_BITS} bits, "
                f"this one has {private_key.key_size}",
                field="private_key",
            )

        def raw(data: bytes) -> bytes:
            # Always rsa-sha2-512: PROTOCOL.sshsig forbids legacy ssh-rsa (SHA-1).
            sig = private_key.sign(data, padding.PKCS1v15(), hashes.SHA512())
            return wire.string(b"rsa-sha2-512") + wire.string(sig)

    else:
        raise UnsupportedKeyType(
            f"private_key: cannot sign with {type(private_key).__name__} "
            "(use an Ed25519, ECDSA or RSA key)",
            field="private_key",
        )
    return public_key_from_crypto(private_key.public_key()), raw


def sign(message: bytes, *, namespace: str, private_key: Any, hash_alg: str = "sha512") -> bytes:
    """The binary SSHSIG blob for ``message``, signed with a cryptography private key.

    Ed25519, ECDSA (P-256/384/521, signature as RFC 5656 mpints) and RSA
    (>= 2048 bits, always ``rsa-sha2-512``). Raises
    :class:`~ca.errors.UnsupportedKeyType` or :class:`~ca.errors.WeakKey` for
    other keys.
    """
    public, raw = _raw_signer(private_key)
    return sign_with(
        message, namespace=namespace, public_key_blob=public.blob, sign_raw=raw, hash_alg=hash_alg
    )


# --- armor ------------------------------------------------------------------


def armor(blob: bytes) -> str:
    """The blob as ``ssh-keygen -Y sign`` writes it to ``FILE.sig``."""
    b64 = base64.b64encode(bytes(blob)).decode("ascii")
    lines = [b64[i : i + _ARMOR_WIDTH] for i in range(0, len(b64), _ARMOR_WIDTH)]
    return "\n".join([_BEGIN, *lines, _END]) + "\n"


def dearmor(text: str | bytes) -> bytes:
    """The binary blob inside an armored signature; :class:`InvalidSignatureError` if malformed."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) > MAX_ARMORED_SIZE:
            raise InvalidSignatureError(
                f"armored signature is larger than {MAX_ARMORED_SIZE // 1024} KiB",
                field="signature",
            )
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise InvalidSignatureError(
                "armored signature is not ASCII text", field="signature"
            ) from None
    elif not isinstance(text, str):
        raise InvalidSignatureError(
            f"armored signature must be text, not {type(text).__name__}", field="signature"
        )
    if len(text) > MAX_ARMORED_SIZE:
        raise InvalidSignatureError(
            f"armored signature is larger than {MAX_ARMORED_SIZE // 1024} KiB", field="signature"
        )
    # Tolerate CRLF (a .sig file that went through Windows) and surrounding
    # blank lines; nothing else may sit outside the header and footer.
    lines = text.replace("\r\n", "\n").strip().split("\n")
    if not lines or lines[0] != _BEGIN:
        raise InvalidSignatureError(
            f"armored signature must start with {_BEGIN!r}", field="signature"
        )
    if len(lines) < 2 or lines[-1] != _END:
        raise InvalidSignatureError(f"armored signature must end with {_END!r}", field="signature")
    body = "".join(line.strip() for line in lines[1:-1])
    if not body:
        raise InvalidSignatureError("armored signature is empty", field="signature")
    try:
        blob = base64.b64decode(body.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InvalidSignatureError(
            "armored signature is not valid base64", field="signature"
        ) from None
    return blob


# --- verification -----------------------------------------------------------


@dataclass(frozen=True)
class _Parsed:
    public_key_blob: bytes
    namespace: str
    hash_alg: str
    sig_alg: str
    sig: bytes


def _parse(blob: bytes) -> _Parsed:
    try:
        return _parse_fields(wire.Reader(blob, context="signature"))
    except wire.WireError as e:
        raise _refusal(e) from None


def _parse_fields(r: wire.Reader) -> _Parsed:
    if r.take(len(_MAGIC), "magic") != _MAGIC:
        raise InvalidSignatureError(
            "not an SSH signature (it does not start with 'SSHSIG')", field="signature"
        )
    version = r.uint32("version")
    if version != _VERSION:
        # PROTOCOL.sshsig: "Verifiers MUST reject signatures with versions
        # greater than those they support."
        raise InvalidSignatureError(
            f"unsupported SSH signature version {version} (only 1 is known)", field="signature"
        )
    public_key_blob = r.string("public key")
    # NULs pass here as they always have: a namespace or hash algorithm with
    # one matches no expected value and is refused below for that.
    namespace = r.text("namespace", allow_nul=True)
    reserved = r.string("reserved field")
    hash_alg = r.text("hash algorithm", allow_nul=True)
    inner = r.sub("signature", context="signature's inner signature")
    r.done()
    if reserved:
        # PROTOCOL.sshsig says to ignore a non-empty reserved field, and
        # OpenSSH does, but it is not covered by the signature (the signed
        # data always carries it empty): accepting it would let anyone make
        # endless distinct blobs from one signature.
        raise InvalidSignatureError(
            "the signature's reserved field is not empty", field="signature"
        )
    if hash_alg not in HASH_ALGORITHMS:
        raise InvalidSignatureError(
            f"hash algorithm {_show(hash_alg)} is not allowed (only sha256 and sha512)",
            field="signature",
        )
    sig_alg = inner.text("algorithm", allow_nul=True)
    sig = inner.string("signature bytes")
    inner.done()
    return _Parsed(public_key_blob, namespace, hash_alg, sig_alg, sig)


def _load_public(blob: bytes) -> PublicKey:
    """The signer's key, through the same strict parser as enrolled keys."""
    try:
        key_type = wire.Reader(blob, context="signature's public key").text(
            "key type", allow_nul=True
        )
    except wire.WireError:
        raise InvalidSignatureError(
            "the signature's public key is malformed", field="signature"
        ) from None
    if key_type not in _KEY_TYPES:
        raise InvalidSignatureError(
            f"the signature's public key type {_show(key_type)} is not accepted "
            "(ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa)",
            field="signature",
        )
    line = f"{key_type} {base64.b64encode(blob).decode('ascii')}"
    try:
        return parse_public_key(line, field="signature public key", min_rsa_bits=MIN_USER_RSA_BITS)
    except InvalidKeyError as e:
        raise InvalidSignatureError(
            f"the signature's public key is refused: {e}", field="signature"
        ) from None


def _check_algorithm(key_type: str, sig_alg: str) -> None:
    if key_type == "ssh-rsa":
        if sig_alg == "ssh-rsa":
            raise InvalidSignatureError(
                "signature algorithm 'ssh-rsa' (RSA with SHA-1) is refused; sign with rsa-sha2-512 "
                "(an ssh-agent that ignores the SHA-2 request is older than OpenSSH 7.2)",
                field="signature",
            )
        if sig_alg not in _RSA_HASHES:
            raise InvalidSignatureError(
                f"signature algorithm {_show(sig_alg)} does not fit an ssh-rsa key "
                "(rsa-sha2-256 or rsa-sha2-512)",
                field="signature",
            )
    elif sig_alg != key_type:
        raise InvalidSignatureError(
            f"signature algorithm {_show(sig_alg)} does not fit a {key_type} key", field="signature"
        )


def _ecdsa_r_s(sig: bytes) -> tuple[int, int]:
    """RFC 5656 3.1.2: an ECDSA signature blob is ``mpint r, mpint s``, and nothing after."""
    fields = wire.Reader(sig, context="ECDSA signature")
    try:
        r, s = fields.mpint("r"), fields.mpint("s")
        fields.done()
    except wire.WireError as e:
        raise _refusal(e) from None
    return r, s


def _verify_raw(public: PublicKey, sig_alg: str, sig: bytes, data: bytes) -> None:
    key = public.key
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            if len(sig) != 64:
                raise InvalidSignatureError(
                    f"an Ed25519 signature is 64 bytes, not {len(sig)}", field="signature"
                )
            key.verify(sig, data)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            r, s = _ecdsa_r_s(sig)
            limit = key.curve.key_size
            if not (0 < r and 0 < s and r.bit_length() <= limit and s.bit_length() <= limit):
                raise InvalidSignatureError(
                    "the ECDSA signature's r or s is out of range", field="signature"
                )
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(_ECDSA_HASHES[public.key_type]()))
        elif isinstance(key, rsa.RSAPublicKey):
            size = (key.key_size + 7) // 8
            if len(sig) > size:
                raise InvalidSignatureError(
                    f"the RSA signature is longer than the key ({len(sig)} > {size} bytes)",
                    field="signature",
                )
            # OpenSSH (ssh_rsa_verify) left-pads a short signature, as some
            # signers drop leading zero bytes (about 1 in 256 signatures);
            # do the same so those verify here as they do in sshd.
            sig = sig.rjust(size, b"\x00")
            key.verify(sig, data, padding.PKCS1v15(), _RSA_HASHES[sig_alg]())
        else:  # parse_public_key only yields the three kinds above
            raise InvalidSignatureError(
                f"cannot verify a {public.key_type} signature", field="signature"
            )
    except _CryptoInvalidSignature:
        raise InvalidSignatureError(
            f"the signature does not verify (made by {public.fingerprint}, for another message, "
            "or altered)",
            field="signature",
        ) from None


def verify(message: bytes, signature: bytes, *, namespace: str) -> VerifiedSignature:
    """Check an SSHSIG blob over ``message`` in ``namespace``; return who signed.

    Strict: magic, version 1, exact lengths and no trailing bytes, the
    expected namespace, hash sha256/sha512, a signature algorithm that fits
    the key (never ``ssh-rsa`` SHA-1), RSA keys of 2048 bits or more, a blob
    of at most :data:`MAX_SIGNATURE_SIZE` bytes. Every failure is an
    :class:`InvalidSignatureError` saying what is wrong.

    The answer names the signing key; checking that the key is enrolled (and
    its user enabled) is the caller's job.
    """
    ns = _check_namespace(namespace)
    msg = _check_message(message)
    if isinstance(signature, str):
        raise InvalidSignatureError(
            "signature must be bytes; an armored signature needs dearmor() first", field="signature"
        )
    if not isinstance(signature, (bytes, bytearray, memoryview)):
        raise InvalidSignatureError(
            f"signature must be bytes, not {type(signature).__name__}", field="signature"
        )
    blob = bytes(signature)
    if len(blob) > MAX_SIGNATURE_SIZE:
        raise InvalidSignatureError(
            f"signature is {len(blob)} bytes; the limit is {MAX_SIGNATURE_SIZE // 1024} KiB",
            field="signature",
        )
    parsed = _parse(blob)
    if parsed.namespace.encode("utf-8") != ns:
        raise InvalidSignatureError(
            f"signature is for namespace {_show(parsed.namespace)}, expected {namespace!r}",
            field="signature",
        )
    public = _load_public(parsed.public_key_blob)
    _check_algorithm(public.key_type, parsed.sig_alg)
    data = sshsig_signed_data(msg, namespace=namespace, hash_alg=parsed.hash_alg)
    _verify_raw(public, parsed.sig_alg, parsed.sig, data)
    return VerifiedSignature(
        public_key_blob=public.blob,
        key_type=public.key_type,
        fingerprint=fingerprint_of_blob(public.blob),
        hash_alg=parsed.hash_alg,
    )
