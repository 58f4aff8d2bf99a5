"""Signed webhooks: what a receiver gets, how it verifies it (the recipes of
the README's Notifications section, run against real signed deliveries), how answers are judged, and what
the configuration refuses. The old ``webhook_url`` still works (as the webhook "default").
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import select

from ca import public_key_from_crypto
from server.admin import Admin
from server.config import InvalidConfig, WebhookSettings, resolve_config
from server.models import OutboxMessage
from server.outbox import Delivery, DeliveryFailed, deliver_due
from server.webhooks import WebhookSink
from tests.webhook_receiver import Receiver

from .conftest import Caller, Clock, build_app, user_key_line

ROOT = Path(__file__).resolve().parents[2]
#: The verification recipe lives in the README's Notifications section.
DOC = ROOT / "README.md"
DEMO = {"target": "demo", "duration": "5m", "reason": "webhook test"}
BASE = "https://jit.example.test"
SECRET = "7f3a9c2e-test-secret"


def _doc_block(lang: str) -> str:
    section = DOC.read_text("utf-8").split("\n## Notifications\n", 1)[1].split("\n## ", 1)[0]
    section = section.split("\n### Slack\n", 1)[0]
    blocks = re.findall(rf"```{lang}\n(.*?)```", section, re.S)
    assert blocks, f"the README's Notifications section has no {lang} block"
    return str(blocks[-1] if lang == "sh" else blocks[0])


def documented_verify() -> Any:
    """The Python recipe of the README's Notifications section, as written."""
    namespace: dict[str, Any] = {}
    exec(compile(_doc_block("python"), str(DOC), "exec"), namespace)
    return namespace["verify"]


@pytest.fixture
def hook() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def app(tmp_path: Path, database_url: str, clock: Clock, hook: Receiver) -> Iterator[Any]:
    app = build_app(
        tmp_path,
        database_url,
        clock,
        webhooks=(WebhookSettings(name="ops", url=hook.url, secret=SECRET),),
    )
    yield app
    app.extensions["jit_ssh.engine"].dispose()


def deps(app: Any) -> Any:
    return app.extensions["jit_ssh"]


def outbox_rows(app: Any) -> list[OutboxMessage]:
    with deps(app).service._tx() as s:
        out = list(s.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars())
        s.expunge_all()
    return out


def test_a_delivery_verifies_with_the_documented_recipe(
    app: Any, hook: Receiver, alice: Caller
) -> None:
    rid = alice.post("/v1/requests", DEMO).json["id"]
    assert deliver_due(deps(app)) == 1
    (got,) = hook.wait_for(1)
    h = got.headers
    verify = documented_verify()
    assert verify(SECRET.encode(), h["X-Jit-Ssh-Timestamp"], h["X-Jit-Ssh-Signature"], got.body)
    assert abs(int(h["X-Jit-Ssh-Timestamp"]) - time.time()) < 60
    # The wrong secret, a changed body, another timestamp: refused.
    assert not verify(b"wrong", h["X-Jit-Ssh-Timestamp"], h["X-Jit-Ssh-Signature"], got.body)
    tampered = got.body.replace(b"webhook test", b"webhook TEST")
    assert not verify(SECRET.encode(), h["X-Jit-Ssh-Timestamp"], h["X-Jit-Ssh-Signature"], tampered)
    other = str(int(h["X-Jit-Ssh-Timestamp"]) - 1)
    assert not verify(SECRET.encode(), other, h["X-Jit-Ssh-Signature"], got.body)
    # The headers and body the docs promise.
    (row,) = outbox_rows(app)
    assert h["Content-Type"] == "application/json"
    assert h["Idempotency-Key"] == row.key == f"{row.event_id}.webhook:ops"
    assert h["X-Jit-Ssh-Event"] == "request.created"
    body = got.json
    assert body["id"] == row.key and body["event"] == "request.created"
    assert body["actor"] == "alice" and body["request_id"] == rid
    assert body["data"]["reason"] == "webhook test" and body["data"]["target"] == "demo"
    assert body["request"] == {
        "target": "demo",
        "requester": "alice",
        "state": "pending",
        "rule": "demo-access",
        "url": f"{BASE}/requests/{rid}",
    }


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_the_documented_shell_check_accepts_it_and_refuses_a_forgery(
    app: Any, hook: Receiver, alice: Caller, tmp_path: Path
) -> None:
    alice.post("/v1/requests", DEMO)
    deliver_due(deps(app))
    (got,) = hook.wait_for(1)
    (tmp_path / "body.json").write_bytes(got.body)
    (tmp_path / "secret").write_text(SECRET + "\n")
    line = _doc_block("sh").strip()

    def run(sig: str) -> str:
        env = {"PATH": "/usr/bin:/bin", "TS": got.headers["X-Jit-Ssh-Timestamp"], "SIG": sig}
        return subprocess.run(
            ["sh", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True
        ).stdout

    assert run(got.headers["X-Jit-Ssh-Signature"]).strip() == "valid"
    assert run("v1=" + "0" * 64).strip() == ""


def _sink(url: str, **kw: Any) -> WebhookSink:
    return WebhookSink(
        WebhookSettings(name="t", url=url, secret=SECRET, **kw),
        SECRET.encode(),
        sessions=None,
        base_url=BASE,
    )


def _delivery() -> Delivery:
    event = {
        "id": 7,
        "type": "request.created",
        "at": "x",
        "actor": "a",
        "request_id": None,
        "data": {},
    }
    return Delivery(key="7.webhook:t", sink="webhook:t", event=event, attempt=1)


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(500, False), (502, False), (503, False), (429, False), (400, True), (401, True), (404, True)],
)
def test_5xx_and_429_are_retried_other_4xx_are_permanent(
    hook: Receiver, status: int, permanent: bool
) -> None:
    hook.always = status
    with pytest.raises(DeliveryFailed) as e:
        _sink(hook.url).deliver(_delivery())
    assert e.value.permanent is permanent


