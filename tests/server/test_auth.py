"""Who is calling: every way a signed call can fail, on SQLite and PostgreSQL.

Each failure is a 401 with its own stable code, counted in ``auth_failures``
(the first of its kind in a time window is also an ``auth.failed`` audit event,
naming no actor), and no other change in the database. The signature format is
OpenSSH's own: ``ssh-keygen -Y sign`` signs calls the server accepts, and
``ssh-keygen -Y verify`` accepts the signatures our clients make.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from ca import public_key_from_crypto
from ca import request_signing as rs
from ca.sshsig import armor, dearmor, sign
from tests.conftest import require_tool

from .conftest import Caller, Clock, assert_problem, assert_unchanged, new_events, snapshot

CREATE = {"target": "demo", "duration": "5m", "reason": "auth test"}


def _body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def failure_count(app: Any, claimed: str | None, code: str) -> int:
    """Failures counted for ``claimed`` (a user name, or None) and ``code``, over all windows."""
    from sqlalchemy import text

    with app.extensions["jit_ssh.engine"].connect() as c:
        return int(
            c.execute(
                text(
                    "SELECT coalesce(sum(count), 0) FROM auth_failures WHERE claimed_user = :u AND code = :c"
                ),
                {"u": claimed or "", "c": code},
            ).scalar_one()
        )


def _refused(
    app: Any, send: Callable[[], Any], code: str, *, claimed: str | None = "alice", case: str = ""
) -> dict[str, Any]:
    """Send the call; expect a 401 with ``code``, the failure counted, and nothing else changed
    but (for the first of its kind in the window) one auth.failed event, under no actor."""
    try:
        before = snapshot(app)
        counted = failure_count(app, claimed, code)
        resp = send()
        problem = assert_problem(resp, 401, code)
        after = snapshot(app)
        assert failure_count(app, claimed, code) == counted + 1
        types = assert_unchanged(before, after, allowed_events=("auth.failed",))
        assert types == (["auth.failed"] if counted == 0 else [])
        for _, _, actor, data in new_events(before, after):
            assert json.loads(data)["code"] == code
            assert json.loads(data)["claimed_user"] == claimed
            # A claim is not an identity: the chain never names the user as the actor.
            assert actor is None
    except AssertionError as e:
        if case:
            raise AssertionError(f"case {case!r}: {e}") from e
        raise
    return problem


# ---- headers missing or malformed -----------------------------------------------------------


def test_unsigned_call(app: Any, alice: Caller) -> None:
    c = app.test_client()
    p = _refused(app, lambda: c.post("/v1/requests", json=CREATE), "auth_failed", claimed=None)
    assert p["field"] == "authorization"
    _refused(app, lambda: c.get("/v1/requests?mine=1"), "auth_failed", claimed=None)


def test_each_header_is_required(app: Any, alice: Caller) -> None:
    for header in (rs.HEADER_USER, rs.HEADER_TIMESTAMP, rs.HEADER_NONCE, rs.HEADER_SIGNATURE):
        claimed = None if header == rs.HEADER_USER else "alice"
        _refused(
            app,
            lambda: alice.post("/v1/requests", CREATE, headers={header: None}),
            "auth_failed",
            claimed=claimed,
            case=f"without {header}",
        )


MALFORMED = [
    (rs.HEADER_TIMESTAMP, "yesterday"),
    (rs.HEADER_TIMESTAMP, "-1"),
    (rs.HEADER_TIMESTAMP, "1" * 13),
    (rs.HEADER_TIMESTAMP, "1.7e9"),
    # Not ASCII digits, though str.isdigit() says they are: never int() them.
    (rs.HEADER_TIMESTAMP, "\u00b2\u00b3"),
    (rs.HEADER_USER, "a" * 65),
    (rs.HEADER_USER, "al\x01ice"),
    (rs.HEADER_USER, "al\x7fice"),
]


def test_malformed_headers(app: Any, alice: Caller) -> None:
    for header, value in MALFORMED:
        # A user name that is not printable (or too long) is not written into the audit log as an actor.
        claimed = None if header == rs.HEADER_USER else "alice"
        _refused(
            app,
            lambda: alice.post("/v1/requests", CREATE, headers={header: value}),
            "auth_failed",
            claimed=claimed,
            case=f"{header}: {value[:20]!r}",
        )


def test_malformed_nonce(app: Any, alice: Caller) -> None:
    for nonce in [
        "short",
        "x" * 21,
        "y" * 65,
        "has spaces in it and is long enough",
        "plus+and/slash=signs_base64_xx",
        "é" * 30,
    ]:
        _refused(
            app, lambda: alice.post("/v1/requests", CREATE, nonce=nonce), "auth_failed", case=nonce
        )


def test_garbage_signature(app: Any, alice: Caller) -> None:
    valid = base64.b64decode(alice.headers("GET", "/v1/whoami", b"")[rs.HEADER_SIGNATURE])
    cases = {
        "empty": "",
        "not-base64": "not base64 at all!",
        "garbage": base64.b64encode(b"garbage").decode(),
        "zeros": base64.b64encode(b"SSHSIG" + bytes(200)).decode(),
        "truncated": base64.b64encode(valid[:-10]).decode(),
        "trailing-bytes": base64.b64encode(valid + b"\0").decode(),
        "flipped-bit": base64.b64encode(valid[:-1] + bytes([valid[-1] ^ 1])).decode(),
        "huge": "A" * (25 * 1024),
    }
    for case, signature in cases.items():
        code = "auth_failed" if signature == "" else "bad_signature"
        _refused(
            app,
            lambda: alice.post("/v1/requests", CREATE, headers={rs.HEADER_SIGNATURE: signature}),
            code,
            case=case,
        )


# ---- the signature binds method, path, query and body ------------------------------------------


def test_tampered_body(app: Any, alice: Caller) -> None:
    signed = _body(CREATE)
    h = alice.headers("POST", "/v1/requests", signed)
    forged = _body({**CREATE, "target": "prod-db", "reason": "INC-1"})
    _refused(
        app, lambda: alice.client.post("/v1/requests", data=forged, headers=h), "bad_signature"
    )


def test_tampered_path(app: Any, alice: Caller, bob: Caller) -> None:
    mine = alice.post("/v1/requests", CREATE).json["id"]
    other = alice.post("/v1/requests", CREATE).json["id"]
    h = alice.headers("POST", f"/v1/requests/{mine}/cancel", b"")
    _refused(
        app, lambda: alice.client.post(f"/v1/requests/{other}/cancel", headers=h), "bad_signature"
    )
    # The cancel that was signed still works (the failed attempt did not burn its nonce).
    assert alice.client.post(f"/v1/requests/{mine}/cancel", headers=h).json["state"] == "cancelled"
    assert alice.get(f"/v1/requests/{other}").json["state"] == "pending"


def test_tampered_query(app: Any, alice: Caller, root: Caller) -> None:
    h = root.headers("GET", "/v1/audit", b"", "since=5")
    _refused(
        app,
        lambda: root.client.get("/v1/audit?since=0", headers=h),
        "bad_signature",
        claimed="root-admin",
    )
    h = alice.headers("GET", "/v1/requests", b"", "mine=1")
    _refused(
        app,
        lambda: alice.client.get("/v1/requests?mine=1&pending_for_me=1", headers=h),
        "bad_signature",
    )


def test_tampered_method(app: Any, alice: Caller) -> None:
    rid = alice.post("/v1/requests", CREATE).json["id"]
    h = alice.headers("GET", f"/v1/requests/{rid}/cancel", b"")
    _refused(
        app, lambda: alice.client.post(f"/v1/requests/{rid}/cancel", headers=h), "bad_signature"
    )


def test_wrong_namespace(app: Any, alice: Caller) -> None:
    """A signature made for another purpose (``ssh-keygen -Y sign -n file``) is not a call."""
    ts = int(alice.clock().timestamp())
    nonce = secrets.token_urlsafe(18)
    body = _body(CREATE)
    msg = rs.signing_message(
        method="POST",
        path="/v1/requests",
        query="",
        body=body,
        timestamp=ts,
        nonce=nonce,
        user="alice",
    )
    sig = base64.b64encode(sign(msg, namespace="file", private_key=alice.key)).decode()
    h = {
        rs.HEADER_USER: "alice",
        rs.HEADER_TIMESTAMP: str(ts),
        rs.HEADER_NONCE: nonce,
        rs.HEADER_SIGNATURE: sig,
        "Content-Type": "application/json",
    }
    _refused(app, lambda: alice.client.post("/v1/requests", data=body, headers=h), "bad_signature")


# ---- time and replay ----------------------------------------------------------------------------


def test_clock_skew(app: Any, alice: Caller, clock: Clock) -> None:
    """Stale and future timestamps beyond max_clock_skew (300 s in the test config)."""
    for offset in (-301, 301, -(10**6), 10**6, -int(clock().timestamp())):
        ts = int(clock().timestamp()) + offset
        p = _refused(
            app,
            lambda: alice.post("/v1/requests", CREATE, ts=ts),
            "clock_skew",
            case=f"offset {offset}",
        )
        assert p["field"] == rs.HEADER_TIMESTAMP and "NTP" in p["detail"]


def test_within_clock_skew_is_accepted(app: Any, alice: Caller, clock: Clock) -> None:
    for offset in (-299, 299):
        r = alice.post("/v1/requests", CREATE, ts=int(clock().timestamp()) + offset)
        assert r.status_code == 201, r.json


def test_skew_follows_the_server_clock(app: Any, alice: Caller, clock: Clock) -> None:
    """A call signed at the client's (real) time is stale once the server's clock is ahead."""
    import time

    real = int(time.time())
    clock.advance(minutes=6)
    _refused(app, lambda: alice.post("/v1/requests", CREATE, ts=real), "clock_skew")


def test_replayed_call(app: Any, alice: Caller) -> None:
    body = _body(CREATE)
    h = alice.headers("POST", "/v1/requests", body)
    first = alice.client.post("/v1/requests", data=body, headers=h)
    assert first.status_code == 201
    _refused(app, lambda: alice.client.post("/v1/requests", data=body, headers=h), "replayed_nonce")
    assert len(alice.get("/v1/requests", query="mine=1").json["requests"]) == 1


def test_replayed_nonce_with_a_fresh_signature(app: Any, alice: Caller) -> None:
    nonce = secrets.token_urlsafe(18)
    assert alice.post("/v1/requests", CREATE, nonce=nonce).status_code == 201
    _refused(
        app,
        lambda: alice.post("/v1/requests", {**CREATE, "reason": "again"}, nonce=nonce),
        "replayed_nonce",
    )


# ---- who holds the key --------------------------------------------------------------------------


def test_unknown_key(app: Any, alice: Caller) -> None:
    stranger = Caller("alice", ed25519.Ed25519PrivateKey.generate(), app.test_client(), alice.clock)
    _refused(app, lambda: stranger.post("/v1/requests", CREATE), "unknown_key")


def test_unknown_user(app: Any, alice: Caller) -> None:
    ghost = Caller("ghost", ed25519.Ed25519PrivateKey.generate(), app.test_client(), alice.clock)
    # A name that is no account is not counted under its own name: made-up names must not
    # grow the counters, nor use up the window's audit events.
    _refused(app, lambda: ghost.post("/v1/requests", CREATE), "unknown_key", claimed=None)


def test_key_of_another_user(app: Any, alice: Caller, bob: Caller) -> None:
    """Bob's enrolled key cannot speak for alice (nor for a user who does not exist)."""
    _refused(app, lambda: bob.post("/v1/requests", CREATE, user="alice"), "unknown_key")
    rid = alice.post("/v1/requests", CREATE).json["id"]
    # The other way round matters more: alice's key must not approve as bob.
    _refused(
        app,
        lambda: alice.post(f"/v1/requests/{rid}/approve", {}, user="bob"),
        "unknown_key",
        claimed="bob",
    )
    assert bob.get(f"/v1/requests/{rid}").json["state"] == "pending"


