"""KRL interop with the real OpenSSH tools.

Our KRLs are checked with ``ssh-keygen -Q`` (exit 0: not revoked, 1: revoked,
255: the KRL did not parse, which fails the test), and KRLs written by
``ssh-keygen -k`` are read back with :func:`ca.krl.parse_krl`. Skipped when
ssh-keygen is missing, except with CI=true, where that is a failure.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ca.errors import InvalidKRL
from ca.krl import accept_krl, build_krl, empty_krl, krl_version_at, parse_krl

try:
    import krl_helpers as h
except ImportError:  # pragma: no cover - when tests/ is imported as a package
    from tests import krl_helpers as h

pytestmark = pytest.mark.integration

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ssh_keygen() -> str:
    return h.require_ssh_keygen()


@pytest.fixture(scope="module")
def ca() -> h.TestCA:
    return h.make_ca("ed25519")


@pytest.fixture(scope="module")
def other_ca() -> h.TestCA:
    return h.make_ca("ecdsa")


def write(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def cert_file(tmp_path: Path, cert: h.TestCert, name: str | None = None) -> Path:
    return write(tmp_path / (name or f"c{cert.serial}-{abs(hash(cert.line))}-cert.pub"), cert.line)


def revoked(tmp_path: Path, krl: bytes, cert: h.TestCert) -> bool:
    krl_path = write(tmp_path / "test.krl", krl)
    path = cert_file(tmp_path, cert)
    return h.query(krl_path, path)[str(path)]


# --- our KRLs, read by ssh-keygen -Q ---------------------------------------


def test_empty_krl_revokes_nothing(ssh_keygen, tmp_path, ca) -> None:
    cert = h.make_cert(ca, serial=1234)
    assert revoked(tmp_path, empty_krl(version=1, now=NOW), cert) is False


def test_revoke_by_serial_in_a_list(ssh_keygen, tmp_path, ca) -> None:
    krl = build_krl(ca_keys=[ca.blob], serials=[3, 1234, 99999], version=2, now=NOW)
    assert revoked(tmp_path, krl, h.make_cert(ca, serial=1234)) is True
    assert revoked(tmp_path, krl, h.make_cert(ca, serial=1235)) is False


def test_revoke_by_serial_in_a_range(ssh_keygen, tmp_path, ca) -> None:
    krl = build_krl(ca_keys=[ca.blob], serials=[(1000, 2000)], version=2, now=NOW)
    assert parse_krl(krl).cert_sections[0].serial_ranges == ((1000, 2000),)
    for serial, expected in [(999, False), (1000, True), (1500, True), (2000, True), (2001, False)]:
        assert revoked(tmp_path, krl, h.make_cert(ca, serial=serial)) is expected, serial


@pytest.mark.parametrize(
    "version", [krl_version_at(NOW), krl_version_at(datetime(9999, 12, 31, tzinfo=UTC)), 2**64 - 1]
)
def test_microsecond_versions_are_read_by_ssh_keygen(ssh_keygen, tmp_path, ca, version) -> None:
    # OpenSSH reads krl_version as a u64 and does not judge it: the new, much larger
    # numbers change nothing for sshd. (Hosts judge them: see test_krl_accept.py.)
    data = build_krl(ca_keys=[ca.blob], serials=[7], version=version, now=NOW)
    assert revoked(tmp_path, data, h.make_cert(ca, serial=7)) is True
    assert revoked(tmp_path, data, h.make_cert(ca, serial=8)) is False


def test_what_hosts_accept_ssh_keygen_reads_the_same_way(
    ssh_keygen, tmp_path, ca, other_ca
) -> None:
    # The server's shape during a rotation: both CA keys, serials and a key id.
    data = build_krl(
        ca_keys=[ca.blob, other_ca.blob],
        serials=[3, (10, 20)],
        key_ids=["gone"],
        version=krl_version_at(NOW),
        now=NOW,
    )
    krl = accept_krl(data, trusted_ca_keys=[ca.blob], now=NOW)
    probes = [
        h.make_cert(c, serial=s, key_id=k)
        for c in (ca, other_ca)
        for s, k in ((3, "x"), (15, "x"), (4, "gone"), (4, "x"))
    ]
    paths = [cert_file(tmp_path, c, f"p{i}-cert.pub") for i, c in enumerate(probes)]
    verdicts = h.query(write(tmp_path / "k.krl", data), *paths)
    for i, (probe, path) in enumerate(zip(probes, paths, strict=False)):
        ca_blob = ca.blob if i < 4 else other_ca.blob
        assert verdicts[str(path)] == krl.is_revoked(probe.serial, probe.key_id, ca_blob)
    assert [verdicts[str(p)] for p in paths] == [True, True, True, False] * 2


def test_serial_revocation_is_scoped_to_its_ca(ssh_keygen, tmp_path, ca, other_ca) -> None:
    krl = build_krl(ca_keys=[ca.blob], serials=[77], version=2, now=NOW)
    assert revoked(tmp_path, krl, h.make_cert(other_ca, serial=77)) is False
    wildcard = build_krl(ca_keys=[b""], serials=[77], version=2, now=NOW)
    assert revoked(tmp_path, wildcard, h.make_cert(other_ca, serial=77)) is True


def test_revoke_for_two_ca_keys_during_rotation(ssh_keygen, tmp_path, ca, other_ca) -> None:
    krl = build_krl(
        ca_keys=[ca.blob, other_ca.blob], serials=[50], key_ids=["gone"], version=3, now=NOW
    )
    assert len(parse_krl(krl).cert_sections) == 2
    for signer in (ca, other_ca):
        assert revoked(tmp_path, krl, h.make_cert(signer, serial=50)) is True
        assert revoked(tmp_path, krl, h.make_cert(signer, serial=51, key_id="gone")) is True
        assert revoked(tmp_path, krl, h.make_cert(signer, serial=51)) is False


def test_revoke_by_key_id(ssh_keygen, tmp_path, ca) -> None:
    key_id = "jit-ssh:req=0b7c:user=alice:by=bob"
    krl = build_krl(ca_keys=[ca.blob], key_ids=[key_id, "other"], version=2, now=NOW)
    assert revoked(tmp_path, krl, h.make_cert(ca, serial=5, key_id=key_id)) is True
    assert revoked(tmp_path, krl, h.make_cert(ca, serial=5, key_id=key_id + "x")) is False


def test_revoke_by_public_key_and_by_sha256(ssh_keygen, tmp_path, ca) -> None:
    user_a, user_b = h.make_user_key(), h.make_user_key()
    cert_a = h.make_cert(ca, serial=10, user_key=user_a)
    cert_b = h.make_cert(ca, serial=11, user_key=user_b)
    cert_c = h.make_cert(ca, serial=12)
    krl = build_krl(
        ca_keys=[],
        public_keys=[cert_a.user_blob],
        sha256_fingerprints=[hashlib.sha256(cert_b.user_blob).digest()],
        version=2,
        now=NOW,
    )
    krl_path = write(tmp_path / "keys.krl", krl)
    paths = [cert_file(tmp_path, c) for c in (cert_a, cert_b, cert_c)]
    plain = write(tmp_path / "a.pub", cert_a.user_line)
    verdicts = h.query(krl_path, *paths, plain)
    assert [verdicts[str(p)] for p in paths] == [True, True, False]
    assert verdicts[str(plain)] is True  # the plain key, outside any certificate


def test_revoking_the_ca_key_revokes_its_certificates(ssh_keygen, tmp_path, ca, other_ca) -> None:
    krl = build_krl(ca_keys=[], public_keys=[other_ca.blob], version=2, now=NOW)
    parsed = parse_krl(krl)
    assert revoked(tmp_path, krl, h.make_cert(other_ca, serial=9)) is True
    assert parsed.is_revoked(9, "test", other_ca.blob)
    assert revoked(tmp_path, krl, h.make_cert(ca, serial=9)) is False


def test_rsa_and_ecdsa_ca_keys(ssh_keygen, tmp_path) -> None:
    for kind in ("rsa", "ecdsa"):
        signer = h.make_ca(kind)
        krl = build_krl(ca_keys=[signer.blob], serials=[(7, 9)], version=1, now=NOW)
        assert revoked(tmp_path, krl, h.make_cert(signer, serial=8)) is True
        assert revoked(tmp_path, krl, h.make_cert(signer, serial=6)) is False


@pytest.mark.parametrize("placement", ["range", "list"])
def test_100k_serials_accepted_by_ssh_keygen(ssh_keygen, tmp_path, ca, placement) -> None:
    rnd = random.Random(2024)
    target = 2**62 + 12345
    serials: list[int | tuple[int, int]] = [rnd.randrange(1, 2**63) for _ in range(100_000)]
    if placement == "range":
        serials.append((target - 10, target + 10))  # the cert's serial inside a range
    else:
        serials.extend([target - 2, target, target + 2])  # inside the serial list
    krl = build_krl(ca_keys=[ca.blob], serials=serials, version=100, now=NOW)
    parsed = parse_krl(krl)
    assert parsed.is_revoked(target, "x", ca.blob)

    krl_path = write(tmp_path / "big.krl", krl)
    certs = {
        "target": h.make_cert(ca, serial=target),
        "listed": h.make_cert(ca, serial=int(serials[500])),  # type: ignore[arg-type]
        "not-listed": h.make_cert(ca, serial=target + 11),  # just past the range
        "small": h.make_cert(ca, serial=1),
    }
    paths = {name: cert_file(tmp_path, cert, f"{name}-cert.pub") for name, cert in certs.items()}
    verdicts = h.query(krl_path, *paths.values())
    got = {name: verdicts[str(path)] for name, path in paths.items()}
    expected = {name: parsed.is_revoked(c.serial, c.key_id, ca.blob) for name, c in certs.items()}
    assert expected["target"] and expected["listed"] and not expected["not-listed"]
    assert got == expected


def test_random_krls_agree_with_ssh_keygen(ssh_keygen, tmp_path, ca) -> None:
    rnd = random.Random(99)
    for round_ in range(3):
        items: list[int | tuple[int, int]] = []
        for _ in range(rnd.randint(1, 30)):
            lo = rnd.randint(1, 400)
            items.append(lo if rnd.random() < 0.6 else (lo, lo + rnd.randint(0, 6)))
        ids = [f"id-{rnd.randint(0, 9)}" for _ in range(3)]
        krl = build_krl(ca_keys=[ca.blob], serials=items, key_ids=ids, version=round_, now=NOW)
        parsed = parse_krl(krl)
        krl_path = write(tmp_path / f"r{round_}.krl", krl)
        probes = [
            h.make_cert(ca, serial=rnd.randint(1, 420), key_id=f"id-{rnd.randint(0, 12)}")
            for _ in range(25)
        ]
        paths = [cert_file(tmp_path, c, f"r{round_}-{i}-cert.pub") for i, c in enumerate(probes)]
        verdicts = h.query(krl_path, *paths)
        for cert, path in zip(probes, paths, strict=False):
            assert verdicts[str(path)] == parsed.is_revoked(cert.serial, cert.key_id, ca.blob), cert


# --- KRLs written by ssh-keygen -k, read by us -----------------------------


def keygen_krl(ssh_keygen: str, tmp_path: Path, *args: str) -> bytes:
    out = tmp_path / "keygen.krl"
    out.unlink(missing_ok=True)
    subprocess.run(
        [ssh_keygen, "-k", "-f", str(out), *args], check=True, capture_output=True, timeout=60
    )
    return out.read_bytes()


def test_reads_ssh_keygen_serials_ranges_and_key_ids(ssh_keygen, tmp_path, ca) -> None:
    ca_pub = write(tmp_path / "ca.pub", ca.pub_line)
    spec = write(
        tmp_path / "spec.txt", "serial: 5\nserial: 10-20\nserial: 0x40\nid: foo\nid: bar baz\n"
    )
    data = keygen_krl(ssh_keygen, tmp_path, "-s", str(ca_pub), str(spec))
    krl = parse_krl(data)
    [section] = krl.cert_sections
    assert section.ca_key == ca.blob
    assert section.serial_ranges == ((5, 5), (10, 20), (64, 64))
    assert section.key_ids == ("bar baz", "foo")
    # ssh-keygen chose a bitmap for these: we read it, and agree with -Q.
    assert b"\x22" in data
    krl_path = write(tmp_path / "k.krl", data)
    probes = [h.make_cert(ca, serial=s) for s in (4, 5, 6, 9, 10, 15, 20, 21, 63, 64, 65)]
    probes.append(h.make_cert(ca, serial=1, key_id="foo"))
    probes.append(h.make_cert(ca, serial=1, key_id="bar baz"))
    probes.append(h.make_cert(ca, serial=1, key_id="bar"))
    paths = [cert_file(tmp_path, c, f"p{i}-cert.pub") for i, c in enumerate(probes)]
    verdicts = h.query(krl_path, *paths)
    for cert, path in zip(probes, paths, strict=False):
        assert verdicts[str(path)] == krl.is_revoked(cert.serial, cert.key_id, ca.blob), cert


def test_reads_ssh_keygen_public_key_revocations(ssh_keygen, tmp_path, ca) -> None:
    cert_a, cert_b, cert_c, cert_d = (h.make_cert(ca, serial=s) for s in (1, 2, 3, 4))
    pub_a = write(tmp_path / "a.pub", cert_a.user_line)
    data = keygen_krl(ssh_keygen, tmp_path, str(pub_a))
    krl = parse_krl(data)
    assert krl.revoked_keys == (cert_a.user_blob,)
    assert krl.is_revoked(1, "test", ca.blob, cert_a.user_blob)

    spec = write(
        tmp_path / "spec.txt",
        f"sha256: {cert_b.user_line}sha1: {cert_c.user_line}key: {cert_d.user_line}",
    )
    krl = parse_krl(keygen_krl(ssh_keygen, tmp_path, str(spec)))
    assert len(krl.revoked_sha256) == 1 and len(krl.revoked_sha1) == 1
    assert krl.revoked_keys == (cert_d.user_blob,)
    for cert in (cert_b, cert_c, cert_d):
        assert krl.is_revoked(cert.serial, cert.key_id, ca.blob, cert.user_blob)
    assert not krl.is_revoked(cert_a.serial, cert_a.key_id, ca.blob, cert_a.user_blob)


def test_reads_ssh_keygen_hash_lines(ssh_keygen, tmp_path, ca) -> None:
    cert = h.make_cert(ca, serial=3)
    pub = write(tmp_path / "u.pub", cert.user_line)
    fingerprint = subprocess.run(
        [ssh_keygen, "-l", "-f", str(pub)], check=True, capture_output=True, text=True
    ).stdout.split()[1]
    spec = write(tmp_path / "spec.txt", f"hash: {fingerprint}\n")
    krl = parse_krl(keygen_krl(ssh_keygen, tmp_path, str(spec)))
    assert krl.is_revoked(3, "test", ca.blob, cert.user_blob)
    assert f"hash: {fingerprint}" in krl.to_text()


def test_reads_ssh_keygen_certificate_revocations(ssh_keygen, tmp_path, ca) -> None:
    # Given a certificate, ssh-keygen -k revokes it by serial for its CA.
    cert = h.make_cert(ca, serial=424242)
    path = cert_file(tmp_path, cert)
    krl = parse_krl(keygen_krl(ssh_keygen, tmp_path, str(path)))
    assert krl.cert_sections[0].ca_key == ca.blob
    assert krl.is_revoked(424242, "whatever", ca.blob)


def test_long_bitmaps_from_ssh_keygen_are_refused_like_openssh_does(
    ssh_keygen, tmp_path, ca
) -> None:
    # ssh-keygen -k writes every other serial as one bitmap. Past 16,384 bits
    # neither ssh-keygen -Q nor sshd can read it back, and every key would be
    # refused: parse_krl must refuse it too, so a host never installs it.
    ca_pub = write(tmp_path / "ca.pub", ca.pub_line)
    for top, readable in ((16_000, True), (40_000, False)):
        spec = write(tmp_path / "spec.txt", "".join(f"serial: {s}\n" for s in range(1, top, 2)))
        data = keygen_krl(ssh_keygen, tmp_path, "-s", str(ca_pub), str(spec))
        krl_path = write(tmp_path / f"bitmap{top}.krl", data)
        probe = cert_file(tmp_path, h.make_cert(ca, serial=3), "probe-cert.pub")
        proc = subprocess.run(
            [ssh_keygen, "-Q", "-f", str(krl_path), str(probe)], capture_output=True, text=True
        )
        if readable:
            assert proc.returncode == 1, proc.stderr
            assert parse_krl(data).cert_sections[0].serial_count == len(range(1, top, 2))
        else:
            assert proc.returncode == 255, (proc.returncode, proc.stdout, proc.stderr)
            with pytest.raises(InvalidKRL, match="16,384-bit"):
                parse_krl(data)


def test_our_output_round_trips_through_ssh_keygen_update(ssh_keygen, tmp_path, ca) -> None:
    # ssh-keygen -k -u loads our KRL, adds to it and writes it again: what it
    # read must be what we meant.
    ours = build_krl(ca_keys=[ca.blob], serials=[7, (100, 200)], key_ids=["a"], version=5, now=NOW)
    krl_path = write(tmp_path / "ours.krl", ours)
    ca_pub = write(tmp_path / "ca.pub", ca.pub_line)
    spec = write(tmp_path / "spec.txt", "serial: 300\n")
    subprocess.run(
        [ssh_keygen, "-k", "-u", "-f", str(krl_path), "-s", str(ca_pub), str(spec)],
        check=True,
        capture_output=True,
    )
    updated = parse_krl(krl_path.read_bytes())
    [section] = updated.cert_sections
    assert section.serial_ranges == ((7, 7), (100, 200), (300, 300))
    assert section.key_ids == ("a",)
