"""The request view's ``warn_before_seconds`` (issue 14, point 4): the rule's ``warn_before``
under the current policy, which the CLI keeps in its access record to warn before the
certificate expires; the default, 5 minutes, once the request's rule is gone."""

from __future__ import annotations

from typing import Any

from tests.server.conftest import TEST_POLICY, Caller


def _reload(app: Any, text: str) -> None:
    holder = app.extensions["jit_ssh"].service.policy
    holder.path.write_text(text)
    holder.reload()


def _view(caller: Caller, request_id: str) -> dict[str, Any]:
    r = caller.get(f"/v1/requests/{request_id}")
    assert r.status_code == 200, r.get_json()
    return r.get_json()  # type: ignore[no-any-return]


def test_the_view_states_the_rules_warn_before_under_the_current_policy(
    app: Any, alice: Caller
) -> None:
    r = alice.post("/v1/requests", {"target": "demo", "duration": "15m", "reason": "x"})
    assert r.status_code == 201, r.get_json()
    req = r.get_json()
    assert req["rule"] == "demo-access" and req["warn_before_seconds"] == 300
    demo = 'name = "demo-access"\n'
    assert demo in TEST_POLICY
    _reload(app, TEST_POLICY.replace(demo, demo + 'warn_before = "10m"\n'))
    assert _view(alice, req["id"])["warn_before_seconds"] == 600
    listed = alice.get("/v1/requests", query="mine=1").get_json()["requests"]
    assert [row["warn_before_seconds"] for row in listed] == [600]
    # The rule renamed: the request's own rule is gone, and the default applies.
    _reload(app, TEST_POLICY.replace(demo, 'name = "demo-access-2"\n'))
    assert _view(alice, req["id"])["warn_before_seconds"] == 300
