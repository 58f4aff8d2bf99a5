"""ca.sshsig: SSHSIG signatures, round trips, ssh-keygen interop both ways, refusals, fuzzing."""

from __future__ import annotations

import hashlib
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca.errors import JitSshError, UnsupportedKeyType, WeakKey
from ca.keys import fingerprint_of_blob, public_key_from_crypto
from ca.sshsig import (
    MAX_SIGNATURE_SIZE,
    InvalidSignatureError,
    VerifiedSignature,
    armor,
    dearmor,
    sign,
    sign_with,
    sshsig_signed_data,
    verify,
)

from .conftest import require_tool
from .support import KEY_SPECS

NS = "jit-ssh-api@example.com"
MSG = b"POST /v1/requests\n" + bytes(range(256))

KEY_TYPES = {
    "ed25519": "ssh-ed25519",
    "p256": "ecdsa-sha2-nistp256",
    "p384": "ecdsa-sha2-nistp384",
    "p521": "ecdsa-sha2-nistp521",
    "rsa2048": "ssh-rsa",
    "rsa3072": "ssh-rsa",
}


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return {name: make() for name, make in KEY_SPECS.items()}


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def good_blob(ed_key: ed25519.Ed25519PrivateKey) -> bytes:
    return sign(MSG, namespace=NS, private_key=ed_key)


# --- hand-built blobs, for the refusals ---------------------------------------