def test_disabled_user(app: Any, admin: Any, alice: Caller) -> None:
    admin.set_disabled("alice")
    _refused(app, lambda: alice.post("/v1/requests", CREATE), "user_disabled")
    _refused(app, lambda: alice.get("/v1/whoami"), "user_disabled")
    admin.set_disabled("alice", False)
    assert alice.get("/v1/whoami").json["user"] == "alice"


def test_removed_key(app: Any, admin: Any, alice: Caller) -> None:
    fp = public_key_from_crypto(alice.key.public_key()).fingerprint
    assert alice.get("/v1/whoami").status_code == 200
    admin.remove_key("alice", fp)
    _refused(app, lambda: alice.post("/v1/requests", CREATE), "unknown_key")
    # Enrolling it again gives the access back.
    admin.enroll_key("alice", alice.public_openssh)
    assert alice.get("/v1/whoami").status_code == 200


def test_failures_are_counted_in_metrics(app: Any, alice: Caller) -> None:
    def failures() -> int:
        text = app.test_client().get("/metrics").get_data(as_text=True)
        return int(
            next(
                line
                for line in text.splitlines()
                if line.startswith("jit_ssh_auth_failures_total ")
            ).split()[1]
        )

    n = failures()
    app.test_client().get("/v1/whoami")
    alice.get("/v1/whoami", ts=1)
    assert failures() == n + 2


