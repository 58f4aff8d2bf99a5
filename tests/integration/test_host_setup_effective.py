"""`host setup` and `host check` against the real /usr/sbin/sshd -T: "OK" only when sshd
really uses the drop-in.

Each test lays out a host in a temporary directory: an sshd_config with its own host key
(sshd -T must load one), the CA key, and `host setup --sshd-dir` into it. No sshd runs;
`sshd -T -f` reads the configuration as the host's sshd would after a reload.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from client.cli import cli

from .conftest import SSHD, skip_or_fail

pytestmark = pytest.mark.integration

MISSING_USER = "jitssh-nosuchuser"


@dataclass
class Host:
    dir: Path  # what --sshd-dir names
    config: Path  # its sshd_config
    host_key: Path
    ca_keys: Path

    @property
    def dropin(self) -> Path:
        return self.dir / "sshd_config.d" / "60-jit-ssh.conf"

    @property
    def trusted(self) -> str:
        return str(self.dir / "jit-ssh" / "trusted_user_ca_keys")

    def write_config(self, body: str) -> None:
        # The host key first: whatever `body` ends with (a Match block), HostKey stays global.
        self.config.write_text(f"HostKey {self.host_key}\nPidFile none\n{body}")

    def effective(self, *spec: str) -> dict[str, str]:
        out = subprocess.run(
            [SSHD, "-T", "-f", str(self.config), *spec],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    if not (os.path.isfile(SSHD) and os.access(SSHD, os.X_OK)):
        skip_or_fail(f"{SSHD} is not installed (Debian: apt-get install openssh-server)")
    # Quirk: every sshd -t / -T fails with "Missing privilege separation directory"
    # until /run/sshd exists (the systemd unit makes it when ssh.service starts).
    if not os.path.isdir("/run/sshd"):
        if os.geteuid() != 0:
            skip_or_fail("/run/sshd is missing and only root can create it")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    root = tmp_path / "ssh"
    root.mkdir()
    host_key = tmp_path / "ssh_host_ed25519_key"
    host_key.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    host_key.chmod(0o600)
    ca = tmp_path / "ca.pub"
    ca.write_bytes(
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        + b"\n"
    )
    return Host(root, root / "sshd_config", host_key, ca)


Run = Callable[..., Result]


@pytest.fixture
def setup(host: Host) -> Run:
    def run(*extra: str, login_users: tuple[str, ...] = ("root",)) -> Result:
        users = [a for u in login_users for a in ("--login-user", u)]
        return CliRunner().invoke(
            cli,
            [
                "host",
                "setup",
                "--ca-keys",
                str(host.ca_keys),
                "--sshd-dir",
                str(host.dir),
                "--target",
                "demo",
                "--principal",
                "root@demo",
                *users,
                *extra,
            ],
        )

    return run


def check(host: Host, *extra: str) -> Result:
    return CliRunner().invoke(cli, ["host", "check", "--sshd-dir", str(host.dir), *extra])


IN_EFFECT = "sshd uses the jit-ssh settings"


# --------------------------------------------------------------------------- (1) and (2)


def test_a_dropin_the_sshd_config_does_not_include_is_refused_with_the_include_to_add(
    host: Host, setup: Run, tmp_path: Path
) -> None:
    """Debian's sshd_config includes /etc/ssh/sshd_config.d by absolute path: a drop-in
    written under another --sshd-dir is never read. Here "/etc/ssh" is another directory."""
    other = tmp_path / "etc-ssh"
    (other / "sshd_config.d").mkdir(parents=True)
    (other / "sshd_config.d" / "50-site.conf").write_text("X11Forwarding no\n")
    host.write_config(f"Include {other}/sshd_config.d/*.conf\n")

    r = setup()

    assert r.exit_code == 1, r.output
    assert IN_EFFECT not in r.output and "OK" not in r.output
    assert host.effective()["trustedusercakeys"] == "none"  # what the finding saw
    assert f"trustedusercakeys: sshd uses none, not {host.trusted}" in r.output
    assert f"revokedkeys: sshd uses none, not {host.dir}/jit-ssh/revoked_keys.krl" in r.output
    assert f"{host.config} does not include {host.dir}/sshd_config.d" in r.output
    # It shows the Include line that is there, and the one to add.
    assert f"{host.config} line 3: Include {other}/sshd_config.d/*.conf" in r.output
    assert f"fix: add this line at the top of {host.config}" in r.output
    assert f"\n    Include {host.dir}/sshd_config.d/*.conf\n" in r.output
    assert f"--sshd-dir {other}," in r.output
    assert f"then check again: jit-ssh host check --sshd-dir {host.dir}" in r.output

    # Following the fix as printed makes it pass.
    host.config.write_text(f"Include {host.dir}/sshd_config.d/*.conf\n" + host.config.read_text())
    again = check(host)
    assert again.exit_code == 0, again.output
    assert IN_EFFECT in again.output


def test_a_dropin_that_is_included_is_confirmed_by_sshd(host: Host, setup: Run) -> None:
    host.write_config(f"Include {host.dir}/sshd_config.d/*.conf\nPasswordAuthentication no\n")

    r = setup()

    assert r.exit_code == 0, r.output
    assert f"sshd -T -f {host.config}: {IN_EFFECT}" in r.output
    assert "connections as root" in r.output
    assert "Reload sshd" in r.output
    got = host.effective()
    assert got["trustedusercakeys"] == host.trusted
    assert got["revokedkeys"] == f"{host.dir}/jit-ssh/revoked_keys.krl"
    assert got["authorizedprincipalsfile"] == f"{host.dir}/jit-ssh/principals/%u"
    # host check agrees, taking the login users from the principals files.
    c = check(host)
    assert c.exit_code == 0, c.output
    assert IN_EFFECT in c.output and "connections as root" in c.output


# --------------------------------------------------------------------------- (3)


def test_an_earlier_setting_in_the_sshd_config_wins_and_is_named(host: Host, setup: Run) -> None:
    host.write_config(
        f"TrustedUserCAKeys /etc/ssh/some_other_ca.pub\nInclude {host.dir}/sshd_config.d/*.conf\n"
    )

    r = setup()

    assert r.exit_code == 1, r.output
    assert IN_EFFECT not in r.output
    assert (
        f"trustedusercakeys: sshd uses /etc/ssh/some_other_ca.pub, not {host.trusted}" in r.output
    )
    assert "an earlier setting wins (sshd keeps the first value it reads)" in r.output
    assert f"{host.config} line 3: TrustedUserCAKeys /etc/ssh/some_other_ca.pub" in r.output
    assert "fix: remove 'TrustedUserCAKeys /etc/ssh/some_other_ca.pub'" in r.output
    # Only the wrong setting is reported: the others are in effect.
    assert "revokedkeys:" not in r.output and "authorizedprincipalsfile:" not in r.output


def test_an_earlier_dropin_that_sorts_first_wins_and_is_named(host: Host, setup: Run) -> None:
    host.write_config(f"Include {host.dir}/sshd_config.d/*.conf\n")
    earlier = host.dir / "sshd_config.d" / "50-cloud.conf"
    earlier.parent.mkdir()
    earlier.write_text("# site settings\nRevokedKeys /etc/ssh/site.krl\n")

    r = setup()

    assert r.exit_code == 1, r.output
    assert "revokedkeys: sshd uses /etc/ssh/site.krl" in r.output
    assert f"{earlier} line 2: RevokedKeys /etc/ssh/site.krl" in r.output
    assert "trustedusercakeys:" not in r.output


def test_a_match_block_that_turns_certificates_off_for_a_login_user_is_named(
    host: Host, setup: Run
) -> None:
    host.write_config(
        f"Include {host.dir}/sshd_config.d/*.conf\nMatch User root\n    PubkeyAuthentication no\n"
    )

    r = setup()

    assert r.exit_code == 1, r.output
    assert "pubkeyauthentication for connections as root: sshd uses no, not yes" in r.output
    assert (
        f"a Match block overrides it: {host.config} line 5, under 'Match User root': PubkeyAuthentication no"
        in r.output
    )


def test_a_match_block_for_an_address_is_checked_for_the_connection_given(
    host: Host, setup: Run
) -> None:
    host.write_config(
        f"Include {host.dir}/sshd_config.d/*.conf\n"
        "Match Address 10.0.0.0/8\n    TrustedUserCAKeys /etc/ssh/lab_ca.pub\n"
    )
    assert setup().exit_code == 0  # no address given: the Match does not apply

    c = check(host, "--connection", "user=root,host=10.1.2.3,addr=10.1.2.3")

    assert c.exit_code == 1, c.output
    assert (
        "trustedusercakeys for connections user=root,host=10.1.2.3,addr=10.1.2.3: "
        "sshd uses /etc/ssh/lab_ca.pub" in c.output
    )

    # Passing for the connections checked, the Match block is still named: it may change
    # the settings for the connections that come from there.
    assert "warning: " in setup().output and "under 'Match Address 10.0.0.0/8'" in setup().output


@pytest.mark.parametrize(
    ("line", "keyword", "lacking"),
    [
        ("CASignatureAlgorithms rsa-sha2-512", "casignaturealgorithms", "ssh-ed25519"),
        (
            "PubkeyAcceptedAlgorithms -ssh-ed25519-cert-v01@openssh.com",
            "pubkeyacceptedalgorithms",
            "ssh-ed25519-cert-v01@openssh.com",
        ),
    ],
)
def test_a_setting_that_refuses_every_jit_ssh_certificate_is_named(
    host: Host, setup: Run, line: str, keyword: str, lacking: str
) -> None:
    """The drop-in is in effect, but sshd would refuse the Ed25519 CA's signature (or the
    Ed25519 certificate type): every jit-ssh certificate. Checked with sshd itself."""
    host.write_config(f"Include {host.dir}/sshd_config.d/*.conf\n{line}\n")
    assert lacking not in host.effective()[keyword].split(",")

    r = setup()

    assert r.exit_code == 1, r.output
    assert IN_EFFECT not in r.output
    assert f"{keyword}: sshd uses " in r.output and f"not a list with {lacking}" in r.output
    assert f"{host.config} line 4 sets it: {line}" in r.output
    assert f"fix: add {lacking} to " in r.output


# --------------------------------------------------------------------------- (4)


def test_a_login_user_with_no_account_is_warned_about(host: Host, setup: Run) -> None:
    try:
        pwd.getpwnam(MISSING_USER)
        pytest.skip(f"{MISSING_USER} exists on this machine")
    except KeyError:
        pass
    host.write_config(f"Include {host.dir}/sshd_config.d/*.conf\n")

    r = setup(login_users=("root", MISSING_USER))

    # A warning, not a failure: the account may be created later.
    assert r.exit_code == 0, r.output
    assert IN_EFFECT in r.output
    assert (
        f"warning: this login user does not exist on this host, so no certificate can log in as it: {MISSING_USER}\n"
        in r.output
    )
    assert f"fix: useradd -m {MISSING_USER}" in r.output
    assert "useradd -m root" not in r.output
    c = check(host)
    assert c.exit_code == 0 and f"useradd -m {MISSING_USER}" in c.output, c.output


# --------------------------------------------------------------------------- (5)


def test_when_sshd_T_fails_the_check_says_it_could_not_verify(host: Host, setup: Run) -> None:
    host.write_config(f"Include {host.dir}/sshd_config.d/*.conf\n")
    assert setup().exit_code == 0
    # The host key goes away: sshd -T cannot load one (as when not root).
    host.host_key.unlink()

    c = check(host)

    assert c.exit_code == 4, c.output
    assert IN_EFFECT not in c.output
    assert f"could not verify the settings sshd uses: sshd -T -f {host.config} failed:" in c.output
    assert f"Unable to load host key: {host.host_key}" in c.output
    # As root the HostKey lines are at fault; otherwise reading the host keys needs root.
    fix = "fix: check the HostKey lines" if os.geteuid() == 0 else "fix: run as root"
    assert fix in c.output


def test_when_sshd_t_cannot_load_a_host_key_setup_could_not_verify_and_puts_back(
    host: Host, setup: Run
) -> None:
    host.write_config(f"Include {host.dir}/sshd_config.d/*.conf\n")
    host.host_key.unlink()

    r = setup()

    assert r.exit_code == 4, r.output
    assert "could not verify the configuration: sshd -t" in r.output
    assert IN_EFFECT not in r.output
    assert not host.dropin.exists()


def test_a_syntax_error_is_rejected_by_sshd_t_and_the_dropin_put_back(
    host: Host, setup: Run
) -> None:
    host.write_config(f"Include {host.dir}/sshd_config.d/*.conf\nNoSuchOption yes\n")

    r = setup()

    assert r.exit_code == 1, r.output
    assert "sshd -t rejected the configuration" in r.output
    assert "Bad configuration option: NoSuchOption" in r.output
    assert not host.dropin.exists()


def test_of_several_match_blocks_the_one_that_applies_is_named(host: Host, setup: Run) -> None:
    host.write_config(
        f"Include {host.dir}/sshd_config.d/*.conf\n"
        "Match Address 10.0.0.0/8\n    TrustedUserCAKeys /etc/ssh/lab_ca.pub\n"
        "Match User root\n    TrustedUserCAKeys /etc/ssh/root_ca.pub\n"
    )

    r = setup()

    assert r.exit_code == 1, r.output
    assert "trustedusercakeys for connections as root: sshd uses /etc/ssh/root_ca.pub" in r.output
    assert (
        f"{host.config} line 7, under 'Match User root': TrustedUserCAKeys /etc/ssh/root_ca.pub"
        in r.output
    )
    assert "lab_ca" not in r.output