def s(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return struct.pack(">I", len(raw)) + raw


def mpint(n: int) -> bytes:
    return s(n.to_bytes((n.bit_length() + 8) // 8, "big") if n else b"")


def blob_of(key: Any) -> bytes:
    return public_key_from_crypto(key.public_key()).blob


def assemble(
    pub: bytes,
    inner: bytes,
    *,
    namespace: str = NS,
    hash_alg: str = "sha512",
    reserved: bytes = b"",
    magic: bytes = b"SSHSIG",
    version: int = 1,
) -> bytes:
    return (
        magic
        + struct.pack(">I", version)
        + s(pub)
        + s(namespace)
        + s(reserved)
        + s(hash_alg)
        + s(inner)
    )


def split(blob: bytes) -> list[bytes]:
    """The string fields of a well-formed blob: pub, namespace, reserved, hash_alg, inner."""
    fields, pos = [], 10
    while pos < len(blob):
        (n,) = struct.unpack_from(">I", blob, pos)
        fields.append(blob[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return fields


def raw_sig(blob: bytes) -> bytes:
    inner = split(blob)[4]
    (n,) = struct.unpack_from(">I", inner, 0)
    return inner[8 + n :]


def signed_data(message: bytes, hash_alg: str = "sha512", namespace: str = NS) -> bytes:
    return sshsig_signed_data(message, namespace=namespace, hash_alg=hash_alg)


def refused(blob: Any, *, message: bytes = MSG, namespace: str = NS) -> str:
    with pytest.raises(InvalidSignatureError) as info:
        verify(message, blob, namespace=namespace)
    err = info.value
    assert err.code == "invalid_signature" and err.http_status == 401
    assert isinstance(err, JitSshError)
    return str(err)


# --- the format ---------------------------------------------------------------


def test_signed_data_layout() -> None:
    data = sshsig_signed_data(b"hello", namespace="file", hash_alg="sha256")
    assert data == (
        b"SSHSIG" + s("file") + s(b"") + s("sha256") + s(hashlib.sha256(b"hello").digest())
    )
    data512 = sshsig_signed_data(b"hello", namespace="file")
    assert data512.endswith(s(hashlib.sha512(b"hello").digest()))


def test_blob_layout(ed_key: ed25519.Ed25519PrivateKey) -> None:
    blob = sign(b"m", namespace="ns", private_key=ed_key, hash_alg="sha256")
    pub = blob_of(ed_key)
    head = b"SSHSIG" + struct.pack(">I", 1) + s(pub) + s("ns") + s(b"") + s("sha256")
    assert blob.startswith(head)
    inner = blob[len(head) + 4 :]
    assert inner.startswith(s("ssh-ed25519") + struct.pack(">I", 64))


@pytest.mark.parametrize("bad", ["", None, b"ns"])
def test_caller_mistakes_in_namespace_are_not_signature_errors(bad: Any, good_blob: bytes) -> None:
    with pytest.raises((ValueError, TypeError)):
        verify(MSG, good_blob, namespace=bad)
    with pytest.raises((ValueError, TypeError)):
        sshsig_signed_data(MSG, namespace=bad)


def test_unknown_hash_alg_for_signing_is_a_value_error(ed_key: ed25519.Ed25519PrivateKey) -> None:
    with pytest.raises(ValueError, match="hash_alg"):
        sign(MSG, namespace=NS, private_key=ed_key, hash_alg="sha1")


# --- round trips --------------------------------------------------------------


@pytest.mark.parametrize("hash_alg", ["sha256", "sha512"])
@pytest.mark.parametrize("name", list(KEY_SPECS))
def test_round_trip(keys: dict[str, Any], name: str, hash_alg: str) -> None:
    key = keys[name]
    blob = sign(MSG, namespace=NS, private_key=key, hash_alg=hash_alg)
    got = verify(MSG, blob, namespace=NS)
    pub = blob_of(key)
    assert got == VerifiedSignature(
        public_key_blob=pub,
        key_type=KEY_TYPES[name],
        fingerprint=fingerprint_of_blob(pub),
        hash_alg=hash_alg,
    )
    assert got.openssh.split()[0] == KEY_TYPES[name]
    assert verify(MSG, dearmor(armor(blob)), namespace=NS) == got


def test_rsa_signs_with_rsa_sha2_512(keys: dict[str, Any]) -> None:
    blob = sign(MSG, namespace=NS, private_key=keys["rsa2048"])
    assert s("rsa-sha2-512") in blob
    assert b"\x00\x00\x00\x07ssh-rsa\x00" not in blob.split(s("rsa-sha2-512"))[1]


def test_empty_and_large_messages(ed_key: ed25519.Ed25519PrivateKey) -> None:
    for message in (b"", b"x" * 5_000_000):
        blob = sign(message, namespace=NS, private_key=ed_key)
        assert verify(message, blob, namespace=NS).hash_alg == "sha512"


def test_unicode_namespace(ed_key: ed25519.Ed25519PrivateKey) -> None:
    blob = sign(MSG, namespace="zürich", private_key=ed_key)
    verify(MSG, blob, namespace="zürich")
    refused(blob, namespace="zurich")


def test_sign_refuses_unusable_private_keys() -> None:
    with pytest.raises(WeakKey, match="2048"):
        sign(MSG, namespace=NS, private_key=rsa.generate_private_key(65537, 1024))
    with pytest.raises(UnsupportedKeyType, match="curve"):
        sign(MSG, namespace=NS, private_key=ec.generate_private_key(ec.SECP224R1()))
    with pytest.raises(UnsupportedKeyType):
        sign(MSG, namespace=NS, private_key="not a key")


def test_sign_with_checks_what_the_signer_returned(ed_key: ed25519.Ed25519PrivateKey) -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    pub = blob_of(ed_key)

    def by_other_key(data: bytes) -> bytes:
        return s("ssh-ed25519") + s(other.sign(data))

    with pytest.raises(
        InvalidSignatureError, match="signer returned an unusable signature.*does not verify"
    ):
        sign_with(MSG, namespace=NS, public_key_blob=pub, sign_raw=by_other_key)

    class Message:  # what paramiko's local PKey.sign_ssh_data returns
        pass

    with pytest.raises(TypeError, match="sign_raw must return bytes"):
        sign_with(MSG, namespace=NS, public_key_blob=pub, sign_raw=lambda d: Message())  # type: ignore[arg-type,return-value]

    def good(data: bytes) -> bytes:
        return s("ssh-ed25519") + s(ed_key.sign(data))

    blob = sign_with(MSG, namespace=NS, public_key_blob=pub, sign_raw=good, hash_alg="sha256")
    assert verify(MSG, blob, namespace=NS).hash_alg == "sha256"


# --- armor --------------------------------------------------------------------


def test_armor_shape(keys: dict[str, Any]) -> None:
    blob = sign(MSG, namespace=NS, private_key=keys["rsa3072"])
    text = armor(blob)
    lines = text.split("\n")
    assert lines[0] == "-----BEGIN SSH SIGNATURE-----"
    assert lines[-2:] == ["-----END SSH SIGNATURE-----", ""]
    body = lines[1:-2]
    assert all(len(line) == 70 for line in body[:-1]) and 0 < len(body[-1]) <= 70
    assert dearmor(text) == blob
    assert dearmor(text.encode()) == blob
    assert dearmor(text.replace("\n", "\r\n")) == blob
    assert dearmor("\n\n" + text + "\n\n") == blob


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "start with"),
        ("U1NIU0lH\n-----END SSH SIGNATURE-----\n", "start with"),
        (
            "junk\n-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n",
            "start with",
        ),
        ("-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n", "end with"),
        ("-----BEGIN SSH SIGNATURE-----\n-----END SSH SIGNATURE-----\n", "empty"),
        ("-----BEGIN SSH SIGNATURE-----\nU1NI*0lH\n-----END SSH SIGNATURE-----\n", "base64"),
        ("-----BEGIN SSH SIGNATURE-----\nU1NIU0l\n-----END SSH SIGNATURE-----\n", "base64"),
        ("-----BEGIN SSH SIGNATURE-----\nU1NIU0lé\n-----END SSH SIGNATURE-----\n", "base64"),
        (b"-----BEGIN SSH SIGNATURE-----\n\xff\n-----END SSH SIGNATURE-----\n", "ASCII"),
        (
            "-----BEGIN SSH SIGNATURE-----\n" + "A" * 30_000 + "\n-----END SSH SIGNATURE-----\n",
            "KiB",
        ),
        (12, "text"),
    ],
)
def test_dearmor_refuses(text: Any, why: str) -> None:
    with pytest.raises(InvalidSignatureError, match=why):
        dearmor(text)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=400), st.binary(max_size=400)))