def test_2xx_is_delivered(hook: Receiver) -> None:
    hook.always = 204
    _sink(hook.url).deliver(_delivery())
    assert len(hook.received) == 1


def test_redirects_are_not_followed(hook: Receiver) -> None:
    elsewhere = Receiver()
    try:
        hook.always = 307
        hook.extra_headers = {"Location": elsewhere.url}
        with pytest.raises(DeliveryFailed, match="not followed") as e:
            _sink(hook.url).deliver(_delivery())
        assert e.value.permanent
        time.sleep(0.2)
        assert elsewhere.received == []
    finally:
        elsewhere.close()


def test_a_timeout_and_a_closed_port_are_retried(hook: Receiver) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeliveryFailed) as e:
        _sink(f"http://127.0.0.1:{port}/x").deliver(_delivery())
    assert not e.value.permanent
    import threading

    hook.gate = threading.Event()
    try:
        with pytest.raises(DeliveryFailed, match="timed out") as e:
            _sink(hook.url, timeout=0.2).deliver(_delivery())
        assert not e.value.permanent
    finally:
        hook.gate.set()


def test_the_events_filter(tmp_path: Path, database_url: str, clock: Clock, hook: Receiver) -> None:
    app = build_app(
        tmp_path,
        database_url,
        clock,
        webhooks=(
            WebhookSettings(
                name="decisions",
                url=hook.url,
                secret=SECRET,
                events=("request.ap*", "request.denied"),
            ),
        ),
    )
    try:
        d = deps(app)
        keys = {}
        for name, groups, roles in (
            ("alice", ("engineers",), ("requester",)),
            ("bob", ("approvers",), ("requester", "approver")),
        ):
            k = ed25519.Ed25519PrivateKey.generate()
            keys[name] = Caller(name=name, key=k, client=app.test_client(), clock=clock)
            Admin(d.service).add_user(
                name,
                groups=groups,
                roles=roles,
                ssh_keys=[public_key_from_crypto(k.public_key()).openssh],
            )
        alice, bob = keys["alice"], keys["bob"]
        rid = alice.post("/v1/requests", DEMO).json["id"]
        bob.post(f"/v1/requests/{rid}/approve", {})
        alice.post(f"/v1/requests/{rid}/certificate", {"public_key": user_key_line()})
        assert [m.event_type for m in outbox_rows(app)] == ["request.approval", "request.approved"]
    finally:
        app.extensions["jit_ssh.engine"].dispose()


