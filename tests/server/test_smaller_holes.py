"""Issue 10, point 7 ("smaller holes"): each found by a review, each with its test.

Replays at the edge of the clock-skew window, the approver-only pending list,
invisible characters in text shown to approvers, and the database file modes.
(Failed authentications, disabling users and trusted proxies have files of
their own.)
"""

from __future__ import annotations

import os
import stat
import unicodedata
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    Caller,
    Clock,
    assert_problem,
    assert_unchanged,
    build_app,
    snapshot,
    user_key_line,
)

DEMO = {"target": "demo", "duration": "5m", "reason": "holes test"}


# ---- nonces are kept as long as their call can be accepted ----------------------------------


def test_a_replay_at_the_edge_of_the_skew_window_is_refused(
    app: Any, alice: Caller, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call stamped ``max_clock_skew`` ahead of the server stays acceptable for twice the
    skew after it arrives; its nonce must outlive that, even when a sweep runs just then."""
    import server.auth

    skew = app.extensions["jit_ssh"].config.max_clock_skew
    # Every call sweeps expired nonces (one in 256 does, in production).
    monkeypatch.setattr(server.auth.secrets, "randbelow", lambda n: 0)
    clock.freeze()
    start = clock.frozen
    assert start is not None
    clock.frozen = start + timedelta(seconds=0.9)
    alice.skew = skew  # the client's clock runs as far ahead as the server allows
    first = alice.get("/v1/whoami")
    assert first.status_code == 200, first.json
    replay_headers = dict(alice.last_headers)

    # Just before the timestamp check would refuse the call: ts - int(now) == -skew.
    clock.frozen = start + timedelta(seconds=2 * skew, milliseconds=950)
    alice.skew = 0
    assert alice.get("/v1/whoami").status_code == 200  # a fresh call, which sweeps
    replay = app.test_client().get("/v1/whoami", headers=replay_headers)
    assert_problem(replay, 401, "replayed_nonce")


def test_nonces_are_forgotten_once_no_replica_could_accept_their_call(
    app: Any, alice: Caller, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table does not grow for ever: past the window and the replicas' drift, a sweep removes the nonce."""
    from sqlalchemy import text

    import server.auth

    skew = app.extensions["jit_ssh"].config.max_clock_skew
    monkeypatch.setattr(server.auth.secrets, "randbelow", lambda n: 0)
    clock.freeze()
    assert alice.get("/v1/whoami").status_code == 200
    nonce = alice.last_headers["X-Jit-Nonce"]
    engine = app.extensions["jit_ssh.engine"]

    def kept() -> bool:
        with engine.connect() as c:
            return (
                c.execute(
                    text("SELECT count(*) FROM nonces WHERE nonce = :n"), {"n": nonce}
                ).scalar_one()
                == 1
            )

    clock.advance(seconds=skew + 1 + server.auth.REPLICA_CLOCK_DRIFT.total_seconds() - 1)
    assert alice.get("/v1/whoami").status_code == 200
    assert kept()
    clock.advance(seconds=2)
    assert alice.get("/v1/whoami").status_code == 200
    assert not kept()


# ---- ?pending_for_me is for approvers ---------------------------------------------------------


def test_pending_for_me_needs_the_approver_role(app: Any, alice: Caller, make_user: Any) -> None:
    """A requester who is in an approver group (but has no approver role) cannot read others' reasons."""
    r = alice.post("/v1/requests", {**DEMO, "reason": "INC-77: a secret reason"})
    assert r.status_code == 201
    eve = make_user("eve", ("approvers",), ("requester",))
    resp = eve.get("/v1/requests", query="pending_for_me=1")
    problem = assert_problem(resp, 403, "not_eligible")
    assert problem["field"] == "pending_for_me"
    assert "INC-77" not in resp.get_data(as_text=True)
    # With the role, the same user is asked.
    bob = make_user("bob", ("approvers",), ("requester", "approver"))
    assert [
        x["id"] for x in bob.get("/v1/requests", query="pending_for_me=1").json["requests"]
    ] == [r.json["id"]]
    # And the requester's own list still works for eve.
    assert eve.get("/v1/requests", query="mine=1").status_code == 200


# ---- reasons and comments are visible text ---------------------------------------------------

INVISIBLE = [
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",  # bidi embeddings and overrides
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",  # bidi isolates
    "\u200b",
    "\u200c",
    "\u200d",
    "\u200e",
    "\u200f",  # zero-width and direction marks
    "\u2060",
    "\ufeff",
    "\u00ad",
    "\U000e0041",  # word joiner, BOM, soft hyphen, a tag character
    "\u2028",
    "\u2029",
    "\x85",
    "\x9b",  # line/paragraph separators, C1 controls
    # Blanks of visible categories: Hangul fillers, Braille blank, combining grapheme joiner,
    # a supplementary variation selector (they can carry hidden text); unassigned, private use.
    "\u3164",
    "\u115f",
    "\uffa0",
    "\u2800",
    "\u034f",
    "\U000e0100",
    "\u2065",
    "\ue000",
]
VISIBLE = "Café naïve — 中文 日本語 한국어 עברית العربية 🚀 👍🏽 ❤️ tab\there"
# Comments and deny reasons may have several lines (a request's reason is one line: policies).
VISIBLE_LINES = VISIBLE + "\nand a second line"


def _disguised(ch: str) -> str:
    return f"INC-1234 {ch}evom"


@pytest.mark.parametrize("ch", INVISIBLE, ids=lambda c: f"U+{ord(c):04X}")
def test_invisible_characters_are_refused_in_a_reason(app: Any, alice: Caller, ch: str) -> None:
    before = snapshot(app)
    resp = alice.post("/v1/requests", {**DEMO, "reason": _disguised(ch)})
    problem = assert_problem(resp, 400, "invalid_input")
    assert problem["field"] == "reason"
    if unicodedata.category(ch) == "Cc":
        assert "reason holds control characters" in problem["detail"]
    else:
        assert (
            f"reason holds invisible formatting characters (U+{ord(ch):04X})" in problem["detail"]
        )
    assert_unchanged(before, snapshot(app))


def test_invisible_characters_are_refused_in_every_decision_text(
    app: Any, alice: Caller, bob: Caller, oncall: Caller
) -> None:
    rid = alice.post("/v1/requests", DEMO).json["id"]
    auto = oncall.post("/v1/requests", DEMO).json["id"]
    serial = oncall.post(f"/v1/requests/{auto}/certificate", {"public_key": user_key_line()}).json[
        "serial"
    ]
    for ch in ("\u202e", "\u2067", "\u200b", "\ufeff"):
        bad = _disguised(ch)
        before = snapshot(app)
        for path, body, name in (
            (f"/v1/requests/{rid}/approve", {"comment": bad}, "comment"),
            (f"/v1/requests/{rid}/deny", {"reason": bad}, "reason"),
            (f"/v1/certificates/{serial}/revoke", {"reason": bad}, "reason"),
        ):
            problem = assert_problem(bob.post(path, body), 400, "invalid_input")
            assert problem["field"] == name, (path, problem)
        assert_unchanged(before, snapshot(app))


def test_ordinary_unicode_text_is_accepted_everywhere(
    app: Any, alice: Caller, bob: Caller, oncall: Caller
) -> None:
    r = alice.post("/v1/requests", {**DEMO, "reason": VISIBLE})
    assert r.status_code == 201 and r.json["reason"] == VISIBLE
    assert (
        bob.post(f"/v1/requests/{r.json['id']}/approve", {"comment": VISIBLE_LINES}).status_code
        == 200
    )
    other = alice.post("/v1/requests", DEMO).json["id"]
    assert (
        bob.post(f"/v1/requests/{other}/deny", {"reason": VISIBLE_LINES}).json["deny_reason"]
        == VISIBLE_LINES
    )
    auto = oncall.post("/v1/requests", DEMO).json["id"]
    serial = oncall.post(f"/v1/requests/{auto}/certificate", {"public_key": user_key_line()}).json[
        "serial"
    ]
    assert bob.post(f"/v1/certificates/{serial}/revoke", {"reason": VISIBLE}).status_code == 200


# ---- the database files are ours alone --------------------------------------------------------


def test_sqlite_files_are_created_private(tmp_path: Path, clock: Clock) -> None:
    from sqlalchemy import text

    from server.admin import Admin

    old = os.umask(0o022)  # the usual umask, which leaves new files world-readable
    try:
        app = build_app(tmp_path, f"sqlite:///{tmp_path / 'jit.sqlite3'}", clock)
        engine = app.extensions["jit_ssh.engine"]
        try:
            Admin(app.extensions["jit_ssh"].service).add_user("alice", ssh_keys=[user_key_line()])
            with engine.connect() as c:  # the -shm file exists while a connection is open
                assert c.execute(text("SELECT count(*) FROM users")).scalar_one() == 1
                base = tmp_path / "jit.sqlite3"
                files = [
                    base,
                    base.with_name(base.name + "-wal"),
                    base.with_name(base.name + "-shm"),
                    base.with_name(base.name + ".lock"),
                ]
                modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
        finally:
            engine.dispose()
    finally:
        os.umask(old)
    assert modes == {f.name: 0o600 for f in files}
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


def test_a_missing_sqlite_directory_is_created_private(tmp_path: Path) -> None:
    from sqlalchemy import text

    from server.db import make_engine

    old = os.umask(0o022)
    try:
        engine = make_engine(f"sqlite:///{tmp_path / 'state' / 'jit.sqlite3'}")
        try:
            with engine.connect() as c:
                c.execute(text("CREATE TABLE t (x INTEGER)"))
        finally:
            engine.dispose()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / "jit.sqlite3").stat().st_mode) == 0o600