def test_dearmor_fuzz(text: str | bytes) -> None:
    for candidate in (
        text,
        "-----BEGIN SSH SIGNATURE-----\n" + str(text) + "\n-----END SSH SIGNATURE-----",
    ):
        try:
            dearmor(candidate)
        except InvalidSignatureError:
            pass


# --- refusals -----------------------------------------------------------------


def test_wrong_namespace(good_blob: bytes) -> None:
    assert "namespace 'jit-ssh-api@example.com', expected 'file'" in refused(
        good_blob, namespace="file"
    )


def test_tampered_message(good_blob: bytes) -> None:
    assert "does not verify" in refused(good_blob, message=MSG + b"x")
    assert "does not verify" in refused(good_blob, message=MSG[:-1])


@pytest.mark.parametrize("name", list(KEY_SPECS))
def test_tampered_signature(keys: dict[str, Any], name: str) -> None:
    blob = sign(MSG, namespace=NS, private_key=keys[name])
    # Flip one bit in the last byte (inside the raw signature bytes or the s mpint).
    tampered = blob[:-1] + bytes([blob[-1] ^ 0x01])
    refused(tampered)
    # And in the middle of the raw signature.
    mid = len(blob) - 20
    refused(blob[:mid] + bytes([blob[mid] ^ 0x40]) + blob[mid + 1 :])


def test_swapped_public_key_does_not_verify(
    ed_key: ed25519.Ed25519PrivateKey, good_blob: bytes
) -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    swapped = good_blob.replace(blob_of(ed_key), blob_of(other))
    assert "does not verify" in refused(swapped)


def test_signature_by_another_key_names_that_key(ed_key: ed25519.Ed25519PrivateKey) -> None:
    enrolled = blob_of(ed_key)
    intruder = ed25519.Ed25519PrivateKey.generate()
    got = verify(MSG, sign(MSG, namespace=NS, private_key=intruder), namespace=NS)
    # The signature is valid, but it is the intruder's: the caller's enrolment
    # check is what refuses it.
    assert got.public_key_blob == blob_of(intruder)
    assert got.public_key_blob != enrolled
    assert got.fingerprint != fingerprint_of_blob(enrolled)


@pytest.mark.parametrize("name", ["ed25519", "p521", "rsa2048"])
def test_truncated_at_every_offset(keys: dict[str, Any], name: str) -> None:
    blob = sign(MSG, namespace=NS, private_key=keys[name])
    for i in range(len(blob)):
        with pytest.raises(InvalidSignatureError):
            verify(MSG, blob[:i], namespace=NS)


