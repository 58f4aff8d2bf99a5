"""Issue 12, point 2 (several accesses side by side) and the ssh side of point 6 (no password
prompt, host keys checked): against the real app, with the fixtures of
:mod:`tests.test_cli_engineer`. Request ids are sequential there: 0000000000000001, ...

A second ``login`` to the same target keeps the first access's key and certificate; ``status``
lists both; ``ssh`` takes the one with the most time left, or ``--request ID``; ``done`` ends
one, all, or refuses to guess; an access the server had already revoked is said to be so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ca import parse_certificate
from ca.errors import JitSshError
from client.access import access_name
from client.cli import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from client.commands import engineer

from .test_cli_engineer import (  # noqa: F401 (fixtures)
    TARGET,
    Run,
    Server,
    access,
    home,
    jit,
    keys,
    keys_dir,
    server,
    sleeps,
)

FIRST, SECOND, THIRD = "0000000000000001", "0000000000000002", "0000000000000003"


def _files(home: Path, request_id: str, target: str = TARGET) -> list[Path]:
    key = access(home, target, request_id)
    return [key, Path(f"{key}.pub"), Path(f"{key}-cert.pub"), Path(f"{key}.json")]


def _record(home: Path, request_id: str, target: str = TARGET) -> dict[str, object]:
    return json.loads(Path(f"{access(home, target, request_id)}.json").read_text())  # type: ignore[no-any-return]


def _two(jit: Callable[..., Run]) -> None:
    """Two accesses to TARGET: FIRST for 1 h, SECOND for 10 min (so FIRST has more time left)."""
    assert jit("login", TARGET, "--for", "1h").code == EXIT_OK
    r = jit("login", TARGET, "--for", "10m")
    assert r.code == EXIT_OK, r.stderr
    assert f"Your other access to {TARGET} stays valid too (request {FIRST})" in r.stdout


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """``ssh``'s argv instead of running it."""
    calls: list[list[str]] = []

    def fake_execv(path: str, argv: list[str]) -> None:
        calls.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(engineer.os, "execv", fake_execv)
    return calls


@pytest.fixture
def real_ssh() -> str:
    ssh = shutil.which("ssh")
    if ssh is None:
        pytest.skip("OpenSSH's ssh is not installed")
    return ssh


def _fake_ssh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")


# --------------------------------------------------------------------------- side by side


