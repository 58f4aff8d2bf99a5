"""``jit-ssh admin outbox``: list what is not delivered, put messages back, run the worker.

The commands run against the server's own configuration and database (a data directory in
a temporary directory), and deliver to a real receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from client.cli import cli
from tests.webhook_receiver import Receiver


@pytest.fixture
def hook() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def env(tmp_path: Path, hook: Receiver) -> dict[str, str]:
    config = tmp_path / "server.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[[webhooks]]\nname = "ops"\nurl = "{hook.url}"\n'
        "[notifications]\nmax_attempts = 1\n"
    )
    env = {"JIT_SSH_CONFIG": str(config), "JIT_SSH_WEBHOOK_SECRET_OPS": "cli-secret"}
    _record(env, "request.created", "user.added")
    return env


def _record(env: dict[str, str], *types: str) -> None:
    from server.config import resolve_config
    from server.context import open_context

    with open_context(resolve_config(env=env), say=lambda m: None) as ctx, ctx.service._tx() as s:
        for t in types:
            ctx.audit.record(s, type=t, now=ctx.clock(), actor="alice")


def run(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(cli, ["admin", "outbox", *args], env=env)


def listed(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    r = run(env, *args, "--json")
    assert r.exit_code == 0, r.output
    rows: list[dict[str, Any]] = json.loads(r.stdout)
    return rows


def test_list_shows_pending_messages(env: dict[str, str]) -> None:
    (m,) = listed(env)  # user.added notifies nobody
    assert m["sink"] == "webhook:ops" and m["event"] == "request.created"
    assert m["state"] == "pending" and m["attempts"] == 0 and m["next_attempt_at"]
    assert m["key"].endswith(".webhook:ops")
    r = run(env)
    assert r.exit_code == 0
    assert m["key"] in r.stdout and "request.created" in r.stdout and "KEY" in r.stdout


def test_work_once_delivers(env: dict[str, str], hook: Receiver) -> None:
    r = run(env, "work", "--once")
    assert r.exit_code == 0, r.output
    assert "1 notification(s) attempted" in r.stdout
    (got,) = hook.wait_for(1)
    assert got.headers["X-Jit-Ssh-Event"] == "request.created"
    assert listed(env) == []
    (m,) = listed(env, "--state", "delivered")
    assert m["key"] == got.headers["Idempotency-Key"] and m["delivered_at"]
    assert "no pending or dead notifications" in run(env).stdout


def test_a_dead_message_is_shown_and_retried(env: dict[str, str], hook: Receiver) -> None:
    hook.always = 500
    assert run(env, "work", "--once").exit_code == 0
    (m,) = listed(env)
    assert m["state"] == "dead" and m["attempts"] == 1 and m["last_error"] == "HTTP 500"
    assert "HTTP 500" in run(env, "--state", "dead").stdout
    hook.always = None
    r = run(env, "retry", m["key"])
    assert r.exit_code == 0 and "1 notification(s) due again" in r.stdout
    (again,) = listed(env)
    assert again["state"] == "pending" and again["attempts"] == 0
    run(env, "work", "--once")
    assert listed(env) == []
    assert len(hook.received) == 2
    assert len({r.headers["Idempotency-Key"] for r in hook.received}) == 1


def test_retry_dead_puts_every_dead_one_back(env: dict[str, str], hook: Receiver) -> None:
    _record(env, "request.denied", "certificate.issued")
    hook.always = 404
    run(env, "work", "--once")
    assert {m["state"] for m in listed(env)} == {"dead"} and len(listed(env)) == 3
    r = run(env, "retry", "--dead")
    assert r.exit_code == 0 and "3 notification(s) due again" in r.stdout
    assert {m["state"] for m in listed(env)} == {"pending"}


def test_retry_refuses_an_unknown_key_and_a_bad_call(env: dict[str, str]) -> None:
    r = run(env, "retry", "999.webhook:ops")
    assert r.exit_code == 3 and "no pending or dead notification" in r.output
    r = run(env, "retry")
    assert r.exit_code == 2 and "give a KEY or --dead" in r.output
    r = run(env, "--state", "gone")
    assert r.exit_code == 2


def test_without_a_database_it_says_so(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        cli,
        ["admin", "outbox"],
        env={"JIT_SSH_DATA_DIR": str(tmp_path / "none"), "JIT_SSH_CONFIG": ""},
    )
    from server.errors import DatabaseUnavailable

    # The top-level handler (client.errors.run) prints it as one line; no database is created.
    assert isinstance(r.exception, DatabaseUnavailable) and "no database" in str(r.exception)
    assert not (tmp_path / "none").exists()