def test_trailing_bytes(
    good_blob: bytes, ed_key: ed25519.Ed25519PrivateKey, keys: dict[str, Any]
) -> None:
    assert "1 trailing byte" in refused(good_blob + b"\x00")
    pub = blob_of(ed_key)
    data = signed_data(MSG)
    # Trailing bytes inside the inner signature blob...
    inner = s("ssh-ed25519") + s(ed_key.sign(data)) + b"\x00"
    assert "trailing" in refused(assemble(pub, inner))
    # ...and after the ECDSA mpints.
    p256 = keys["p256"]
    r, s_ = decode_dss_signature(p256.sign(data, ec.ECDSA(hashes.SHA256())))
    good = assemble(blob_of(p256), s("ecdsa-sha2-nistp256") + s(mpint(r) + mpint(s_)))
    verify(MSG, good, namespace=NS)
    extra = s("ecdsa-sha2-nistp256") + s(mpint(r) + mpint(s_) + b"\x00")
    assert "trailing" in refused(assemble(blob_of(p256), extra))
    # Non-canonical mpints: a superfluous leading zero, a negative value.
    padded = s(b"\x00" + mpint(r)[4:])
    refused(assemble(blob_of(p256), s("ecdsa-sha2-nistp256") + s(padded + mpint(s_))))
    negative = s(b"\xff" + r.to_bytes(32, "big"))
    assert "negative" in refused(
        assemble(blob_of(p256), s("ecdsa-sha2-nistp256") + s(negative + mpint(s_)))
    )
    zero = s(b"")
    assert "out of range" in refused(
        assemble(blob_of(p256), s("ecdsa-sha2-nistp256") + s(zero + mpint(s_)))
    )


def test_wire_flaws_are_named_in_full(
    good_blob: bytes, ed_key: ed25519.Ed25519PrivateKey, keys: dict[str, Any]
) -> None:
    pub = blob_of(ed_key)
    ed_inner = s("ssh-ed25519") + s(ed_key.sign(signed_data(MSG)))
    head = b"SSHSIG" + struct.pack(">I", 1)
    assert refused(good_blob[:3]) == "signature is truncated (in its magic)"
    assert refused(head[:8]) == "signature is truncated (in its version)"
    assert refused(head + s(pub)[:-1]) == "signature is truncated (in its public key)"
    assert refused(good_blob + b"\0") == "signature has 1 trailing byte(s)"
    assert (
        refused(head + s(pub) + s(b"\xff") + s(b"") + s("sha512") + s(ed_inner))
        == "signature: the namespace is not UTF-8 text"
    )
    assert (
        refused(assemble(pub, ed_inner + b"\0\0"))
        == "signature's inner signature has 2 trailing byte(s)"
    )
    assert (
        refused(assemble(pub, s(b"\xc3") + s(b"x")))
        == "signature's inner signature: the algorithm is not UTF-8 text"
    )
    assert (
        refused(assemble(pub, s("ssh-ed25519")))
        == "signature's inner signature is truncated (in its signature bytes)"
    )
    p256 = keys["p256"]
    r, s_ = decode_dss_signature(p256.sign(signed_data(MSG), ec.ECDSA(hashes.SHA256())))

    def ecdsa(raw: bytes) -> str:
        return refused(assemble(blob_of(p256), s("ecdsa-sha2-nistp256") + s(raw)))

    assert (
        ecdsa(s(b"\x00" + mpint(r)[4:]) + mpint(s_))
        == "ECDSA signature: the r has a superfluous leading zero byte"
    )
    assert ecdsa(s(b"\xff" + r.to_bytes(32, "big")) + mpint(s_)) == (
        "ECDSA signature: the r is negative"
    )
    assert ecdsa(mpint(r) + mpint(s_) + b"\0") == "ECDSA signature has 1 trailing byte(s)"
    assert ecdsa(mpint(r) + mpint(s_)[:-1]) == "ECDSA signature is truncated (in its s)"


def test_trailing_bytes_in_public_key(ed_key: ed25519.Ed25519PrivateKey) -> None:
    pub = blob_of(ed_key) + b"\x00"
    inner = s("ssh-ed25519") + s(ed_key.sign(signed_data(MSG)))
    assert "public key is refused" in refused(assemble(pub, inner))