# ---- the format is OpenSSH's own ----------------------------------------------------------------


def _keygen(tmp_path: Path, kind: str) -> Path:
    ssh_keygen = require_tool("ssh-keygen")
    key = tmp_path / f"id_{kind}"
    args = {
        "ed25519": ["-t", "ed25519"],
        "ecdsa": ["-t", "ecdsa", "-b", "256"],
        "rsa": ["-t", "rsa", "-b", "2048"],
    }[kind]
    subprocess.run(
        [ssh_keygen, *args, "-N", "", "-q", "-C", f"{kind}@test", "-f", str(key)], check=True
    )
    return key


def test_ssh_keygen_signature_authenticates(
    app: Any, admin: Any, clock: Clock, tmp_path: Path
) -> None:
    """A call signed by ``ssh-keygen -Y sign -n jit-ssh-api`` over the canonical message is accepted."""
    for kind in ("ed25519", "ecdsa", "rsa"):
        _ssh_keygen_signed_calls(app, admin, clock, tmp_path / kind, kind)


def _ssh_keygen_signed_calls(app: Any, admin: Any, clock: Clock, tmp_path: Path, kind: str) -> None:
    ssh_keygen = require_tool("ssh-keygen")
    tmp_path.mkdir()
    key = _keygen(tmp_path, kind)
    user = f"kate-{kind}"
    admin.add_user(user, groups=["engineers"], ssh_keys=[key.with_suffix(".pub").read_text()])

    def signed_headers(method: str, path: str, body: bytes) -> dict[str, str]:
        ts, nonce = int(clock().timestamp()), secrets.token_urlsafe(18)
        msg_file = tmp_path / f"msg-{nonce}"
        msg_file.write_bytes(
            rs.signing_message(
                method=method, path=path, query="", body=body, timestamp=ts, nonce=nonce, user=user
            )
        )
        subprocess.run(
            [ssh_keygen, "-Y", "sign", "-q", "-f", str(key), "-n", rs.NAMESPACE, str(msg_file)],
            check=True,
            capture_output=True,
        )
        blob = dearmor(Path(str(msg_file) + ".sig").read_text())
        return {
            rs.HEADER_USER: user,
            rs.HEADER_TIMESTAMP: str(ts),
            rs.HEADER_NONCE: nonce,
            rs.HEADER_SIGNATURE: base64.b64encode(blob).decode(),
            "Content-Type": "application/json",
        }

    c = app.test_client()
    who = c.get("/v1/whoami", headers=signed_headers("GET", "/v1/whoami", b""))
    assert who.status_code == 200 and who.json["user"] == user, (kind, who.json)
    body = _body(CREATE)
    created = c.post(
        "/v1/requests", data=body, headers=signed_headers("POST", "/v1/requests", body)
    )
    assert created.status_code == 201 and created.json["requester"] == user, (kind, created.json)


