"""The approver's page of a request in flight shows what the current policy still grants."""

from __future__ import annotations

from typing import Any

from tests.server.conftest import TEST_POLICY

from .conftest import Browser


def _set_policy(app: Any, body: str) -> None:
    holder = app.extensions["jit_ssh"].service.policy
    holder.path.write_text(body)
    holder.reload()


def _submit(caller: Any) -> str:
    resp = caller.post(
        "/v1/requests", {"target": "prod-db", "duration": "1h", "reason": "INC-9: vacuum"}
    )
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["id"])


def test_a_pending_request_shows_the_narrowed_grant(
    app: Any, bob_web: Browser, requester: Any
) -> None:
    request_id = _submit(requester)
    assert "root@prod-db" in bob_web.text(bob_web.get(f"/requests/{request_id}"))
    _set_policy(
        app,
        TEST_POLICY.replace(
            'principals = ["root@prod-db", "postgres@prod-db"]', 'principals = ["postgres@prod-db"]'
        ),
    )
    body = bob_web.text(bob_web.get(f"/requests/{request_id}"))
    assert "postgres@prod-db" in body and "root@prod-db" not in body
    assert "The policy changed since this request was made" in body
    # Only shown: nothing was written, the request is still pending with its stored decision.
    api = requester.get(f"/v1/requests/{request_id}").get_json()
    assert api["state"] == "pending" and "root@prod-db" in api["principals"]


def test_a_request_the_policy_now_refuses_says_so(
    app: Any, bob_web: Browser, requester: Any
) -> None:
    request_id = _submit(requester)
    _set_policy(
        app,
        TEST_POLICY.replace('force_command = "/usr/bin/uptime"', 'force_command = "/usr/bin/psql"'),
    )
    body = bob_web.text(bob_web.get(f"/requests/{request_id}"))
    assert "The current policy refuses this request (force_command_conflict)" in body
