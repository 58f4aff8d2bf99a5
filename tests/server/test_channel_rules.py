"""A rule's ``approver_auth`` and ``chat_approval`` are judged on the rule a request was filed
under AND the rule that decides it now (from the attacker review: renaming a rule, or putting a
new one in front of it, must never lift what either asks for). On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from server.services.requests import ApprovalContext

from .conftest import Caller, assert_problem

POLICY = """
[targets.vault]
principals = ["root@vault"]
login_users = ["root"]

[[rules]]
name = "vault-totp"
targets = ["vault"]
groups = ["engineers"]
max_duration = "1h"
approvals_required = 1
approver_groups = ["approvers"]
reason_required = false
approver_auth = "totp"
"""


@pytest.fixture
def service(app: Any) -> Any:
    svc = app.extensions["jit_ssh"].service
    svc.policy.path.write_text(POLICY)
    svc.policy.reload()
    return svc


@pytest.fixture
def alice(make_user: Any, service: Any) -> Caller:
    return make_user("alice", ("engineers",), ("requester",))


@pytest.fixture
def bob(make_user: Any, service: Any) -> Caller:
    return make_user("bob", ("approvers",), ("requester", "approver"))


def _pending(alice: Caller) -> str:
    r = alice.post("/v1/requests", {"target": "vault", "duration": "30m"})
    assert r.status_code == 201 and r.json["state"] == "pending", r.json
    return str(r.json["id"])


def test_renaming_a_totp_rule_does_not_let_an_api_approval_through(
    service: Any, alice: Caller, bob: Caller
) -> None:
    rid = _pending(alice)
    assert_problem(bob.post(f"/v1/requests/{rid}/approve", {}), 403, "approver_auth_required")
    service.policy.path.write_text(POLICY.replace('"vault-totp"', '"vault-totp-v2"'))
    service.policy.reload()
    assert_problem(bob.post(f"/v1/requests/{rid}/approve", {}), 403, "approver_auth_required")
    assert alice.get(f"/v1/requests/{rid}").json["state"] == "pending"


def test_a_stricter_rule_put_in_front_applies_to_requests_in_flight(
    service: Any, alice: Caller, bob: Caller
) -> None:
    """Filed under a rule that asks nothing; a new rule in front now decides the target and
    asks for TOTP: the plain API approval is refused."""
    service.policy.path.write_text(POLICY.replace('approver_auth = "totp"\n', ""))
    service.policy.reload()
    rid = _pending(alice)
    strict = POLICY.replace('"vault-totp"', '"vault-strict"')
    service.policy.path.write_text(
        strict + POLICY.replace('approver_auth = "totp"\n', "").split("\n", 4)[4]
    )
    service.policy.reload()
    assert [r.name for r in service.policy.get().rules] == ["vault-strict", "vault-totp"]
    assert_problem(bob.post(f"/v1/requests/{rid}/approve", {}), 403, "approver_auth_required")


def test_chat_is_judged_on_both_rules(service: Any, alice: Caller, bob: Caller, app: Any) -> None:
    """Filed under a rule that allows chat; renamed to one that does not: chat is refused."""
    chat = POLICY.replace('approver_auth = "totp"\n', "chat_approval = true\n")
    service.policy.path.write_text(chat)
    service.policy.reload()
    rid = _pending(alice)
    service.policy.path.write_text(
        chat.replace("chat_approval = true\n", "").replace('"vault-totp"', '"vault-web"')
    )
    service.policy.reload()
    from server.errors import ChatApprovalOff
    from server.models import User

    with service._tx() as s:
        user = s.query(User).filter_by(name="bob").one()
        s.expunge(user)
    with pytest.raises(ChatApprovalOff):
        service.approve(user, rid, context=ApprovalContext(via="chat"))
    assert alice.get(f"/v1/requests/{rid}").json["state"] == "pending"