def _verify_with_ssh_keygen(
    tmp_path: Path, public_line: str, message: bytes, blob: bytes, identity: str = "kate"
) -> subprocess.CompletedProcess[bytes]:
    ssh_keygen = require_tool("ssh-keygen")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'{identity} namespaces="{rs.NAMESPACE}" {public_line}\n')
    sig = tmp_path / "call.sig"
    sig.write_text(armor(blob))
    return subprocess.run(
        [
            ssh_keygen,
            "-Y",
            "verify",
            "-f",
            str(allowed),
            "-I",
            identity,
            "-n",
            rs.NAMESPACE,
            "-s",
            str(sig),
        ],
        input=message,
        capture_output=True,
    )


def test_client_signature_verifies_with_ssh_keygen(
    app: Any, admin: Any, clock: Clock, tmp_path: Path
) -> None:
    """What ``client.signing.KeyFileSigner`` signs, ``ssh-keygen -Y verify`` accepts, and so does the server."""
    for kind in ("ed25519", "ecdsa", "rsa"):
        _client_signature(app, admin, clock, tmp_path / kind, kind)


def _client_signature(app: Any, admin: Any, clock: Clock, tmp_path: Path, kind: str) -> None:
    from client.signing import KeyFileSigner

    tmp_path.mkdir()
    user = f"kate-{kind}"
    key = _keygen(tmp_path, kind)
    public_line = key.with_suffix(".pub").read_text().strip()
    signer = KeyFileSigner.from_path(key)
    ts, nonce = int(clock().timestamp()), secrets.token_urlsafe(18)
    message = rs.signing_message(
        method="GET", path="/v1/whoami", query="", body=b"", timestamp=ts, nonce=nonce, user=user
    )
    blob = signer.sign(message, namespace=rs.NAMESPACE)

    ok = _verify_with_ssh_keygen(tmp_path, public_line, message, blob, user)
    assert ok.returncode == 0, (kind, ok.stderr.decode())
    assert b"Good" in ok.stdout + ok.stderr
    bad = _verify_with_ssh_keygen(
        tmp_path, public_line, message.replace(b"GET", b"PUT"), blob, user
    )
    assert bad.returncode != 0, kind

    admin.add_user(user, groups=["engineers"], ssh_keys=[public_line])
    h = {
        rs.HEADER_USER: user,
        rs.HEADER_TIMESTAMP: str(ts),
        rs.HEADER_NONCE: nonce,
        rs.HEADER_SIGNATURE: base64.b64encode(blob).decode(),
    }
    who = app.test_client().get("/v1/whoami", headers=h)
    assert who.status_code == 200 and who.json["user"] == user, kind


def test_ca_sshsig_signature_verifies_with_ssh_keygen(tmp_path: Path) -> None:
    """The signature the test callers make (``ca.sshsig.sign``) is standard SSHSIG too."""
    key = ed25519.Ed25519PrivateKey.generate()
    message = b"jit-ssh-api-v1\nGET\n/v1/whoami\n\n" + b"0" * 64
    blob = sign(message, namespace=rs.NAMESPACE, private_key=key)
    r = _verify_with_ssh_keygen(
        tmp_path, public_key_from_crypto(key.public_key()).openssh, message, blob
    )
    assert r.returncode == 0, r.stderr.decode()
