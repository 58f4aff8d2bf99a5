"""``jit-ssh sso login`` / ``jit-ssh login`` with a key the server revoked, and with a key an admin
enrolled already (issue 13, review findings A and B).

* jit-ssh's own key (``<config dir>/sso_ed25519``) refused with ``key_revoked``: moved aside as
  ``sso_ed25519.revoked-<UTC time>`` (and its .pub; never deleted), a new one made at the same
  path and signed in with, once; the config keeps pointing at that path.
* a key of the user's own (``identity`` in the config) refused so: left untouched, exit 1, and
  the message says to configure another key or to remove ``identity``.
* signing in with a key an admin enrolled for that user: the finish says ``expires_at: null``;
  the CLI accepts it and says the key does not expire (the groups are the claim's).

Against the real app (create_app with an [sso] table) behind httpx.WSGITransport, only the
provider faked (tests/server/sso_fakes.py), as tests/test_cli_sso.py's real-app tests.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca import parse_public_key
from client import sso as flows
from client.cli import EXIT_FAILED, EXIT_OK
from client.errors import BadServerAnswer
from client.verify import check_sso_finish, check_sso_poll
from tests.test_cli_engineer import TARGET, keys  # noqa: F401
from tests.test_cli_sso import (  # noqa: F401
    SERVER,
    RealSso,
    config_file,
    home,
    read_config,
    real,
    run_cli,
    sso_key,
)

_REVOKED_NAME = re.compile(r"sso_ed25519\.revoked-\d{8}T\d{6}Z(-\d+)?")


def _admin(real: RealSso) -> Any:
    from server.admin import Admin

    return Admin(real.app.extensions["jit_ssh"].service)


def _claims(name: str = "carol", groups: list[str] | None = None) -> dict[str, Any]:
    from tests.server.sso_fakes import claims_for

    return claims_for(name, ["engineers", "oncall"] if groups is None else groups)


def _fingerprint(pub: Path) -> str:
    return parse_public_key(pub.read_text().strip()).fingerprint


def _own_key(home: Path, name: str = "id_ed25519") -> Path:
    """A key of the person's own, outside jit-ssh's directory."""
    key = ed25519.Ed25519PrivateKey.generate()
    path = home / ".ssh" / name
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    path.with_name(name + ".pub").write_text(pub.decode() + " me@laptop\n")
    return path


def _revoked_files(home: Path) -> list[str]:
    where = sso_key(home).parent
    return (
        sorted(p.name for p in where.iterdir() if ".revoked-" in p.name) if where.exists() else []
    )


# --------------------------------------------------------------------------- jit-ssh's own key


def test_a_revoked_own_sso_key_is_moved_aside_and_a_new_one_signs_in(
    home: Path,
    real: RealSso,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(flows, "_open_browser", real.browse(_claims()))
    assert run_cli("sso", "login", transport=real.transport()).code == EXIT_OK
    key, pub = sso_key(home), sso_key(home).with_name("sso_ed25519.pub")
    old_private, old_public, old_fp = key.read_bytes(), pub.read_text(), _fingerprint(pub)
    config_before = read_config(home)
    assert config_before["identity"] == str(key)
    _admin(real).revoke_enrolments("carol", None)  # the laptop was stolen, say
    real.calls.clear()

    r = run_cli("sso", "login", transport=real.transport())

    assert r.code == EXIT_OK, r.stderr
    new_fp = _fingerprint(pub)
    assert new_fp != old_fp
    assert (
        f"this machine's key {old_fp} was revoked on the server; made a new one: {key} ({new_fp})"
    ) in r.stderr
    # The old key moved aside, both halves, byte for byte; never deleted.
    moved = _revoked_files(home)
    assert len(moved) == 2 and _REVOKED_NAME.fullmatch(moved[0]), moved
    assert moved[1] == moved[0] + ".pub"
    assert (key.parent / moved[0]).read_bytes() == old_private
    assert (key.parent / moved[1]).read_text() == old_public
    assert f"the old one is now {key.parent / moved[0]}" in r.stderr
    assert key.stat().st_mode & 0o777 == 0o600
    # Started again once, with the new key, which is the one enrolled.
    assert real.calls.count("POST /v1/sso/start") == 2
    assert real.calls.count("POST /v1/sso/finish") == 1
    assert r.stdout.startswith("Signed in as carol (groups: engineers, oncall) through Okta;")
    states = {e.fingerprint: e.state for e in _admin(real).enrolments("carol")}
    assert states == {old_fp: "revoked", new_fp: "active"}
    # The config names the same path: now the new key.
    assert read_config(home) == config_before
    r = run_cli("login", TARGET, "--for", "30m", transport=real.transport())
    assert r.code == EXIT_OK, r.stderr
    assert f"Access granted to {TARGET}" in r.stdout


def test_login_with_a_removed_own_sso_key_makes_a_new_one_and_goes_on(
    home: Path,
    real: RealSso,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(flows, "_open_browser", real.browse(_claims()))
    assert run_cli("sso", "login", transport=real.transport()).code == EXIT_OK
    old_fp = _fingerprint(sso_key(home).with_name("sso_ed25519.pub"))
    _admin(real).remove_key("carol", old_fp)
    real.calls.clear()

    r = run_cli("login", TARGET, "--for", "30m", transport=real.transport())

    assert r.code == EXIT_OK, r.stderr
    assert f"this machine's key {old_fp} was revoked on the server" in r.stderr
    assert f"Access granted to {TARGET}" in r.stdout
    assert len(_revoked_files(home)) == 2
    assert real.calls.count("POST /v1/sso/start") == 2


def test_a_configured_identity_naming_the_sso_key_path_keeps_naming_it(
    home: Path,
    real: RealSso,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(flows, "_open_browser", real.browse(_claims()))
    assert run_cli("sso", "login", transport=real.transport()).code == EXIT_OK
    cfg = config_file(home)
    # Written by hand, with ~: still jit-ssh's own key.
    cfg.write_text(
        f'server = "{SERVER}"\nuser = "carol"\n'
        'identity = "~/.config/jit-ssh/sso_ed25519"  # my laptop\n'
    )
    old_fp = _fingerprint(sso_key(home).with_name("sso_ed25519.pub"))
    _admin(real).revoke_enrolments("carol", [old_fp])

    r = run_cli("sso", "login", transport=real.transport())

    assert r.code == EXIT_OK, r.stderr
    assert f"this machine's key {old_fp} was revoked on the server" in r.stderr
    assert Path(read_config(home)["identity"]).expanduser() == sso_key(home)
    assert "# my laptop" in cfg.read_text()


# --------------------------------------------------------------------------- a key of one's own


def test_a_revoked_configured_own_identity_is_refused_and_left_untouched(
    home: Path,
    real: RealSso,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mine = _own_key(home)
    mine_pub = mine.with_name("id_ed25519.pub")
    _admin(real).add_user("carol", ssh_keys=[mine_pub.read_text()])
    _admin(real).remove_key("carol", _fingerprint(mine_pub))
    cfg = config_file(home)
    cfg.parent.mkdir(parents=True)
    text = f'server = "{SERVER}"\nidentity = "{mine}"\n'
    cfg.write_text(text)
    before = {p.name: p.read_bytes() for p in mine.parent.iterdir()}
    opened: list[str] = []
    browse = real.browse(_claims())

    def open_url(url: str) -> bool:
        opened.append(url)
        return browse(url)

    monkeypatch.setattr(flows, "_open_browser", open_url)

    r = run_cli("sso", "login", transport=real.transport())

    assert r.code == EXIT_FAILED, r.stderr
    assert f"the server revoked the key {mine} ({_fingerprint(mine_pub)})" in r.stderr
    assert "[key_revoked]" in r.stderr
    assert "configure another key" in r.stderr
    assert "remove `identity`" in r.stderr and "to let jit-ssh make one" in r.stderr
    # Nothing touched: the key files, the config; no key of jit-ssh's made; no browser.
    assert {p.name: p.read_bytes() for p in mine.parent.iterdir()} == before
    assert cfg.read_text() == text
    assert not sso_key(home).exists() and _revoked_files(home) == []
    assert opened == []
    assert real.calls.count("POST /v1/sso/start") == 1
    assert "POST /v1/sso/finish" not in real.calls


def test_a_revoked_identity_given_as_a_flag_is_refused_too(
    home: Path,
    real: RealSso,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mine = _own_key(home, "work_ed25519")
    mine_pub = mine.with_name("work_ed25519.pub")
    _admin(real).add_user("carol", ssh_keys=[mine_pub.read_text()])
    _admin(real).remove_key("carol", _fingerprint(mine_pub))
    monkeypatch.setattr(flows, "_open_browser", real.browse(_claims()))

    r = run_cli("sso", "login", "--identity", str(mine), transport=real.transport())

    assert r.code == EXIT_FAILED
    assert "[key_revoked]" in r.stderr
    assert mine.exists() and mine_pub.exists() and _revoked_files(home) == []
    assert not config_file(home).exists()


# --------------------------------------------------------------------------- an admin's key


def test_signing_in_with_a_key_an_admin_enrolled_says_it_does_not_expire(
    home: Path,
    real: RealSso,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mine = _own_key(home)
    mine_pub = mine.with_name("id_ed25519.pub")
    _admin(real).add_user("carol", groups=["old-team"], ssh_keys=[mine_pub.read_text()])
    cfg = config_file(home)
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'server = "{SERVER}"\nidentity = "{mine}"\n')
    monkeypatch.setattr(flows, "_open_browser", real.browse(_claims()))

    r = run_cli("sso", "login", transport=real.transport())

    assert r.code == EXIT_OK, r.stderr
    assert r.stdout == (
        "Signed in as carol (groups: engineers, oncall) through Okta; "
        "this key was enrolled by an admin and does not expire.\n"
    )
    # The sign-in replaced carol's groups with the claim's, as every sign-in does: the
    # message shows those; the key stays the admin's, without end.
    (info,) = _admin(real).enrolments("carol")
    assert (info.source, info.expires_at, info.state) == ("admin", None, "active")
    r = run_cli("api", "GET", "/v1/whoami", transport=real.transport())
    assert r.code == EXIT_OK, r.stderr
    assert '"groups_source": "sso"' in r.stdout
    assert re.search(r'"groups": \[\s*"engineers",\s*"oncall"\s*\]', r.stdout), r.stdout
    assert read_config(home)["user"] == "carol"
    assert mine.exists() and not sso_key(home).exists()


_NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
_FP = "SHA256:" + "A" * 43


def _finish(**changes: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "user": "alice",
        "groups": ["sre"],
        "groups_source": "sso",
        "fingerprint": _FP,
        "expires_at": (_NOW + timedelta(hours=12)).isoformat().replace("+00:00", "Z"),
    }
    answer.update(changes)
    return answer


def test_a_finish_with_a_null_expiry_is_an_admin_enrolment() -> None:
    done = check_sso_finish(_finish(expires_at=None), fingerprint=_FP, now=_NOW)
    assert done.expires_at is None and done.user == "alice"
    poll = check_sso_poll({"status": "done", **_finish(expires_at=None)}, fingerprint=_FP, now=_NOW)
    assert poll.enrolment is not None and poll.enrolment.expires_at is None


def test_a_finish_without_expires_at_is_still_refused() -> None:
    answer = _finish()
    del answer["expires_at"]
    with pytest.raises(BadServerAnswer) as e:
        check_sso_finish(answer, fingerprint=_FP, now=_NOW)
    assert e.value.field == "expires_at"
