"""`jit-ssh host setup`: the files a host's sshd needs, and sshd -t's opinion of them;
`jit-ssh host sync-krl`: which KRLs a host installs, against a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import json
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca.krl import build_krl, krl_version_at, parse_krl
from client.cli import cli

try:
    import krl_helpers as h
except ImportError:  # pragma: no cover - when tests/ is imported as a package
    from tests import krl_helpers as h


@pytest.fixture
def ca_keys(tmp_path: Path) -> Path:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    path = tmp_path / "ca.pub"
    path.write_bytes(
        key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n"
    )
    return path


def _setup(runner: CliRunner, sshd_dir: Path, ca_keys: Path, *extra: str):
    return runner.invoke(
        cli,
        ["host", "setup", "--ca-keys", str(ca_keys), "--sshd-dir", str(sshd_dir), *extra],
        catch_exceptions=False,
    )


def test_setup_writes_every_file(runner: CliRunner, tmp_path: Path, ca_keys: Path) -> None:
    sshd_dir = tmp_path / "ssh"
    r = _setup(
        runner,
        sshd_dir,
        ca_keys,
        "--target",
        "prod-db",
        "--login-user",
        "root",
        "--login-user",
        "postgres",
        "--principal",
        "root@prod-db",
    )
    assert r.exit_code == 0, r.output
    dropin = (sshd_dir / "sshd_config.d" / "60-jit-ssh.conf").read_text()
    assert f"TrustedUserCAKeys {sshd_dir}/jit-ssh/trusted_user_ca_keys" in dropin
    assert f"AuthorizedPrincipalsFile {sshd_dir}/jit-ssh/principals/%u" in dropin
    assert f"RevokedKeys {sshd_dir}/jit-ssh/revoked_keys.krl" in dropin
    assert "LogLevel VERBOSE" in dropin
    assert (sshd_dir / "jit-ssh" / "trusted_user_ca_keys").read_text() == ca_keys.read_text()
    for user in ("root", "postgres"):
        lines = (sshd_dir / "jit-ssh" / "principals" / user).read_text().splitlines()
        assert "root@prod-db" in lines
    krl = parse_krl((sshd_dir / "jit-ssh" / "revoked_keys.krl").read_bytes())
    assert not krl.cert_sections and not krl.revoked_keys


def test_setup_keeps_other_targets_and_an_existing_krl(
    runner: CliRunner, tmp_path: Path, ca_keys: Path
) -> None:
    sshd_dir = tmp_path / "ssh"
    _setup(
        runner, sshd_dir, ca_keys, "--target", "a", "--login-user", "root", "--principal", "root@a"
    )
    krl_path = sshd_dir / "jit-ssh" / "revoked_keys.krl"
    from datetime import datetime

    from ca.krl import build_krl

    revoked = build_krl(ca_keys=[b""], serials=[5], version=99, now=datetime.now(UTC))
    krl_path.write_bytes(revoked)
    _setup(
        runner, sshd_dir, ca_keys, "--target", "b", "--login-user", "root", "--principal", "root@b"
    )
    lines = (sshd_dir / "jit-ssh" / "principals" / "root").read_text().splitlines()
    assert "root@a" in lines and "root@b" in lines
    # A valid KRL with revocations is never replaced by an empty one.
    assert krl_path.read_bytes() == revoked


def test_dry_run_writes_nothing(runner: CliRunner, tmp_path: Path, ca_keys: Path) -> None:
    sshd_dir = tmp_path / "ssh"
    r = _setup(
        runner,
        sshd_dir,
        ca_keys,
        "--target",
        "t",
        "--login-user",
        "root",
        "--principal",
        "root@t",
        "--dry-run",
    )
    assert r.exit_code == 0
    assert "TrustedUserCAKeys" in r.output and "60-jit-ssh.conf" in r.output
    assert not sshd_dir.exists()


@pytest.mark.parametrize(
    "extra",
    [
        ["--target", "t", "--login-user", "root"],  # no principal
        ["--target", "t", "--login-user", "bad user", "--principal", "p"],
        ["--target", "t", "--login-user", "root", "--principal", "a,b"],
        ["--target", "../etc", "--login-user", "root", "--principal", "p"],
    ],
)
def test_setup_refuses_bad_input(
    runner: CliRunner, tmp_path: Path, ca_keys: Path, extra: list[str]
) -> None:
    from client.cli import main

    sshd_dir = tmp_path / "ssh"
    with pytest.raises(SystemExit) as exc:
        main(["host", "setup", "--ca-keys", str(ca_keys), "--sshd-dir", str(sshd_dir), *extra])
    assert exc.value.code in (1, 2)
    assert not sshd_dir.exists()


def test_server_must_be_https_except_localhost(runner: CliRunner, tmp_path: Path) -> None:
    r = runner.invoke(
        cli,
        [
            "host",
            "setup",
            "--server",
            "http://ca.example.com",
            "--target",
            "t",
            "--login-user",
            "root",
            "--principal",
            "p",
            "--sshd-dir",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 2 and "https" in r.output


# --- sync-krl: what a host installs, and when --------------------------------------------------


@dataclass
class FakeKRLServer:
    """A jit-ssh server as far as sync-krl sees it: GET /v1/krl, with ETag and X-KRL-SHA256."""

    url: str = ""
    krl: bytes = b""
    requests: list[dict[str, str]] = field(default_factory=list)

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.krl).hexdigest()[:32] + '"'


@pytest.fixture
def krl_server() -> Iterator[FakeKRLServer]:
    fake = FakeKRLServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake.requests.append(dict(self.headers))
            if self.path != "/v1/krl":
                self.send_error(404)
                return
            if self.headers.get("If-None-Match") == fake.etag:
                self.send_response(304)
                self.send_header("ETag", fake.etag)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(fake.krl)))
            self.send_header("ETag", fake.etag)
            self.send_header("X-KRL-SHA256", hashlib.sha256(fake.krl).hexdigest())
            self.end_headers()
            self.wfile.write(fake.krl)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass
class Host:
    sshd_dir: Path
    krl: Path
    ca_blob: bytes

    def installed(self) -> bytes:
        return self.krl.read_bytes()

    def install(self, data: bytes) -> None:
        """What an earlier sync-krl (or an older jit-ssh) left in place."""
        self.krl.write_bytes(data)


@pytest.fixture
def host_krl(runner: CliRunner, tmp_path: Path, ca_keys: Path) -> Host:
    """A host laid out by `host setup`: trusted_user_ca_keys beside revoked_keys.krl (an empty KRL)."""
    sshd_dir = tmp_path / "ssh"
    r = _setup(
        runner, sshd_dir, ca_keys, "--target", "t", "--login-user", "root", "--principal", "root@t"
    )
    assert r.exit_code == 0, r.output
    blob = h.wire_blob(serialization.load_ssh_public_key(ca_keys.read_bytes()))
    return Host(sshd_dir, sshd_dir / "jit-ssh" / "revoked_keys.krl", blob)


def _now() -> datetime:
    return datetime.now(UTC)


def _server_krl(
    host: Host, *, serials: tuple[int, ...] = (7,), at: datetime | None = None, **kw: object
) -> bytes:
    """A KRL as the server writes it: version = the newest revocation time."""
    moment = at or _now() - timedelta(seconds=30)
    return build_krl(
        ca_keys=[host.ca_blob], serials=serials, version=krl_version_at(moment), now=_now(), **kw
    )  # type: ignore[arg-type]


def _sync(runner: CliRunner, server: FakeKRLServer, host: Host, *extra: str):
    return runner.invoke(
        cli, ["host", "sync-krl", "--server", server.url, "--out", str(host.krl), *extra]
    )


def test_sync_krl_installs_the_servers_krl_over_host_setups_placeholder(
    runner: CliRunner, krl_server: FakeKRLServer, host_krl: Host
) -> None:
    krl_server.krl = _server_krl(host_krl)
    r = _sync(runner, krl_server, host_krl)
    assert r.exit_code == 0, r.output
    assert host_krl.installed() == krl_server.krl
    # Nothing changed since: the ETag says so and nothing is downloaded.
    again = _sync(runner, krl_server, host_krl)
    assert again.exit_code == 0 and "unchanged" in again.output
    assert krl_server.requests[-1].get("If-None-Match") == krl_server.etag


def test_an_installed_huge_version_no_longer_freezes_the_host(
    runner: CliRunner, krl_server: FakeKRLServer, host_krl: Host
) -> None:
    # One KRL with a huge version (an older jit-ssh, a bug) got installed: every later
    # KRL was then refused as "older", for good, with exit 0.
    host_krl.install(build_krl(ca_keys=[host_krl.ca_blob], serials=[1], version=2**63, now=_now()))
    krl_server.krl = _server_krl(host_krl, serials=(7, 8))
    r = _sync(runner, krl_server, host_krl)
    assert r.exit_code == 0, r.output
    assert host_krl.installed() == krl_server.krl
    assert "implausible version" in r.stderr


def test_an_installed_huge_version_in_a_foreign_krl_does_not_freeze_the_host_either(
    runner: CliRunner, krl_server: FakeKRLServer, host_krl: Host
) -> None:
    # Both flaws at once: the version alone decides whether the installed KRL still counts.
    host_krl.install(
        build_krl(
            ca_keys=[b""],
            serials=[1],
            public_keys=[h.public_key_pool()[1]],
            version=2**64 - 1,
            now=_now(),
        )
    )
    krl_server.krl = _server_krl(host_krl)
    r = _sync(runner, krl_server, host_krl)
    assert r.exit_code == 0, r.output
    assert host_krl.installed() == krl_server.krl


def test_an_installed_krl_of_the_old_numbering_is_replaced_by_the_new(
    runner: CliRunner, krl_server: FakeKRLServer, host_krl: Host
) -> None:
    # Revocation ids (the server's old versions) and Unix seconds (krl build's).
    for old in (42, int(_now().timestamp())):
        host_krl.install(
            build_krl(ca_keys=[host_krl.ca_blob], serials=[1], version=old, now=_now())
        )
        krl_server.krl = _server_krl(host_krl, serials=(old % 1000 + 2,))
        r = _sync(runner, krl_server, host_krl)
        assert r.exit_code == 0, r.output
        assert host_krl.installed() == krl_server.krl
        assert "WARNING" not in r.output


@pytest.mark.parametrize(
    "ahead", [timedelta(hours=1), timedelta(days=3650)], ids=["an hour", "ten years"]
)
def test_a_version_from_the_future_is_refused_and_the_installed_krl_kept(
    runner: CliRunner, krl_server: FakeKRLServer, host_krl: Host, ahead: timedelta
) -> None:
    before = host_krl.installed()
    krl_server.krl = _server_krl(host_krl, at=_now() + ahead)
    r = _sync(runner, krl_server, host_krl)
    assert r.exit_code == 6, r.output
    assert host_krl.installed() == before
    assert "later than this host's clock" in r.stderr and "unchanged" in r.stderr


def test_a_version_within_the_clock_skew_is_installed(
    runner: CliRunner, krl_server: FakeKRLServer, host_krl: Host
) -> None:
    krl_server.krl = _server_krl(host_krl, at=_now() + timedelta(minutes=2))
    assert _sync(runner, krl_server, host_krl).exit_code == 0
    krl_server.krl = _server_krl(host_krl, at=_now() + timedelta(minutes=20))
    assert _sync(runner, krl_server, host_krl).exit_code == 6
    assert _sync(runner, krl_server, host_krl, "--max-clock-skew", "30m").exit_code == 0
    assert host_krl.installed() == krl_server.krl


def test_an_older_krl_after_a_restore_is_reported_loudly_and_the_installed_one_kept(
    runner: CliRunner, krl_server: FakeKRLServer, host_krl: Host
) -> None:
    t = _now() - timedelta(hours=1)
    installed = _server_krl(host_krl, serials=(5, 6), at=t)
    host_krl.install(installed)
    # The server's database came back from a backup taken before serial 6 was revoked.
    krl_server.krl = _server_krl(host_krl, serials=(5,), at=t - timedelta(minutes=10))
    for _ in range(2):  # every run, not just once
        r = _sync(runner, krl_server, host_krl)
        assert r.exit_code == 5, r.output
        assert host_krl.installed() == installed
        assert "older than the installed one" in r.stderr
        assert "restored" in r.stderr and "--accept-older" in r.stderr
    # The next revocation on the restored server is stamped now: newer again, installed
    # by itself.
    krl_server.krl = _server_krl(host_krl, serials=(5, 9))
    r = _sync(runner, krl_server, host_krl)
    assert r.exit_code == 0, r.output
    assert host_krl.installed() == krl_server.krl


def test_accept_older_installs_the_servers_krl_and_says_so(
    runner: CliRunner, krl_server: FakeKRLServer, host_krl: Host
) -> None:
    t = _now() - timedelta(hours=1)
    host_krl.install(_server_krl(host_krl, serials=(5, 6), at=t))
    krl_server.krl = _server_krl(host_krl, serials=(5,), at=t - timedelta(minutes=10))
    r = _sync(runner, krl_server, host_krl, "--accept-older")
    assert r.exit_code == 0, r.output
    assert host_krl.installed() == krl_server.krl
    assert "WARNING: --accept-older" in r.stderr
    state = json.loads(host_krl.krl.with_name(host_krl.krl.name + ".state.json").read_text())
    assert state["accepted_older"]["to"] == krl_version_at(t - timedelta(minutes=10))
    # --accept-older does not open the door to implausible versions.
    krl_server.krl = _server_krl(host_krl, at=_now() + timedelta(days=1))
    assert _sync(runner, krl_server, host_krl, "--accept-older").exit_code == 6


def test_an_equal_version_with_other_content_is_installed(
    runner: CliRunner, krl_server: FakeKRLServer, host_krl: Host
) -> None:
    # Same newest revocation, fewer serials: the others expired (or a CA key was added).
    t = _now() - timedelta(minutes=5)
    host_krl.install(_server_krl(host_krl, serials=(5, 6), at=t))
    krl_server.krl = _server_krl(host_krl, serials=(6,), at=t)
    r = _sync(runner, krl_server, host_krl)
    assert r.exit_code == 0, r.output
    assert host_krl.installed() == krl_server.krl


def _hostile(host: Host, kind: str) -> bytes:
    version = krl_version_at(_now() - timedelta(seconds=30))
    ca = host.ca_blob
    plain = h.public_key_pool()[1]
    serials = h.raw_section(0x20, struct.pack(">Q", 7))
    if kind == "plain key":
        return build_krl(
            ca_keys=[ca], serials=[7], public_keys=[plain], version=version, now=_now()
        )
    if kind == "the CA key itself":
        return build_krl(ca_keys=[ca], serials=[7], public_keys=[ca], version=version, now=_now())
    if kind == "SHA-256 fingerprint":
        return build_krl(
            ca_keys=[ca],
            sha256_fingerprints=[hashlib.sha256(plain).digest()],
            version=version,
            now=_now(),
        )
    if kind == "SHA-1 fingerprint":
        return h.raw_krl(
            h.raw_cert_section(ca, serials),
            h.raw_section(3, h.ssh_string(hashlib.sha1(ca).digest())),
            version=version,
        )
    if kind == "any CA":
        return build_krl(ca_keys=[b""], serials=[7], version=version, now=_now())
    if kind == "bitmap":
        bitmap = h.raw_section(0x22, struct.pack(">Q", 7) + h.ssh_string(b"\x01"))
        return h.raw_krl(h.raw_cert_section(ca, bitmap), version=version)
    if kind == "untrusted CA only":
        return build_krl(ca_keys=[h.public_key_pool()[2]], serials=[7], version=version, now=_now())
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("plain key", "plain key"),
        ("the CA key itself", "itself"),
        ("SHA-256 fingerprint", "SHA-256 fingerprint"),
        ("SHA-1 fingerprint", "itself"),
        ("any CA", "ANY CA"),
        ("bitmap", "bitmap"),
        ("untrusted CA only", "none of its CA keys"),
    ],
)
def test_a_krl_jit_ssh_would_not_write_is_refused_and_the_installed_one_kept(
    runner: CliRunner, krl_server: FakeKRLServer, host_krl: Host, kind: str, says: str
) -> None:
    good = _server_krl(host_krl, serials=(3,), at=_now() - timedelta(hours=1))
    host_krl.install(good)
    krl_server.krl = _hostile(host_krl, kind)
    r = _sync(runner, krl_server, host_krl)
    assert r.exit_code == 6, r.output
    assert host_krl.installed() == good
    assert says in r.stderr and "unchanged" in r.stderr


def test_a_section_for_a_ca_key_being_rolled_out_does_not_stop_the_krl(
    runner: CliRunner, krl_server: FakeKRLServer, host_krl: Host
) -> None:
    new_ca = h.public_key_pool()[2]  # published by the server, not yet on this host
    krl_server.krl = build_krl(
        ca_keys=[host_krl.ca_blob, new_ca], serials=[7], version=krl_version_at(_now()), now=_now()
    )
    r = _sync(runner, krl_server, host_krl)
    assert r.exit_code == 0, r.output
    # Installed without the section for the key this host does not trust: sshd may trust
    # other CA keys elsewhere, whose certificates a server's KRL must not revoke.
    sent, installed = parse_krl(krl_server.krl), parse_krl(host_krl.installed())
    assert [s.ca_key for s in installed.cert_sections] == [host_krl.ca_blob]
    assert installed.cert_sections[0].revokes_serial(7)
    assert (installed.version, installed.generated_at) == (sent.version, sent.generated_at)
    assert "does not trust" in r.stderr


def test_a_krl_section_for_a_ca_key_this_host_does_not_trust_never_reaches_sshd(
    runner: CliRunner, krl_server: FakeKRLServer, host_krl: Host
) -> None:
    # sshd might trust another CA (another TrustedUserCAKeys in a Match block): a KRL
    # from the jit-ssh server must not be able to revoke that CA's certificates.
    other_ca = h.public_key_pool()[2]
    krl_server.krl = build_krl(
        ca_keys=[host_krl.ca_blob, other_ca],
        serials=[5, 9],
        version=krl_version_at(_now()),
        now=_now(),
    )
    r = _sync(runner, krl_server, host_krl)
    assert r.exit_code == 0, r.output
    installed = parse_krl(host_krl.installed())
    assert [s.ca_key for s in installed.cert_sections] == [host_krl.ca_blob]
    assert installed.cert_sections[0].revokes_serial(5) and installed.cert_sections[
        0
    ].revokes_serial(9)


def test_a_krl_revoking_a_whole_serial_range_is_refused_as_a_lockout(
    runner: CliRunner, krl_server: FakeKRLServer, host_krl: Host
) -> None:
    before = host_krl.installed()
    krl_server.krl = build_krl(
        ca_keys=[host_krl.ca_blob],
        serials=[(1, 2**64 - 1)],
        version=krl_version_at(_now()),
        now=_now(),
    )
    r = _sync(runner, krl_server, host_krl)
    assert r.exit_code == 6, r.output
    assert "lockout" in r.stderr
    assert host_krl.installed() == before


def test_a_foreign_krl_in_place_is_replaced_even_when_the_server_says_unchanged(
    runner: CliRunner, krl_server: FakeKRLServer, host_krl: Host
) -> None:
    # An older jit-ssh installed a KRL that revokes a plain key. Its state file holds
    # the ETag of what the server serves now: asked with If-None-Match, the server
    # would answer 304 and leave the foreign KRL in place for as long as it holds.
    host_krl.install(_hostile(host_krl, "plain key"))
    krl_server.krl = _server_krl(host_krl, at=_now())
    state = host_krl.krl.with_name(host_krl.krl.name + ".state.json")
    state.write_text(json.dumps({"etag": krl_server.etag, "synced_at": 0}))
    r = _sync(runner, krl_server, host_krl)
    assert r.exit_code == 0, r.output
    assert "If-None-Match" not in krl_server.requests[-1]
    assert host_krl.installed() == krl_server.krl
    assert "not one jit-ssh would write" in r.stderr


def test_the_trusted_ca_keys_come_from_the_host_not_the_server(
    runner: CliRunner, krl_server: FakeKRLServer, host_krl: Host, tmp_path: Path
) -> None:
    # The drop-in names where the trusted keys are: follow it, wherever they were moved.
    trusted = host_krl.sshd_dir / "jit-ssh" / "trusted_user_ca_keys"
    moved = tmp_path / "elsewhere" / "ca_keys"
    moved.parent.mkdir()
    trusted.rename(moved)
    dropin = host_krl.sshd_dir / "sshd_config.d" / "60-jit-ssh.conf"
    dropin.write_text(
        dropin.read_text().replace(f"TrustedUserCAKeys {trusted}", f"TrustedUserCAKeys {moved}")
    )
    krl_server.krl = _server_krl(host_krl)
    assert _sync(runner, krl_server, host_krl).exit_code == 0
    # Without a drop-in naming OUT, nor a file beside it: the admin must say.
    dropin.unlink()
    r = _sync(runner, krl_server, host_krl)
    assert r.exit_code == 2 and "--trusted-ca-keys" in r.output
    r = _sync(runner, krl_server, host_krl, "--trusted-ca-keys", str(moved))
    assert r.exit_code == 0, r.output
    # Another CA's keys: the server's KRL revokes nothing for them, and is refused.
    other = tmp_path / "other.pub"
    other.write_text(h.make_ca().pub_line)
    krl_server.krl = _server_krl(host_krl, serials=(8,))
    r = _sync(runner, krl_server, host_krl, "--trusted-ca-keys", str(other))
    assert r.exit_code == 6 and "none of its CA keys" in r.stderr


# --- what host setup and host check say when they cannot check sshd (no sshd run here) ---------
# tests/integration/test_host_setup_effective.py runs the real sshd -T.


def _setup_args(sshd_dir: Path, ca_keys: Path, *extra: str) -> list[str]:
    return [
        "host",
        "setup",
        "--ca-keys",
        str(ca_keys),
        "--sshd-dir",
        str(sshd_dir),
        "--target",
        "t",
        "--login-user",
        "root",
        "--principal",
        "root@t",
        *extra,
    ]


def test_without_sshd_setup_could_not_verify_and_never_says_ok(
    runner: CliRunner, tmp_path: Path, ca_keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import client.commands._sshd_effective as effective

    monkeypatch.setattr(effective, "find_sshd", lambda: None)
    sshd_dir = tmp_path / "ssh"
    sshd_dir.mkdir()
    (sshd_dir / "sshd_config").write_text(f"Include {sshd_dir}/sshd_config.d/*.conf\n")
    r = runner.invoke(cli, _setup_args(sshd_dir, ca_keys))
    assert r.exit_code == 4, r.output
    assert "could not verify the settings sshd uses: no sshd here" in r.output
    assert "fix: install OpenSSH's server" in r.output
    assert f"jit-ssh host check --sshd-dir {sshd_dir}" in r.output
    assert "sshd uses the jit-ssh settings" not in r.output and "OK" not in r.output


def test_setup_into_a_directory_without_sshd_config_says_it_did_not_verify(
    runner: CliRunner, tmp_path: Path, ca_keys: Path
) -> None:
    sshd_dir = tmp_path / "ssh"
    r = runner.invoke(cli, _setup_args(sshd_dir, ca_keys))
    assert r.exit_code == 0, r.output
    assert f"not verified: there is no {sshd_dir}/sshd_config" in r.output
    assert "sshd uses the jit-ssh settings" not in r.output and "OK" not in r.output


@pytest.mark.parametrize("spec", ["root", "user=root,-oX=y", "user=a b", "user=root,"])
def test_a_bad_connection_spec_is_refused_before_anything_is_written(
    runner: CliRunner, tmp_path: Path, ca_keys: Path, spec: str
) -> None:
    sshd_dir = tmp_path / "ssh"
    r = runner.invoke(cli, _setup_args(sshd_dir, ca_keys, "--connection", spec))
    assert r.exit_code == 2 and "is not a connection spec" in r.output, r.output
    assert not sshd_dir.exists()


def test_check_without_a_dropin_says_to_run_setup(runner: CliRunner, tmp_path: Path) -> None:
    r = runner.invoke(cli, ["host", "check", "--sshd-dir", str(tmp_path)])
    assert r.exit_code == 1, r.output
    assert f"there is no jit-ssh drop-in at {tmp_path}/sshd_config.d/60-jit-ssh.conf" in r.output
    assert f"fix: jit-ssh host setup --server URL --target TARGET --sshd-dir {tmp_path}" in r.output


def test_check_refuses_a_missing_krl_that_would_lock_everyone_out(
    runner: CliRunner, tmp_path: Path, ca_keys: Path
) -> None:
    sshd_dir = tmp_path / "ssh"
    assert runner.invoke(cli, _setup_args(sshd_dir, ca_keys)).exit_code == 0
    (sshd_dir / "jit-ssh" / "revoked_keys.krl").unlink()
    r = runner.invoke(cli, ["host", "check", "--sshd-dir", str(sshd_dir)])
    assert r.exit_code == 1, r.output
    assert "is missing or invalid" in r.output and "sshd refuses every key" in r.output


@pytest.mark.parametrize(
    ("stderr", "fix"),
    [
        # sshd's own words (OpenSSH 9.2) when /run/sshd is missing: a new machine, ssh not started.
        ("Missing privilege separation directory: /run/sshd\n", "mkdir -m 0755 /run/sshd"),
        (
            "Unable to load host key: /etc/ssh/k\nsshd: no hostkeys available -- exiting.\n",
            "host key",
        ),
        ("sshd: no hostkeys available -- exiting.\n", "host key"),
        # A syntax error is the configuration's fault: "rejected", not "could not verify".
        ("sshd_config: line 6: Bad configuration option: Bogus\n", ""),
        ("sshd_config line 7: Directive 'HostKey' is not allowed within a Match block\n", ""),
    ],
)
def test_an_sshd_failure_that_is_not_the_configurations_gets_its_fix(stderr: str, fix: str) -> None:
    from client.commands._sshd_effective import trouble_fix

    got = trouble_fix(stderr)
    assert (fix in got and got) if fix else got == "", got


@pytest.mark.parametrize(("euid", "fix"), [(1000, "run as root"), (0, "check the HostKey lines")])
def test_unreadable_host_keys_say_run_as_root_unless_root(
    monkeypatch: pytest.MonkeyPatch, euid: int, fix: str
) -> None:
    import client.commands._sshd_effective as effective

    monkeypatch.setattr(effective.os, "geteuid", lambda: euid)
    assert effective.trouble_fix("sshd: no hostkeys available -- exiting.\n").startswith(fix)
