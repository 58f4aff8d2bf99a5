"""The transactional outbox: every notification is written in the transaction of the change it
reports, delivered at least once (retries with backoff, timed by the test clock), kept when
undeliverable, and never delivered by two workers at once. On SQLite and PostgreSQL.

A real HTTP receiver on 127.0.0.1 stands in for the webhook's URL; ``deliver_due`` and ``tick``
are called directly (no worker thread, no wall-clock waits).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from server.config import NotificationSettings, WebhookSettings
from server.models import AccessRequest, OutboxMessage, OutboxState, RequestState
from server.outbox import Outbox, deliver_due, tick
from tests.webhook_receiver import Receiver

from .conftest import Caller, Clock, build_app, user_key_line

DEMO = {"target": "demo", "duration": "15m", "reason": "outbox test"}


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
        webhooks=(
            WebhookSettings(name="all", url=hook.url, secret="s3cret"),
            WebhookSettings(
                name="certs", url=hook.url + "/certs", secret="other", events=("certificate.*",)
            ),
        ),
        notifications=NotificationSettings(
            max_attempts=3, backoff_base=timedelta(seconds=10), backoff_max=timedelta(minutes=5)
        ),
    )
    yield app
    app.extensions["jit_ssh.engine"].dispose()


def deps(app: Any) -> Any:
    return app.extensions["jit_ssh"]


def rows(app: Any) -> list[OutboxMessage]:
    with deps(app).service._tx() as s:
        out = list(s.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars())
        s.expunge_all()
    return out


def flow(alice: Caller, bob: Caller) -> tuple[str, str]:
    rid = alice.post("/v1/requests", DEMO).json["id"]
    assert bob.post(f"/v1/requests/{rid}/approve", {"comment": "go"}).json["state"] == "approved"
    r = alice.post(f"/v1/requests/{rid}/certificate", {"public_key": user_key_line()})
    assert r.status_code == 200, r.json
    return rid, r.json["serial"]


def test_one_row_per_wanting_sink_in_the_events_transaction(
    app: Any, alice: Caller, bob: Caller
) -> None:
    rid, serial = flow(alice, bob)
    got = [(m.event_type, m.sink) for m in rows(app)]
    assert got == [
        ("request.created", "webhook:all"),
        ("request.approval", "webhook:all"),
        ("request.approved", "webhook:all"),
        ("certificate.issued", "webhook:all"),
        ("certificate.issued", "webhook:certs"),
    ]
    with deps(app).engine.connect() as c:
        events = dict(c.execute(text("SELECT id, type FROM audit_events")).all())
    for m in rows(app):
        assert m.key == f"{m.event_id}.{m.sink}" and events[m.event_id] == m.event_type
        assert m.state == OutboxState.PENDING and m.attempts == 0 and m.request_id == rid
        payload = json.loads(m.payload)
        assert payload["id"] == m.event_id and payload["type"] == m.event_type
    issued = json.loads(rows(app)[-1].payload)
    assert issued["data"]["serial"] == serial and issued["actor"] == "alice"


def test_a_rolled_back_change_leaves_no_outbox_row(app: Any, alice: Caller) -> None:
    rid = alice.post("/v1/requests", DEMO).json["id"]
    before = rows(app)
    d = deps(app)
    with pytest.raises(RuntimeError), d.service._tx() as s:
        req = s.get(AccessRequest, rid)
        req.state = RequestState.CANCELLED
        d.audit.record(s, type="request.cancelled", now=d.clock(), actor="alice", request_id=rid)
        assert len(s.execute(select(OutboxMessage)).all()) == len(before) + 1  # written...
        raise RuntimeError("the change fails after its event was recorded")
    assert [m.key for m in rows(app)] == [m.key for m in before]  # ...and gone with it
    assert alice.get(f"/v1/requests/{rid}").json["state"] == "pending"


def test_events_that_notify_nobody_write_nothing(app: Any, root: Caller) -> None:
    # Adding users (the fixtures) and policy loads are audited but are not notifications.
    assert rows(app) == []


def test_no_sink_configured_writes_nothing(tmp_path: Path, database_url: str, clock: Clock) -> None:
    app = build_app(tmp_path, database_url, clock)
    try:
        d = deps(app)
        assert d.outbox.sinks == ()
        with d.service._tx() as s:
            assert d.outbox.enqueue(s, _event(d, s)) == 0
        assert rows(app) == []
    finally:
        app.extensions["jit_ssh.engine"].dispose()


def _event(d: Any, s: Any) -> Any:
    return d.audit.record(s, type="request.created", now=d.clock(), actor="x")


def test_delivered_once_with_its_key(app: Any, hook: Receiver, alice: Caller, bob: Caller) -> None:
    flow(alice, bob)
    assert deliver_due(deps(app)) == 5
    got = hook.wait_for(5)
    assert sorted(r.headers["Idempotency-Key"] for r in got) == sorted(m.key for m in rows(app))
    assert {r.path for r in got if r.json["event"] == "certificate.issued"} == {
        "/hooks/jit",
        "/hooks/jit/certs",
    }
    assert all(m.state == OutboxState.DELIVERED and m.attempts == 1 for m in rows(app))
    assert deliver_due(deps(app)) == 0
    assert len(hook.received) == 5


def test_failures_are_retried_with_backoff_then_dead_and_kept(
    app: Any, hook: Receiver, alice: Caller, clock: Clock
) -> None:
    clock.freeze()
    hook.always = 503
    alice.post("/v1/requests", DEMO)
    assert deliver_due(deps(app)) == 1
    (m,) = rows(app)
    assert m.state == OutboxState.PENDING and m.attempts == 1 and m.last_error == "HTTP 503"
    # The first retry: 10 s with jitter from its upper half.
    wait = (m.next_attempt_at - clock()).total_seconds()
    assert 5 <= wait <= 10
    assert deliver_due(deps(app)) == 0  # not due yet
    clock.advance(seconds=wait)
    assert deliver_due(deps(app)) == 1
    (m,) = rows(app)
    second = (m.next_attempt_at - clock()).total_seconds()
    assert m.attempts == 2 and 10 <= second <= 20  # doubled
    clock.advance(seconds=second)
    assert deliver_due(deps(app)) == 1
    (m,) = rows(app)
    assert m.state == OutboxState.DEAD and m.attempts == 3  # max_attempts
    assert len(hook.received) == 3
    assert len({r.headers["Idempotency-Key"] for r in hook.received}) == 1
    clock.advance(hours=1)
    assert deliver_due(deps(app)) == 0  # dead is not retried by itself
    counts, _ = deps(app).outbox.stats()
    assert counts["dead"] == 1
    # Put back by hand (`jit-ssh admin outbox retry KEY`): delivered when the receiver is back.
    hook.always = None
    assert deps(app).outbox.retry(m.key) == 1
    assert deliver_due(deps(app)) == 1
    assert rows(app)[0].state == OutboxState.DELIVERED


def test_delivered_messages_are_deleted_after_keep_delivered_never_pending_or_dead(
    app: Any, hook: Receiver, alice: Caller, clock: Clock
) -> None:
    clock.freeze()
    alice.post("/v1/requests", DEMO)
    assert deliver_due(deps(app)) == 1  # delivered now
    hook.always = 410
    alice.post("/v1/requests", DEMO)
    deliver_due(deps(app))  # dead
    hook.always = 503
    alice.post("/v1/requests", DEMO)
    deliver_due(deps(app))  # pending, retried later
    first = {m.key: m.state for m in rows(app)}
    assert sorted(first.values()) == ["dead", "delivered", "pending"]
    clock.advance(days=7)
    assert deps(app).outbox.prune() == 0  # kept for keep_delivered (7 days), not a second less
    clock.advance(seconds=1)
    tick(deps(app))  # the worker's time-driven part prunes (and expires the requests)
    left = {m.key: m.state for m in rows(app) if m.key in first}
    assert sorted(left.values()) == ["dead", "pending"]


def test_retry_after_is_honoured(app: Any, hook: Receiver, alice: Caller, clock: Clock) -> None:
    clock.freeze()
    hook.statuses = [429]
    hook.extra_headers = {"Retry-After": "120"}
    alice.post("/v1/requests", DEMO)
    deliver_due(deps(app))
    (m,) = rows(app)
    assert m.state == OutboxState.PENDING
    assert (m.next_attempt_at - clock()).total_seconds() >= 120
    clock.advance(seconds=119)
    assert deliver_due(deps(app)) == 0
    clock.advance(seconds=1)
    assert deliver_due(deps(app)) == 1


def test_a_permanent_refusal_is_dead_at_once(app: Any, hook: Receiver, alice: Caller) -> None:
    hook.always = 410
    alice.post("/v1/requests", DEMO)
    deliver_due(deps(app))
    (m,) = rows(app)
    assert m.state == OutboxState.DEAD and m.attempts == 1 and m.last_error == "HTTP 410"


def test_a_failing_webhook_never_fails_the_request(
    app: Any, hook: Receiver, alice: Caller, bob: Caller
) -> None:
    hook.always = 500
    rid, serial = flow(alice, bob)
    deliver_due(deps(app))
    assert alice.get(f"/v1/requests/{rid}").json["certificate"]["serial"] == serial
    assert all(m.state == OutboxState.PENDING for m in rows(app))


def test_two_workers_never_deliver_the_same_message_at_once(
    app: Any, alice: Caller, clock: Clock
) -> None:
    for _ in range(12):
        alice.post("/v1/requests", DEMO)
    d = deps(app)
    workers = [
        Outbox(d.service.sessions, d.outbox.sinks, d.clock, lease=timedelta(minutes=1))
        for _ in range(4)
    ]
    claimed: list[list[int]] = [[] for _ in workers]
    start = threading.Barrier(len(workers))

    def claim(i: int) -> None:
        start.wait()
        for _ in range(4):
            claimed[i].extend(c.id for c in workers[i].claim(limit=4))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ids = [i for c in claimed for i in c]
    assert sorted(ids) == sorted(m.id for m in rows(app))  # each claimed, by one worker
    # While the leases hold nobody takes them again; once lapsed (a worker died), another does.
    assert workers[0].claim() == []
    clock.advance(minutes=2)
    again = workers[1].claim(limit=100)
    assert len(again) == 12


def test_a_worker_whose_lease_lapsed_does_not_overwrite_the_new_holder(
    app: Any, hook: Receiver, alice: Caller, clock: Clock
) -> None:
    alice.post("/v1/requests", DEMO)
    d = deps(app)
    slow = Outbox(d.service.sessions, d.outbox.sinks, d.clock, lease=timedelta(seconds=30))
    (held,) = slow.claim()
    clock.advance(minutes=1)
    assert deliver_due(d) == 1  # the lapsed lease is taken over and delivered
    hook.always = 500
    slow.attempt(held)  # the first worker comes back with a failure
    (m,) = rows(app)
    assert m.state == OutboxState.DELIVERED


def test_a_delivery_starts_only_while_half_the_lease_is_left(
    app: Any, hook: Receiver, alice: Caller, clock: Clock
) -> None:
    """From the attacker review: a batch's later messages must not be delivered on a lease
    that may lapse mid-delivery (another worker would then deliver them too)."""
    clock.freeze()
    alice.post("/v1/requests", DEMO)
    d = deps(app)
    (held,) = d.outbox.claim()
    clock.advance(seconds=61)  # the earlier messages of the batch took a minute: 59 s left of 2m
    assert d.outbox.attempt(held) == "lapsed"
    assert hook.received == []
    clock.advance(seconds=60)  # the lease lapsed: the next claim delivers it, once
    assert deliver_due(d) == 1 and len(hook.received) == 1


def test_a_worker_without_a_sink_leaves_its_messages_pending_for_one_that_has_it(
    app: Any, hook: Receiver, alice: Caller, clock: Clock
) -> None:
    alice.post("/v1/requests", DEMO)
    d = deps(app)
    other = Outbox(d.service.sessions, [], d.clock)  # started with an older configuration
    assert other.claim() == []
    (m,) = rows(app)
    assert m.state == OutboxState.PENDING and m.attempts == 0
    assert deliver_due(d) == 1
    assert rows(app)[0].state == OutboxState.DELIVERED


def test_metrics(app: Any, hook: Receiver, alice: Caller, clock: Clock) -> None:
    clock.freeze()
    alice.post("/v1/requests", DEMO)
    clock.advance(seconds=42)
    body = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'jit_ssh_outbox_messages{state="pending"} 1' in body
    assert 'jit_ssh_outbox_messages{state="dead"} 0' in body
    assert "jit_ssh_outbox_oldest_pending_seconds 42" in body
    hook.always = 404
    deliver_due(deps(app))
    body = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'jit_ssh_outbox_messages{state="dead"} 1' in body
    assert 'jit_ssh_outbox_messages{state="pending"} 0' in body
    assert "jit_ssh_outbox_oldest_pending_seconds 0" in body


# ---- tick: the time-driven events -------------------------------------------------------------


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _types(app: Any) -> list[str]:
    with deps(app).engine.connect() as c:
        return list(c.execute(text("SELECT type FROM audit_events ORDER BY id")).scalars())


def test_the_requester_is_warned_once_before_valid_before(
    app: Any, hook: Receiver, alice: Caller, bob: Caller, clock: Clock
) -> None:
    clock.freeze()
    rid, serial = flow(alice, bob)
    d = deps(app)
    valid_before = alice.get(f"/v1/requests/{rid}").json["certificate"]["valid_before"]
    assert tick(d) == 0  # 15 minutes left; the rule warns 5 minutes before
    clock.advance(minutes=9, seconds=59)
    assert tick(d) == 0
    clock.advance(seconds=2)
    assert tick(d) == 1
    assert tick(d) == 0  # once
    with d.engine.connect() as c:
        (data,) = c.execute(
            text("SELECT data FROM audit_events WHERE type = 'certificate.expiring'")
        ).scalars()
    data = json.loads(data)
    assert data["serial"] == serial and data["target"] == "demo"
    assert _at(data["valid_before"]) == _at(valid_before)
    assert 290 <= data["seconds_left"] <= 300
    deliver_due(d)
    expiring = [r for r in hook.received if r.json["event"] == "certificate.expiring"]
    assert {r.path for r in expiring} == {"/hooks/jit", "/hooks/jit/certs"}
    assert expiring[0].json["request"]["requester"] == "alice"
    # Past valid_before the access ends, recorded by tick without anyone reading it.
    clock.advance(minutes=6)
    assert tick(d) == 1
    assert _types(app)[-1] == "request.ended"
    assert tick(d) == 0


def test_a_revoked_certificate_is_not_warned(
    app: Any, alice: Caller, bob: Caller, clock: Clock
) -> None:
    rid, serial = flow(alice, bob)
    assert alice.post(f"/v1/certificates/{serial}/revoke", {"reason": "done"}).status_code in (
        200,
        201,
    )
    clock.advance(minutes=11)
    tick(deps(app))
    assert "certificate.expiring" not in _types(app)


def test_tick_expires_overdue_requests(
    app: Any, hook: Receiver, alice: Caller, clock: Clock
) -> None:
    rid = alice.post("/v1/requests", DEMO).json["id"]
    d = deps(app)
    assert tick(d) == 0
    clock.advance(hours=1, seconds=1)  # demo-access: pending_ttl 1h
    assert tick(d) == 1
    assert _types(app)[-1] == "request.expired"
    with d.service._tx() as s:
        assert s.get(AccessRequest, rid).state == RequestState.EXPIRED
    deliver_due(d)
    assert hook.events()[-1] == "request.expired"


# ---- the worker thread of a server process -----------------------------------------------------


def test_the_server_processes_worker_delivers_and_stops(
    app: Any, hook: Receiver, alice: Caller
) -> None:
    from server.deps import start_outbox_worker

    worker = start_outbox_worker(deps(app), interval=0.05)
    assert worker is not None and worker.alive
    try:
        alice.post("/v1/requests", DEMO)
        assert hook.wait_for(1)[0].json["event"] == "request.created"
    finally:
        assert worker.stop(10)
    assert not worker.alive


def test_no_worker_thread_when_the_config_says_so(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    from server.deps import start_outbox_worker

    app = build_app(tmp_path, database_url, clock, notifications=NotificationSettings(worker=False))
    try:
        assert start_outbox_worker(deps(app)) is None
    finally:
        app.extensions["jit_ssh.engine"].dispose()


@pytest.mark.parametrize(
    ("policy_change", "lead_minutes"),
    [
        # The rule's own lead time, under the policy in force now.
        (('name = "demo-access"', 'name = "demo-access"\nwarn_before = "10m"'), 10),
        # The request's rule is gone from the policy: the default 5 minutes.
        (('name = "demo-access"', 'name = "demo-access-renamed"'), 5),
    ],
)
def test_the_lead_time_is_the_current_rules(
    app: Any,
    alice: Caller,
    bob: Caller,
    clock: Clock,
    tmp_path: Path,
    policy_change: tuple[str, str],
    lead_minutes: int,
) -> None:
    clock.freeze()
    flow(alice, bob)  # 15 minutes
    policy = tmp_path / "policy.toml"
    policy.write_text(policy.read_text().replace(*policy_change))
    d = deps(app)
    d.service.policy.reload()
    clock.advance(minutes=15 - lead_minutes, seconds=-1)
    assert tick(d) == 0
    clock.advance(seconds=2)
    assert tick(d) == 1
    assert _types(app)[-1] == "certificate.expiring"


def test_a_database_outage_is_one_log_line_not_a_traceback_a_second(
    app: Any, hook: Receiver, alice: Caller, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """The worker ticks every second: while the database is cut off it says so once, without
    a traceback (server logs are scanned for those), and delivers once it is back."""
    import logging

    from sqlalchemy.exc import OperationalError

    import server.outbox as outbox_mod
    from server.outbox import OutboxWorker

    alice.post("/v1/requests", DEMO)
    real_tick = outbox_mod.tick
    down = {"on": True}

    def tick(deps: Any) -> int:
        if down["on"]:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        return real_tick(deps)

    monkeypatch.setattr(outbox_mod, "tick", tick)
    worker = OutboxWorker(deps(app))
    with caplog.at_level(logging.WARNING, logger="jit_ssh.outbox"):
        assert [worker.run_once() for _ in range(3)] == [0, 0, 0]
        down["on"] = False
        assert worker.run_once() == 1
    lines = [r for r in caplog.records if r.name == "jit_ssh.outbox"]
    assert [r.levelname for r in lines] == ["ERROR", "WARNING"]
    assert "unavailable" in lines[0].getMessage() and lines[0].exc_info is None
    assert len(hook.wait_for(1)) == 1
