"""A policy change reaches requests already in flight (issue 10, point 4), on SQLite and PostgreSQL.

A request is decided when it is submitted; it is decided again under the
policy in force at approval and at fetch, and the certificate carries at most
what both decisions allow, or nothing (the request ends, refused). The audit
log says which happened.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from ca import parse_certificate, verify_certificate

from .conftest import Caller, Clock, assert_problem, user_key_line


def _policy(
    *,
    principals: tuple[str, ...] = ("root@prod", "app@prod"),
    extensions: tuple[str, ...] = (
        "permit-pty",
        "permit-port-forwarding",
        "permit-agent-forwarding",
    ),
    groups: tuple[str, ...] = ("engineers",),
    approvals: int = 1,
    max_duration: str = "4h",
    force_command: str | None = None,
    source_address: tuple[str, ...] | None = None,
    auto_approve: bool = False,
    target: str = "prod",
    comment: str = "",
) -> str:
    lines = [
        f"# {comment}",
        f"[targets.{target}]",
        f"principals = {json.dumps(list(principals))}",
        "",
        "[[rules]]",
        'name = "prod-access"',
        f'targets = ["{target}"]',
        f"groups = {json.dumps(list(groups))}",
        f'max_duration = "{max_duration}"',
        'default_duration = "1h"',
        f"approvals_required = {approvals}",
        'approver_groups = ["approvers"]',
        "reason_required = false",
        # Long enough for "approved and fetched days later".
        'pending_ttl = "7d"',
        'claim_window = "7d"',
        f"extensions = {json.dumps(list(extensions))}",
    ]
    if force_command is not None:
        lines.append(f"force_command = {json.dumps(force_command)}")
    if source_address is not None:
        lines.append(f"source_address = {json.dumps(list(source_address))}")
    if auto_approve:
        lines += ["", "[rules.auto_approve]", 'groups = ["engineers"]', 'max_duration = "4h"']
    return "\n".join(lines) + "\n"


def _set_policy(app: Any, body: str) -> str:
    """Write the policy file and make the service read it (as it does within a second of a change)."""
    holder = app.extensions["jit_ssh"].service.policy
    holder.path.write_text(body)
    return holder.reload().version


def _events(app: Any, request_id: str) -> list[tuple[str, dict[str, Any]]]:
    engine = app.extensions["jit_ssh.engine"]
    with engine.connect() as c:
        rows = c.execute(
            text("SELECT type, data FROM audit_events WHERE request_id = :r ORDER BY id"),
            {"r": request_id},
        ).all()
    return [(t, json.loads(d)) for t, d in rows]


def _event(app: Any, request_id: str, type: str) -> dict[str, Any]:
    found = [d for t, d in _events(app, request_id) if t == type]
    assert len(found) == 1, (type, _events(app, request_id))
    return found[0]


def _submit(alice: Caller, duration: str = "2h") -> str:
    r = alice.post(
        "/v1/requests", {"target": "prod", "duration": duration, "reason": "INC-1: replica lag"}
    )
    assert r.status_code == 201, r.json
    return str(r.json["id"])


def _approve(approver: Caller, request_id: str, **body: Any) -> Any:
    return approver.post(f"/v1/requests/{request_id}/approve", body)


def _fetch(alice: Caller, request_id: str) -> Any:
    return alice.post(f"/v1/requests/{request_id}/certificate", {"public_key": user_key_line()})


@pytest.fixture
def prod(app: Any) -> Any:
    _set_policy(app, _policy())
    return app


# ---- the reported case ------------------------------------------------------------------------


@pytest.mark.parametrize("changed", ["before approval", "between approval and fetch"])
def test_root_and_forwarding_removed_days_later_are_not_issued(
    prod: Any, alice: Caller, bob: Caller, clock: Clock, changed: str
) -> None:
    app = prod
    old_version = app.extensions["jit_ssh"].service.policy.get().version
    request_id = _submit(alice)
    clock.advance(days=2)
    tighter = _policy(principals=("app@prod",), extensions=("permit-pty",))
    if changed == "before approval":
        new_version = _set_policy(app, tighter)
    ok = _approve(bob, request_id)
    assert ok.status_code == 200, ok.json
    if changed == "before approval":
        # The approver's answer already shows what can still be issued.
        assert ok.json["principals"] == ["app@prod"]
        assert ok.json["decision"]["extensions"] == ["permit-pty"]
    else:
        new_version = _set_policy(app, tighter)
    clock.advance(days=1)

    cert = _fetch(alice, request_id)
    assert cert.status_code == 200, cert.json
    info = verify_certificate(
        cert.json["certificate"], list(app.extensions["jit_ssh"].keyring.keys)
    )
    assert info.principals == ("app@prod",)
    assert info.extensions == ("permit-pty",)
    assert cert.json["principals"] == ["app@prod"]
    answer = alice.get(f"/v1/requests/{request_id}").json
    assert answer["principals"] == ["app@prod"] and answer["decision"]["extensions"] == [
        "permit-pty"
    ]
    assert answer["certificate"]["principals"] == ["app@prod"]

    hop = "request.approved" if changed == "before approval" else "certificate.issued"
    check = _event(app, request_id, hop)["policy"]
    assert check["result"] == "narrowed"
    assert (
        check["stored_policy_version"] == old_version
        and check["current_policy_version"] == new_version
    )
    assert check["changes"]["principals_dropped"] == ["root@prod"]
    assert sorted(check["changes"]["extensions_dropped"]) == [
        "permit-agent-forwarding",
        "permit-port-forwarding",
    ]
    if changed == "before approval":
        # Narrowed once at approval; the fetch finds nothing more to take away.
        assert _event(app, request_id, "certificate.issued")["policy"]["result"] == "unchanged"
    else:
        assert _event(app, request_id, "request.approved")["policy"]["result"] == "unchanged"


def test_an_unrelated_policy_change_is_recorded_as_unchanged(
    prod: Any, alice: Caller, bob: Caller
) -> None:
    app = prod
    old_version = app.extensions["jit_ssh"].service.policy.get().version
    request_id = _submit(alice)
    assert _approve(bob, request_id).status_code == 200
    new_version = _set_policy(
        app, _policy(comment="reworded") + '\n[targets.other]\nprincipals = ["x@other"]\n'
    )
    assert new_version != old_version
    cert = _fetch(alice, request_id)
    assert cert.status_code == 200, cert.json
    info = parse_certificate(cert.json["certificate"])
    assert set(info.principals) == {"root@prod", "app@prod"}
    check = _event(app, request_id, "certificate.issued")["policy"]
    assert check == {
        "result": "unchanged",
        "stored_policy_version": old_version,
        "current_policy_version": new_version,
    }


def test_a_duration_over_the_new_maximum_is_cut_to_it(
    prod: Any, alice: Caller, bob: Caller
) -> None:
    app = prod
    request_id = _submit(alice, "3h")
    assert _approve(bob, request_id).status_code == 200
    _set_policy(app, _policy(max_duration="1h"))
    cert = _fetch(alice, request_id)
    assert cert.status_code == 200, cert.json
    assert parse_certificate(cert.json["certificate"]).duration == timedelta(hours=1)
    assert alice.get(f"/v1/requests/{request_id}").json["duration_seconds"] == 3600
    check = _event(app, request_id, "certificate.issued")["policy"]
    assert check["result"] == "narrowed" and check["changes"]["duration_seconds"] == {
        "from": 10800,
        "to": 3600,
    }


# ---- refusals: the request ends, and the log says why ---------------------------------------


def _assert_refused(
    app: Any, alice: Caller, request_id: str, code: str, hop: str
) -> dict[str, Any]:
    answer = alice.get(f"/v1/requests/{request_id}").json
    assert answer["state"] == "denied" and answer["certificate"] is None
    assert code in answer["deny_reason"]
    refused = _event(app, request_id, "request.refused")
    assert (
        refused["at"] == hop
        and refused["policy"]["result"] == "refused"
        and refused["policy"]["code"] == code
    )
    engine = app.extensions["jit_ssh.engine"]
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM certificates")).scalar_one() == 0
    # Ended for good: nothing more to approve or fetch.
    again = _fetch(alice, request_id)
    assert_problem(again, 409, "invalid_state")
    return refused


@pytest.mark.parametrize(
    "now_denies",
    [
        pytest.param(dict(groups=("contractors",)), id="requester-not-in-an-allowed-group"),
    ],
)
@pytest.mark.parametrize("hop", ["approval", "fetch"])
def test_a_policy_that_now_denies_ends_the_request(
    prod: Any, alice: Caller, bob: Caller, now_denies: dict[str, Any], hop: str
) -> None:
    app = prod
    request_id = _submit(alice)
    if hop == "fetch":
        assert _approve(bob, request_id).status_code == 200
    _set_policy(app, _policy(**now_denies))
    r = _approve(bob, request_id) if hop == "approval" else _fetch(alice, request_id)
    problem = assert_problem(r, 403, "policy_changed")
    assert problem["reasons"]  # the current policy's own reasons
    _assert_refused(app, alice, request_id, "policy_changed", hop)


@pytest.mark.parametrize("hop", ["approval", "fetch"])
def test_a_removed_target_expires_the_request_at_the_reload(
    prod: Any, alice: Caller, bob: Caller, hop: str
) -> None:
    # Issue 12: a request whose target left the policy no longer waits to be refused at
    # the next hop; the reload expires it, with the reason (tests/server/test_removed_target.py).
    app = prod
    request_id = _submit(alice)
    if hop == "fetch":
        assert _approve(bob, request_id).status_code == 200
    _set_policy(app, _policy(target="elsewhere"))
    answer = alice.get(f"/v1/requests/{request_id}").json
    assert answer["state"] == "expired" and answer["certificate"] is None
    assert "target removed from the policy" in answer["deny_reason"]
    r = _approve(bob, request_id) if hop == "approval" else _fetch(alice, request_id)
    assert_problem(r, 410, "request_expired")
    engine = app.extensions["jit_ssh.engine"]
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM certificates")).scalar_one() == 0


def test_a_removed_rule_ends_the_request_at_fetch(prod: Any, alice: Caller, bob: Caller) -> None:
    app = prod
    request_id = _submit(alice)
    assert _approve(bob, request_id).status_code == 200
    _set_policy(app, '[targets.prod]\nprincipals = ["app@prod"]\n')
    assert_problem(_fetch(alice, request_id), 403, "policy_changed")
    _assert_refused(app, alice, request_id, "policy_changed", "fetch")


def test_no_principal_left_is_refused(prod: Any, alice: Caller, bob: Caller) -> None:
    app = prod
    request_id = _submit(alice)
    assert _approve(bob, request_id).status_code == 200
    _set_policy(app, _policy(principals=("readonly@prod",)))
    assert_problem(_fetch(alice, request_id), 403, "no_principals_left")
    _assert_refused(app, alice, request_id, "no_principals_left", "fetch")


def test_two_different_forced_commands_are_refused(app: Any, alice: Caller, bob: Caller) -> None:
    _set_policy(app, _policy(force_command="/usr/bin/uptime"))
    request_id = _submit(alice)
    assert _approve(bob, request_id).status_code == 200
    _set_policy(app, _policy(force_command="/usr/bin/psql"))
    assert_problem(_fetch(alice, request_id), 403, "force_command_conflict")
    _assert_refused(app, alice, request_id, "force_command_conflict", "fetch")


def test_a_force_command_added_later_is_issued(prod: Any, alice: Caller, bob: Caller) -> None:
    app = prod
    request_id = _submit(alice)
    assert _approve(bob, request_id).status_code == 200
    _set_policy(app, _policy(force_command="/usr/bin/uptime"))
    cert = _fetch(alice, request_id)
    assert cert.status_code == 200, cert.json
    assert parse_certificate(cert.json["certificate"]).force_command == "/usr/bin/uptime"
    changes = _event(app, request_id, "certificate.issued")["policy"]["changes"]
    assert changes["force_command"] == {"from": None, "to": "/usr/bin/uptime"}


def test_source_addresses_are_intersected(app: Any, alice: Caller, bob: Caller) -> None:
    _set_policy(app, _policy(source_address=("10.0.0.0/8", "2001:db8::/32")))
    request_id = _submit(alice)
    assert _approve(bob, request_id).status_code == 200
    _set_policy(app, _policy(source_address=("10.1.0.0/16", "192.0.2.0/24")))
    cert = _fetch(alice, request_id)
    assert cert.status_code == 200, cert.json
    assert parse_certificate(cert.json["certificate"]).source_address == "10.1.0.0/16"
    changes = _event(app, request_id, "certificate.issued")["policy"]["changes"]
    assert changes["source_address"] == {
        "from": ["10.0.0.0/8", "2001:db8::/32"],
        "to": ["10.1.0.0/16"],
    }


def test_disjoint_source_addresses_are_refused(app: Any, alice: Caller, bob: Caller) -> None:
    _set_policy(app, _policy(source_address=("10.0.0.0/8",)))
    request_id = _submit(alice)
    assert _approve(bob, request_id).status_code == 200
    _set_policy(app, _policy(source_address=("192.0.2.0/24",)))
    assert_problem(_fetch(alice, request_id), 403, "source_address_conflict")
    _assert_refused(app, alice, request_id, "source_address_conflict", "fetch")


# ---- approvals required raised --------------------------------------------------------------


def test_more_approvals_required_at_approval_keeps_it_pending(
    prod: Any, alice: Caller, bob: Caller, carol: Caller
) -> None:
    app = prod
    request_id = _submit(alice)
    _set_policy(app, _policy(approvals=2))
    first = _approve(bob, request_id)
    assert first.status_code == 200, first.json
    assert first.json["state"] == "pending" and first.json["approvals_required"] == 2
    early = _fetch(alice, request_id)
    assert_problem(early, 409, "not_approved")
    second = _approve(carol, request_id)
    assert second.status_code == 200 and second.json["state"] == "approved"
    assert _fetch(alice, request_id).status_code == 200
    # The first approval narrowed the stored decision; the second found it unchanged.
    first_check, second_check = (
        d["policy"] for t, d in _events(app, request_id) if t == "request.approval"
    )
    assert first_check["result"] == "narrowed"
    assert first_check["changes"]["approvals_required"] == {"from": 1, "to": 2}
    assert second_check["result"] == "unchanged"
    assert _event(app, request_id, "request.approved")["by"] == ["bob", "carol"]


def test_more_approvals_required_at_fetch_is_not_issued(
    prod: Any, alice: Caller, bob: Caller
) -> None:
    app = prod
    request_id = _submit(alice)
    assert _approve(bob, request_id).status_code == 200
    _set_policy(app, _policy(approvals=2))
    assert_problem(_fetch(alice, request_id), 403, "more_approvals_required")
    _assert_refused(app, alice, request_id, "more_approvals_required", "fetch")


def test_auto_approval_removed_before_the_fetch_is_not_issued(app: Any, alice: Caller) -> None:
    _set_policy(app, _policy(auto_approve=True))
    r = alice.post("/v1/requests", {"target": "prod", "duration": "1h"})
    assert r.status_code == 201 and r.json["state"] == "approved", r.json
    approved = _event(app, r.json["id"], "request.approved")
    assert approved["auto"] is True and approved["policy"]["result"] == "unchanged"
    _set_policy(app, _policy())
    assert_problem(_fetch(alice, r.json["id"]), 403, "more_approvals_required")
    _assert_refused(app, alice, r.json["id"], "more_approvals_required", "fetch")


def test_the_audit_chain_still_verifies(
    prod: Any, alice: Caller, bob: Caller, root: Caller
) -> None:
    app = prod
    narrowed = _submit(alice)
    refused = _submit(alice)
    assert _approve(bob, narrowed).status_code == 200
    assert _approve(bob, refused).status_code == 200
    _set_policy(app, _policy(principals=("app@prod",), force_command="/usr/bin/uptime"))
    assert _fetch(alice, narrowed).status_code == 200
    _set_policy(app, _policy(principals=("nobody@prod",)))
    assert_problem(_fetch(alice, refused), 403, "no_principals_left")
    export = root.get("/v1/audit")
    assert export.status_code == 200
    from ca.audit import parse_export, verify_chain

    events, checkpoints = parse_export(export.get_data(as_text=True).splitlines())
    public = app.extensions["jit_ssh"].audit_public_key
    result = verify_chain(events, checkpoints, [public], expect_first_id=1)
    assert result.ok, result.problem
    assert result.signed_through == events[-1].id  # the export signs its head
    assert {"request.refused", "certificate.issued"} <= {e.type for e in events}


# ---- approvals are counted under the current policy, not as they were given


def _only_dba_approves(policy: str) -> str:
    return policy.replace('approver_groups = ["approvers"]', 'approver_groups = ["dba"]')


def test_an_approval_by_someone_the_policy_no_longer_lists_does_not_count_at_fetch(
    app: Any, alice: Caller, bob: Caller
) -> None:
    _set_policy(app, _policy())
    rid = _submit(alice)
    assert _approve(bob, rid).json["state"] == "approved"
    _set_policy(app, _only_dba_approves(_policy()))
    r = _fetch(alice, rid)
    assert r.status_code == 403, r.json
    assert r.json["code"] == "more_approvals_required"
    assert alice.get(f"/v1/requests/{rid}").json["state"] == "denied"


def test_a_stale_approval_does_not_make_up_the_quorum(
    app: Any, alice: Caller, bob: Caller, make_user: Any
) -> None:
    _set_policy(app, _policy(approvals=2))
    rid = _submit(alice)
    assert _approve(bob, rid).json["state"] == "pending"
    dave = make_user("dave", ("dba",), ("requester", "approver"))
    _set_policy(app, _only_dba_approves(_policy(approvals=2)))
    r = _approve(dave, rid)
    assert r.status_code == 200, r.json
    assert r.json["state"] == "pending"  # bob's approval no longer counts: 1 of 2
    assert _fetch(alice, rid).status_code != 200


def test_an_approval_by_a_since_disabled_approver_does_not_count(
    app: Any, alice: Caller, bob: Caller
) -> None:
    _set_policy(app, _policy())
    rid = _submit(alice)
    assert _approve(bob, rid).json["state"] == "approved"
    app.extensions["jit_ssh"].service.set_user_disabled("bob", True, actor="root")
    r = _fetch(alice, rid)
    assert r.status_code == 403, r.json
    assert r.json["code"] == "more_approvals_required"


def test_a_shortened_claim_window_reaches_an_approved_request(
    app: Any, alice: Caller, bob: Caller, clock: Any
) -> None:
    _set_policy(app, _policy())
    rid = _submit(alice)
    assert _approve(bob, rid).json["state"] == "approved"
    _set_policy(app, _policy().replace('claim_window = "7d"', 'claim_window = "5m"'))
    clock.advance(days=2)
    r = _fetch(alice, rid)
    assert r.status_code == 410, r.json
    assert r.json["code"] == "request_expired"
    assert alice.get(f"/v1/requests/{rid}").json["state"] == "expired"


def test_approvals_that_still_count_issue_as_before(app: Any, alice: Caller, bob: Caller) -> None:
    _set_policy(app, _policy())
    rid = _submit(alice)
    assert _approve(bob, rid).json["state"] == "approved"
    _set_policy(app, _policy(comment="an unrelated edit"))
    r = _fetch(alice, rid)
    assert r.status_code == 200, r.json
    assert ":by=bob" in r.json["key_id"]
