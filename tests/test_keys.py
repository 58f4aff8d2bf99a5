"""ca.keys: user public keys as people paste them, and the CA's own keys."""

from __future__ import annotations

import base64
import functools
import os
import stat
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca.errors import (
    BadPassphrase,
    CAKeyError,
    CertificateAsKey,
    InsecureKeyFile,
    InvalidKeyError,
    JitSshError,
    KeyTooLarge,
    PassphraseRequired,
    UnsupportedKeyType,
    WeakKey,
)
from ca.keys import (
    MAX_KEY_TEXT,
    CAKey,
    CAKeyType,
    PublicKey,
    fingerprint_of_blob,
    generate_ca_key,
    keys_for_trust,
    load_ca_key,
    load_public_keys,
    parse_public_key,
    public_key_from_crypto,
    save_ca_key,
)
from server.errors import http_status

from .support import assert_refusal

# --------------------------------------------------------------------------- helpers


def run(*args: str | os.PathLike[str]) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{args} failed: {done.stderr}"
    return done.stdout


def sshstr(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def mpint(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 8) // 8, "big") if n else b""
    return sshstr(raw)


def line_of(key_type: str, blob: bytes, comment: str = "") -> str:
    text = f"{key_type} {base64.b64encode(blob).decode('ascii')}"
    return f"{text} {comment}" if comment else text


def openssh_line(public: Any) -> str:
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode("ascii")


def blob_of(line: str) -> bytes:
    return base64.b64decode(line.split()[1])


@functools.cache
def rsa_private(bits: int) -> rsa.RSAPrivateKey:
    """RSA generation is slow: one key per size for the whole module."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def ed25519_line() -> str:
    return openssh_line(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key())


def crypto_public(kind: str) -> Any:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate().public_key()
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1()).public_key()
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1()).public_key()
    if kind == "p521":
        return ec.generate_private_key(ec.SECP521R1()).public_key()
    if kind.startswith("rsa"):
        return rsa_private(int(kind[3:])).public_key()
    raise AssertionError(kind)


KEY_TYPE_OF = {
    "ed25519": "ssh-ed25519",
    "p256": "ecdsa-sha2-nistp256",
    "p384": "ecdsa-sha2-nistp384",
    "p521": "ecdsa-sha2-nistp521",
    "rsa2048": "ssh-rsa",
    "rsa3072": "ssh-rsa",
    "rsa4096": "ssh-rsa",
}


def refused(
    cls: type[JitSshError], value: Any, *, field: str = "user_key", **kw: Any
) -> JitSshError:
    """parse_public_key refuses ``value`` with exactly ``cls``, its code, and the field named."""
    with pytest.raises(JitSshError) as info:
        parse_public_key(value, field=field, **kw)
    return assert_refusal(info.value, cls, field)


# --------------------------------------------------------------------------- accepted keys


@pytest.mark.parametrize("kind", list(KEY_TYPE_OF))
@pytest.mark.parametrize("comment", ["", "alice@laptop", "two words here"])
def test_parse_cryptography_keys(kind: str, comment: str) -> None:
    public = crypto_public(kind)
    line = openssh_line(public)
    text = f"{line} {comment}" if comment else line
    key = parse_public_key(text)
    assert key.key_type == KEY_TYPE_OF[kind]
    assert key.blob == blob_of(line)
    assert key.comment == comment
    assert key.openssh == text
    assert str(key) == text
    assert key.fingerprint == fingerprint_of_blob(key.blob)
    assert key.fingerprint.startswith("SHA256:") and not key.fingerprint.endswith("=")
    # Same key from bytes, with surrounding whitespace and a newline.
    assert parse_public_key(("  " + text + "\n").encode()) == key
    assert parse_public_key(bytearray(text.encode())) == key
    # Equality ignores the comment; the wrapped crypto key is the same key.
    assert public_key_from_crypto(public) == key
    assert openssh_line(key.key) == line


@pytest.mark.parametrize(
    ("kind", "bits"),
    [
        ("ed25519", 256),
        ("p256", 256),
        ("p384", 384),
        ("p521", 521),
        ("rsa2048", 2048),
        ("rsa4096", 4096),
    ],
)
def test_bits(kind: str, bits: int) -> None:
    assert parse_public_key(openssh_line(crypto_public(kind))).bits == bits


SSH_KEYGEN_TYPES = [
    ("ed25519", None, "ssh-ed25519"),
    ("ecdsa", "256", "ecdsa-sha2-nistp256"),
    ("ecdsa", "384", "ecdsa-sha2-nistp384"),
    ("ecdsa", "521", "ecdsa-sha2-nistp521"),
    ("rsa", "2048", "ssh-rsa"),
]


@pytest.mark.parametrize(("ktype", "bits", "key_type"), SSH_KEYGEN_TYPES)
def test_parse_ssh_keygen_keys_and_fingerprint(
    ssh_keygen: str, tmp_path: Path, ktype: str, bits: str | None, key_type: str
) -> None:
    path = tmp_path / "id"
    args = [ssh_keygen, "-q", "-t", ktype, "-N", "", "-C", "bob@host", "-f", path]
    if bits:
        args[4:4] = ["-b", bits]
    run(*args)
    text = (tmp_path / "id.pub").read_text()
    key = parse_public_key(text)
    assert key.key_type == key_type
    assert key.comment == "bob@host"
    assert key.openssh == text.strip()
    # `ssh-keygen -l` prints "<bits> SHA256:... comment (TYPE)".
    out = run(ssh_keygen, "-l", "-E", "sha256", "-f", tmp_path / "id.pub").split()
    assert out[1] == key.fingerprint
    assert int(out[0]) == key.bits
    # Without its comment the key is the same key.
    bare = parse_public_key(" ".join(text.split()[:2]))
    assert bare == key and bare.comment == ""


def test_fingerprint_of_blob_known_value(ssh_keygen: str, tmp_path: Path) -> None:
    line = ed25519_line()
    (tmp_path / "k.pub").write_text(line + "\n")
    printed = run(ssh_keygen, "-l", "-f", tmp_path / "k.pub").split()[1]
    assert fingerprint_of_blob(blob_of(line)) == printed == parse_public_key(line).fingerprint


def test_load_public_keys_skips_blank_and_comment_lines() -> None:
    a = parse_public_key(openssh_line(crypto_public("ed25519")) + " a")
    b = parse_public_key(openssh_line(crypto_public("p256")) + " b")
    text = "# trusted CA keys\n\n" + a.openssh + "\n   \n" + b.openssh + "\n"
    assert load_public_keys(text) == (a, b)
    assert keys_for_trust([a, b]) == a.openssh + "\n" + b.openssh + "\n"


def test_load_public_keys_names_the_line() -> None:
    good = openssh_line(crypto_public("ed25519"))
    with pytest.raises(InvalidKeyError) as info:
        load_public_keys(f"{good}\nssh-ed25519 !!!\n", field="trusted")
    assert info.value.field == "trusted line 2"
    assert "trusted line 2" in str(info.value)


# --------------------------------------------------------------------------- refused keys


def dsa_blob() -> bytes:
    # A syntactically valid ssh-dss blob (RFC 4253 6.6: p, q, g, y as mpints).
    priv = dsa.generate_private_key(key_size=1024)
    n = priv.public_key().public_numbers()
    p = n.parameter_numbers
    return sshstr(b"ssh-dss") + mpint(p.p) + mpint(p.q) + mpint(p.g) + mpint(n.y)


def sk_ed25519_blob() -> bytes:
    # PROTOCOL.u2f: string type, string public key, string application.
    pk = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    return sshstr(b"sk-ssh-ed25519@openssh.com") + sshstr(pk) + sshstr(b"ssh:")


def sk_ecdsa_blob() -> bytes:
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return (
        sshstr(b"sk-ecdsa-sha2-nistp256@openssh.com")
        + sshstr(b"nistp256")
        + sshstr(point)
        + sshstr(b"ssh:")
    )


@pytest.mark.parametrize(
    ("key_type", "make"),
    [
        ("ssh-dss", dsa_blob),
        ("sk-ssh-ed25519@openssh.com", sk_ed25519_blob),
        ("sk-ecdsa-sha2-nistp256@openssh.com", sk_ecdsa_blob),
    ],
)
def test_crafted_unsupported_keys_are_valid_openssh(
    ssh_keygen: str, tmp_path: Path, key_type: str, make: Any
) -> None:
    """The crafted lines are real keys to OpenSSH: the refusal below is about the type only."""
    path = tmp_path / "k.pub"
    path.write_text(line_of(key_type, make(), "c") + "\n")
    run(ssh_keygen, "-l", "-f", path)


def test_refuses_dsa() -> None:
    err = refused(UnsupportedKeyType, line_of("ssh-dss", dsa_blob(), "old@box"))
    assert "DSA" in str(err)


def test_refuses_dsa_from_ssh_keygen(ssh_keygen: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [ssh_keygen, "-q", "-t", "dsa", "-N", "", "-f", str(tmp_path / "d")],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"this ssh-keygen no longer makes DSA keys: {done.stderr.strip()}")
    refused(UnsupportedKeyType, (tmp_path / "d.pub").read_text())


def test_refuses_rsa_1024_as_weak() -> None:
    line = openssh_line(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key())
    err = refused(WeakKey, line)
    assert "2048" in str(err) and "1024" in str(err)


def test_rsa_minimum_is_a_parameter() -> None:
    line = openssh_line(crypto_public("rsa2048"))
    assert parse_public_key(line).bits == 2048
    refused(WeakKey, line, min_rsa_bits=3072)


@pytest.mark.parametrize(
    ("key_type", "make"),
    [
        ("sk-ssh-ed25519@openssh.com", sk_ed25519_blob),
        ("sk-ecdsa-sha2-nistp256@openssh.com", sk_ecdsa_blob),
    ],
)
def test_refuses_security_keys(key_type: str, make: Any) -> None:
    # cryptography would load the sk-ed25519 blob as a plain Ed25519 key; we must not.
    err = refused(UnsupportedKeyType, line_of(key_type, make(), "yubikey"))
    assert key_type in str(err)


@pytest.mark.parametrize(
    "key_type", ["ssh-foo", "ssh-ed448", "x509v3-sign-rsa", "ecdsa-sha2-nistp224"]
)
def test_refuses_unknown_types(key_type: str) -> None:
    blob = sshstr(key_type.encode()) + sshstr(b"\x01" * 32)
    refused(UnsupportedKeyType, line_of(key_type, blob))


def test_refuses_certificate_given_as_key() -> None:
    from cryptography.hazmat.primitives.serialization import (
        SSHCertificateBuilder,
        SSHCertificateType,
    )

    ca = ed25519.Ed25519PrivateKey.generate()
    user = ed25519.Ed25519PrivateKey.generate().public_key()
    cert = (
        SSHCertificateBuilder()
        .public_key(user)
        .serial(1)
        .type(SSHCertificateType.USER)
        .key_id(b"k")
        .valid_principals([b"root"])
        .valid_after(0)
        .valid_before(10)
        .sign(ca)
    )
    text = cert.public_bytes().decode()
    err = refused(CertificateAsKey, text + " alice")
    assert "certificate" in str(err)
    # The certificate blob behind a plain type name: the type mismatch is caught.
    refused(InvalidKeyError, line_of("ssh-ed25519", blob_of(text)))


def test_refuses_ssh_keygen_certificate(ssh_keygen: str, tmp_path: Path) -> None:
    run(ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "ca")
    run(ssh_keygen, "-q", "-t", "ecdsa", "-N", "", "-f", tmp_path / "u")
    run(ssh_keygen, "-q", "-s", tmp_path / "ca", "-I", "id", "-n", "root", tmp_path / "u.pub")
    refused(CertificateAsKey, (tmp_path / "u-cert.pub").read_text())


@pytest.mark.parametrize(
    "data",
    [
        "ssh-ed25519 not*base64",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI",  # bad padding
        "ssh-ed25519 AAAA====",
        "ssh-ed25519 ===",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5-AAA",
    ],
)
def test_refuses_non_base64(data: str) -> None:
    err = refused(InvalidKeyError, data)
    assert "base64" in str(err) or "truncated" in str(err) or "malformed" in str(err)


@pytest.mark.parametrize("data", ["", "   ", "\n", "ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5"])
def test_refuses_empty_and_one_word(data: str) -> None:
    refused(InvalidKeyError, data)


@pytest.mark.parametrize("kind", ["ed25519", "p256", "p384", "p521", "rsa2048"])
def test_every_truncation_is_invalid_key(kind: str) -> None:
    line = openssh_line(crypto_public(kind))
    key_type, blob = line.split()[0], blob_of(line)
    for n in range(len(blob)):
        refused(InvalidKeyError, line_of(key_type, blob[:n]))
    # Truncating the base64 text itself (not on a 4-character boundary) is refused too.
    b64 = line.split()[1]
    for n in range(1, len(b64), 7):
        with pytest.raises(InvalidKeyError):
            parse_public_key(f"{key_type} {b64[:n]}")


@pytest.mark.parametrize("kind", ["ed25519", "p256", "rsa2048"])
def test_refuses_trailing_bytes(kind: str) -> None:
    line = openssh_line(crypto_public(kind))
    key_type, blob = line.split()[0], blob_of(line)
    for extra in (b"\x00", b"\x00\x00\x00\x00", sshstr(b"extra")):
        refused(InvalidKeyError, line_of(key_type, blob + extra))


@pytest.mark.parametrize(
    ("line_type", "kind"),
    [
        ("ssh-rsa", "ed25519"),
        ("ssh-ed25519", "rsa2048"),
        ("ecdsa-sha2-nistp256", "p384"),
        ("ecdsa-sha2-nistp521", "ed25519"),
    ],
)
def test_refuses_type_mismatch(line_type: str, kind: str) -> None:
    blob = blob_of(openssh_line(crypto_public(kind)))
    err = refused(InvalidKeyError, line_of(line_type, blob))
    assert line_type in str(err)


def test_refuses_curve_name_mismatch_inside_blob() -> None:
    # Type says nistp256 both on the line and in the blob; the curve field says nistp384.
    point = crypto_public("p256").public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    blob = sshstr(b"ecdsa-sha2-nistp256") + sshstr(b"nistp384") + sshstr(point)
    refused(InvalidKeyError, line_of("ecdsa-sha2-nistp256", blob))


def test_refuses_point_not_on_curve() -> None:
    point = b"\x04" + b"\x01" * 64
    blob = sshstr(b"ecdsa-sha2-nistp256") + sshstr(b"nistp256") + sshstr(point)
    refused(InvalidKeyError, line_of("ecdsa-sha2-nistp256", blob))


def test_refuses_wrong_ed25519_length() -> None:
    refused(InvalidKeyError, line_of("ssh-ed25519", sshstr(b"ssh-ed25519") + sshstr(b"\x01" * 31)))
    refused(InvalidKeyError, line_of("ssh-ed25519", sshstr(b"ssh-ed25519") + sshstr(b"\x01" * 33)))


def test_refuses_too_large() -> None:
    big = "ssh-ed25519 " + "A" * MAX_KEY_TEXT
    err = refused(KeyTooLarge, big)
    assert "16 KiB" in str(err)
    assert http_status(err) == 413
    refused(KeyTooLarge, big.encode())
    # A valid key with a huge comment is also over the limit.
    refused(KeyTooLarge, ed25519_line() + " " + "c" * MAX_KEY_TEXT)


def test_size_limit_is_inclusive() -> None:
    line = ed25519_line() + " "
    text = line + "c" * (MAX_KEY_TEXT - len(line))
    assert len(text) == MAX_KEY_TEXT
    assert parse_public_key(text).comment == "c" * (MAX_KEY_TEXT - len(line))


@pytest.mark.parametrize(
    "data",
    [
        ed25519_line() + " álice@laptop",
        "ssh-ëd25519 AAAA",
        ed25519_line().replace("A", "Å", 1),
        (ed25519_line() + " b\xffb").encode("latin-1"),
        b"ssh-ed25519\xff AAAA",
        ed25519_line() + " a\x00b",
        ed25519_line() + " tab\tinside",
        ed25519_line() + " line\nbreak",
        ed25519_line() + " del\x7f",
    ],
)
def test_refuses_non_ascii_and_control_characters(data: str | bytes) -> None:
    refused(InvalidKeyError, data)


@pytest.mark.parametrize(
    "value", [42, None, ["ssh-ed25519", "AAAA"], 1.5, {"key": "x"}, memoryview(b"ssh-ed25519 AAAA")]
)
def test_refuses_wrong_python_type(value: Any) -> None:
    err = refused(InvalidKeyError, value)
    assert type(value).__name__ in str(err)


def test_error_hierarchy() -> None:
    for cls in (UnsupportedKeyType, WeakKey, CertificateAsKey, KeyTooLarge):
        assert issubclass(cls, InvalidKeyError)
    codes = {
        cls.code
        for cls in (InvalidKeyError, UnsupportedKeyType, WeakKey, CertificateAsKey, KeyTooLarge)
    }
    assert len(codes) == 5


# --------------------------------------------------------------------------- property tests

KEY_TYPES = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-dss",
]


def never_crashes(value: Any) -> PublicKey | None:
    try:
        key = parse_public_key(value)
    except InvalidKeyError:
        return None
    # Anything accepted is canonical: it re-parses to itself.
    assert parse_public_key(key.openssh) == key
    return key


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
@settings(max_examples=300)
def test_arbitrary_input_only_raises_invalid_key(value: str | bytes) -> None:
    never_crashes(value)


@given(st.sampled_from(KEY_TYPES), st.binary(max_size=600), st.text(max_size=20))
@settings(max_examples=300)
def test_arbitrary_blob_after_a_real_type(key_type: str, payload: bytes, comment: str) -> None:
    # A blob that starts with the right type string, so the parser reaches cryptography.
    blob = sshstr(key_type.encode()) + payload
    never_crashes(f"{key_type} {base64.b64encode(blob).decode()} {comment}")


@given(st.sampled_from(KEY_TYPES), st.lists(st.binary(max_size=140), max_size=5))
@settings(max_examples=300)
def test_arbitrary_fields_after_a_real_type(key_type: str, fields: list[bytes]) -> None:
    blob = sshstr(key_type.encode()) + b"".join(sshstr(f) for f in fields)
    never_crashes(line_of(key_type, blob))


@functools.cache
def real_blobs() -> tuple[tuple[str, bytes], ...]:
    out = []
    for kind in ("ed25519", "p256", "p521", "rsa2048"):
        line = openssh_line(crypto_public(kind))
        out.append((line.split()[0], blob_of(line)))
    return tuple(out)


@given(st.data())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_real_keys(data: st.DataObject) -> None:
    key_type, blob = data.draw(st.sampled_from(real_blobs()))
    mutable = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(mutable) - 1))
        mutable[i] = data.draw(st.integers(0, 255))
    never_crashes(line_of(key_type, bytes(mutable)))


# --------------------------------------------------------------------------- CA keys


@functools.cache
def rsa_ca(bits: int = 3072) -> rsa.RSAPrivateKey:
    return generate_ca_key("rsa", bits=None if bits == 3072 else bits)  # type: ignore[return-value]


CA_KINDS = ["ed25519", "ecdsa", "ecdsa-p256", "ecdsa-p384", "rsa"]


def ca_private(kind: str) -> Any:
    return rsa_ca() if kind == "rsa" else generate_ca_key(kind)


@pytest.mark.parametrize(
    ("kind", "cls", "size"),
    [
        ("ed25519", ed25519.Ed25519PrivateKey, None),
        (CAKeyType.ED25519, ed25519.Ed25519PrivateKey, None),
        ("ecdsa", ec.EllipticCurvePrivateKey, 256),
        ("ecdsa-p256", ec.EllipticCurvePrivateKey, 256),
        ("ECDSA-P384", ec.EllipticCurvePrivateKey, 384),
        (CAKeyType.ECDSA_P384, ec.EllipticCurvePrivateKey, 384),
    ],
)
def test_generate_ca_key(kind: Any, cls: type, size: int | None) -> None:
    key = generate_ca_key(kind)
    assert isinstance(key, cls)
    if size:
        assert key.curve.key_size == size  # type: ignore[union-attr]


def test_generate_ca_key_default_is_ed25519() -> None:
    assert isinstance(generate_ca_key(), ed25519.Ed25519PrivateKey)


def test_generate_rsa_ca_keys() -> None:
    key = rsa_ca()
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    big = rsa_ca(4096)
    assert big.key_size == 4096


@pytest.mark.parametrize("bits", [1024, 2048, 3071, 8193, 16384])
def test_generate_rsa_ca_refuses_sizes(bits: int) -> None:
    with pytest.raises(WeakKey) as info:
        generate_ca_key("rsa", bits=bits)
    assert info.value.code == "weak_key"
    assert info.value.field == "bits"
    assert "bits" in str(info.value) and str(bits) in str(info.value)


@pytest.mark.parametrize("kind", ["dsa", "ecdsa-p521", "rsa1", ""])
def test_unknown_ca_key_type(kind: str) -> None:
    with pytest.raises(CAKeyError) as info:
        generate_ca_key(kind)
    assert type(info.value) is CAKeyError
    assert info.value.field == "type"
    assert "ed25519" in str(info.value)


def test_ca_key_from_private_refuses_weak_rsa() -> None:
    with pytest.raises(WeakKey) as info:
        CAKey.from_private(rsa_private(2048))
    assert info.value.field == "ca_key"


def test_ca_key_repr_hides_private() -> None:
    ca = CAKey.from_private(generate_ca_key(), comment="c")
    assert "private" not in repr(ca)


@pytest.mark.parametrize("kind", CA_KINDS)
def test_save_and_load_plain(tmp_path: Path, kind: str) -> None:
    private = ca_private(kind)
    path = tmp_path / "ca_key"
    saved = save_ca_key(path, private, comment="jit-ssh-test")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"BEGIN OPENSSH PRIVATE KEY" in path.read_bytes()
    pub_text = (tmp_path / "ca_key.pub").read_text()
    assert pub_text == saved.public.openssh + "\n"
    assert pub_text.rstrip().endswith(" jit-ssh-test")
    loaded = load_ca_key(path)
    assert loaded.public == saved.public
    assert loaded.public.comment == "jit-ssh-test"
    assert loaded.fingerprint == saved.fingerprint
    assert loaded.path == path
    assert loaded.private is not None
    # The loaded private key is the same key: same public half.
    assert public_key_from_crypto(loaded.private.public_key()) == saved.public
    # A passphrase for a key that has none does no harm.
    assert load_ca_key(path, passphrase=b"unused").public == saved.public


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa-p384", "rsa"])
def test_save_and_load_encrypted(tmp_path: Path, kind: str) -> None:
    private = ca_private(kind)
    path = tmp_path / "ca_key"
    saved = save_ca_key(path, private, passphrase=b"correct horse")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_ca_key(path, passphrase=b"correct horse").public == saved.public

    with pytest.raises(BadPassphrase) as bad:
        load_ca_key(path, passphrase=b"wrong horse")
    assert bad.value.code == "bad_passphrase" and bad.value.field == "passphrase"
    assert "passphrase" in str(bad.value)

    for missing in (None, b""):
        with pytest.raises(PassphraseRequired) as req:
            load_ca_key(path, passphrase=missing)
        assert req.value.code == "passphrase_required" and req.value.field == "passphrase"
        assert "passphrase" in str(req.value)


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o660, 0o606, 0o700])
def test_refuses_insecure_key_file(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "ca_key"
    save_ca_key(path, generate_ca_key())
    os.chmod(path, mode)
    if not mode & 0o077:
        assert load_ca_key(path).private is not None
        return
    with pytest.raises(InsecureKeyFile) as info:
        load_ca_key(path)
    assert info.value.code == "insecure_key_file"
    assert info.value.field == "ca_key"
    assert "chmod 600" in str(info.value)
    assert f"{mode:04o}" in str(info.value)


def test_save_never_overwrites_private(tmp_path: Path) -> None:
    path = tmp_path / "ca_key"
    first = save_ca_key(path, generate_ca_key())
    before = (path.read_bytes(), (tmp_path / "ca_key.pub").read_bytes())
    with pytest.raises(FileExistsError):
        save_ca_key(path, generate_ca_key())
    assert (path.read_bytes(), (tmp_path / "ca_key.pub").read_bytes()) == before
    assert load_ca_key(path).public == first.public


def test_save_never_overwrites_public(tmp_path: Path) -> None:
    path = tmp_path / "ca_key"
    pub = tmp_path / "ca_key.pub"
    pub.write_text("someone else's key\n")
    with pytest.raises(FileExistsError):
        save_ca_key(path, generate_ca_key())
    assert pub.read_text() == "someone else's key\n"
    assert not path.exists()


def test_save_refuses_weak_ca_before_writing(tmp_path: Path) -> None:
    with pytest.raises(WeakKey):
        save_ca_key(tmp_path / "k", rsa_private(2048))
    assert list(tmp_path.iterdir()) == []


def test_load_refuses_weak_rsa_written_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(
        rsa_private(2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    os.chmod(path, 0o600)
    with pytest.raises(WeakKey):
        load_ca_key(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a key\n",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    ],
)
def test_load_refuses_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(CAKeyError) as info:
        load_ca_key(path)
    assert info.value.field == "ca_key"


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa-p256", "ecdsa-p384", "rsa"])
@pytest.mark.parametrize("passphrase", [None, b"s3cret pass"])
def test_ssh_keygen_reads_saved_key(
    ssh_keygen: str, tmp_path: Path, kind: str, passphrase: bytes | None
) -> None:
    path = tmp_path / "ca_key"
    saved = save_ca_key(path, ca_private(kind), passphrase=passphrase)
    args = [ssh_keygen, "-y", "-f", str(path)]
    if passphrase:
        args[2:2] = ["-P", passphrase.decode()]
    printed = run(*args).split()
    assert printed[:2] == saved.public.openssh.split()[:2]
    # And its fingerprint is ours.
    assert run(ssh_keygen, "-l", "-f", tmp_path / "ca_key.pub").split()[1] == saved.fingerprint


@pytest.mark.parametrize("ktype", ["ed25519", "ecdsa", "rsa"])
def test_load_ssh_keygen_private_key(ssh_keygen: str, tmp_path: Path, ktype: str) -> None:
    path = tmp_path / "ca"
    args = [ssh_keygen, "-q", "-t", ktype, "-N", "pw", "-C", "made-by-ssh-keygen", "-f", path]
    if ktype == "rsa":
        args[4:4] = ["-b", "3072"]
    run(*args)
    key = load_ca_key(path, passphrase=b"pw")
    assert key.public == parse_public_key((tmp_path / "ca.pub").read_text())
    assert key.public.comment == "made-by-ssh-keygen"
    with pytest.raises(BadPassphrase):
        load_ca_key(path, passphrase=b"nope")
    with pytest.raises(PassphraseRequired):
        load_ca_key(path)


@pytest.mark.parametrize("prefix", [b"\x02", b"\x03", b"\x00", b"\x05"])
def test_refuses_ecdsa_point_not_uncompressed(prefix: bytes) -> None:
    # cryptography raises NotImplementedError ("Need uncompressed point") here;
    # it must come out as InvalidKeyError.
    point = crypto_public("p256").public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    blob = sshstr(b"ecdsa-sha2-nistp256") + sshstr(b"nistp256") + sshstr(prefix + point[1:])
    refused(InvalidKeyError, line_of("ecdsa-sha2-nistp256", blob))


@pytest.mark.parametrize("kind", [None, 42, b"ed25519"])
def test_ca_key_type_of_the_wrong_python_type(kind: Any) -> None:
    # Before the fix these fell through to the RSA branch and made an RSA key.
    with pytest.raises(CAKeyError) as info:
        generate_ca_key(kind)
    assert info.value.field == "type"


def test_ca_key_type_parse() -> None:
    assert CAKeyType.parse("ecdsa") is CAKeyType.ECDSA_P256
    assert CAKeyType.parse("ecdsa384") is CAKeyType.ECDSA_P384
    assert CAKeyType.parse("RSA") is CAKeyType.RSA
    assert CAKeyType.parse(CAKeyType.ED25519) is CAKeyType.ED25519
