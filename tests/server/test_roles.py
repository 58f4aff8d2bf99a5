"""Every endpoint x every role: who gets 2xx, and who gets 401, 403 or 404.

The roles, as people use the service:

- ``owner``: alice, the engineer (requester role) whose request it is;
- ``other``: dave, another engineer (requester role), not the owner;
- ``approver``: bob (approver role);
- ``admin``: root-admin (admin role only);
- ``anonymous``: an unsigned call.

Each cell gets a fresh request in the state the endpoint needs, so one
cell's success never changes what the next cell sees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .conftest import Caller, user_key_line

ROLES = ("owner", "other", "approver", "admin", "anonymous")
DEMO = {"target": "demo", "duration": "5m", "reason": "role test"}

# endpoint -> role -> (status, code or None)
EXPECTED: dict[str, dict[str, tuple[int, str | None]]] = {
    "POST /v1/requests": {
        # Only the policy's groups may request a target: bob (approvers) and root-admin (no groups) may not.
        "owner": (201, None),
        "other": (201, None),
        "approver": (403, "policy_denied"),
        "admin": (403, "policy_denied"),
        "anonymous": (401, "auth_failed"),
    },
    "GET /v1/requests/{id}": {
        "owner": (200, None),
        "other": (404, "not_found"),
        "approver": (200, None),
        "admin": (200, None),
        "anonymous": (401, "auth_failed"),
    },
    "GET /v1/requests?mine=1": {
        "owner": (200, None),
        "other": (200, None),
        "approver": (200, None),
        "admin": (200, None),
        "anonymous": (401, "auth_failed"),
    },
    "GET /v1/requests?pending_for_me=1": {
        # Others' reasons, for those who may decide on them: the approver role.
        "owner": (403, "not_eligible"),
        "other": (403, "not_eligible"),
        "approver": (200, None),
        "admin": (403, "not_eligible"),
        "anonymous": (401, "auth_failed"),
    },
    "GET /v1/requests": {
        "owner": (200, None),
        "other": (200, None),
        "approver": (200, None),
        "admin": (200, None),
        "anonymous": (401, "auth_failed"),
    },
    "POST /v1/requests/{id}/approve": {
        "owner": (403, "self_approval"),
        "other": (403, "not_eligible"),
        "approver": (200, None),
        "admin": (403, "not_eligible"),
        "anonymous": (401, "auth_failed"),
    },
    "POST /v1/requests/{id}/deny": {
        "owner": (403, "self_approval"),
        "other": (403, "not_eligible"),
        "approver": (200, None),
        "admin": (403, "not_eligible"),
        "anonymous": (401, "auth_failed"),
    },
    "POST /v1/requests/{id}/cancel": {
        "owner": (200, None),
        "other": (403, "forbidden"),
        "approver": (403, "forbidden"),
        "admin": (200, None),
        "anonymous": (401, "auth_failed"),
    },
    "POST /v1/requests/{id}/certificate": {
        "owner": (200, None),
        "other": (403, "forbidden"),
        "approver": (403, "forbidden"),
        "admin": (403, "forbidden"),
        "anonymous": (401, "auth_failed"),
    },
    "POST /v1/certificates/{serial}/revoke": {
        "owner": (200, None),
        "other": (403, "forbidden"),
        "approver": (200, None),
        "admin": (200, None),
        "anonymous": (401, "auth_failed"),
    },
    "GET /v1/audit": {
        "owner": (403, "forbidden"),
        "other": (403, "forbidden"),
        "approver": (403, "forbidden"),
        "admin": (200, None),
        "anonymous": (401, "auth_failed"),
    },
    "GET /v1/whoami": {
        "owner": (200, None),
        "other": (200, None),
        "approver": (200, None),
        "admin": (200, None),
        "anonymous": (401, "auth_failed"),
    },
    **{
        f"GET {public}": {role: (200, None) for role in ROLES}
        for public in (
            "/v1/ca.pub",
            "/v1/krl",
            "/v1/targets",
            "/healthz",
            "/metrics",
            "/v1/openapi.json",
        )
    },
}


class World:
    def __init__(self, app: Any, make_user: Any) -> None:
        self.app = app
        self.alice: Caller = make_user("alice", ("engineers",))
        self.callers: dict[str, Caller | None] = {
            "owner": self.alice,
            "other": make_user("dave", ("engineers",)),
            "approver": make_user("bob", ("approvers",), ("requester", "approver")),
            "admin": make_user("root-admin", (), ("admin",)),
            "anonymous": None,
        }
        self.bob = self.callers["approver"]

    def call(self, role: str, method: str, path: str, body: Any = None, query: str = "") -> Any:
        caller = self.callers[role]
        if caller is None:
            c = self.app.test_client()
            url = path + (f"?{query}" if query else "")
            return c.open(url, method=method, json=body if method == "POST" else None)
        return caller.call(
            method, path, body if body is not None or method == "GET" else {}, query=query
        )

    def pending(self) -> str:
        r = self.alice.post("/v1/requests", DEMO)
        assert r.status_code == 201, r.json
        return r.json["id"]

    def approved(self) -> str:
        rid = self.pending()
        assert self.bob is not None
        assert self.bob.post(f"/v1/requests/{rid}/approve", {}).json["state"] == "approved"
        return rid

    def issued(self) -> str:
        rid = self.approved()
        r = self.alice.post(f"/v1/requests/{rid}/certificate", {"public_key": user_key_line()})
        assert r.status_code == 200, r.json
        return r.json["serial"]


def _actions(w: World) -> dict[str, Callable[[str], Any]]:
    return {
        "POST /v1/requests": lambda role: w.call(role, "POST", "/v1/requests", DEMO),
        "GET /v1/requests/{id}": lambda role: w.call(role, "GET", f"/v1/requests/{w.pending()}"),
        "GET /v1/requests?mine=1": lambda role: w.call(role, "GET", "/v1/requests", query="mine=1"),
        "GET /v1/requests?pending_for_me=1": lambda role: w.call(
            role, "GET", "/v1/requests", query="pending_for_me=1"
        ),
        "GET /v1/requests": lambda role: w.call(role, "GET", "/v1/requests"),
        "POST /v1/requests/{id}/approve": lambda role: w.call(
            role, "POST", f"/v1/requests/{w.pending()}/approve", {}
        ),
        "POST /v1/requests/{id}/deny": lambda role: w.call(
            role, "POST", f"/v1/requests/{w.pending()}/deny", {"reason": "no"}
        ),
        "POST /v1/requests/{id}/cancel": lambda role: w.call(
            role, "POST", f"/v1/requests/{w.pending()}/cancel", {}
        ),
        "POST /v1/requests/{id}/certificate": lambda role: w.call(
            role,
            "POST",
            f"/v1/requests/{w.approved()}/certificate",
            {"public_key": user_key_line()},
        ),
        "POST /v1/certificates/{serial}/revoke": lambda role: w.call(
            role, "POST", f"/v1/certificates/{w.issued()}/revoke", {"reason": "role test"}
        ),
        "GET /v1/audit": lambda role: w.call(role, "GET", "/v1/audit"),
        "GET /v1/whoami": lambda role: w.call(role, "GET", "/v1/whoami"),
        **{
            f"GET {public}": (lambda path: lambda role: w.call(role, "GET", path))(public)
            for public in (
                "/v1/ca.pub",
                "/v1/krl",
                "/v1/targets",
                "/healthz",
                "/metrics",
                "/v1/openapi.json",
            )
        },
    }


def test_every_endpoint_every_role(app: Any, make_user: Any) -> None:
    """The whole table at once, so a failure shows every cell that differs."""
    w = World(app, make_user)
    actions = _actions(w)
    assert set(actions) == set(EXPECTED)
    got: dict[str, dict[str, tuple[int, str | None]]] = {}
    for endpoint, action in actions.items():
        got[endpoint] = {}
        for role in ROLES:
            r = action(role)
            code = r.json.get("code") if r.status_code >= 400 else None
            got[endpoint][role] = (r.status_code, code)
            if r.status_code >= 400:
                assert r.mimetype == "application/problem+json"
    wrong = {
        f"{endpoint} as {role}": f"got {got[endpoint][role]}, want {EXPECTED[endpoint][role]}"
        for endpoint in EXPECTED
        for role in ROLES
        if got[endpoint][role] != EXPECTED[endpoint][role]
    }
    assert not wrong, wrong


def test_what_each_role_sees_in_lists(app: Any, make_user: Any) -> None:
    w = World(app, make_user)
    rid = w.pending()
    ids = {
        (role, query): [
            r["id"] for r in w.call(role, "GET", "/v1/requests", query=query).json["requests"]
        ]
        for role in ("owner", "other", "approver", "admin")
        for query in ("mine=1", "pending_for_me=1", "")
        if query != "pending_for_me=1" or role == "approver"
    }
    assert ids[("owner", "mine=1")] == [rid]
    assert ids[("other", "mine=1")] == []
    assert ids[("approver", "mine=1")] == []
    # Only an eligible approver is asked; the requester, others and an admin without the
    # approver role are refused the list (test_every_endpoint_every_role).
    assert ids[("approver", "pending_for_me=1")] == [rid]
    # Without a filter: a requester sees their own, an admin sees all.
    assert ids[("owner", "")] == [rid]
    assert ids[("other", "")] == []
    assert ids[("admin", "")] == [rid]


def test_once_approved_a_request_leaves_pending_for_me(app: Any, make_user: Any) -> None:
    w = World(app, make_user)
    rid = w.pending()
    carol = make_user("carol", ("approvers",), ("requester", "approver"))
    assert [
        r["id"] for r in carol.get("/v1/requests", query="pending_for_me=1").json["requests"]
    ] == [rid]
    w.call("approver", "POST", f"/v1/requests/{rid}/approve", {})
    assert carol.get("/v1/requests", query="pending_for_me=1").json["requests"] == []


@pytest.mark.parametrize("role", ["other", "approver", "admin"])
def test_refused_calls_change_nothing(app: Any, make_user: Any, role: str) -> None:
    """A 403 leaves the request as it was (and writes no event but its own failure)."""
    from .conftest import assert_unchanged, snapshot

    w = World(app, make_user)
    rid = w.approved()
    before = snapshot(app)
    r = w.call(role, "POST", f"/v1/requests/{rid}/certificate", {"public_key": user_key_line()})
    assert r.status_code == 403
    assert_unchanged(before, snapshot(app))


def test_role_changes_take_effect_at_once(app: Any, admin: Any, make_user: Any) -> None:
    """Roles are read from the database on every call: revoking the approver role stops approvals."""
    w = World(app, make_user)
    admin.set_groups("bob", ["approvers"], roles=["requester"])
    rid = w.pending()
    r = w.call("approver", "POST", f"/v1/requests/{rid}/approve", {})
    assert r.status_code == 403 and r.json["code"] == "not_eligible"
    admin.set_groups("bob", ["approvers"], roles=["requester", "approver"])
    assert w.call("approver", "POST", f"/v1/requests/{rid}/approve", {}).json["state"] == "approved"
