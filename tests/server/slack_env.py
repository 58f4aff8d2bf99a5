"""The Slack tests' world: an app with a ``[slack]`` table pointed at a fake Slack Web API on
127.0.0.1, a policy with a chat-approval rule, a web-only rule and a TOTP rule, people in both
worlds, and :meth:`SlackEnv.pump`, which hands every new audit event to the two Slack sinks as
the outbox worker would (``sink.deliver(Delivery(...))``).

Test modules import the fixtures: ``from tests.server.slack_env import app, fake, env``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from server.outbox import Delivery
from server.slack.settings import SlackSettings
from server.slack.sinks import make_sinks
from tests.server import conftest as server_conftest
from tests.server.conftest import Caller, Clock, build_app
from tests.slack_fake import FakeSlack, fake_slack

SLACK_POLICY = """
[targets.demo]
principals = ["jit-demo@demo"]
login_users = ["jit-demo"]

[targets.prod-db]
principals = ["root@prod-db"]
login_users = ["root"]

[targets.vault]
principals = ["root@vault"]
login_users = ["root"]

[[rules]]
name = "demo-chat"
targets = ["demo"]
groups = ["engineers"]
max_duration = "1h"
default_duration = "15m"
approvals_required = 1
approver_groups = ["approvers"]
pending_ttl = "1h"
claim_window = "15m"
chat_approval = true
slack_channel = "#access"
warn_before = "10m"

[[rules]]
name = "prod-web-only"
targets = ["prod-db"]
groups = ["engineers"]
max_duration = "2h"
default_duration = "30m"
approvals_required = 2
approver_groups = ["approvers"]
pending_ttl = "10m"
claim_window = "5m"

[[rules]]
name = "vault-totp"
targets = ["vault"]
groups = ["engineers"]
max_duration = "1h"
default_duration = "15m"
approvals_required = 1
approver_groups = ["approvers"]
approver_auth = "totp"
"""

#: Slack ids of the people: bob by the explicit mapping, carol and alice by verified email.
BOB = "UBOB00001"
CAROL = "UCAROL001"
ALICE = "UALICE001"
STRANGER = "USTRANGE1"


@dataclass
class SlackEnv:
    app: Any
    fake: FakeSlack
    secret: str
    clock: Clock
    settings: SlackSettings
    alice: Caller
    bob: Caller
    carol: Caller
    sinks: list[Any]
    cursor: int = 0
    client: Any = field(default=None)

    @property
    def channel_sink(self) -> Any:
        return self.sinks[0]

    @property
    def dm_sink(self) -> Any:
        return self.sinks[1]

    def ts(self, offset: int = 0) -> int:
        """A Slack timestamp for now by the server's clock."""
        return int(self.clock().timestamp()) + offset

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        engine = self.app.extensions["jit_ssh.engine"]
        with engine.connect() as c:
            rows = c.execute(
                text(
                    "SELECT id, type, at, actor, request_id, data FROM audit_events "
                    "WHERE id > :after ORDER BY id"
                ),
                {"after": after},
            ).all()
        return [
            {
                "id": r[0],
                "type": r[1],
                "at": r[2],
                "actor": r[3],
                "request_id": r[4],
                "data": json.loads(r[5]),
            }
            for r in rows
        ]

    def pump(self) -> list[str]:
        """Deliver every audit event since the last pump to each sink that wants it, in order,
        as the outbox worker does; returns the delivered "type.sink" keys."""
        done = []
        for ev in self.events(self.cursor):
            self.cursor = ev["id"]
            for sink in self.sinks:
                if sink.wants(ev["type"]):
                    sink.deliver(
                        Delivery(key=f"{ev['id']}.{sink.name}", sink=sink.name, event=ev, attempt=1)
                    )
                    done.append(f"{ev['type']}.{sink.name}")
        return done

    def submit(self, who: Caller, target: str, reason: str = "INC-1 replica lag") -> dict[str, Any]:
        resp = who.post("/v1/requests", {"target": target, "duration": "30m", "reason": reason})
        assert resp.status_code == 201, resp.get_data(as_text=True)
        return dict(resp.json)

    def set_email(self, name: str, email: str | None) -> None:
        engine = self.app.extensions["jit_ssh.engine"]
        with engine.begin() as c:
            c.execute(text("UPDATE users SET email = :e WHERE name = :n"), {"e": email, "n": name})

    def state(self, request_id: str) -> str:
        engine = self.app.extensions["jit_ssh.engine"]
        with engine.connect() as c:
            return str(
                c.execute(
                    text("SELECT state FROM requests WHERE id = :id"), {"id": request_id}
                ).scalar_one()
            )


def write_secret(path: Path, value: str) -> Path:
    path.write_text(value + "\n", "utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with fake_slack() as f:
        yield f


@pytest.fixture
def app(
    tmp_path: Path,
    database_url: str,
    clock: Clock,
    fake: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Any]:
    """The test app (tests/server/conftest.py's build_app), with SLACK_POLICY and [slack]."""
    secret = "test-signing-secret-" + secrets.token_hex(16)
    settings = SlackSettings(
        bot_token_file=write_secret(tmp_path / "slack-bot-token", fake.token),
        signing_secret_file=write_secret(tmp_path / "slack-signing-secret", secret),
        channel="#general",
        api_url=fake.api_url,
        users={BOB: "bob"},
        env={},
    )
    monkeypatch.setattr(server_conftest, "TEST_POLICY", SLACK_POLICY)
    app = build_app(tmp_path, database_url, clock, slack=settings)
    app.extensions["jit_ssh.slack_secret"] = secret
    yield app
    app.extensions["jit_ssh.engine"].dispose()


@pytest.fixture
def env(app: Any, fake: FakeSlack, clock: Clock, make_user: Any) -> SlackEnv:
    alice = make_user("alice", ("engineers",))
    bob = make_user("bob", ("approvers",), ("requester", "approver"))
    carol = make_user("carol", ("approvers", "engineers"), ("requester", "approver"))
    d = app.extensions["jit_ssh"]
    settings = d.config.slack
    e = SlackEnv(
        app=app,
        fake=fake,
        secret=app.extensions["jit_ssh.slack_secret"],
        clock=clock,
        settings=settings,
        alice=alice,
        bob=bob,
        carol=carol,
        sinks=make_sinks(
            settings,
            sessions=d.service.sessions,
            policy=d.service.policy,
            clock=d.service.clock,
            base_url=d.base_url,
        ),
        client=app.test_client(),
    )
    # carol and alice are matched by the (SSO-verified) email jit-ssh holds for them.
    e.set_email("carol", "Carol@Example.com")
    e.set_email("alice", "alice@example.com")
    fake.add_person(BOB, "bob@example.com")
    fake.add_person(CAROL, "carol@example.com")
    fake.add_person(ALICE, "alice@example.com")
    fake.add_person(STRANGER, "stranger@example.com")
    e.cursor = e.events()[-1]["id"] if e.events() else 0
    return e
