"""ca.certs: issue, parse and verify OpenSSH user certificates.

The interop tests read every certificate back with OpenSSH's own
``ssh-keygen -L``; they skip when ssh-keygen is missing, except under CI=true.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import ipaddress
import os
import struct
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    SSHCertificateBuilder,
    SSHCertificateType,
    load_ssh_public_identity,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca.certs import (
    DEFAULT_EXTENSIONS,
    KNOWN_EXTENSIONS,
    MAX_DURATION,
    IssuedCertificate,
    _check_critical,
    issue_certificate,
    make_key_id,
    new_serial,
    parse_certificate,
    validate_key_id,
    validate_principals,
    validate_source_address,
    verify_certificate,
)
from ca.errors import (
    InvalidCertificate,
    InvalidCriticalOption,
    InvalidDuration,
    InvalidExtension,
    InvalidKeyError,
    InvalidKeyId,
    InvalidPrincipal,
    InvalidSerial,
    InvalidSourceAddress,
    JitSshError,
    UntrustedCA,
)
from ca.keys import CAKey, PublicKey, generate_ca_key, parse_public_key, public_key_from_crypto

from .support import assert_refusal

NOW = datetime(2026, 11, 29, 10, 45, 12, 345678, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# --------------------------------------------------------------------------- keys, once per module


@functools.cache
def ca_key(kind: str) -> CAKey:
    return CAKey.from_private(generate_ca_key(kind), comment=f"test-ca-{kind}")


@functools.cache
def user_private(kind: str) -> Any:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind.startswith("ecdsa-p"):
        curve = {"256": ec.SECP256R1(), "384": ec.SECP384R1(), "521": ec.SECP521R1()}[kind[-3:]]
        return ec.generate_private_key(curve)
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    raise AssertionError(kind)


@functools.cache
def user_key(kind: str = "ed25519") -> PublicKey:
    return public_key_from_crypto(user_private(kind).public_key(), comment=f"user-{kind}")


CA_KINDS = ["ed25519", "ecdsa-p256", "ecdsa-p384", "rsa"]
USER_KINDS = ["ed25519", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa2048", "rsa4096"]
SIGNATURE_ALGORITHM = {
    "ed25519": "ssh-ed25519",
    "ecdsa-p256": "ecdsa-sha2-nistp256",
    "ecdsa-p384": "ecdsa-sha2-nistp384",
    # cryptography always signs with rsa-sha2-512 for an RSA CA, never SHA-1 "ssh-rsa".
    "rsa": "rsa-sha2-512",
}


def issue(**overrides: Any) -> IssuedCertificate:
    kwargs: dict[str, Any] = dict(
        principals=["root@prod-db"],
        duration=timedelta(minutes=30),
        key_id="jit-ssh:req=1:user=alice:by=bob",
        now=NOW,
    )
    kwargs.update(overrides)
    ca = kwargs.pop("ca", None) or ca_key("ed25519")
    key = kwargs.pop("public_key", None) or user_key()
    return issue_certificate(ca, key, **kwargs)


def refused(cls: type[JitSshError], field: str, **overrides: Any) -> JitSshError:
    """issue_certificate refuses with exactly ``cls``, its code, and ``field`` named."""
    with pytest.raises(JitSshError) as info:
        issue(**overrides)
    return assert_refusal(info.value, cls, field)


# --------------------------------------------------------------------------- ssh-keygen


def run(*args: str | os.PathLike[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    # TZ=UTC: ssh-keygen -L prints the validity window in local time.
    env = {**os.environ, "TZ": "UTC"}
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, env=env
    )
    if check:
        assert done.returncode == 0, f"{args} failed: {done.stderr}"
    return done


@dataclass
class Listing:
    """What ``ssh-keygen -L`` printed, by heading."""

    lines: list[str]
    fields: dict[str, str]
    lists: dict[str, list[str]]


def keygen_list(ssh_keygen: str, path: Path) -> Listing:
    out = run(ssh_keygen, "-L", "-f", path).stdout
    lines = [line.rstrip() for line in out.splitlines()[1:]]
    fields: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    current = None
    for line in lines:
        if line.startswith(" " * 16):
            assert current is not None
            lists[current].append(line.strip())
            continue
        name, _, value = line.strip().partition(":")
        fields[name] = value.strip()
        current = name
        lists[name] = [] if value.strip() in ("", "(none)") else [value.strip()]
    return Listing(lines, fields, lists)


def keygen_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)


def write_cert(tmp_path: Path, cert: IssuedCertificate) -> Path:
    path = tmp_path / "id-cert.pub"
    path.write_text(cert.openssh + "\n")
    return path


# --------------------------------------------------------------------------- wire format helpers


def sshstr(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


_PUBLIC_FIELDS = {"ssh-ed25519": 1, "ssh-rsa": 2}  # ECDSA: curve and point


def cert_fields(blob: bytes) -> dict[str, tuple[int, int]]:
    """Offsets of each field of a certificate blob (PROTOCOL.certkeys)."""
    out: dict[str, tuple[int, int]] = {}
    pos = 0

    def string(name: str) -> bytes:
        nonlocal pos
        (n,) = struct.unpack_from(">I", blob, pos)
        out[name] = (pos, pos + 4 + n)
        pos += 4 + n
        return blob[pos - n : pos]

    def fixed(name: str, size: int) -> None:
        nonlocal pos
        out[name] = (pos, pos + size)
        pos += size

    cert_type = string("type").decode().removesuffix("-cert-v01@openssh.com")
    string("nonce")
    for i in range(_PUBLIC_FIELDS.get(cert_type, 2)):
        string(f"public{i}")
    fixed("serial", 8)
    fixed("cert_type", 4)
    string("key_id")
    string("principals")
    fixed("valid_after", 8)
    fixed("valid_before", 8)
    string("critical_options")
    string("extensions")
    string("reserved")
    string("signature_key")
    string("signature")
    assert pos == len(blob)
    return out


def replace_field(blob: bytes, name: str, value: bytes) -> bytes:
    start, end = cert_fields(blob)[name]
    return blob[:start] + value + blob[end:]


def cert_line(cert_type: str, blob: bytes) -> str:
    return f"{cert_type} {base64.b64encode(blob).decode()}"


def crypto_cert(signer: Any, public: Any, *, principals: list[bytes] = None) -> SSHCertificate:
    if principals is None:
        principals = [b"root@prod-db"]
    return (
        SSHCertificateBuilder()
        .public_key(public)
        .serial(7)
        .type(SSHCertificateType.USER)
        .key_id(b"forged")
        .valid_principals(principals)
        .valid_after(int(NOW.timestamp()))
        .valid_before(int(NOW.timestamp()) + 3600)
        .add_extension(b"permit-pty", b"")
        .sign(signer)
    )


# --------------------------------------------------------------------------- issue and parse


def test_issue_basic_fields() -> None:
    cert = issue(
        serial=12345,
        extensions=["permit-pty", "permit-port-forwarding"],
        force_command="/usr/bin/true",
    )
    assert cert.serial == 12345
    assert cert.key_id == "jit-ssh:req=1:user=alice:by=bob"
    assert cert.cert_type == "user"
    assert cert.principals == ("root@prod-db",)
    assert cert.valid_after == NOW.replace(microsecond=0)
    assert cert.valid_before == NOW.replace(microsecond=0) + timedelta(minutes=30)
    assert cert.duration == timedelta(minutes=30)
    assert cert.extensions == ("permit-port-forwarding", "permit-pty")
    assert cert.critical_options == (("force-command", "/usr/bin/true"),)
    assert cert.force_command == "/usr/bin/true"
    assert cert.source_address is None
    assert cert.public_key == user_key()
    assert cert.ca_public_key == ca_key("ed25519").public
    assert cert.signature_algorithm == "ssh-ed25519"
    assert cert.openssh.startswith("ssh-ed25519-cert-v01@openssh.com AAAA")
    assert cert.blob == base64.b64decode(cert.openssh.split()[1])
    assert cert.valid_after.tzinfo is not None


def test_issue_parse_gives_back_every_field() -> None:
    cert = issue(
        serial=2**64 - 1,
        principals=["root@prod-db", "deploy@prod-db"],
        extensions=sorted(KNOWN_EXTENSIONS),
        force_command="sudo -n /usr/local/bin/rotate-logs --all",
        source_address=["10.0.0.0/8", "2001:db8::/32"],
        backdate=timedelta(seconds=60),
        duration=timedelta(hours=2),
    )
    parsed = parse_certificate(cert.openssh)
    assert parsed == cert
    assert parsed.critical_options == cert.critical_options
    assert parsed.source_address == "10.0.0.0/8,2001:db8::/32"
    # With a comment and a trailing newline, as a -cert.pub file holds it.
    assert parse_certificate(cert.openssh + " alice@laptop\n") == cert
    assert parse_certificate(cert.openssh.encode()) == cert


def test_str_public_key_is_parsed() -> None:
    cert = issue(public_key=user_key("ecdsa-p256").openssh)
    assert cert.public_key == user_key("ecdsa-p256")
    err = refused(InvalidKeyError, "public_key", public_key="ssh-ed25519 AAAA")
    assert isinstance(err, InvalidKeyError)


def test_default_extensions() -> None:
    assert DEFAULT_EXTENSIONS == ("permit-pty",)
    assert issue().extensions == ("permit-pty",)
    assert issue(extensions=[]).extensions == ()
    assert issue(extensions=("permit-pty", "permit-pty")).extensions == ("permit-pty",)


def test_principals_deduplicated_in_order() -> None:
    assert issue(principals=["b", "a", "b", "c", "a"]).principals == ("b", "a", "c")
    assert issue(principals=("x",)).principals == ("x",)
    assert issue(principals=iter(["g1", "g2"])).principals == ("g1", "g2")


def test_window_is_exactly_the_duration_on_the_wire() -> None:
    for seconds in (1, 59, 60, 3599, 86400):
        for backdate in (0, seconds // 10):
            cert = issue(duration=timedelta(seconds=seconds), backdate=timedelta(seconds=backdate))
            raw = load_ssh_public_identity(cert.openssh.encode())
            assert isinstance(raw, SSHCertificate)
            assert raw.valid_before - raw.valid_after == seconds
            assert raw.valid_after == int(NOW.timestamp()) - backdate


def test_now_is_floored_never_rounded() -> None:
    for micro in (0, 1, 499_999, 500_000, 999_999):
        cert = issue(now=NOW.replace(microsecond=micro))
        assert cert.valid_after == NOW.replace(microsecond=0)


def test_now_in_another_timezone() -> None:
    tz = timezone(timedelta(hours=5, minutes=30))
    cert = issue(now=NOW.astimezone(tz))
    assert cert.valid_after == NOW.replace(microsecond=0)


def test_random_serials() -> None:
    serials = {issue().serial for _ in range(50)} | {new_serial() for _ in range(500)}
    assert len(serials) == 550
    assert all(1 <= s < 2**63 for s in serials)


def test_new_serial_range() -> None:
    # secrets.randbelow(2**63 - 1) + 1: the extremes are 1 and 2**63 - 1.
    import secrets
    from unittest import mock

    with mock.patch.object(secrets, "randbelow", side_effect=lambda n: 0):
        assert new_serial() == 1
    with mock.patch.object(secrets, "randbelow", side_effect=lambda n: n - 1):
        assert new_serial() == 2**63 - 1


# What a principal may be (ca.names.check_principal): LOGIN@TARGET or a plain name.
PRINCIPAL = st.one_of(
    st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,39}\Z"),
    st.from_regex(r"\A[a-z_][a-z0-9_.-]{0,20}\$?@[A-Za-z0-9][A-Za-z0-9_.-]{0,18}\Z"),
)
# Printable ASCII without spaces, not starting with '-' (ca.names.check_key_id).
KEY_ID = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200
).filter(lambda k: not k.startswith("-"))
FORCE_COMMAND = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=120
).filter(str.strip)
NETWORK = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.integers(0, 32)),
    st.tuples(st.ip_addresses(v=6), st.integers(0, 128)),
).map(lambda t: str(ipaddress.ip_network(f"{t[0]}/{t[1]}", strict=False)))
NOWS = st.datetimes(
    min_value=datetime(2001, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=-8)), timezone(timedelta(hours=5, minutes=45))]
    ),
)


@given(
    principals=st.lists(PRINCIPAL, min_size=1, max_size=20),
    seconds=st.integers(1, 24 * 3600),
    data=st.data(),
    serial=st.one_of(st.none(), st.integers(1, 2**64 - 1)),
    extensions=st.sets(st.sampled_from(sorted(KNOWN_EXTENSIONS))),
    force_command=st.one_of(st.none(), FORCE_COMMAND),
    source_address=st.one_of(st.none(), st.lists(NETWORK, min_size=1, max_size=6)),
    key_id=KEY_ID,
    now=NOWS,
)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_property(
    principals: list[str],
    seconds: int,
    data: st.DataObject,
    serial: int | None,
    extensions: set[str],
    force_command: str | None,
    source_address: list[str] | None,
    key_id: str,
    now: datetime,
) -> None:
    backdate = timedelta(seconds=data.draw(st.integers(0, seconds // 10), label="backdate"))
    duration = timedelta(seconds=seconds)
    cert = issue(
        principals=principals,
        duration=duration,
        backdate=backdate,
        serial=serial,
        extensions=extensions,
        force_command=force_command,
        source_address=source_address,
        key_id=key_id,
        now=now,
    )
    assert cert.principals == tuple(dict.fromkeys(principals))
    assert cert.valid_before - cert.valid_after == duration
    assert cert.valid_after == now.replace(microsecond=0) - backdate
    if serial is None:
        assert 1 <= cert.serial < 2**63
    else:
        assert cert.serial == serial
    assert cert.extensions == tuple(sorted(extensions))
    assert cert.force_command == force_command
    assert cert.source_address == (",".join(source_address) if source_address else None)
    assert cert.key_id == key_id

    parsed = parse_certificate(cert.openssh)
    assert parsed == cert
    assert verify_certificate(cert.openssh, [ca_key("ed25519")]) == cert


@given(seconds=st.integers(1, 24 * 3600), data=st.data())
@settings(max_examples=100, deadline=None)
def test_backdate_bounds_property(seconds: int, data: st.DataObject) -> None:
    duration = timedelta(seconds=seconds)
    ok = data.draw(st.integers(0, seconds // 10))
    assert issue(duration=duration, backdate=timedelta(seconds=ok)).duration == duration
    too_much = data.draw(st.integers(seconds // 10 + 1, seconds * 2))
    refused(InvalidDuration, "backdate", duration=duration, backdate=timedelta(seconds=too_much))


# --------------------------------------------------------------------------- refusals


def test_refuses_principals() -> None:
    refused(InvalidPrincipal, "principals", principals=[])
    refused(InvalidPrincipal, "principals", principals=[f"p{i}" for i in range(257)])
    assert len(issue(principals=[f"p{i}" for i in range(256)]).principals) == 256
    refused(InvalidPrincipal, "principals", principals=["x" * 256])
    assert issue(principals=["x" * 255]).principals == ("x" * 255,)
    refused(InvalidPrincipal, "principals", principals=[""])
    refused(InvalidPrincipal, "principals", principals="root")  # a bare string, not a list
    refused(InvalidPrincipal, "principals", principals=b"root")
    refused(InvalidPrincipal, "principals", principals=[b"root"])
    refused(InvalidPrincipal, "principals", principals=["root", 5])


@pytest.mark.parametrize("value", [None, 42, 1.5])
def test_refuses_principals_of_the_wrong_type(value: Any) -> None:
    refused(InvalidPrincipal, "principals", principals=value)


@pytest.mark.parametrize(
    "bad",
    [
        "root admin",
        " root",
        "root\t",
        "a\nb",
        "a\rb",
        "a\u00a0b",  # no-break space
        "a\u2003b",  # em space
        "a\u2028b",  # line separator
        "root,admin",
        ",",
        "a\x00b",
        "\x1b[31mroot",
        "a\x7fb",
        "a\x85b",  # C1 control (NEL)
        "a\x9bb",  # C1 CSI
    ],
)
def test_refuses_principal_characters(bad: str) -> None:
    err = refused(InvalidPrincipal, "principals", principals=["ok", bad])
    assert "whitespace" in str(err) or "comma" in str(err)


def test_validate_principals_names_a_custom_field() -> None:
    with pytest.raises(InvalidPrincipal) as info:
        validate_principals([], field="target.principals")
    assert info.value.field == "target.principals"
    assert "target.principals" in str(info.value)


@pytest.mark.parametrize(
    "duration",
    [
        timedelta(0),
        timedelta(seconds=-1),
        timedelta(days=-1),
        timedelta(seconds=1.5),
        timedelta(milliseconds=500),
        timedelta(microseconds=1),
        timedelta(hours=24, seconds=1),
        timedelta(days=2),
        timedelta(days=36500),
    ],
)
def test_refuses_durations(duration: timedelta) -> None:
    refused(InvalidDuration, "duration", duration=duration)


@pytest.mark.parametrize("duration", [60, 60.0, "15m", None])
def test_refuses_duration_of_the_wrong_type(duration: Any) -> None:
    refused(InvalidDuration, "duration", duration=duration)


def test_duration_limits() -> None:
    assert MAX_DURATION == timedelta(hours=24)
    assert issue(duration=timedelta(hours=24)).duration == timedelta(hours=24)
    assert issue(duration=timedelta(seconds=1)).duration == timedelta(seconds=1)
    one_hour = timedelta(hours=1)
    assert issue(duration=one_hour, max_duration=one_hour).duration == one_hour
    err = refused(
        InvalidDuration, "duration", duration=one_hour + timedelta(seconds=1), max_duration=one_hour
    )
    assert "3600" in str(err)
    # A larger max_duration never lifts the hard cap.
    refused(
        InvalidDuration, "duration", duration=timedelta(hours=25), max_duration=timedelta(days=7)
    )


@pytest.mark.parametrize(
    ("duration", "backdate"),
    [
        (timedelta(seconds=60), timedelta(seconds=7)),
        (timedelta(seconds=60), timedelta(seconds=60)),
        (timedelta(seconds=9), timedelta(seconds=1)),  # a tenth of 9 s is under 1 s
        (timedelta(minutes=30), timedelta(seconds=-1)),
        (timedelta(minutes=30), timedelta(seconds=1.5)),
        (timedelta(minutes=30), 10),
        (timedelta(minutes=30), None),
    ],
)
def test_refuses_backdate(duration: timedelta, backdate: Any) -> None:
    refused(InvalidDuration, "backdate", duration=duration, backdate=backdate)


def test_backdate_limit_is_a_tenth() -> None:
    cert = issue(duration=timedelta(seconds=60), backdate=timedelta(seconds=6))
    assert cert.valid_after == NOW.replace(microsecond=0) - timedelta(seconds=6)
    assert cert.duration == timedelta(seconds=60)
    assert issue(
        duration=timedelta(seconds=10), backdate=timedelta(seconds=1)
    ).duration == timedelta(seconds=10)


@pytest.mark.parametrize(
    "extensions",
    [
        ["permit-everything"],
        ["permit-pty", "no-touch-required"],
        ["PERMIT-PTY"],
        ["permit-pty "],
        [""],
        "permit-pty",  # a bare string
        b"permit-pty",
        [b"permit-pty"],
        [42],
        [["permit-pty"]],
        None,
        42,
    ],
)
def test_refuses_extensions(extensions: Any) -> None:
    refused(InvalidExtension, "extensions", extensions=extensions)


@pytest.mark.parametrize(
    "option", ["verify-required", "no-touch-required", "permit-pty", "", "Force-Command"]
)
def test_refuses_unknown_critical_options(option: str) -> None:
    # issue_certificate only takes force_command and source_address, so an
    # unknown option cannot reach the builder through it; the validator
    # behind it refuses one by name all the same.
    with pytest.raises(InvalidCriticalOption) as info:
        _check_critical({option: "x"})
    assert type(info.value) is InvalidCriticalOption
    assert info.value.code == "invalid_critical_option"
    assert info.value.field == "critical_options"
    assert "critical_options" in str(info.value)


@pytest.mark.parametrize(
    "command", ["", "   ", "a\nb", "echo\rhi", "x\x00", "x" * 4097, 42, b"/bin/true"]
)
def test_refuses_force_command(command: Any) -> None:
    refused(InvalidCriticalOption, "force-command", force_command=command)


def test_force_command_limits() -> None:
    assert issue(force_command="x" * 4096).force_command == "x" * 4096
    assert issue(force_command="echo\there").force_command == "echo\there"


@pytest.mark.parametrize(
    "value",
    [
        "not-a-cidr",
        "10.0.0.1/8",  # host bits set: sshd would refuse the certificate
        "192.168.1.1/24",
        "2001:db8::1/32",
        "",
        " ",
        [],
        [""],
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/8,",
        ",10.0.0.0/8",
        "10.0.0.0/8,,192.168.0.0/16",
        "10.0.0.*",
        "*",
        "localhost",
        "fe80::%eth0/64",  # sshd refuses '%' (a zone id) in a CIDR list
        "fe80::1%1",
        ["10.0.0.0/8", 5],
        ["10.0.0.0/8", None],
        [f"10.{i}.0.0/16" for i in range(65)],
        42,
        {"10.0.0.0/8"},
        b"10.0.0.0/8",
    ],
)
def test_refuses_source_address(value: Any) -> None:
    refused(InvalidSourceAddress, "source-address", source_address=value)


@pytest.mark.parametrize(
    ("value", "normal"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.0.0.0/8, 192.168.0.0/16", "10.0.0.0/8,192.168.0.0/16"),
        (["10.0.0.0/8", " 2001:db8::/32 "], "10.0.0.0/8,2001:db8::/32"),
        (("203.0.113.7",), "203.0.113.7/32"),
        ("::1", "::1/128"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("10.0.0.0/255.0.0.0", "10.0.0.0/8"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ([f"10.{i}.0.0/16" for i in range(64)], ",".join(f"10.{i}.0.0/16" for i in range(64))),
    ],
)
def test_source_address_normalised(value: Any, normal: str) -> None:
    assert validate_source_address(value) == normal
    assert issue(source_address=value).source_address == normal


def test_source_address_error_is_a_critical_option_error() -> None:
    assert issubclass(InvalidSourceAddress, InvalidCriticalOption)
    assert InvalidSourceAddress.code == "invalid_source_address"


@pytest.mark.parametrize("serial", [0, -1, 2**64, 2**70, True, False, 1.0, "5", b"5"])
def test_refuses_serials(serial: Any) -> None:
    refused(InvalidSerial, "serial", serial=serial)


def test_serial_limits() -> None:
    assert issue(serial=1).serial == 1
    assert issue(serial=2**64 - 1).serial == 2**64 - 1


@pytest.mark.parametrize(
    "key_id",
    [
        "",
        "has space",
        "a\nb",
        "tab\there",
        "caf\u00e9",
        "x" * 1025,
        "nul\x00",
        "del\x7f",
        None,
        5,
        b"id",
    ],
)
def test_refuses_key_ids(key_id: Any) -> None:
    refused(InvalidKeyId, "key_id", key_id=key_id)


def test_key_id_limits() -> None:
    assert issue(key_id="x" * 1024).key_id == "x" * 1024
    assert validate_key_id("!~") == "!~"
    with pytest.raises(InvalidKeyId) as info:
        validate_key_id("a b", field="--key-id")
    assert info.value.field == "--key-id" and "--key-id" in str(info.value)


def test_make_key_id() -> None:
    assert (
        make_key_id("r-123", "alice", ["bob", "carol"])
        == "jit-ssh:req=r-123:user=alice:by=bob,carol"
    )
    assert make_key_id("42", "alice", ("bob",)) == "jit-ssh:req=42:user=alice:by=bob"
    assert make_key_id("42", "alice") == "jit-ssh:req=42:user=alice:by=-"
    assert (
        issue(key_id=make_key_id("42", "alice", ["bob"])).key_id
        == "jit-ssh:req=42:user=alice:by=bob"
    )
    with pytest.raises(InvalidKeyId):
        make_key_id("42", "alice smith", ["bob"])
    with pytest.raises(InvalidKeyId):
        make_key_id("42", "alice", ["bob\nfake log line"])


@pytest.mark.parametrize(
    "now", [datetime(2026, 11, 29, 10, 45), "2026-11-29T10:45:00Z", 1764413100, None]
)
def test_refuses_naive_or_non_datetime_now(now: Any) -> None:
    with pytest.raises(ValueError) as info:
        issue(now=now)
    assert "now" in str(info.value)


def test_refuses_ca_without_private_half() -> None:
    with pytest.raises(ValueError):
        issue(ca=CAKey(public=ca_key("ed25519").public))


# --------------------------------------------------------------------------- verify


def test_verify_accepts_ours() -> None:
    cert = issue()
    ca = ca_key("ed25519")
    assert verify_certificate(cert.openssh, [ca]) == cert
    assert verify_certificate(cert, [ca.public]) == cert
    assert verify_certificate(cert.openssh.encode(), [ca_key("ecdsa-p256"), ca]) == cert


def test_verify_refuses_another_ca() -> None:
    cert = issue(ca=ca_key("ecdsa-p256"))
    for trusted in ([ca_key("ed25519")], [], [ca_key("ecdsa-p384").public]):
        with pytest.raises(UntrustedCA) as info:
            verify_certificate(cert.openssh, trusted)
        assert info.value.code == "untrusted_ca"
        assert info.value.field == "certificate"
        assert ca_key("ecdsa-p256").fingerprint in str(info.value)
    assert issubclass(UntrustedCA, InvalidCertificate)


def test_verify_refuses_self_consistent_forgery() -> None:
    # The attacker signs a certificate for their own key with their own "CA".
    # It is internally consistent: cryptography's verify_cert_signature()
    # passes it, because it only checks the key embedded in the certificate.
    attacker = ed25519.Ed25519PrivateKey.generate()
    forged = crypto_cert(attacker, user_private("ed25519").public_key())
    forged.verify_cert_signature()  # does not raise
    text = forged.public_bytes()
    assert parse_certificate(text).principals == ("root@prod-db",)
    with pytest.raises(UntrustedCA):
        verify_certificate(text, [ca_key("ed25519")])


def test_verify_refuses_forgery_naming_our_ca() -> None:
    # Same forgery, but the signature-key field now claims our CA: the
    # fingerprint matches, the signature does not.
    attacker = ed25519.Ed25519PrivateKey.generate()
    forged = crypto_cert(attacker, user_private("ed25519").public_key())
    blob = base64.b64decode(forged.public_bytes().split()[1])
    blob = replace_field(blob, "signature_key", sshstr(ca_key("ed25519").public.blob))
    text = cert_line("ssh-ed25519-cert-v01@openssh.com", blob)
    assert parse_certificate(text).ca_public_key == ca_key("ed25519").public
    with pytest.raises(UntrustedCA) as info:
        verify_certificate(text, [ca_key("ed25519")])
    assert "signature" in str(info.value)


@pytest.mark.parametrize(
    "field", ["principals", "serial", "valid_before", "key_id", "extensions", "nonce", "public0"]
)
def test_verify_refuses_tampered_certificate(field: str) -> None:
    cert = issue(principals=["guest@prod-db"], serial=1000)
    blob = cert.blob
    start, end = cert_fields(blob)[field]
    # Flip the last byte of the field: same length, different content.
    tampered = blob[: end - 1] + bytes([blob[end - 1] ^ 0x01]) + blob[end:]
    text = cert_line("ssh-ed25519-cert-v01@openssh.com", tampered)
    try:
        parsed = parse_certificate(text)
    except InvalidCertificate:
        return  # also fine: it no longer parses
    assert parsed != cert or parsed.openssh != cert.openssh
    with pytest.raises(InvalidCertificate):
        verify_certificate(text, [ca_key("ed25519")])


# --------------------------------------------------------------------------- parse refusals


def assert_invalid_certificate(value: Any) -> None:
    with pytest.raises(JitSshError) as info:
        parse_certificate(value)
    assert type(info.value) is InvalidCertificate, f"{type(info.value).__name__}: {info.value}"
    assert info.value.code == "invalid_certificate"
    assert info.value.field == "certificate"
    assert "certificate" in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   \n",
        "garbage",
        "ssh-ed25519-cert-v01@openssh.com",
        "ssh-ed25519-cert-v01@openssh.com AAAA",
        "ssh-ed25519-cert-v01@openssh.com not*base64",
        "ssh-ed25519-cert-v01@openssh.com AAAAC3NzaC1lZDI1NTE5AAAAIA==",
        "ssh-ed25519-cert-v01@openssh.com " + "A" * 20000,
        "ssh-ëd25519-cert-v01@openssh.com AAAA",
        b"\xff\xfe",
        None,
        42,
        ["ssh-ed25519-cert-v01@openssh.com", "AAAA"],
    ],
)
def test_parse_refuses_garbage(value: Any) -> None:
    assert_invalid_certificate(value)


def test_parse_refuses_plain_key() -> None:
    assert_invalid_certificate(user_key().openssh)
    assert_invalid_certificate(user_key("rsa2048").openssh)


@pytest.mark.parametrize("ca_kind", ["ed25519", "ecdsa-p256", "rsa"])
@pytest.mark.parametrize("user_kind", ["ed25519", "ecdsa-p384", "rsa2048"])
def test_parse_refuses_every_truncation(ca_kind: str, user_kind: str) -> None:
    cert = issue(ca=ca_key(ca_kind), public_key=user_key(user_kind), force_command="/bin/true")
    cert_type, blob = cert.openssh.split()[0], cert.blob
    for n in range(len(blob)):
        assert_invalid_certificate(cert_line(cert_type, blob[:n]))


def test_parse_refuses_trailing_bytes() -> None:
    cert = issue()
    cert_type = cert.openssh.split()[0]
    for extra in (b"\x00", sshstr(b"more")):
        assert_invalid_certificate(cert_line(cert_type, cert.blob + extra))


def test_parse_refuses_type_mismatch() -> None:
    cert = issue()
    assert_invalid_certificate(cert_line("ecdsa-sha2-nistp256-cert-v01@openssh.com", cert.blob))


def test_parse_refuses_compressed_ecdsa_point() -> None:
    # cryptography raises NotImplementedError for a point not in uncompressed form.
    cert = issue(public_key=user_key("ecdsa-p256"))
    blob = cert.blob
    start, end = cert_fields(blob)["public1"]
    point = bytes(blob[start + 4 : end])
    bad = blob[:start] + sshstr(b"\x02" + point[1:33]) + blob[end:]
    assert_invalid_certificate(cert_line("ecdsa-sha2-nistp256-cert-v01@openssh.com", bad))


@functools.cache
def sample_certs() -> tuple[IssuedCertificate, ...]:
    return tuple(
        issue(
            ca=ca_key(c),
            public_key=user_key(u),
            force_command="/bin/true",
            source_address="10.0.0.0/8",
        )
        for c, u in [
            ("ed25519", "ed25519"),
            ("ecdsa-p256", "ecdsa-p256"),
            ("rsa", "rsa2048"),
            ("ecdsa-p384", "ecdsa-p521"),
        ]
    )


@given(st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_certificates_never_crash(data: st.DataObject) -> None:
    cert = data.draw(st.sampled_from(sample_certs()))
    blob = bytearray(cert.blob)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    text = cert_line(cert.openssh.split()[0], bytes(blob))
    try:
        parse_certificate(text)
    except InvalidCertificate:
        pass
    try:
        verify_certificate(text, [cert.ca_public_key])
    except InvalidCertificate:
        return
    assert bytes(blob) == cert.blob  # only the unchanged certificate verifies


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
@settings(max_examples=200)
def test_arbitrary_input_only_raises_invalid_certificate(value: str | bytes) -> None:
    try:
        parse_certificate(value)
    except InvalidCertificate:
        pass


@given(
    st.sampled_from(["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"]),
    st.lists(st.binary(max_size=80), max_size=14),
)
@settings(max_examples=200)
def test_arbitrary_fields_only_raise_invalid_certificate(
    key_type: str, fields: list[bytes]
) -> None:
    cert_type = f"{key_type}-cert-v01@openssh.com"
    blob = sshstr(cert_type.encode()) + b"".join(sshstr(f) for f in fields)
    try:
        parse_certificate(cert_line(cert_type, blob))
    except InvalidCertificate:
        pass


# --------------------------------------------------------------------------- RSA CA


def test_rsa_ca_signs_with_sha512(ssh_keygen: str, tmp_path: Path) -> None:
    cert = issue(ca=ca_key("rsa"))
    assert cert.signature_algorithm == "rsa-sha2-512"
    assert parse_certificate(cert.openssh).signature_algorithm == "rsa-sha2-512"
    blob = cert.blob
    start, end = cert_fields(blob)["signature"]
    sig = blob[start + 4 : end]
    assert sig[4 : 4 + struct.unpack(">I", sig[:4])[0]] == b"rsa-sha2-512"
    listing = keygen_list(ssh_keygen, write_cert(tmp_path, cert))
    assert listing.fields["Signing CA"].endswith("(using rsa-sha2-512)")


# --------------------------------------------------------------------------- interop matrix


@pytest.mark.parametrize("user_kind", USER_KINDS)
@pytest.mark.parametrize("ca_kind", CA_KINDS)
def test_ssh_keygen_reads_every_combination(
    ssh_keygen: str, tmp_path: Path, ca_kind: str, user_kind: str
) -> None:
    cert = issue(
        ca=ca_key(ca_kind),
        public_key=user_key(user_kind),
        principals=["root@prod-db", "deploy@prod-db"],
        duration=timedelta(minutes=37, seconds=11),
        backdate=timedelta(seconds=30),
        key_id=make_key_id("req-7", "alice", ["bob", "carol"]),
        extensions=["permit-pty", "permit-agent-forwarding"],
        force_command="/usr/local/bin/session --audit",
        source_address=["10.0.0.0/8", "2001:db8::/32"],
    )
    listing = keygen_list(ssh_keygen, write_cert(tmp_path, cert))
    f, lists = listing.fields, listing.lists
    assert f["Type"] == f"{cert.public_key.key_type}-cert-v01@openssh.com user certificate"
    assert f["Public key"].split()[1] == cert.public_key.fingerprint
    assert (
        f["Signing CA"].split()[1] == cert.ca_public_key.fingerprint == ca_key(ca_kind).fingerprint
    )
    assert f["Signing CA"].endswith(f"(using {SIGNATURE_ALGORITHM[ca_kind]})")
    assert cert.signature_algorithm == SIGNATURE_ALGORITHM[ca_kind]
    assert f["Key ID"] == f'"{cert.key_id}"' == '"jit-ssh:req=req-7:user=alice:by=bob,carol"'
    assert int(f["Serial"]) == cert.serial
    start, _, end = f["Valid"].removeprefix("from ").partition(" to ")
    assert keygen_time(start) == cert.valid_after
    assert keygen_time(end) == cert.valid_before
    assert keygen_time(end) - keygen_time(start) == timedelta(minutes=37, seconds=11)
    assert tuple(lists["Principals"]) == cert.principals
    assert lists["Critical Options"] == [
        "force-command /usr/local/bin/session --audit",
        "source-address 10.0.0.0/8,2001:db8::/32",
    ]
    assert tuple(lists["Extensions"]) == cert.extensions
    # Our own listing agrees with ssh-keygen's, line for line, except the
    # validity line (ours is explicitly UTC and states the length).
    ours = [line.rstrip() for line in cert.to_text().splitlines()]
    theirs = [line.rstrip() for line in listing.lines]
    assert [line for line in ours if "Valid:" not in line] == [
        line for line in theirs if "Valid:" not in line
    ]


def test_ssh_keygen_listing_without_options(ssh_keygen: str, tmp_path: Path) -> None:
    cert = issue(extensions=[])
    listing = keygen_list(ssh_keygen, write_cert(tmp_path, cert))
    assert listing.fields["Critical Options"] == "(none)"
    assert listing.fields["Extensions"] == "(none)"
    ours = [line.rstrip() for line in cert.to_text().splitlines()]
    assert [line for line in ours if "Valid:" not in line] == [
        line for line in listing.lines if "Valid:" not in line
    ]


@given(
    principals=st.lists(PRINCIPAL, min_size=1, max_size=8),
    seconds=st.integers(1, 24 * 3600),
    serial=st.integers(1, 2**64 - 1),
    key_id=KEY_ID,
    extensions=st.sets(st.sampled_from(sorted(KNOWN_EXTENSIONS))),
)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_ssh_keygen_agrees_property(
    ssh_keygen: str,
    tmp_path: Path,
    principals: list[str],
    seconds: int,
    serial: int,
    key_id: str,
    extensions: set[str],
) -> None:
    cert = issue(
        principals=principals,
        duration=timedelta(seconds=seconds),
        serial=serial,
        key_id=key_id,
        extensions=extensions,
    )
    listing = keygen_list(ssh_keygen, write_cert(tmp_path, cert))
    assert listing.fields["Key ID"] == f'"{key_id}"'
    assert int(listing.fields["Serial"]) == serial
    start, _, end = listing.fields["Valid"].removeprefix("from ").partition(" to ")
    assert keygen_time(end) - keygen_time(start) == timedelta(seconds=seconds)
    assert tuple(listing.lists["Principals"]) == tuple(dict.fromkeys(principals))
    assert tuple(listing.lists["Extensions"]) == tuple(sorted(extensions))


def test_parse_ssh_keygen_certificate(ssh_keygen: str, tmp_path: Path) -> None:
    """Inspection reads what ssh-keygen -s writes, including options we never issue."""
    run(ssh_keygen, "-q", "-t", "ecdsa", "-N", "", "-f", tmp_path / "ca")
    run(ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "u")
    run(
        ssh_keygen,
        "-q",
        "-s",
        tmp_path / "ca",
        "-I",
        "made by ssh-keygen",
        "-n",
        "root,admin",
        "-z",
        "4242",
        "-V",
        "20260101000000:20260101003000",
        "-O",
        "clear",
        "-O",
        "permit-pty",
        "-O",
        "force-command=/bin/date",
        "-O",
        "source-address=192.0.2.0/24",
        "-O",
        "verify-required",
        tmp_path / "u.pub",
    )
    text = (tmp_path / "u-cert.pub").read_text()
    cert = parse_certificate(text)
    assert cert.key_id == "made by ssh-keygen"
    assert cert.serial == 4242
    assert cert.principals == ("root", "admin")
    assert cert.valid_after == datetime(2026, 1, 1, tzinfo=UTC)
    assert cert.duration == timedelta(minutes=30)
    assert cert.extensions == ("permit-pty",)
    assert dict(cert.critical_options) == {
        "force-command": "/bin/date",
        "source-address": "192.0.2.0/24",
        "verify-required": "",
    }
    assert cert.public_key == parse_public_key((tmp_path / "u.pub").read_text())
    assert cert.ca_public_key == parse_public_key((tmp_path / "ca.pub").read_text())
    assert cert.signature_algorithm == "ecdsa-sha2-nistp256"
    verify_certificate(text, [cert.ca_public_key])


def test_parse_ssh_keygen_forever_certificate(ssh_keygen: str, tmp_path: Path) -> None:
    run(ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "ca")
    run(ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "u")
    run(ssh_keygen, "-q", "-s", tmp_path / "ca", "-I", "forever", "-n", "root", tmp_path / "u.pub")
    cert = parse_certificate((tmp_path / "u-cert.pub").read_text())
    assert cert.valid_after == EPOCH
    assert cert.valid_before.year == 9999  # 2**64-1 is capped to what datetime holds
    assert cert.serial == 0


# --------------------------------------------------------------------------- golden bytes

GOLDEN_NOW = datetime(2026, 11, 29, 10, 45, 0, tzinfo=UTC)
# The certificate blob with its 32-byte nonce zeroed and the signature field
# cut off, for the fixed keys, serial, window and options of test_golden_bytes.
GOLDEN_BODY = (
    "AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAIIqI4910CfGV/VLbLTy6XXLKZwm/HZQSG/N0iAG0D29cASNFZ4mrze8AAAABAAAAI2ppdC1zc2g6"
    "cmVxPXJlcS0xOnVzZXI9YWxpY2U6Ynk9Ym9iAAAAIgAAAAxyb290QHByb2QtZGIAAAAOZGVwbG95QHByb2QtZGIA"
    "AAAAawwB8AAAAABrDAj4AAAATAAAAA1mb3JjZS1jb21tYW5kAAAAEwAAAA8vdXNyL2Jpbi91cHRpbWUAAAAOc291"
    "cmNlLWFkZHJlc3MAAAAOAAAACjEwLjAuMC4wLzgAAAAwAAAAFnBlcm1pdC1wb3J0LWZvcndhcmRpbmcAAAAAAAAA"
    "CnBlcm1pdC1wdHkAAAAAAAAAAAAAADMAAAALc3NoLWVkMjU1MTkAAAAgO2onvM62pC1io6jQKm8Nc2UyFXcd4kOm"
    "OsBIoYtZ2ik="
)


def golden_keys() -> tuple[CAKey, PublicKey]:
    ca = CAKey.from_private(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32)))
    user = public_key_from_crypto(
        ed25519.Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32).public_key()
    )
    return ca, user


def golden_issue() -> IssuedCertificate:
    ca, user = golden_keys()
    return issue_certificate(
        ca,
        user,
        principals=["root@prod-db", "deploy@prod-db"],
        duration=timedelta(minutes=30),
        backdate=timedelta(seconds=60),
        key_id=make_key_id("req-1", "alice", ["bob"]),
        serial=0x0123456789ABCDEF,
        extensions=["permit-pty", "permit-port-forwarding"],
        force_command="/usr/bin/uptime",
        source_address="10.0.0.0/8",
        now=GOLDEN_NOW,
    )


def body_without_nonce(blob: bytes) -> bytes:
    fields = cert_fields(blob)
    start, end = fields["nonce"]
    assert end - start == 4 + 32
    body = blob[: fields["signature"][0]]
    return body[:start] + sshstr(bytes(32)) + body[end:]


def test_golden_bytes() -> None:
    # cryptography's SSHCertificateBuilder.sign() draws the 32-byte nonce
    # from os.urandom (PROTOCOL.certkeys asks for a random nonce, against
    # chosen-prefix hash collisions), so the same inputs give different
    # certificate text each time, and so a different (though deterministic,
    # Ed25519) signature. We pin everything else: the body with the nonce
    # zeroed is golden, and the signature is exactly the CA's Ed25519
    # signature over the body with its real nonce.
    a, b = golden_issue(), golden_issue()
    assert a.openssh != b.openssh
    nonce_a = a.blob[cert_fields(a.blob)["nonce"][0] + 4 : cert_fields(a.blob)["nonce"][1]]
    nonce_b = b.blob[cert_fields(b.blob)["nonce"][0] + 4 : cert_fields(b.blob)["nonce"][1]]
    assert nonce_a != nonce_b
    assert body_without_nonce(a.blob) == body_without_nonce(b.blob)
    assert base64.b64encode(body_without_nonce(a.blob)).decode() == GOLDEN_BODY

    ca, _ = golden_keys()
    for cert in (a, b):
        fields = cert_fields(cert.blob)
        start, end = fields["signature"]
        signature = cert.blob[start + 4 : end]
        assert signature == sshstr(b"ssh-ed25519") + sshstr(ca.private.sign(cert.blob[:start]))  # type: ignore[union-attr]

    # Every decoded field is the same too.
    assert dataclasses.replace(a, openssh="") == dataclasses.replace(b, openssh="")
    assert a.serial == 0x0123456789ABCDEF
    assert a.valid_after == GOLDEN_NOW - timedelta(seconds=60)
    assert a.valid_before == GOLDEN_NOW + timedelta(minutes=29)
    assert a.ca_public_key.fingerprint == golden_keys()[0].fingerprint


def test_is_valid_at() -> None:
    cert = issue(duration=timedelta(seconds=60), backdate=timedelta(seconds=5))
    start = NOW.replace(microsecond=0) - timedelta(seconds=5)
    assert not cert.is_valid_at(start - timedelta(microseconds=1))
    assert cert.is_valid_at(start)
    assert cert.is_valid_at(start + timedelta(seconds=59, microseconds=999_999))
    assert not cert.is_valid_at(start + timedelta(seconds=60))


def test_to_text_matches_ssh_keygen_for_a_certificate_without_principals(
    ssh_keygen: str, tmp_path: Path
) -> None:
    # We never issue one (to sshd an empty list means any principal), but
    # inspection must still show one the way ssh-keygen does.
    run(ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "ca")
    run(ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "u")
    run(ssh_keygen, "-q", "-s", tmp_path / "ca", "-I", "anyone", "-O", "clear", tmp_path / "u.pub")
    cert = parse_certificate((tmp_path / "u-cert.pub").read_text())
    assert cert.principals == ()
    listing = keygen_list(ssh_keygen, tmp_path / "u-cert.pub")
    assert listing.fields["Principals"] == "(none)"
    ours = [line.rstrip() for line in cert.to_text().splitlines()]
    assert [line for line in ours if "Valid:" not in line] == [
        line for line in listing.lines if "Valid:" not in line
    ]
