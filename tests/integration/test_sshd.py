"""Certificates from ``ca`` against a real OpenSSH sshd.

Each test runs once per CA type (Ed25519, ECDSA P-256, RSA 3072): see
``conftest.py`` for the throwaway sshd. What sshd accepts or refuses is the
whole point of jit-ssh, so every refusal is also checked in sshd's own log,
to be sure it was refused for the reason the test claims.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from ca import CAKey

from .conftest import ALLOWED_PRINCIPAL, LOGIN_USER, USER_KEY_TYPES, Signed, Sshd, UserKey, utcnow

pytestmark = pytest.mark.integration

Sign = Callable[..., Signed]


def assert_logged_in(
    result: subprocess.CompletedProcess[str], sshd: Sshd, expected: str = LOGIN_USER
) -> None:
    assert result.returncode == 0, (
        f"ssh failed ({result.returncode}): {result.stderr.strip()}\nsshd log tail:\n{sshd.log_text()[-1500:]}"
    )
    assert result.stdout.strip() == expected


def assert_refused(
    result: subprocess.CompletedProcess[str], sshd: Sshd, signed: Signed, mark: int
) -> None:
    """ssh was refused at authentication, and sshd did not accept this certificate."""
    assert result.returncode == 255, (
        f"expected a refusal, got {result.returncode}: {result.stdout!r}"
    )
    assert "Permission denied (publickey)" in result.stderr, result.stderr
    assert f"ID {signed.cert.key_id} (serial {signed.cert.serial})" not in "".join(
        line for line in sshd.log_since(mark).splitlines(keepends=True) if "Accepted" in line
    )


def sleep_until(moment: datetime) -> None:
    delay = (moment - utcnow()).total_seconds()
    if delay > 0:
        time.sleep(delay)


# --------------------------------------------------------------------------- accepted


@pytest.mark.parametrize("kind", USER_KEY_TYPES)
def test_valid_certificate_logs_in_with_openssh(
    sshd: Sshd, sign: Sign, user_keys: dict[str, UserKey], kind: str
) -> None:
    key = user_keys[kind]
    signed = sign(key)
    assert_logged_in(sshd.ssh(key, signed, "id -un"), sshd)


@pytest.mark.parametrize("kind", USER_KEY_TYPES)
def test_valid_certificate_logs_in_with_paramiko(
    sshd: Sshd, sign: Sign, user_keys: dict[str, UserKey], kind: str
) -> None:
    key = user_keys[kind]
    signed = sign(key)
    status, out = sshd.paramiko_exec(key, signed, "id -un")
    assert (status, out.strip()) == (0, LOGIN_USER)


def test_login_log_line_names_key_id_and_serial(
    sshd: Sshd, sign: Sign, user_key: UserKey, ca: CAKey
) -> None:
    key_id = "jit-ssh:req=4f1c2a9e:user=alice:by=bob,carol"
    signed = sign(user_key, key_id=key_id)
    mark = sshd.log_mark()
    assert_logged_in(sshd.ssh(user_key, signed, "echo ok"), sshd, "ok")
    # LogLevel VERBOSE: "Accepted publickey for USER from IP port N ssh2:
    # ED25519-CERT SHA256:<key> ID <key id> (serial <serial>) CA <type> SHA256:<ca>"
    line = sshd.wait_for_log(
        rf"Accepted publickey for {LOGIN_USER} from 127\.0\.0\.1 port \d+ ssh2: \S+-CERT "
        rf"{re.escape(user_key.public.fingerprint)} ID {re.escape(key_id)} "
        rf"\(serial {signed.cert.serial}\) CA \S+ {re.escape(ca.fingerprint)}",
        mark,
    )
    assert key_id in line.group(0) and f"(serial {signed.cert.serial})" in line.group(0)
    # ... and the certificate line, with the key id quoted.
    sshd.wait_for_log(
        rf'Accepted certificate ID "{re.escape(key_id)}" \(serial {signed.cert.serial}\) signed by \S+ CA '
        rf"{re.escape(ca.fingerprint)}",
        mark,
    )


def test_matching_source_address_logs_in(sshd: Sshd, sign: Sign, user_key: UserKey) -> None:
    signed = sign(user_key, source_address="127.0.0.1/32")
    assert_logged_in(sshd.ssh(user_key, signed), sshd)


def test_force_command_is_enforced(sshd: Sshd, sign: Sign, user_key: UserKey) -> None:
    signed = sign(user_key, force_command="echo forced")
    # The engineer asks for `id -un`; sshd runs the certificate's command instead.
    assert_logged_in(sshd.ssh(user_key, signed, "id -un"), sshd, "forced")


# --------------------------------------------------------------------------- refused


def test_expired_certificate_is_refused(sshd: Sshd, sign: Sign, user_key: UserKey) -> None:
    # A certificate carries whole seconds and its valid_after is `now` floored;
    # start just after a second boundary so the 2 s window really has ~2 s left
    # for the first (successful) login.
    now = utcnow()
    sleep_until(now.replace(microsecond=0) + timedelta(seconds=1, milliseconds=20))
    signed = sign(user_key, duration=timedelta(seconds=2), now=utcnow())
    assert signed.cert.valid_before - signed.cert.valid_after == timedelta(seconds=2)
    assert_logged_in(sshd.ssh(user_key, signed), sshd)

    # sshd compares time(NULL) >= valid_before: whole seconds, so a little past it is enough.
    sleep_until(signed.cert.valid_before + timedelta(milliseconds=300))
    mark = sshd.log_mark()
    assert_refused(sshd.ssh(user_key, signed), sshd, signed, mark)
    sshd.wait_for_log(r"Certificate invalid: expired", mark)


def test_not_yet_valid_certificate_is_refused(sshd: Sshd, sign: Sign, user_key: UserKey) -> None:
    signed = sign(user_key, now=utcnow() + timedelta(hours=1), duration=timedelta(minutes=10))
    mark = sshd.log_mark()
    assert_refused(sshd.ssh(user_key, signed), sshd, signed, mark)
    sshd.wait_for_log(r"Certificate invalid: not yet valid", mark)


@pytest.mark.parametrize(
    "principal",
    [
        "root@another-host",
        # The login name itself: sshd would accept it without an
        # AuthorizedPrincipalsFile, but with one only the file's lines count.
        LOGIN_USER,
    ],
)
def test_wrong_principal_is_refused(
    sshd: Sshd, sign: Sign, user_key: UserKey, principal: str
) -> None:
    assert principal != ALLOWED_PRINCIPAL
    signed = sign(user_key, principals=[principal])
    mark = sshd.log_mark()
    assert_refused(sshd.ssh(user_key, signed), sshd, signed, mark)
    sshd.wait_for_log(r"Certificate does not contain an authorized principal", mark)


def test_revoked_serial_is_refused_while_sibling_logs_in(
    sshd: Sshd, sign: Sign, user_key: UserKey, ssh_keygen: str
) -> None:
    revoked = sign(user_key)
    sibling = sign(user_key)  # same CA, same key, another serial
    assert revoked.cert.serial != sibling.cert.serial
    assert_logged_in(sshd.ssh(user_key, revoked), sshd)

    # A new KRL (from ca.krl.build_krl) takes effect without restarting sshd.
    sshd.set_revoked(serials=[revoked.cert.serial])
    pid = sshd.proc.pid if sshd.proc else None
    # ssh-keygen agrees with sshd about our KRL: 1 = revoked, 0 = not.
    q = [ssh_keygen, "-Q", "-f", str(sshd.krl_path)]
    assert subprocess.run([*q, str(revoked.path)], capture_output=True, timeout=30).returncode == 1
    assert subprocess.run([*q, str(sibling.path)], capture_output=True, timeout=30).returncode == 0

    mark = sshd.log_mark()
    assert_refused(sshd.ssh(user_key, revoked), sshd, revoked, mark)
    sshd.wait_for_log(rf"revoked by file {re.escape(str(sshd.krl_path))}", mark)
    assert_logged_in(sshd.ssh(user_key, sibling), sshd)
    assert sshd.proc is not None and sshd.proc.pid == pid and sshd.proc.poll() is None

    # And un-revoking works the same way.
    sshd.set_revoked()
    assert_logged_in(sshd.ssh(user_key, revoked), sshd)


def test_certificate_from_untrusted_ca_is_refused(
    sshd: Sshd, sign: Sign, user_key: UserKey, other_ca: CAKey
) -> None:
    signed = sign(user_key, ca=other_ca)
    assert signed.cert.ca_public_key == other_ca.public
    mark = sshd.log_mark()
    assert_refused(sshd.ssh(user_key, signed), sshd, signed, mark)
    # sshd says why only at DEBUG2 ("CA ... is not listed in ..."); at VERBOSE
    # the refusal is a "Failed publickey" line naming the untrusted CA.
    sshd.wait_for_log(
        rf"Failed publickey for {LOGIN_USER} from 127\.0\.0\.1 port \d+ ssh2: \S+-CERT \S+ "
        rf"ID {re.escape(signed.cert.key_id)} \(serial {signed.cert.serial}\) CA \S+ {re.escape(other_ca.fingerprint)}",
        mark,
    )
    # The same key with a certificate from the trusted CA is fine.
    assert_logged_in(sshd.ssh(user_key, sign(user_key)), sshd)


def test_source_address_mismatch_is_refused(sshd: Sshd, sign: Sign, user_key: UserKey) -> None:
    signed = sign(user_key, source_address="10.0.0.0/8")
    mark = sshd.log_mark()
    assert_refused(sshd.ssh(user_key, signed), sshd, signed, mark)
    sshd.wait_for_log(
        r"Authentication tried for \S+ with valid certificate but not from a permitted source address \(127\.0\.0\.1\)",
        mark,
    )


# --------------------------------------------------------------------------- the window


def test_certificate_window_is_exactly_the_duration(
    ca: CAKey, sign: Sign, user_keys: dict[str, UserKey], ssh_keygen: str
) -> None:
    signed = sign(user_keys["ed25519"], duration=timedelta(seconds=120))
    # TZ=UTC: ssh-keygen prints local times, and a DST change must not move the window.
    out = subprocess.run(
        [ssh_keygen, "-L", "-f", str(signed.path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ, "TZ": "UTC"},
    ).stdout
    m = re.search(r"Valid: from (\S+) to (\S+)", out)
    assert m, out
    start, end = (datetime.strptime(t, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC) for t in m.groups())
    assert end - start == timedelta(minutes=2)
    assert (start, end) == (signed.cert.valid_after, signed.cert.valid_before)
    assert f"Serial: {signed.cert.serial}" in out
    assert f'Key ID: "{signed.cert.key_id}"' in out
