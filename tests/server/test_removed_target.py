"""Requests for a target removed from the policy are expired, with a reason (issue 12, point 8).

The worker that records the policy change expires, in the same transaction, every pending and
approved (not yet issued) request whose target the new policy no longer has: the request says
why (``deny_reason``), a ``request.expired`` event records it, and approving or fetching it
afterwards is a clear 410. Issued certificates stay as they are (signed already; revoking is a
person's decision). The expiry sweep catches a request filed through a worker that had not yet
seen the change. Over the real app, its API, its web pages and the ``jit-ssh`` client.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from ca.audit import verify_export_lines
from client.cli import EXIT_FAILED
from policies import load_policy
from server.services.requests import removed_target_reason
from tests.test_cli_engineer import (  # noqa: F401 (fixtures)
    POLICY,
    TARGET,
    Run,
    Server,
    home,
    jit,
    keys,
    server,
    sleeps,
)
from tests.web.conftest import PASSWORD, Browser

from .conftest import TEST_POLICY, Caller, assert_problem, user_key_line


def _without_prod_db(policy: str) -> str:
    """TEST_POLICY without the target prod-db and the rule that names it."""
    head, _, rest = policy.partition("[targets.prod-db]")
    _, _, rules = rest.partition("[[rules]]")
    _, _, demo_rule = rules.partition("[[rules]]")
    out = head + "[[rules]]" + demo_rule
    assert "prod-db" not in out and "[targets.demo]" in out
    return out


def _remove_prod_db(app: Any) -> str:
    holder = app.extensions["jit_ssh"].service.policy
    holder.path.write_text(_without_prod_db(TEST_POLICY))
    return str(holder.reload().version)


def _submit(caller: Caller, target: str = "prod-db") -> str:
    r = caller.post(
        "/v1/requests", {"target": target, "duration": "30m", "reason": "INC-7: disk full"}
    )
    assert r.status_code == 201, r.json
    return str(r.json["id"])


def _events(app: Any, type: str) -> list[tuple[str | None, dict[str, Any]]]:
    engine = app.extensions["jit_ssh.engine"]
    with engine.connect() as c:
        rows = c.execute(
            text("SELECT request_id, data FROM audit_events WHERE type = :t ORDER BY id"),
            {"t": type},
        ).all()
    return [(r, json.loads(d)) for r, d in rows]


def test_pending_and_approved_requests_expire_issued_ones_stay(
    app: Any, alice: Caller, bob: Caller, carol: Caller
) -> None:
    service = app.extensions["jit_ssh"].service
    old_version = service.policy.get().version
    pending = _submit(alice)
    approved = _submit(alice)
    issued = _submit(alice)
    for rid in (approved, issued):
        for approver in (bob, carol):
            assert approver.post(f"/v1/requests/{rid}/approve", {}).status_code == 200
    cert = alice.post(f"/v1/requests/{issued}/certificate", {"public_key": user_key_line()})
    assert cert.status_code == 200, cert.json
    other_target = _submit(alice, "demo")

    version = _remove_prod_db(app)
    reason = removed_target_reason(version)
    assert version[:12] in reason

    for rid in (pending, approved):
        answer = alice.get(f"/v1/requests/{rid}").json
        assert answer["state"] == "expired" and answer["certificate"] is None
        assert answer["deny_reason"] == reason
    # Signed already: the certificate stays valid (removing a target revokes nothing).
    kept = alice.get(f"/v1/requests/{issued}").json
    assert kept["state"] == "issued" and kept["certificate"]["revoked"] is False
    assert alice.get(f"/v1/requests/{other_target}").json["state"] == "pending"

    # One change: one reloaded event, and one expired event per request, saying why.
    reloaded = _events(app, "policy.reloaded")
    assert [(d["previous"], d["version"]) for _, d in reloaded] == [(old_version, version)]
    expired = {rid: d for rid, d in _events(app, "request.expired")}
    assert set(expired) == {pending, approved}
    assert expired[pending]["was"] == "pending" and expired[approved]["was"] == "approved"
    assert all(
        d["reason"] == reason and d["target"] == "prod-db" and d["policy_version"] == version
        for d in expired.values()
    )
    d = app.extensions["jit_ssh"]
    result = verify_export_lines(list(d.export_audit(0)), [d.audit_public_key], expect_first_id=1)
    assert result.ok, result.problem

    # Afterwards: a clear 410 that says why, not a 500 and not a certificate.
    late = assert_problem(bob.post(f"/v1/requests/{pending}/approve", {}), 410, "request_expired")
    assert "target removed from the policy" in late["detail"]
    assert_problem(
        alice.post(f"/v1/requests/{approved}/certificate", {"public_key": user_key_line()}),
        410,
        "request_expired",
    )
    assert_problem(alice.post(f"/v1/requests/{pending}/cancel", {}), 410, "request_expired")
    # Another worker noticing the same change expires nothing more and records nothing.
    events_before = len(_events(app, "request.expired"))
    service.policy.reload()
    assert len(_events(app, "request.expired")) == events_before
    assert len(_events(app, "policy.reloaded")) == 1


def test_the_sweep_expires_a_request_filed_by_a_worker_that_had_not_seen_the_change(
    app: Any, alice: Caller
) -> None:
    service = app.extensions["jit_ssh"].service
    service.policy.get()
    assert service.policy.wait_recorded()
    late = _submit(alice)
    holder = service.policy
    holder.path.write_text(_without_prod_db(TEST_POLICY))
    new = load_policy(holder.path).version  # what the other worker read
    # Another worker recorded the change already; this request reached one still on the old policy.
    with app.extensions["jit_ssh.engine"].begin() as c:
        c.execute(text("UPDATE policy_state SET version = :v WHERE id = 1"), {"v": new})
    holder.reload()
    assert alice.get(f"/v1/requests/{late}").json["state"] == "pending"
    assert service.expire_sweep() == 1
    answer = alice.get(f"/v1/requests/{late}").json
    assert answer["state"] == "expired" and answer["deny_reason"] == removed_target_reason(new)
    assert service.expire_sweep() == 0


def test_the_requester_sees_the_reason_on_the_web(app: Any, admin: Any, alice: Caller) -> None:
    rid = _submit(alice)
    version = _remove_prod_db(app)
    admin.set_password("alice", PASSWORD)
    b = Browser(app, "alice")
    assert b.login().status_code == 303
    page = b.text(b.get(f"/requests/{rid}"))
    assert "Expired because" in page and removed_target_reason(version) in page
    mine = b.text(b.get("/mine"))
    assert "Expired because" in mine and removed_target_reason(version) in mine


# ---- the client ---------------------------------------------------------------------------


def _policy_without_target() -> str:
    out = POLICY.replace(
        '[targets.prod-db]\nprincipals = ["root@prod-db"]\nlogin_users = ["root"]\n\n', ""
    ).replace(
        'targets = ["prod-db", "other", "other-target"]', 'targets = ["other", "other-target"]'
    )
    assert "prod-db" not in out
    return out


def test_a_waiting_login_says_why_the_request_expired(
    jit: Callable[..., Run], server: Server
) -> None:
    server.submit = "pending"
    holder = server.app.extensions["jit_ssh"].service.policy

    def remove_target() -> None:
        holder.path.write_text(_policy_without_target())
        holder.reload()

    # While alice waits, the admin removes the target from the policy.
    server.script["0000000000000001"] = [None, remove_target]
    r = jit("login", TARGET, "--for", "30m")
    assert r.code == EXIT_FAILED, r
    assert "request 0000000000000001 expired: target removed from the policy" in r.stderr
    history = jit("requests")
    assert history.code == 0, history
    assert "expired" in history.stdout
    assert "expired: target removed from the policy (version " in history.stdout


def test_a_stale_hand_over_that_waited_for_the_lock_records_nothing_and_expires_nothing(
    app: Any, alice: Caller, tmp_path: Any
) -> None:
    """A worker read version B a moment ago; its hand-over waited for the database lock while
    the admin put the file back to A, the version in force, and alice filed a request that A
    allows. When the hand-over finally runs it must see that the file no longer holds B: no
    ``policy.reloaded`` back to B, and alice's request stays pending."""
    service = app.extensions["jit_ssh"].service
    service.policy.get()
    assert service.policy.wait_recorded()
    before = _events(app, "policy.reloaded")
    b_file = tmp_path / "b.toml"
    b_file.write_text(_without_prod_db(TEST_POLICY))
    stale_b = load_policy(b_file)
    assert stale_b.version != service.policy.get().version
    rid = _submit(alice)

    assert service.record_policy_version(stale_b) is False
    assert alice.get(f"/v1/requests/{rid}").json["state"] == "pending"
    assert _events(app, "policy.reloaded") == before