@pytest.mark.parametrize(
    "change, why",
    [
        ({"magic": b"SSHSIH"}, "does not start with 'SSHSIG'"),
        ({"magic": b"ssh-ed"}, "does not start with 'SSHSIG'"),
        ({"version": 2}, "version 2"),
        ({"version": 0}, "version 0"),
        ({"version": 0xFFFFFFFF}, "version 4294967295"),
        ({"hash_alg": "sha1"}, "'sha1' is not allowed"),
        ({"hash_alg": "md5"}, "not allowed"),
        ({"hash_alg": "SHA512"}, "not allowed"),
        ({"hash_alg": "sha384"}, "not allowed"),
        ({"hash_alg": ""}, "not allowed"),
        ({"reserved": b"tag"}, "reserved"),
        ({"namespace": ""}, "expected"),
    ],
)
def test_bad_header_fields(
    ed_key: ed25519.Ed25519PrivateKey, change: dict[str, Any], why: str
) -> None:
    inner = s("ssh-ed25519") + s(ed_key.sign(signed_data(MSG)))
    assert why in refused(assemble(blob_of(ed_key), inner, **change))


def test_ssh_rsa_sha1_is_refused(keys: dict[str, Any]) -> None:
    key = keys["rsa2048"]
    data = signed_data(MSG)
    sha1 = key.sign(data, padding.PKCS1v15(), hashes.SHA1())
    why = refused(assemble(blob_of(key), s("ssh-rsa") + s(sha1)))
    assert "'ssh-rsa' (RSA with SHA-1) is refused" in why
    # Through sign_with too, as an old agent that ignores the SHA-2 flag would answer.
    with pytest.raises(InvalidSignatureError, match="SHA-1"):
        sign_with(
            MSG,
            namespace=NS,
            public_key_blob=blob_of(key),
            sign_raw=lambda d: s("ssh-rsa") + s(key.sign(d, padding.PKCS1v15(), hashes.SHA1())),
        )


def test_rsa_sha2_256_verifies_and_labels_must_match(keys: dict[str, Any]) -> None:
    key = keys["rsa2048"]
    data = signed_data(MSG)
    sig256 = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    verify(MSG, assemble(blob_of(key), s("rsa-sha2-256") + s(sig256)), namespace=NS)
    # The label says SHA-512 but the signature is over SHA-256.
    assert "does not verify" in refused(assemble(blob_of(key), s("rsa-sha2-512") + s(sig256)))


@pytest.mark.parametrize(
    "key_name, sig_alg",
    [
        ("ed25519", "ssh-rsa"),
        ("ed25519", "ecdsa-sha2-nistp256"),
        ("p256", "ecdsa-sha2-nistp384"),
        ("p256", "ssh-ed25519"),
        ("rsa2048", "ssh-ed25519"),
        ("rsa2048", "rsa-sha2-384"),
    ],
)
def test_signature_algorithm_must_fit_the_key(
    keys: dict[str, Any], key_name: str, sig_alg: str
) -> None:
    blob = sign(MSG, namespace=NS, private_key=keys[key_name])
    forged = assemble(split(blob)[0], s(sig_alg) + s(raw_sig(blob)))
    assert "does not fit" in refused(forged)


def test_short_rsa_signature_is_padded_like_openssh(keys: dict[str, Any]) -> None:
    key = keys["rsa2048"]
    # About 1 RSA signature in 256 starts with a zero byte; some signers drop it.
    for i in range(5000):
        message = MSG + str(i).encode()
        sig = key.sign(signed_data(message), padding.PKCS1v15(), hashes.SHA512())
        if sig[0] == 0:
            break
    else:  # pragma: no cover - probability ~ (255/256)**5000
        pytest.fail("no RSA signature with a leading zero byte found")
    verify(
        message, assemble(blob_of(key), s("rsa-sha2-512") + s(sig.lstrip(b"\x00"))), namespace=NS
    )
    too_long = assemble(blob_of(key), s("rsa-sha2-512") + s(b"\x00" + sig))
    assert "longer than the key" in refused(too_long, message=message)