# ---- the old webhook_url ---------------------------------------------------------------------


@pytest.fixture
def legacy(tmp_path: Path, database_url: str, clock: Clock, hook: Receiver) -> Iterator[Any]:
    app = build_app(tmp_path, database_url, clock, webhook_url=hook.url)
    yield app
    app.extensions["jit_ssh.engine"].dispose()


@pytest.fixture
def legacy_alice(legacy: Any, clock: Clock) -> Caller:
    k = ed25519.Ed25519PrivateKey.generate()
    Admin(deps(legacy).service).add_user(
        "alice", groups=("engineers",), ssh_keys=[public_key_from_crypto(k.public_key()).openssh]
    )
    return Caller(name="alice", key=k, client=legacy.test_client(), clock=clock)


def test_the_old_webhook_url_is_the_default_webhook_unsigned(
    legacy: Any, hook: Receiver, legacy_alice: Caller
) -> None:
    rid = legacy_alice.post("/v1/requests", DEMO).json["id"]
    deliver_due(deps(legacy))
    (got,) = hook.wait_for(1)
    assert got.headers["Idempotency-Key"].endswith(".webhook:default")
    assert "X-Jit-Ssh-Signature" not in got.headers
    # Slack-compatible: a text with the link to the request's page.
    assert f"<{BASE}/requests/{rid}|review>" in got.json["text"]
    assert "alice" in got.json["text"] and "5m" in got.json["text"]


def test_a_reason_cannot_inject_a_link_into_the_text(
    legacy: Any, hook: Receiver, legacy_alice: Caller
) -> None:
    reason = "<https://evil.example/approve|Approve now> & <!channel>"
    legacy_alice.post("/v1/requests", {**DEMO, "reason": reason})
    deliver_due(deps(legacy))
    (got,) = hook.wait_for(1)
    text = got.json["text"]
    assert "&lt;https://evil.example/approve|Approve now&gt; &amp; &lt;!channel&gt;" in text
    assert text.count("<") == 1 and text.count(">") == 1, text
    assert got.json["data"]["reason"] == reason  # the JSON keeps what was typed


def test_the_old_webhook_is_signed_when_its_secret_is_set(tmp_path: Path) -> None:
    cfg = resolve_config(
        env={
            "JIT_SSH_DATA_DIR": str(tmp_path),
            "JIT_SSH_WEBHOOK_URL": "https://hooks.example.com/x",
            "JIT_SSH_WEBHOOK_SECRET_DEFAULT": "abc",
        }
    )
    (w,) = cfg.all_webhooks
    assert w.name == "default" and w.secret == "abc"
    # Nowhere in a repr (a log line or a traceback shows the config): the attacker review.
    assert "abc" not in repr(cfg) and "abc" not in repr(cfg.all_webhooks)


def test_the_lease_must_outlast_four_of_the_longest_timeout(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("secret\n")
    hook = f'[[webhooks]]\nname = "ops"\nurl = "https://h.example/x"\nsecret_file = "{tmp_path / "s"}"\ntimeout = 30\n'
    with pytest.raises(InvalidConfig, match="four times"):
        _load(tmp_path, hook + '[notifications]\nlease = "1m"\n')
    assert (
        _load(tmp_path, hook + '[notifications]\nlease = "2m"\n').notifications.lease.seconds == 120
    )


# ---- the configuration refuses ---------------------------------------------------------------


def _load(tmp_path: Path, toml: str, env: dict[str, str] | None = None) -> Any:
    p = tmp_path / "server.toml"
    p.write_text(toml)
    return resolve_config(p, env={"HOME": str(tmp_path), **(env or {})})


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",
        "http://10.0.0.5/x",
        "ftp://hooks.example.com/x",
        "hooks.example.com",
    ],
)
def test_plain_http_is_refused_except_to_localhost(tmp_path: Path, url: str) -> None:
    with pytest.raises(InvalidConfig, match="webhook 'ops': url") as e:
        _load(
            tmp_path,
            f'[[webhooks]]\nname = "ops"\nurl = "{url}"\n',
            {"JIT_SSH_WEBHOOK_SECRET_OPS": "s"},
        )
    assert e.value.field == "webhooks"
    with pytest.raises(InvalidConfig, match="webhook_url"):
        _load(tmp_path, f'webhook_url = "{url}"\n')


