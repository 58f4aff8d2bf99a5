"""Issue 12, points 1 and 5: ``status`` and the other commands tell the truth when the server,
the settings or the key fail (the documented exit code, what is wrong, how to fix it), and
typos get a suggestion. Over the real app, with the fixtures of :mod:`tests.test_cli_engineer`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx

from client.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE

from .test_cli_engineer import (  # noqa: F401 (fixtures)
    TARGET,
    Run,
    Server,
    home,
    jit,
    keys,
    server,
    sleeps,
)


def _offline() -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: (_ for _ in ()).throw(httpx.ConnectError("refused")))


# --------------------------------------------------------------------------- status


def test_status_server_down_is_exit_4_not_nothing(jit: Callable[..., Run]) -> None:
    r = jit("status", transport=_offline())
    assert r.code == EXIT_UNREACHABLE, r
    assert "No active access and no pending requests." not in r.stdout
    assert "[server_unreachable]" in r.stderr and "fix:" in r.stderr


def test_status_server_down_still_lists_local_access(
    jit: Callable[..., Run], server: Server
) -> None:
    assert jit("login", TARGET).code == EXIT_OK
    r = jit("status", transport=_offline())
    assert r.code == EXIT_UNREACHABLE
    assert r.stdout.startswith(f"active   {TARGET}")
    assert "this machine's records only" in r.stderr


def test_status_json_server_down_has_an_error_field(jit: Callable[..., Run]) -> None:
    r = jit("status", "--json", transport=_offline())
    assert r.code == EXIT_UNREACHABLE
    js = json.loads(r.stdout)
    assert js["error"]["code"] == "server_unreachable" and js["active"] == []


def test_status_unknown_key_says_how_to_enrol(jit: Callable[..., Run], tmp_path: Path) -> None:
    from .test_cli_engineer import _write_key

    stranger = tmp_path / "ids" / "id_stranger"
    _write_key(stranger)
    r = jit("status", env={"JIT_SSH_IDENTITY": str(stranger)})
    assert r.code == EXIT_FAILED, r
    assert "No active access" not in r.stdout
    assert "ask an admin to enrol it: jit-ssh admin user add alice" in r.stderr
    assert f"--ssh-key {stranger}.pub" in r.stderr


def test_status_unknown_user_is_refused(jit: Callable[..., Run]) -> None:
    r = jit("status", env={"JIT_SSH_USER": "carol"})
    assert r.code == EXIT_FAILED, r
    assert "jit-ssh admin user add carol" in r.stderr


def test_status_missing_key_file_says_which(jit: Callable[..., Run], tmp_path: Path) -> None:
    r = jit("status", env={"JIT_SSH_IDENTITY": str(tmp_path / "nope")})
    assert r.code == EXIT_FAILED, r
    assert "no such key file" in r.stderr and "--identity" in r.stderr
    assert "No active access" not in r.stdout


def test_status_without_config_says_run_config_init(jit: Callable[..., Run]) -> None:
    r = jit("status", env={"JIT_SSH_SERVER": "", "JIT_SSH_USER": "", "JIT_SSH_IDENTITY": ""})
    assert r.code == EXIT_FAILED, r
    assert "jit-ssh config init" in r.stderr
    assert "No active access" not in r.stdout


# --------------------------------------------------------------------------- typos


def test_login_typo_suggests_the_target_and_keeps_the_servers_code(
    jit: Callable[..., Run], server: Server
) -> None:
    plain = jit("login", "nowhere-at-all")
    r = jit("login", "prod-bd")
    assert r.code == plain.code != EXIT_OK
    code = plain.stderr.rsplit("[", 1)[1].split("]")[0]
    assert f"[{code}]" in r.stderr
    assert "did you mean 'prod-db'? jit-ssh login prod-db" in r.stderr
    assert "did you mean" not in plain.stderr


# --------------------------------------------------------------------------- config init


def _init(jit: Callable[..., Run], identity: Path, transport: object = None) -> Run:
    return jit(
        "config",
        "init",
        "--server",
        "https://jit.example.com",
        "--user",
        "alice",
        "--identity",
        str(identity),
        transport=transport,
    )


def test_config_init_says_the_key_is_enrolled_and_as_whom(
    jit: Callable[..., Run], server: Server, keys: dict[str, tuple[Path, str]]
) -> None:
    r = _init(jit, keys["alice"][0])
    assert r.code == EXIT_OK, r.stderr
    assert "Your key is enrolled as 'alice'" in r.stdout
    assert "admin user add" not in r.stdout
    assert "GET /v1/whoami" in server.paths()


def test_config_init_with_an_unknown_key_says_to_ask_for_enrolment(
    jit: Callable[..., Run], tmp_path: Path
) -> None:
    from .test_cli_engineer import _write_key

    stranger = tmp_path / "ids" / "id_new"
    _write_key(stranger)
    r = _init(jit, stranger)
    assert r.code == EXIT_OK, r.stderr
    assert "does not know this key for alice" in r.stdout
    assert f"jit-ssh admin user add alice --group engineers --ssh-key {stranger}.pub" in r.stdout
    assert "enrolled as" not in r.stdout


def test_config_init_with_the_server_down_warns_and_still_writes(
    jit: Callable[..., Run], home: Path, keys: dict[str, tuple[Path, str]]
) -> None:
    r = _init(jit, keys["alice"][0], transport=_offline())
    assert r.code == EXIT_OK, r.stderr
    assert (home / ".config" / "jit-ssh" / "config.toml").exists()
    assert "warning: could not reach https://jit.example.com" in r.stderr
    assert "The config is written all the same" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


# --------------------------------------------------------------------------- the other commands


def test_requests_and_pending_offline_are_exit_4_not_nothing(jit: Callable[..., Run]) -> None:
    for command, nothing in (("requests", "No requests yet."), ("pending", "Nothing waits")):
        r = jit(command, transport=_offline())
        assert r.code == EXIT_UNREACHABLE, (command, r)
        assert nothing not in r.stdout


def test_deny_answered_with_a_pending_request_is_not_reported_as_denied(
    jit: Callable[..., Run], server: Server
) -> None:
    server.submit = "pending"
    jit("login", TARGET, "--no-wait")
    still = server.call("alice", "GET", "/v1/requests/0000000000000001")
    server.fail["POST /v1/requests/0000000000000001/deny"] = httpx.Response(200, json=still)
    r = jit("deny", "0000000000000001", "--reason", "freeze", as_user="bob")
    assert r.code == EXIT_FAILED, r
    assert "denied." not in r.stdout
    assert "is pending after the deny, not denied" in r.stderr


def test_every_command_says_how_to_enrol_an_unknown_key(
    jit: Callable[..., Run], tmp_path: Path
) -> None:
    from .test_cli_engineer import _write_key

    stranger = tmp_path / "ids" / "id_stranger"
    _write_key(stranger)
    for args in (
        ("requests",),
        ("pending",),
        ("login", TARGET),
        ("done", "0000000000000001"),
        ("approve", "0000000000000001"),
        ("deny", "0000000000000001", "--reason", "x"),
    ):
        r = jit(*args, env={"JIT_SSH_IDENTITY": str(stranger)})
        assert r.code == EXIT_FAILED, (args, r)
        assert "[unknown_key]" in r.stderr, args
        assert f"jit-ssh admin user add alice --group engineers --ssh-key {stranger}.pub" in (
            r.stderr
        ), args