def test_weak_rsa_key_is_refused() -> None:
    weak = rsa.generate_private_key(65537, 1024)
    sig = weak.sign(signed_data(MSG), padding.PKCS1v15(), hashes.SHA512())
    assert "at least 2048 bits" in refused(assemble(blob_of(weak), s("rsa-sha2-512") + s(sig)))


def test_ed25519_signature_length(ed_key: ed25519.Ed25519PrivateKey) -> None:
    sig = ed_key.sign(signed_data(MSG))
    assert "64 bytes" in refused(assemble(blob_of(ed_key), s("ssh-ed25519") + s(sig + b"\x00")))
    assert "64 bytes" in refused(assemble(blob_of(ed_key), s("ssh-ed25519") + s(sig[:63])))


@pytest.mark.parametrize(
    "key_type",
    [
        "ssh-dss",
        "sk-ssh-ed25519@openssh.com",
        "ssh-ed25519-cert-v01@openssh.com",
        "ssh-ed448",
        "\u00e9",
    ],
)
def test_unaccepted_key_types(ed_key: ed25519.Ed25519PrivateKey, key_type: str) -> None:
    raw_pub = blob_of(ed_key)
    pub = s(key_type) + raw_pub[len(s("ssh-ed25519")) :]
    inner = s("ssh-ed25519") + s(ed_key.sign(signed_data(MSG)))
    assert "not accepted" in refused(assemble(pub, inner))


def test_garbage_public_key(ed_key: ed25519.Ed25519PrivateKey) -> None:
    inner = s("ssh-ed25519") + s(ed_key.sign(signed_data(MSG)))
    refused(assemble(b"", inner))
    refused(assemble(s("ssh-ed25519") + s(b"\x01" * 31), inner))
    refused(assemble(s("ecdsa-sha2-nistp256") + s("nistp256") + s(b"\x04" + b"\x01" * 64), inner))
    refused(assemble(b"\xff\xff\xff\xff", inner))


def test_oversized(good_blob: bytes) -> None:
    assert "limit is 16 KiB" in refused(
        good_blob + b"\x00" * (MAX_SIGNATURE_SIZE + 1 - len(good_blob))
    )
    # A blob of exactly the limit is parsed (and refused for its trailing bytes, not its size).
    assert "trailing" in refused(good_blob + b"\x00" * (MAX_SIGNATURE_SIZE - len(good_blob)))
    # A huge length field must not make us read or allocate anything.
    assert "truncated" in refused(
        b"SSHSIG" + struct.pack(">I", 1) + b"\xff\xff\xff\xf0" + b"x" * 10
    )


def test_non_bytes_signature(good_blob: bytes) -> None:
    assert "dearmor" in refused(armor(good_blob))
    refused(None)
    refused(12345)
    verify(MSG, bytearray(good_blob), namespace=NS)
    verify(MSG, memoryview(good_blob), namespace=NS)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data: bytes) -> None:
    for candidate in (data, b"SSHSIG" + data, b"SSHSIG\x00\x00\x00\x01" + data):
        with pytest.raises(InvalidSignatureError):
            verify(MSG, candidate, namespace=NS)