@pytest.mark.parametrize(
    "url",
    ["http://localhost:9000/x", "http://127.0.0.1/x", "http://[::1]:8/x", "https://h.example/x"],
)
def test_https_and_local_http_are_accepted(tmp_path: Path, url: str) -> None:
    cfg = _load(
        tmp_path,
        f'[[webhooks]]\nname = "ops"\nurl = "{url}"\n',
        {"JIT_SSH_WEBHOOK_SECRET_OPS": "s"},
    )
    assert cfg.webhooks[0].url == url and cfg.webhooks[0].secret == "s"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('name = "ops"\nurl = "https://h.example/x"', "has no secret"),
        ('name = "Ops!"\nurl = "https://h.example/x"\nsecret_file = "s"', "name must be"),
        ('url = "https://h.example/x"\nsecret_file = "s"', "name must be"),
        (
            'name = "ops"\nurl = "https://h.example/x"\nsecret_file = "s"\nevents = ["reqest.*"]',
            "matches no event",
        ),
        (
            'name = "ops"\nurl = "https://h.example/x"\nsecret_file = "s"\nevents = "request.*"',
            "list of event types",
        ),
        ('name = "ops"\nurl = "https://h.example/x"\nsecret_file = "s"\ntimeout = 0', "timeout"),
        (
            'name = "ops"\nurl = "https://h.example/x"\nsecret_file = "s"\nsecret = "inline"',
            "unknown key",
        ),
    ],
)
def test_bad_webhook_tables_are_refused_by_name(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        _load(tmp_path, f"[[webhooks]]\n{table}\n")


def test_a_missing_secret_file_is_refused_at_start(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    with pytest.raises(InvalidConfig, match="webhook 'ops': secret_file"):
        build_app(
            tmp_path,
            database_url,
            clock,
            webhooks=(
                WebhookSettings(
                    name="ops", url="https://h.example/x", secret_file=tmp_path / "nope"
                ),
            ),
        )


def test_webhook_url_and_a_webhook_named_default_are_refused_together(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match="named 'default'"):
        _load(
            tmp_path,
            'webhook_url = "https://a.example/x"\n[[webhooks]]\nname = "default"\n'
            'url = "https://b.example/x"\nsecret_file = "s"\n',
        )


def test_bad_notification_settings_are_refused(tmp_path: Path) -> None:
    for toml, message in (
        ("[notifications]\nmax_attempts = 0\n", "max_attempts"),
        ('[notifications]\nbackoff_base = "soon"\n', "backoff_base"),
        ('[notifications]\nbackoff_base = "2h"\nbackoff_max = "1h"\n', "backoff_max"),
        ('[notifications]\nworker = "yes"\n', "worker"),
        ("[notifications]\nretries = 3\n", "unknown key"),
    ):
        with pytest.raises(InvalidConfig, match=message):
            _load(tmp_path, toml)


def test_a_refused_url_is_named_without_its_path(tmp_path: Path) -> None:
    """A receiver's token often sits in the URL's path: a refusal (it reaches logs) names the
    scheme and host only."""
    (tmp_path / "s").write_text("secret\n")
    toml = f'[[webhooks]]\nname = "chat"\nurl = "http://hooks.example.com/services/T0/B0/s3cr3tT0ken"\nsecret_file = "{tmp_path / "s"}"\n'
    with pytest.raises(InvalidConfig) as e:
        _load(tmp_path, toml)
    assert "s3cr3tT0ken" not in str(e.value) and "http://hooks.example.com/..." in str(e.value)


def test_two_webhooks_whose_secrets_share_a_variable_are_refused(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("secret\n")
    one = (
        '[[webhooks]]\nname = "{}"\nurl = "https://h.example/x"\nsecret_file = "'
        + str(tmp_path / "s")
        + '"\n'
    )
    with pytest.raises(InvalidConfig, match="JIT_SSH_WEBHOOK_SECRET_A_B"):
        _load(tmp_path, one.format("a-b") + one.format("a_b"))