def test_a_second_login_keeps_the_first_access(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    assert jit("login", TARGET, "--for", "1h").code == EXIT_OK
    first_key = access(home, TARGET, FIRST).read_bytes()
    first_cert = Path(f"{access(home, TARGET, FIRST)}-cert.pub").read_text()
    assert jit("login", TARGET, "--for", "10m").code == EXIT_OK
    for p in _files(home, FIRST) + _files(home, SECOND):
        assert p.exists(), p
    assert access(home, TARGET, FIRST).read_bytes() == first_key
    assert Path(f"{access(home, TARGET, FIRST)}-cert.pub").read_text() == first_cert
    serials = {
        parse_certificate(Path(f"{access(home, TARGET, rid)}-cert.pub").read_text()).serial
        for rid in (FIRST, SECOND)
    }
    assert len(serials) == 2
    # Each certificate is for its own key.
    for rid in (FIRST, SECOND):
        key = access(home, TARGET, rid)
        cert = parse_certificate(Path(f"{key}-cert.pub").read_text())
        assert cert.public_key.openssh.split()[:2] == Path(f"{key}.pub").read_text().split()[:2]


def test_status_lists_every_valid_access_with_request_target_login_user_and_time_left(
    jit: Callable[..., Run], server: Server
) -> None:
    _two(jit)
    assert jit("login", "other", "--for", "20m").code == EXIT_OK
    r = jit("status")
    assert r.code == EXIT_OK, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3, lines
    # By target, the most time left first; the one `jit-ssh ssh TARGET` uses is marked.
    assert re.match(
        rf"active\s+other\s+\S+\s+(19m\d*s?|20m)\s+left\s+request {THIRD}\s+login root", lines[0]
    )
    assert "default" not in lines[0]
    assert re.match(
        rf"active\s+{TARGET}\s+\S+\s+(59m\d*s?|1h)\s+left\s+request {FIRST}\s+login root\s+serial \d+\s+\(jit-ssh ssh's default\)",
        lines[1],
    ), lines
    assert re.match(
        rf"active\s+{TARGET}\s+\S+\s+(9m\d*s?|10m)\s+left\s+request {SECOND}\s+login root", lines[2]
    )
    assert "default" not in lines[2]

    js = json.loads(jit("status", "--json").stdout)
    assert [
        (a["target"], a["request_id"], a["login_user"], a["ssh_default"]) for a in js["active"]
    ] == [
        ("other", THIRD, "root", True),
        (TARGET, FIRST, "root", True),
        (TARGET, SECOND, "root", False),
    ]
    assert 9 * 60 < js["active"][2]["seconds_left"] <= 10 * 60


def test_ssh_config_points_the_target_at_the_longest_and_has_an_alias_per_access(
    jit: Callable[..., Run], server: Server, home: Path, real_ssh: str
) -> None:
    _two(jit)
    config = keys_dir(home) / "config"

    def shown(host: str) -> dict[str, str]:
        out = subprocess.run(
            [real_ssh, "-G", "-F", str(config), host], capture_output=True, text=True, check=True
        ).stdout
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    target = shown(TARGET)
    assert target["identityfile"] == str(access(home, TARGET, FIRST))
    assert target["certificatefile"] == f"{access(home, TARGET, FIRST)}-cert.pub"
    for rid in (FIRST, SECOND):
        alias = shown(f"{TARGET}+{rid}")
        assert alias["hostname"] == TARGET and alias["user"] == "root"
        assert alias["identityfile"] == str(access(home, TARGET, rid))
    # Plain `ssh TARGET` through the Include offers the certificate only, as `jit-ssh ssh` does.
    for options in (target, shown(f"{TARGET}+{SECOND}")):
        assert options["passwordauthentication"] == "no"
        assert options["kbdinteractiveauthentication"] == "no"
        assert options["preferredauthentications"] == "publickey"
        assert options["identitiesonly"] == "yes"


# --------------------------------------------------------------------------- ssh


def test_ssh_uses_the_access_with_the_most_time_left_or_the_one_named(
    jit: Callable[..., Run],
    server: Server,
    home: Path,
    execs: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_ssh(monkeypatch)
    _two(jit)
    opts = ("-o", "StrictHostKeyChecking=yes")
    assert jit("ssh", TARGET, *opts).code == EXIT_OK
    assert execs[-1][1:3] == ["-i", str(access(home, TARGET, FIRST))]
    assert jit("ssh", TARGET, "--request", SECOND, *opts).code == EXIT_OK
    assert execs[-1][1:3] == ["-i", str(access(home, TARGET, SECOND))]
    assert f"CertificateFile={access(home, TARGET, SECOND)}-cert.pub" in execs[-1]
    # Neither asked for a new access.
    assert server.paths().count("POST /v1/requests") == 2


def test_ssh_with_an_unknown_request_asks_for_nothing_new(
    jit: Callable[..., Run], server: Server, execs: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_ssh(monkeypatch)
    assert jit("login", TARGET).code == EXIT_OK
    calls = len(server.calls)
    # Another target's request, and one that does not exist.
    assert jit("login", "other").code == EXIT_OK
    for rid in (SECOND, "ffffffffffffffff"):
        r = jit("ssh", TARGET, "--request", rid)
        assert r.code == EXIT_NOT_FOUND, r.stderr
        assert f"no valid access of request {rid} to {TARGET} on this machine" in r.stderr
        assert "fix: jit-ssh status" in r.stderr
    assert execs == [] and len(server.calls) == calls + 3  # only the login to "other"
    bad = jit("ssh", TARGET, "--request", "../x")
    assert bad.code == EXIT_FAILED and "--request" in bad.stderr


def test_ssh_without_a_valid_access_logs_in_as_before(
    jit: Callable[..., Run],
    server: Server,
    home: Path,
    execs: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_ssh(monkeypatch)
    assert jit("login", TARGET).code == EXIT_OK
    _expire(home, FIRST)
    assert jit("ssh", TARGET, "-o", "StrictHostKeyChecking=ask").code == EXIT_OK
    assert server.paths().count("POST /v1/requests") == 2
    assert execs[-1][1:3] == ["-i", str(access(home, TARGET, SECOND))]
    # The expired access's files went as the new one came.
    assert not any(p.exists() for p in _files(home, FIRST))


def test_ssh_never_offers_a_password_or_keyboard_interactive_login(
    jit: Callable[..., Run], server: Server, execs: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_ssh(monkeypatch)
    assert jit("login", TARGET).code == EXIT_OK
    # The user's own -o comes after: ssh keeps the first value, so it cannot turn them back on.
    assert (
        jit(
            "ssh", TARGET, "-o", "PasswordAuthentication=yes", "-o", "StrictHostKeyChecking=yes"
        ).code
        == EXIT_OK
    )
    argv = execs[-1]
    options = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    assert options[1:5] == [
        "IdentitiesOnly=yes",
        "PreferredAuthentications=publickey",
        "PasswordAuthentication=no",
        "KbdInteractiveAuthentication=no",
    ]
    assert options.index("PasswordAuthentication=no") < options.index("PasswordAuthentication=yes")


@pytest.mark.parametrize(
    "option",
    ["StrictHostKeyChecking=no", "stricthostkeychecking off", "StrictHostKeyChecking = false"],
)
def test_ssh_refuses_to_turn_host_key_checking_off(
    jit: Callable[..., Run],
    server: Server,
    execs: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
    option: str,
) -> None:
    _fake_ssh(monkeypatch)
    r = jit("ssh", TARGET, "-o", option)
    assert r.code == EXIT_FAILED, r.stderr
    assert "never connects without checking the host key" in r.stderr
    assert "fix: -o StrictHostKeyChecking=accept-new" in r.stderr
    # Refused before anything else: no login either.
    assert execs == [] and server.calls == []


def test_ssh_keeps_the_users_host_key_setting_but_never_off(
    jit: Callable[..., Run],
    server: Server,
    execs: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unknown host keys are handled as the README says: the user's StrictHostKeyChecking
    (ssh's default "ask", or "yes", or "accept-new") against their own known_hosts; an
    ssh_config that turns it off gets "ask" instead, and a note."""
    _fake_ssh(monkeypatch)
    assert jit("login", TARGET).code == EXIT_OK
    asked: list[list[str]] = []

    def host_key_options(effective: str | None) -> tuple[list[str], str]:
        def fake(ssh_bin: str, args: list[str]) -> str | None:
            asked.append(args)
            return effective

        monkeypatch.setattr(engineer, "_host_key_checking", fake)
        r = jit("ssh", TARGET)
        assert r.code == EXIT_OK, r.stderr
        options = [execs[-1][i + 1] for i, a in enumerate(execs[-1]) if a == "-o"]
        return [o for o in options if "hostkey" in o.lower() or "knownhosts" in o.lower()], r.stderr

    for effective in ("ask", "true", "accept-new"):
        assert host_key_options(effective) == ([], "")
    # ssh -G is asked with the very options and destination ssh then gets.
    assert asked[-1] == execs[-1][1:]
    options, err = host_key_options("false")
    assert options == ["StrictHostKeyChecking=ask"]
    assert f"note: your ssh_config turns StrictHostKeyChecking off for {TARGET}" in err
    # ssh could not say: ask.
    assert host_key_options(None) == (["StrictHostKeyChecking=ask"], "")


def test_the_host_key_setting_is_read_from_ssh_itself(tmp_path: Path, real_ssh: str) -> None:
    config = tmp_path / "ssh_config"
    for value, effective in (
        ("no", "false"),
        ("yes", "true"),
        ("accept-new", "accept-new"),
        ("ask", "ask"),
    ):
        config.write_text(f"Host {TARGET}\n    StrictHostKeyChecking {value}\n")
        args = ["-F", str(config), "--", f"root@{TARGET}"]
        assert engineer._host_key_checking(real_ssh, args) == effective
    assert engineer._host_key_checking(str(tmp_path / "no-ssh"), ["x"]) is None


# --------------------------------------------------------------------------- done


def test_done_without_an_id_refuses_to_guess_between_several(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    _two(jit)
    calls = len(server.calls)
    for args in ((), (TARGET,)):
        r = jit("done", *args)
        assert r.code == EXIT_FAILED, r.stderr
        lines = r.stderr.splitlines()
        assert lines[0].startswith("error: 2 accesses ") and "nothing was ended" in lines[0]
        assert any(f"request {FIRST}" in line for line in lines[1:3])
        assert any(f"request {SECOND}" in line for line in lines[1:3])
        assert (
            lines[-1]
            == f"  fix: name the one to end (jit-ssh done {FIRST}), or end them all: jit-ssh done --all"
        )
    assert len(server.calls) == calls  # nothing sent
    assert all(p.exists() for p in _files(home, FIRST) + _files(home, SECOND))


def test_done_id_ends_that_one_and_the_other_stays(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    _two(jit)
    first, second = _record(home, FIRST), _record(home, SECOND)
    r = jit("done", FIRST)
    assert r.code == EXIT_OK, r.stderr
    assert f"Revoked serial {first['serial']} ({TARGET}, request {FIRST})." in r.stdout
    assert server.revoked(str(first["serial"])) and not server.revoked(str(second["serial"]))
    assert not any(p.exists() for p in _files(home, FIRST))
    assert all(p.exists() for p in _files(home, SECOND))
    config = (keys_dir(home) / "config").read_text()
    assert f"{TARGET}+{FIRST}" not in config
    assert (
        f"Host {TARGET}\n    User root\n    IdentityFile {access(home, TARGET, SECOND)}\n" in config
    )
    assert [a["request_id"] for a in json.loads(jit("status", "--json").stdout)["active"]] == [
        SECOND
    ]
    # Now only one is left: plain `done` ends it.
    assert jit("done").code == EXIT_OK
    assert server.revoked(str(second["serial"]))


def test_done_all_ends_every_access(jit: Callable[..., Run], server: Server, home: Path) -> None:
    _two(jit)
    assert jit("login", "other").code == EXIT_OK
    serials = [str(_record(home, rid)["serial"]) for rid in (FIRST, SECOND)]
    serials.append(str(_record(home, THIRD, "other")["serial"]))
    r = jit("done", "--all")
    assert r.code == EXIT_OK, r.stderr
    assert r.stdout.count("Revoked serial") == 3
    assert all(server.revoked(s) for s in serials)
    assert sorted(p.name for p in keys_dir(home).iterdir()) == ["config"]
    assert jit("done", "--all").code == EXIT_NOT_FOUND
    assert jit("done", FIRST, "--all").code == EXIT_USAGE


def test_done_on_an_access_the_server_already_revoked_says_so(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    assert jit("login", TARGET).code == EXIT_OK
    serial = str(_record(home, FIRST)["serial"])
    server.revoke(FIRST)  # bob, on the server
    r = jit("done", FIRST)
    assert r.code == EXIT_OK, r.stderr
    assert re.search(
        rf"Request {FIRST} \({TARGET}, serial {serial}\) was already revoked by bob at \S+Z; "
        r"removed its key and certificate here\.",
        r.stdout,
    ), r.stdout
    assert "Revoked serial" not in r.stdout
    assert not any(p.exists() for p in _files(home, FIRST))
    # Again: nothing left here, and the server says it is revoked: nothing to do.
    again = jit("done", FIRST)
    assert again.code == EXIT_NOT_FOUND, again.stderr
    assert re.search(
        rf"error: request {FIRST} \({TARGET}, serial {serial}\) was already revoked by bob at \S+Z; nothing to do",
        again.stderr,
    ), again.stderr


def test_done_id_for_a_request_this_machine_holds_no_key_for(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    _two(jit)
    for p in _files(home, FIRST):
        p.unlink()
    r = jit("done", FIRST)
    assert r.code == EXIT_OK, r.stderr
    assert "this machine holds no key for it" in r.stdout
    assert all(p.exists() for p in _files(home, SECOND))


def test_done_id_of_someone_elses_request_revokes_nothing(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    """bob, an approver, pastes alice's request id from an approval page into `done`: the
    server would let him revoke it, but `done` ends only the caller's own access."""
    _two(jit)
    serial = json.loads(Path(f"{access(home, TARGET, FIRST)}.json").read_text())["serial"]
    for p in _files(home, FIRST):  # bob's machine holds none of alice's files
        p.unlink()
    r = jit("done", FIRST, as_user="bob")
    assert r.code == EXIT_FAILED, r.stdout
    assert f"request {FIRST} is alice's access to {TARGET}, not yours" in r.stderr
    assert "/v1/certificates/SERIAL/revoke" in r.stderr
    assert not server.revoked(serial)
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------- older layout


def _as_legacy(home: Path, request_id: str = FIRST, target: str = TARGET) -> Path:
    """Files of the older one-per-target layout: <target>, <target>.pub, -cert.pub, .json."""
    d = keys_dir(home)
    key = access(home, target, request_id)
    old = d / target
    record = json.loads(Path(f"{key}.json").read_text())
    key.rename(old)
    Path(f"{key}.pub").rename(f"{old}.pub")
    Path(f"{key}-cert.pub").rename(f"{old}-cert.pub")
    Path(f"{key}.json").unlink()
    record.update(key_path=str(old), cert_path=f"{old}-cert.pub")
    Path(f"{old}.json").write_text(json.dumps(record))
    return old


def test_an_access_of_the_older_layout_is_moved_and_still_listed_used_and_ended(
    jit: Callable[..., Run],
    server: Server,
    home: Path,
    execs: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_ssh(monkeypatch)
    assert jit("login", TARGET).code == EXIT_OK
    serial = str(_record(home, FIRST)["serial"])
    old = _as_legacy(home)
    key_bytes = old.read_bytes()
    r = jit("status")
    assert r.code == EXIT_OK, r.stderr
    assert f"request {FIRST}" in r.stdout
    assert f"note: the access to {TARGET} (request {FIRST}) now lives in {access(home)}" in r.stderr
    assert access(home).read_bytes() == key_bytes
    assert not any(Path(f"{old}{end}").exists() for end in ("", ".pub", "-cert.pub", ".json"))
    config = (keys_dir(home) / "config").read_text()
    assert f"IdentityFile {old}\n" not in config
    assert f"Host {TARGET}\n    User root\n    IdentityFile {access(home)}\n" in config
    assert "note:" not in jit("status").stderr  # moved once
    # A second login no longer replaces it.
    assert jit("login", TARGET, "--for", "10m").code == EXIT_OK
    assert access(home).read_bytes() == key_bytes
    assert jit("ssh", TARGET, "--request", FIRST, "-o", "StrictHostKeyChecking=yes").code == EXIT_OK
    assert execs[-1][2] == str(access(home))
    done = jit("done", FIRST)
    assert done.code == EXIT_OK, done.stderr
    assert f"Revoked serial {serial} ({TARGET}, request {FIRST})." in done.stdout
    assert "another machine" not in done.stdout


def test_a_broken_record_of_the_older_layout_is_skipped_with_a_warning(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    assert jit("login", TARGET).code == EXIT_OK
    old = _as_legacy(home)
    record = json.loads(Path(f"{old}.json").read_text())
    record["login_user"] = "root\n    ProxyCommand id"
    Path(f"{old}.json").write_text(json.dumps(record))
    Path(keys_dir(home) / "garbage.json").write_text("{not json")
    r = jit("status")
    assert r.code == EXIT_OK, r.stderr
    assert re.search(
        rf"warning: skipping \S+/{TARGET}\.json: access record for '{TARGET}': login user", r.stderr
    )
    # Not used here, but not hidden: the server still holds it valid.
    assert r.stdout.startswith(f"issued   {TARGET}") and "no key on this machine" in r.stdout
    assert "active " not in r.stdout
    assert Path(f"{old}.json").exists()  # left as it was, for the user to look at
    assert jit("login", TARGET).code == EXIT_OK
    assert "ProxyCommand" not in (keys_dir(home) / "config").read_text()


# --------------------------------------------------------------------------- records


def _expire(home: Path, request_id: str, target: str = TARGET) -> None:
    p = Path(f"{access(home, target, request_id)}.json")
    record = json.loads(p.read_text())
    record["valid_before"] = "2020-01-01T00:00:00Z"
    p.write_text(json.dumps(record))


def test_expired_accesses_are_not_listed_and_go_at_the_next_login(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    _two(jit)
    _expire(home, FIRST)
    js = json.loads(jit("status", "--json").stdout)
    assert [(a["request_id"], a["ssh_default"]) for a in js["active"]] == [(SECOND, True)]
    assert f"{TARGET}+{FIRST}" in (keys_dir(home) / "config").read_text()  # not rewritten yet
    assert jit("login", "other").code == EXIT_OK
    assert not any(p.exists() for p in _files(home, FIRST))
    assert f"{TARGET}+{FIRST}" not in (keys_dir(home) / "config").read_text()


def test_a_record_under_another_requests_name_is_skipped(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    _two(jit)
    first = Path(f"{access(home, TARGET, FIRST)}.json")
    second = Path(f"{access(home, TARGET, SECOND)}.json")
    second.write_text(first.read_text())
    r = jit("status", "--json")
    assert re.search(
        rf"warning: skipping \S+\+{SECOND}\.json: .* holds the record of request '{FIRST}'",
        r.stderr,
    )
    assert [a["request_id"] for a in json.loads(r.stdout)["active"]] == [FIRST]


@pytest.mark.parametrize("request_id", ["0001-cert", "a/b", "..", "", "x" * 65])
def test_an_access_name_is_one_file_name_that_names_no_other(request_id: str) -> None:
    with pytest.raises(JitSshError):
        access_name(TARGET, request_id)
    assert access_name(TARGET, FIRST) == f"{TARGET}+{FIRST}"


def test_who_revoked_it_is_printed_only_when_it_is_plainly_a_name_and_a_time(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    import httpx

    assert jit("login", TARGET).code == EXIT_OK
    serial = str(_record(home, FIRST)["serial"])
    server.revoke(FIRST)
    server.fail[f"POST /v1/certificates/{serial}/revoke"] = httpx.Response(
        200,
        json={"serial": serial, "revoked_by": "\x1b[2Jmallory", "revoked_at": "now\r\nok"},
    )
    r = jit("done", FIRST)
    assert r.code == EXIT_OK, r.stderr
    assert f"Request {FIRST} ({TARGET}, serial {serial}) was already revoked; removed" in r.stdout
    assert "\x1b" not in r.stdout and "mallory" not in r.stdout and "\r" not in r.stdout


def test_status_shows_an_access_valid_on_the_server_that_this_machine_holds_no_key_for(
    jit: Callable[..., Run], server: Server, home: Path
) -> None:
    """The finding: an access the client lost track of stayed valid on the server, unseen."""
    _two(jit)
    for p in _files(home, FIRST):
        p.unlink()
    r = jit("status")
    assert r.code == EXIT_OK, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("active   ") and f"request {SECOND}" in lines[0]
    assert re.match(
        rf"issued\s+{TARGET}\s+(59m\d*s?|1h)\s+left\s+request {FIRST}\s+no key on this machine "
        rf"\(jit-ssh done {FIRST} revokes it\)",
        lines[1],
    ), lines
    js = json.loads(jit("status", "--json").stdout)
    assert [(e["request_id"], e["target"]) for e in js["elsewhere"]] == [(FIRST, TARGET)]
    assert jit("done", FIRST).code == EXIT_OK
    assert json.loads(jit("status", "--json").stdout)["elsewhere"] == []


@pytest.mark.parametrize("valid_before", ["\x1b[2J", "2020-01-01T00:00:00Z", 12, None, "x" * 50])
def test_status_lists_no_server_side_access_whose_end_is_not_plainly_ahead(
    jit: Callable[..., Run], server: Server, home: Path, valid_before: object
) -> None:
    import httpx

    assert jit("login", TARGET).code == EXIT_OK
    for p in _files(home, FIRST):
        p.unlink()
    row = server.call("alice", "GET", f"/v1/requests/{FIRST}")
    row["certificate"]["valid_before"] = valid_before
    server.fail["GET /v1/requests"] = httpx.Response(200, json={"requests": [row]})
    r = jit("status", "--json")
    assert r.code == EXIT_OK, r.stderr
    assert json.loads(r.stdout)["elsewhere"] == []