@settings(
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.data())
def test_fuzz_mutations(good_blob: bytes, data: st.DataObject) -> None:
    blob = bytearray(good_blob)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["set", "insert", "delete"]))
        i = data.draw(st.integers(0, max(len(blob) - 1, 0)))
        if op == "set" and blob:
            blob[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            blob[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif blob:
            del blob[i : i + data.draw(st.integers(1, 8))]
    if bytes(blob) == good_blob:
        verify(MSG, bytes(blob), namespace=NS)
        return
    with pytest.raises(InvalidSignatureError):
        verify(MSG, bytes(blob), namespace=NS)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    pub=st.binary(max_size=120),
    namespace=st.text(max_size=20),
    reserved=st.binary(max_size=4),
    hash_alg=st.sampled_from(["sha256", "sha512", "sha1", ""]),
    alg=st.sampled_from(["ssh-ed25519", "ssh-rsa", "rsa-sha2-512", "ecdsa-sha2-nistp256", "x"]),
    sig=st.binary(max_size=300),
)
def test_fuzz_structured(
    pub: bytes, namespace: str, reserved: bytes, hash_alg: str, alg: str, sig: bytes
) -> None:
    """Well-framed blobs with arbitrary field contents still only ever raise InvalidSignatureError."""
    for key_type in ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256"):
        framed_pub = s(key_type) + pub
        blob = assemble(
            framed_pub,
            s(alg) + s(sig),
            namespace=namespace or NS,
            hash_alg=hash_alg,
            reserved=reserved,
        )
        with pytest.raises(InvalidSignatureError):
            verify(MSG, blob, namespace=NS)


# --- interop with ssh-keygen ----------------------------------------------------

KEYGEN_NAMES = list(KEY_SPECS)


def _write_key(path: Path, key: Any) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    pub = public_key_from_crypto(key.public_key())
    path.with_name(path.name + ".pub").write_text(pub.openssh + "\n")
    return path


def keygen_verify(
    keygen: str, tmp: Path, pub_line: str, message: bytes, sig_text: str, namespace: str = NS
) -> subprocess.CompletedProcess[bytes]:
    allowed = tmp / "allowed_signers"
    key_type, b64 = pub_line.split()[:2]
    allowed.write_text(f"alice@example.com {key_type} {b64}\n")
    sig_file = tmp / "msg.sig"
    sig_file.write_text(sig_text)
    return subprocess.run(
        [
            keygen,
            "-Y",
            "verify",
            "-f",
            str(allowed),
            "-I",
            "alice@example.com",
            "-n",
            namespace,
            "-s",
            str(sig_file),
        ],
        input=message,
        capture_output=True,
        timeout=30,
    )


@pytest.mark.integration
@pytest.mark.parametrize("hash_alg", ["sha256", "sha512"])
@pytest.mark.parametrize("name", KEYGEN_NAMES)
def test_ssh_keygen_verifies_ours(
    keys: dict[str, Any], name: str, hash_alg: str, tmp_path: Path
) -> None:
    keygen = require_tool("ssh-keygen")
    key = keys[name]
    pub = public_key_from_crypto(key.public_key())
    text = armor(sign(MSG, namespace=NS, private_key=key, hash_alg=hash_alg))
    ok = keygen_verify(keygen, tmp_path, pub.openssh, MSG, text)
    assert ok.returncode == 0, ok.stderr.decode()
    assert f'Good "{NS}" signature for alice@example.com' in ok.stdout.decode() + ok.stderr.decode()
    assert pub.fingerprint in ok.stdout.decode() + ok.stderr.decode()
    # Not vacuous: ssh-keygen refuses the same signature for another namespace or message.
    assert keygen_verify(keygen, tmp_path, pub.openssh, MSG, text, namespace="file").returncode != 0
    assert keygen_verify(keygen, tmp_path, pub.openssh, MSG + b"!", text).returncode != 0


@pytest.mark.integration
@pytest.mark.parametrize("hash_alg", ["sha256", "sha512"])
@pytest.mark.parametrize("name", KEYGEN_NAMES)
def test_we_verify_ssh_keygen(
    keys: dict[str, Any], name: str, hash_alg: str, tmp_path: Path
) -> None:
    keygen = require_tool("ssh-keygen")
    key = keys[name]
    key_file = _write_key(tmp_path / "id", key)
    msg_file = tmp_path / "message"
    msg_file.write_bytes(MSG)
    done = subprocess.run(
        [
            keygen,
            "-Y",
            "sign",
            "-f",
            str(key_file),
            "-n",
            NS,
            "-O",
            f"hashalg={hash_alg}",
            str(msg_file),
        ],
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr.decode()
    text = (tmp_path / "message.sig").read_text()
    blob = dearmor(text)
    # Our armor is byte-for-byte what ssh-keygen writes (70-column base64).
    assert armor(blob) == text
    got = verify(MSG, blob, namespace=NS)
    pub = blob_of(key)
    assert (
        got.public_key_blob == pub and got.key_type == KEY_TYPES[name] and got.hash_alg == hash_alg
    )
    fp = subprocess.run(
        [keygen, "-l", "-f", str(key_file) + ".pub"], capture_output=True, text=True, check=True
    )
    assert got.fingerprint == fp.stdout.split()[1]
    if name.startswith("rsa"):
        assert s("rsa-sha2-512") in blob  # ssh-keygen -Y sign never uses ssh-rsa
    refused(blob, namespace="file")
    refused(blob, message=MSG + b"!")
