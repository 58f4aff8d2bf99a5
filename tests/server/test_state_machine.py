"""The request state machine, table-driven, on SQLite and PostgreSQL.

    pending  -> approved | denied | expired | cancelled
    approved -> issued | expired | cancelled
    issued   -> revoked | ended (the clock passed valid_before)

For every (state, action) pair the table says what happens: the new state, or
the exact error code (and then the state does not move). Deadlines are crossed
with ``clock.advance``: the server's clock and the callers' signatures move
together.

The demo target (see ``conftest.TEST_POLICY``) has one approval, a pending TTL
of 1h and a claim window of 15m; requests here ask for 30m.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from .conftest import Caller, Clock, snapshot, user_key_line

DEMO = {"target": "demo", "duration": "30m", "reason": "state machine"}
STATES = ("pending", "approved", "issued", "denied", "cancelled", "expired", "revoked", "ended")
ACTIONS = ("approve", "deny", "cancel", "fetch", "fetch_other_key", "revoke")

# (state, action) -> the state after it, or "!<status> <code>" (refused; the state stays)
OK = "ok"
TABLE: dict[str, dict[str, str]] = {
    "pending": {
        "approve": "approved",
        "deny": "denied",
        "cancel": "cancelled",
        "fetch": "!409 not_approved",
        "fetch_other_key": "!409 not_approved",
        "revoke": "!404 not_found",
    },
    "approved": {
        "approve": "!409 invalid_state",
        "deny": "!409 invalid_state",
        "cancel": "cancelled",
        # The first key to be certified is the one: any key will do then.
        "fetch": "issued",
        "fetch_other_key": "issued",
        "revoke": "!404 not_found",
    },
    "issued": {
        "approve": "!409 invalid_state",
        "deny": "!409 invalid_state",
        "cancel": "!409 invalid_state",
        "fetch": "issued",
        "fetch_other_key": "!409 key_mismatch",
        "revoke": "revoked",
    },
    "denied": {
        "approve": "!409 invalid_state",
        "deny": "!409 invalid_state",
        "cancel": "!409 invalid_state",
        "fetch": "!409 invalid_state",
        "fetch_other_key": "!409 invalid_state",
        "revoke": "!404 not_found",
    },
    "cancelled": {
        "approve": "!409 invalid_state",
        "deny": "!409 invalid_state",
        "cancel": "!409 invalid_state",
        "fetch": "!409 invalid_state",
        "fetch_other_key": "!409 invalid_state",
        "revoke": "!404 not_found",
    },
    "expired": {
        "approve": "!410 request_expired",
        "deny": "!410 request_expired",
        "cancel": "!410 request_expired",
        "fetch": "!410 request_expired",
        "fetch_other_key": "!410 request_expired",
        "revoke": "!404 not_found",
    },
    "revoked": {
        "approve": "!409 invalid_state",
        "deny": "!409 invalid_state",
        "cancel": "!409 invalid_state",
        "fetch": "!409 invalid_state",
        "fetch_other_key": "!409 invalid_state",
        # Revoking twice is harmless: the same revocation comes back.
        "revoke": "revoked",
    },
    "ended": {
        "approve": "!409 invalid_state",
        "deny": "!409 invalid_state",
        "cancel": "!409 invalid_state",
        "fetch": "!409 invalid_state",
        "fetch_other_key": "!409 invalid_state",
        # An expired certificate may still be revoked (the KRL leaves it out: sshd refuses it anyway).
        "revoke": "revoked",
    },
}


class Machine:
    def __init__(self, alice: Caller, bob: Caller, clock: Clock) -> None:
        self.alice, self.bob, self.clock = alice, bob, clock
        self.key = user_key_line()
        self.serial: dict[str, str] = {}

    def state(self, rid: str) -> str:
        r = self.alice.get(f"/v1/requests/{rid}")
        assert r.status_code == 200, r.json
        return r.json["state"]

    def make(self, state: str) -> str:
        """A fresh request in ``state``, reached the way users reach it."""
        a, b = self.alice, self.bob
        rid = a.post("/v1/requests", DEMO).json["id"]
        path = f"/v1/requests/{rid}"
        if state in ("approved", "issued", "revoked", "ended"):
            assert b.post(f"{path}/approve", {}).status_code == 200
        if state in ("issued", "revoked", "ended"):
            r = a.post(f"{path}/certificate", {"public_key": self.key})
            assert r.status_code == 200, r.json
            self.serial[rid] = r.json["serial"]
        if state == "denied":
            assert b.post(f"{path}/deny", {"reason": "no"}).status_code == 200
        if state == "cancelled":
            assert a.post(f"{path}/cancel", {}).status_code == 200
        if state == "expired":
            self.clock.advance(hours=1, seconds=1)
        if state == "revoked":
            assert a.post(f"/v1/certificates/{self.serial[rid]}/revoke", {}).status_code == 200
        if state == "ended":
            self.clock.advance(minutes=30, seconds=1)
        assert self.state(rid) == state
        return rid

    def act(self, rid: str, action: str) -> Any:
        a, b = self.alice, self.bob
        path = f"/v1/requests/{rid}"
        if action == "approve":
            return b.post(f"{path}/approve", {})
        if action == "deny":
            return b.post(f"{path}/deny", {"reason": "no"})
        if action == "cancel":
            return a.post(f"{path}/cancel", {})
        if action == "fetch":
            return a.post(f"{path}/certificate", {"public_key": self.key})
        if action == "fetch_other_key":
            return a.post(f"{path}/certificate", {"public_key": user_key_line()})
        if action == "revoke":
            # Requests without a certificate have no serial to revoke: try a made-up one.
            return a.post(f"/v1/certificates/{self.serial.get(rid, '1234567')}/revoke", {})
        raise AssertionError(action)


@pytest.fixture
def machine(alice: Caller, bob: Caller, clock: Clock) -> Machine:
    return Machine(alice, bob, clock)


@pytest.mark.parametrize("state", STATES)
def test_transitions(app: Any, machine: Machine, state: str) -> None:
    assert set(TABLE[state]) == set(ACTIONS)
    wrong = {}
    rid = None
    for action in ACTIONS:
        # A refused action leaves the request as it was, so the next action may reuse it;
        # after a transition, the next action needs a fresh request in ``state``.
        rid = rid or machine.make(state)
        before = snapshot(app)
        r = machine.act(rid, action)
        want = TABLE[state][action]
        after = machine.state(rid)
        if want.startswith("!"):
            status, code = want[1:].split()
            got = f"!{r.status_code} {r.json.get('code')}"
            if got != want or after != state:
                wrong[action] = f"got {got} -> {after}, want {want} -> {state}"
            # A refused action changes nothing but (for an expired request) its recorded expiry.
            now = snapshot(app)
            if got == want:
                assert now["counts"] == before["counts"], action
        else:
            if not (200 <= r.status_code < 300) or after != want:
                wrong[action] = f"got {r.status_code} {r.json.get('code')} -> {after}, want {want}"
            rid = None
    assert not wrong, f"from {state}: {wrong}"


def test_reissue_returns_the_same_certificate(app: Any, machine: Machine) -> None:
    rid = machine.make("issued")
    again = machine.act(rid, "fetch")
    assert again.status_code == 200 and again.json["reissued"] is True
    assert again.json["serial"] == machine.serial[rid]


# ---- deadlines -------------------------------------------------------------------------------------

# (state, how far the clock moves, the state read afterwards)
DEADLINES = [
    ("pending", timedelta(minutes=59), "pending"),
    ("pending", timedelta(hours=1), "expired"),  # at pending_until exactly
    ("approved", timedelta(minutes=14, seconds=59), "approved"),
    ("approved", timedelta(minutes=15), "expired"),  # at claim_until exactly
    ("issued", timedelta(minutes=20), "issued"),  # past the claim window: irrelevant once issued
    ("issued", timedelta(minutes=29, seconds=59), "issued"),
    ("issued", timedelta(minutes=30), "ended"),  # at valid_before exactly
    ("denied", timedelta(days=2), "denied"),
    ("cancelled", timedelta(days=2), "cancelled"),
    ("revoked", timedelta(days=2), "revoked"),
]


def test_deadlines(app: Any, machine: Machine, clock: Clock) -> None:
    clock.freeze()
    wrong = []
    for state, delta, want in DEADLINES:
        rid = machine.make(state)
        clock.advance(seconds=delta.total_seconds())
        got = machine.state(rid)
        if got != want:
            wrong.append(f"{state} + {delta}: got {got}, want {want}")
    assert not wrong, wrong


def test_deadline_moves_are_audited_once(
    app: Any, machine: Machine, clock: Clock, root: Caller
) -> None:
    pending = machine.make("pending")
    issued = machine.make("issued")
    clock.advance(hours=2)
    for _ in range(3):
        machine.state(pending)
        machine.state(issued)
    export = root.get("/v1/audit").get_data(as_text=True)
    assert export.count('"type":"request.expired"') == 1
    assert export.count('"type":"request.ended"') == 1


def test_lists_move_past_deadlines_too(app: Any, machine: Machine, clock: Clock) -> None:
    rid = machine.make("pending")
    clock.advance(hours=1, seconds=1)
    mine = machine.alice.get("/v1/requests", query="mine=1").json["requests"]
    assert [(r["id"], r["state"]) for r in mine] == [(rid, "expired")]
    assert machine.bob.get("/v1/requests", query="pending_for_me=1").json["requests"] == []


def test_expire_sweep(app: Any, machine: Machine, clock: Clock) -> None:
    """``jit-ssh admin expire``: moves every overdue request without anyone reading it."""
    pending, approved, issued = (
        machine.make("pending"),
        machine.make("approved"),
        machine.make("issued"),
    )
    fresh = None
    clock.advance(hours=1, seconds=1)
    fresh = machine.make("pending")
    service = app.extensions["jit_ssh"].service
    assert service.expire_sweep() == 3
    assert service.expire_sweep() == 0
    from sqlalchemy import text

    with app.extensions["jit_ssh.engine"].connect() as c:
        states = dict(c.execute(text("SELECT id, state FROM requests")).all())
    assert (states[pending], states[approved], states[issued], states[fresh]) == (
        "expired",
        "expired",
        "ended",
        "pending",
    )


def test_expired_approval_is_recorded_when_refused(
    app: Any, machine: Machine, clock: Clock
) -> None:
    """A late approval is refused with 410, and the expiry it discovered is kept (not rolled back)."""
    from sqlalchemy import text

    rid = machine.make("pending")
    clock.advance(hours=2)
    r = machine.act(rid, "approve")
    assert r.status_code == 410 and r.json["code"] == "request_expired"
    with app.extensions["jit_ssh.engine"].connect() as c:
        assert (
            c.execute(text("SELECT state FROM requests WHERE id = :i"), {"i": rid}).scalar_one()
            == "expired"
        )


ALL_PAIRS: list[tuple[str, str]] = [(s, a) for s in STATES for a in ACTIONS]


def test_table_is_complete() -> None:
    assert {(s, a) for s in TABLE for a in TABLE[s]} == set(ALL_PAIRS)
    for s in TABLE:
        for a, outcome in TABLE[s].items():
            assert outcome.startswith("!") or outcome in STATES, (s, a, outcome)
