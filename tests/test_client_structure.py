"""The client's single homes: one clock, one atomic writer, one HTTP client, typed answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from client.cli import cli
from client.errors import BadServerAnswer
from client.verify import RequestView, TargetView, check_request_answer, check_target_list

CLIENT = Path(__file__).resolve().parent.parent / "client"


def _sources() -> dict[str, str]:
    return {str(p.relative_to(CLIENT)): p.read_text() for p in CLIENT.rglob("*.py")}


def test_one_clock() -> None:
    readers = {
        name
        for name, text in _sources().items()
        if re.search(r"datetime\.now\(|datetime\.utcnow\(|\btime\.time\(\)", text)
    }
    assert readers == {"clock.py"}


def test_one_atomic_writer() -> None:
    writers = {
        name
        for name, text in _sources().items()
        if re.search(r"os\.replace\(|os\.rename\(|\.write_text\(|\.write_bytes\(", text)
    }
    assert writers == {"files.py"}


def test_one_http_client() -> None:
    makers = {
        name
        for name, text in _sources().items()
        if re.search(r"httpx\.Client\(|ApiClient\(|urlopen\(", text)
    }
    assert makers == {"http.py", "commands/_common.py"}


def _ca_line() -> str:
    return (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def test_host_setup_fetches_through_the_injected_transport(tmp_path: Path) -> None:
    seen: list[str] = []
    ca_line = _ca_line()

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url}")
        if request.url.path == "/v1/ca.pub":
            return httpx.Response(200, text=ca_line + "\n")
        return httpx.Response(
            200,
            json={"targets": [{"name": "t", "principals": ["root@t"], "login_users": ["root"]}]},
        )

    r = CliRunner().invoke(
        cli,
        ["host", "setup", "--server", "https://jit.example.com", "--target", "t"]
        + ["--sshd-dir", str(tmp_path / "ssh"), "--dry-run"],
        meta={"jit_ssh.transport": httpx.MockTransport(handle)},
    )
    assert r.exit_code == 0, r.output
    assert seen == [
        "GET https://jit.example.com/v1/ca.pub",
        "GET https://jit.example.com/v1/targets",
    ]
    assert "root@t" in r.output and ca_line in r.output


def test_a_request_answer_becomes_a_typed_view() -> None:
    view = check_request_answer(
        {
            "id": "abc",
            "state": "pending",
            "target": "t",
            "requester": "alice",
            "duration_seconds": 60,
            "approvals_required": 2,
            "approvals": [{"decision": "approve", "approver": "bob"}],
            "certificate": {"serial": 7},
        }
    )
    assert isinstance(view, RequestView)
    assert (view.id, view.state, view.target, view.requester) == ("abc", "pending", "t", "alice")
    assert view.approved_by == ("bob",) and view.denied_by == ()
    assert view.certificate is not None and view.certificate.serial == 7
    assert view.answer["certificate"]["serial"] == "7"
    with pytest.raises(AttributeError):
        view.state = "approved"  # type: ignore[misc]


def test_a_target_list_becomes_typed_views() -> None:
    known = check_target_list(
        {"targets": [{"name": "db", "principals": ["root@db"], "login_users": ["root"]}]}
    )
    assert known == {"db": TargetView("db", ("root@db",), ("root",))}
    for bad in (
        {"targets": "x"},
        {"targets": [{"name": 1}]},
        {"targets": [{"name": "db", "principals": [1]}]},
    ):
        with pytest.raises(BadServerAnswer):
            check_target_list(json.loads(json.dumps(bad)))


def test_commands_are_split_by_audience() -> None:
    from client.cli import _SUBCOMMANDS
    from client.commands import api, approver, engineer

    by_module: dict[str, set[str]] = {}
    for name, (module, _attr, _help) in _SUBCOMMANDS.items():
        by_module.setdefault(module, set()).add(name)
    assert by_module["client.commands.engineer"] == {
        "login",
        "status",
        "done",
        "extend",
        "requests",
        "ssh",
        "config",
    }
    assert by_module["client.commands.approver"] == {"pending", "approve", "deny"}
    assert by_module["client.commands.api"] == {"api"}
    for name in ("pending", "approve", "deny", "api"):
        assert not hasattr(engineer, name)
    assert approver.approve.name == "approve" and api.api.name == "api"
