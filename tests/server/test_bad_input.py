"""Bad input at every endpoint, on SQLite and PostgreSQL.

Every malformed call gets a 4xx problem with a stable ``code`` (never a 5xx,
never a traceback) and changes nothing: the same rows in requests, approvals,
certificates and revocations, the same request states, and an audit log that
gained at most the refusal the call deserves (``request.refused`` when the
policy said no). Hypothesis then posts random JSON at every POST endpoint.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import Caller, assert_problem, assert_unchanged, snapshot, user_key_line

DEMO = {"target": "demo", "duration": "5m", "reason": "bad input test"}
MB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    name: str
    who: str  # alice (requester), bob (approver) or root (admin)
    method: str
    path: str  # formatted with {pending}, {approved}, {serial}
    status: int
    code: str
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, str | None] = field(default_factory=dict)
    query: str = ""
    events: tuple[str, ...] = ()
    #: The path the signature covers, when the URL is percent-encoded.
    signed_path: str | None = None


class World:
    def __init__(self, app: Any, make_user: Any) -> None:
        self.app = app
        self.users: dict[str, Caller] = {
            "alice": make_user("alice", ("engineers",)),
            "bob": make_user("bob", ("approvers",), ("requester", "approver")),
            "root": make_user("root-admin", (), ("admin",)),
        }
        alice, bob = self.users["alice"], self.users["bob"]
        self.pending = alice.post("/v1/requests", DEMO).json["id"]
        self.approved = alice.post("/v1/requests", DEMO).json["id"]
        assert bob.post(f"/v1/requests/{self.approved}/approve", {}).status_code == 200
        issued = alice.post("/v1/requests", DEMO).json["id"]
        bob.post(f"/v1/requests/{issued}/approve", {})
        r = alice.post(f"/v1/requests/{issued}/certificate", {"public_key": user_key_line()})
        assert r.status_code == 200
        self.serial = r.json["serial"]
        self.certificate_line = r.json["certificate"]

    def fmt(self, text: str) -> str:
        return text.format(pending=self.pending, approved=self.approved, serial=self.serial)

    def send(self, case: Case) -> Any:
        caller = self.users[case.who]
        body = (
            case.body
            if case.raw is not None or case.body is not None or case.method == "GET"
            else {}
        )
        return caller.call(
            case.method,
            self.fmt(case.path),
            body,
            raw=case.raw,
            query=case.query,
            headers=case.headers,
            signed_path=case.signed_path and self.fmt(case.signed_path),
        )

    def check(self, cases: list[Case]) -> None:
        failures = []
        for case in cases:
            before = snapshot(self.app)
            resp = self.send(case)
            try:
                assert_problem(resp, case.status, case.code)
                types = assert_unchanged(before, snapshot(self.app), allowed_events=case.events)
                assert sorted(types) == sorted(case.events), types
            except AssertionError as e:
                failures.append(f"{case.name}: {e}")
        assert not failures, "\n".join(failures)


@pytest.fixture
def world(app: Any, make_user: Any) -> World:
    return World(app, make_user)


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def _json_ct() -> dict[str, str | None]:
    return {"Content-Type": "application/json"}


def _body_cases(who: str, path: str) -> list[Case]:
    """Malformed bodies any JSON endpoint must refuse the same way."""
    p = path
    return [
        Case("not JSON", who, "POST", p, 400, "invalid_input", raw=b"not json", headers=_json_ct()),
        Case(
            "truncated JSON",
            who,
            "POST",
            p,
            400,
            "invalid_input",
            raw=b'{"target": "demo"',
            headers=_json_ct(),
        ),
        Case("JSON array", who, "POST", p, 400, "invalid_input", raw=b"[1, 2]", headers=_json_ct()),
        Case("JSON null", who, "POST", p, 400, "invalid_input", raw=b"null", headers=_json_ct()),
        Case(
            "JSON string", who, "POST", p, 400, "invalid_input", raw=b'"demo"', headers=_json_ct()
        ),
        Case(
            "invalid UTF-8",
            who,
            "POST",
            p,
            400,
            "invalid_input",
            raw=b'{"reason": "\xff\xfe"}',
            headers=_json_ct(),
        ),
        Case(
            "UTF-8 encoded surrogate",
            who,
            "POST",
            p,
            400,
            "invalid_input",
            raw=b'{"reason": "\xed\xa0\x80"}',
            headers=_json_ct(),
        ),
        Case(
            "escaped lone surrogate",
            who,
            "POST",
            p,
            400,
            "invalid_input",
            raw=b'{"reason": "\\ud800"}',
            headers=_json_ct(),
        ),
        Case(
            "NUL byte in the body",
            who,
            "POST",
            p,
            400,
            "invalid_input",
            raw=b'{"a": 1}\x00',
            headers=_json_ct(),
        ),
        Case(
            "text/plain",
            who,
            "POST",
            p,
            400,
            "invalid_input",
            raw=b"{}",
            headers={"Content-Type": "text/plain"},
        ),
        Case(
            "form",
            who,
            "POST",
            p,
            400,
            "invalid_input",
            raw=b"target=demo&duration=5m",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        Case(
            "multipart",
            who,
            "POST",
            p,
            400,
            "invalid_input",
            raw=b"--x\r\n\r\n--x--\r\n",
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        ),
        Case(
            "no content type",
            who,
            "POST",
            p,
            400,
            "invalid_input",
            raw=b"{}",
            headers={"Content-Type": None},
        ),
        Case(
            "deep nesting, 100k",
            who,
            "POST",
            p,
            413,
            "body_too_large",
            raw=_deep(100_000),
            headers=_json_ct(),
        ),
        Case(
            "deep nesting, 30k",
            who,
            "POST",
            p,
            400,
            "invalid_input",
            raw=_deep(30_000),
            headers=_json_ct(),
        ),
        Case(
            "deep nesting in a field",
            who,
            "POST",
            p,
            400,
            "invalid_input",
            raw=b'{"target": ' + _deep(20_000) + b"}",
            headers=_json_ct(),
        ),
        Case("1 MB body", who, "POST", p, 413, "body_too_large", body={"reason": "x" * MB}),
        Case(
            "huge integer",
            who,
            "POST",
            p,
            400,
            "invalid_input",
            raw=b'{"duration": ' + b"9" * 5000 + b"}",
            headers=_json_ct(),
        ),
    ]


def test_create_request(world: World) -> None:
    def c(
        name: str,
        body: Any,
        status: int = 400,
        code: str = "invalid_input",
        events: tuple[str, ...] = (),
    ) -> Case:
        return Case(name, "alice", "POST", "/v1/requests", status, code, body=body, events=events)

    refused = ("request.refused",)
    world.check(
        [
            c("target missing", {"duration": "5m", "reason": "x"}),
            c("empty object", {}),
            c("target: 5", {**DEMO, "target": 5}),
            c("target: null", {**DEMO, "target": None}),
            c("target: []", {**DEMO, "target": []}),
            c("target: {}", {**DEMO, "target": {}}),
            c("target: true", {**DEMO, "target": True}),
            c("target: ''", {**DEMO, "target": ""}),
            c("target: 129 chars", {**DEMO, "target": "d" * 129}),
            c("target: 1 KB", {**DEMO, "target": "d" * 1024}),
            c("target with NUL", {**DEMO, "target": "demo\x00"}),
            c("target with newline", {**DEMO, "target": "demo\nprod-db"}),
            c("target with escape", {**DEMO, "target": "\x1b[2Jdemo"}),
            c("unknown target", {**DEMO, "target": "nope"}, 403, "policy_denied", refused),
            c(
                "unknown unicode target",
                {**DEMO, "target": "dëmo-🚀"},
                403,
                "policy_denied",
                refused,
            ),
            c("duration: true", {**DEMO, "duration": True}, code="invalid_duration"),
            c("duration: false", {**DEMO, "duration": False}, code="invalid_duration"),
            c("duration: []", {**DEMO, "duration": []}, code="invalid_duration"),
            c("duration: {}", {**DEMO, "duration": {}}, code="invalid_duration"),
            c("duration: -1", {**DEMO, "duration": -1}, code="invalid_duration"),
            c("duration: 0", {**DEMO, "duration": 0}, code="invalid_duration"),
            c("duration: 1.5", {**DEMO, "duration": 1.5}, code="invalid_duration"),
            c("duration: 'abc'", {**DEMO, "duration": "abc"}, code="invalid_duration"),
            c("duration: ''", {**DEMO, "duration": ""}, code="invalid_duration"),
            c("duration: '-5m'", {**DEMO, "duration": "-5m"}, code="invalid_duration"),
            c("duration: '5m5m'", {**DEMO, "duration": "5m5m"}, code="invalid_duration"),
            c("duration: '5 m\\x00'", {**DEMO, "duration": "5m\x00"}, code="invalid_duration"),
            c("duration: 10**12", {**DEMO, "duration": 10**12}, code="invalid_duration"),
            c("duration: 10**100", {**DEMO, "duration": 10**100}, code="invalid_duration"),
            # A bare number as text needs a unit (issue 12, point 3); it was read as seconds.
            c(
                "duration: '10**12' as text",
                {**DEMO, "duration": str(10**12)},
                code="invalid_duration",
            ),
            c(
                "duration: '999999999d'",
                {**DEMO, "duration": "999999999d"},
                403,
                "policy_denied",
                refused,
            ),
            c(
                "duration: 1 KB of digits",
                {**DEMO, "duration": "9" * 1024},
                code="invalid_duration",
            ),
            c("reason: 123", {**DEMO, "reason": 123}),
            c("reason: []", {**DEMO, "reason": ["INC-1"]}),
            c("reason: 10 KB", {**DEMO, "reason": "r" * 10_000}),
            c("reason with NUL", {**DEMO, "reason": "INC-1\x00"}),
            c("reason with escape", {**DEMO, "reason": "\x1b[31mred"}),
            c("reason with DEL", {**DEMO, "reason": "a\x7fb"}),
            c("break_glass: 'yes'", {**DEMO, "break_glass": "yes"}),
            c("break_glass: 1", {**DEMO, "break_glass": 1}),
            c("break_glass: null", {**DEMO, "break_glass": None}),
            c("unknown field", {**DEMO, "approved": True}),
            c("unknown field __proto__", {**DEMO, "__proto__": {}}),
            c("unknown field, 1 KB name", {**DEMO, "x" * 1024: 1}),
            c(
                "policy: reason required",
                {"target": "prod-db", "duration": "30m"},
                403,
                "policy_denied",
                refused,
            ),
            c("policy: too long", {**DEMO, "duration": "2h"}, 403, "policy_denied", refused),
        ]
    )


def test_create_request_nan(world: World) -> None:
    world.check(
        [
            Case(
                "duration: NaN",
                "alice",
                "POST",
                "/v1/requests",
                400,
                "invalid_duration",
                raw=b'{"target": "demo", "duration": NaN}',
                headers=_json_ct(),
            ),
            Case(
                "duration: Infinity",
                "alice",
                "POST",
                "/v1/requests",
                400,
                "invalid_duration",
                raw=b'{"target": "demo", "duration": -Infinity}',
                headers=_json_ct(),
            ),
            *_body_cases("alice", "/v1/requests"),
        ]
    )


UNKNOWN_IDS = [
    ("unknown id", "0123456789abcdef", None),
    ("very long id", "a" * 10_000, None),
    ("id with NUL", "%00abc", "\x00abc"),
    ("unicode id", quote("ünï-🚀"), "ünï-🚀"),
    ("id with quote", quote("'; DROP TABLE requests; --"), "'; DROP TABLE requests; --"),
]


def _unknown_id_cases(who: str, method: str, suffix: str, body: Any = None) -> list[Case]:
    return [
        Case(
            name,
            who,
            method,
            f"/v1/requests/{rid}{suffix}",
            404,
            "not_found",
            body=body,
            signed_path=None if signed is None else f"/v1/requests/{signed}{suffix}",
        )
        for name, rid, signed in UNKNOWN_IDS
    ]


def test_get_request(world: World) -> None:
    world.check(_unknown_id_cases("alice", "GET", "") + _unknown_id_cases("bob", "GET", ""))


def test_approve(world: World) -> None:
    def c(name: str, body: Any, status: int = 400, code: str = "invalid_input") -> Case:
        return Case(name, "bob", "POST", "/v1/requests/{pending}/approve", status, code, body=body)

    world.check(
        [
            c("comment: 123", {"comment": 123}),
            c("comment: {}", {"comment": {}}),
            c("comment: 10 KB", {"comment": "c" * 10_000}),
            c("comment with NUL", {"comment": "ok\x00"}),
            c("duration: 'abc'", {"duration": "abc"}, code="invalid_duration"),
            c("duration: true", {"duration": True}, code="invalid_duration"),
            c("duration: -1", {"duration": -1}, code="invalid_duration"),
            c("duration: []", {"duration": []}, code="invalid_duration"),
            c("duration longer than asked", {"duration": "10m"}, code="invalid_duration"),
            c("duration far longer than asked", {"duration": 10**7}, code="invalid_duration"),
            c("unknown field", {"comment": "ok", "approvals": 5}),
            *_body_cases("bob", "/v1/requests/{pending}/approve"),
            *_unknown_id_cases("bob", "POST", "/approve", {}),
        ]
    )


def test_deny(world: World) -> None:
    def c(name: str, body: Any) -> Case:
        return Case(
            name, "bob", "POST", "/v1/requests/{pending}/deny", 400, "invalid_input", body=body
        )

    world.check(
        [
            c("reason missing", {}),
            c("reason: null", {"reason": None}),
            c("reason: ''", {"reason": ""}),
            c("reason: blank", {"reason": "   \n\t"}),
            c("reason: 123", {"reason": 123}),
            c("reason: 10 KB", {"reason": "n" * 10_000}),
            c("reason with NUL", {"reason": "no\x00"}),
            c("unknown field", {"reason": "no", "state": "approved"}),
            *_body_cases("bob", "/v1/requests/{pending}/deny"),
            *_unknown_id_cases("bob", "POST", "/deny", {"reason": "no"}),
        ]
    )


def test_cancel(world: World) -> None:
    world.check(
        [
            Case(
                "unknown field",
                "alice",
                "POST",
                "/v1/requests/{pending}/cancel",
                400,
                "invalid_input",
                body={"state": "approved"},
            ),
            *_body_cases("alice", "/v1/requests/{pending}/cancel"),
            *_unknown_id_cases("alice", "POST", "/cancel", {}),
        ]
    )


def _rsa_1024_line() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def _ssh_string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _dsa_line() -> str:
    n = dsa.generate_parameters(key_size=1024).generate_private_key().public_key().public_numbers()
    mp = [
        v.to_bytes((v.bit_length() + 8) // 8, "big")
        for v in (n.parameter_numbers.p, n.parameter_numbers.q, n.parameter_numbers.g, n.y)
    ]
    blob = _ssh_string(b"ssh-dss") + b"".join(_ssh_string(m) for m in mp)
    return "ssh-dss " + base64.b64encode(blob).decode() + " dsa@test"


def test_certificate(world: World) -> None:
    ed = user_key_line()
    ed_type, ed_b64 = ed.split()[:2]
    raw_ed = base64.b64decode(ed_b64)
    sk_blob = (
        _ssh_string(b"sk-ssh-ed25519@openssh.com")
        + _ssh_string(raw_ed[-32:])
        + _ssh_string(b"ssh:")
    )

    def c(name: str, body: Any, status: int = 400, code: str = "invalid_key") -> Case:
        return Case(
            name, "alice", "POST", "/v1/requests/{approved}/certificate", status, code, body=body
        )

    world.check(
        [
            c("public_key missing", {}, code="invalid_input"),
            c("public_key: 5", {"public_key": 5}, code="invalid_input"),
            c("public_key: null", {"public_key": None}, code="invalid_input"),
            c("public_key: []", {"public_key": [ed]}, code="invalid_input"),
            c("garbage", {"public_key": "hello world"}, code="unsupported_key_type"),
            c("empty", {"public_key": ""}),
            c("type only", {"public_key": "ssh-ed25519"}),
            c("not base64", {"public_key": "ssh-ed25519 !!!notbase64!!!"}),
            c(
                "truncated blob",
                {"public_key": f"ssh-ed25519 {base64.b64encode(raw_ed[:-5]).decode()}"},
            ),
            c(
                "trailing bytes in blob",
                {"public_key": f"ssh-ed25519 {base64.b64encode(raw_ed + b'x').decode()}"},
            ),
            c("type mismatch", {"public_key": f"ssh-rsa {ed_b64}"}),
            c("NUL in comment", {"public_key": f"{ed_type} {ed_b64} me\x00"}),
            c("escape in comment", {"public_key": f"{ed_type} {ed_b64} \x1b[2J"}),
            c("unicode comment", {"public_key": f"{ed_type} {ed_b64} ünï"}),
            c("two keys", {"public_key": f"{ed}\n{user_key_line()}"}),
            c("DSA", {"public_key": _dsa_line()}, code="unsupported_key_type"),
            c("certificate", {"public_key": world.certificate_line}, code="certificate_as_key"),
            c("RSA 1024", {"public_key": _rsa_1024_line()}, code="weak_key"),
            c(
                "security key",
                {"public_key": "sk-ssh-ed25519@openssh.com " + base64.b64encode(sk_blob).decode()},
                code="unsupported_key_type",
            ),
            c(
                "over 16 KiB",
                {"public_key": f"{ed_type} {ed_b64} " + "c" * (17 * 1024)},
                413,
                "key_too_large",
            ),
            c("unknown field", {"public_key": ed, "principals": ["root"]}, code="invalid_input"),
            *_body_cases("alice", "/v1/requests/{approved}/certificate"),
            *_unknown_id_cases("alice", "POST", "/certificate", {"public_key": ed}),
        ]
    )


def test_revoke(world: World) -> None:
    s = world.serial

    def c(
        name: str,
        serial: str,
        body: Any = None,
        status: int = 404,
        code: str = "not_found",
        signed: str | None = None,
    ) -> Case:
        return Case(
            name,
            "alice",
            "POST",
            f"/v1/certificates/{serial}/revoke",
            status,
            code,
            body=body or {},
            signed_path=None if signed is None else f"/v1/certificates/{signed}/revoke",
        )

    world.check(
        [
            c("serial abc", "abc"),
            c("serial -1", "-1"),
            c("serial 0", "0"),
            c("serial 2**63", str(2**63)),
            c("serial 2**64", str(2**64)),
            c("serial 10**400", "9" * 400),
            c("serial 1 (none such)", "1"),
            c("serial 1.0", "1.0"),
            c("serial 0x10", "0x10"),
            c("serial with a sign", f"+{s}"),
            c("serial with underscores", f"{s[:3]}_{s[3:]}"),
            c("serial with spaces", quote(f" {s} "), signed=f" {s} "),
            c(
                "serial in Arabic-Indic digits",
                quote("".join(chr(0x660 + int(d)) for d in s)),
                signed="".join(chr(0x660 + int(d)) for d in s),
            ),
            c("serial with NUL", f"{s}%00", signed=f"{s}\x00"),
            c("reason: 123", s, {"reason": 123}, 400, "invalid_input"),
            c("reason: 10 KB", s, {"reason": "r" * 10_000}, 400, "invalid_input"),
            c("reason with NUL", s, {"reason": "done\x00"}, 400, "invalid_input"),
            c("unknown field", s, {"reason": "done", "serial": "1"}, 400, "invalid_input"),
            *_body_cases("alice", f"/v1/certificates/{s}/revoke"),
        ]
    )


def test_audit_since(world: World) -> None:
    def c(name: str, query: str) -> Case:
        return Case(name, "root", "GET", "/v1/audit", 400, "invalid_input", query=query)

    world.check(
        [
            c("since=abc", "since=abc"),
            c("since=-1", "since=-1"),
            c("since=1e5", "since=1e5"),
            c("since=19 digits", "since=" + "9" * 19),
            c("since=superscript", "since=" + quote("\u00b2")),
            c("since=Arabic-Indic", "since=" + quote("\u0661")),
            c("since=empty", "since="),
        ]
    )


def test_unicode_round_trips(world: World) -> None:
    """Unicode that is valid text is kept as it was sent, in the API and in the audit log."""
    alice, root = world.users["alice"], world.users["root"]
    # (Not invisible format characters such as U+200D: test_smaller_holes.)
    reason = "naïve — 🚀 ❤\ufe0f 中文 עברית tab\there"
    r = alice.post("/v1/requests", {**DEMO, "reason": reason})
    assert r.status_code == 201 and r.json["reason"] == reason
    assert alice.get(f"/v1/requests/{r.json['id']}").json["reason"] == reason
    export = root.get("/v1/audit").get_data(as_text=True)
    created = [
        json.loads(line)
        for line in export.splitlines()
        if r.json["id"] in line and "request.created" in line
    ]
    assert created and created[0]["data"]["reason"] == reason


# ---- property tests: random JSON never makes a 5xx ------------------------------------------

_FIELDS = ["target", "duration", "reason", "break_glass", "comment", "public_key", "approved"]
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["demo", "prod-db", "5m", "1h", "INC-1", "", "0", user_key_line()]),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_bodies = st.one_of(
    st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=4),
    _json,
)

_HYPO = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize(
    "endpoint", ["requests", "approve", "deny", "cancel", "certificate", "revoke"]
)
def test_random_json_never_fails_the_server(world: World, endpoint: str) -> None:
    path, who = {
        "requests": ("/v1/requests", "alice"),
        "approve": ("/v1/requests/{pending}/approve", "bob"),
        "deny": ("/v1/requests/{pending}/deny", "bob"),
        "cancel": ("/v1/requests/{pending}/cancel", "alice"),
        "certificate": ("/v1/requests/{approved}/certificate", "alice"),
        "revoke": ("/v1/certificates/{serial}/revoke", "alice"),
    }[endpoint]
    caller = world.users[who]

    @_HYPO
    @given(body=_bodies)
    def run(body: Any) -> None:
        r = caller.post(world.fmt(path), body)
        assert r.status_code < 500, (body, r.get_data(as_text=True)[:300])
        if r.status_code >= 400:
            assert_problem(r, r.status_code)

    run()


@_HYPO
@given(data=st.binary(max_size=300))
def test_random_bytes_never_fail_the_server(world: World, data: bytes) -> None:
    r = world.users["alice"].call("POST", "/v1/requests", raw=data, headers=_json_ct())
    assert r.status_code < 500, (data, r.get_data(as_text=True)[:300])


@_HYPO
@given(
    rid=st.text(min_size=1, max_size=80).filter(
        lambda t: "\n" not in t and "\r" not in t and "/" not in t
    )
)
def test_random_request_ids_never_fail_the_server(world: World, rid: str) -> None:
    bob = world.users["bob"]
    for suffix, body in (("", None), ("/approve", {})):
        path = f"/v1/requests/{rid}{suffix}"
        r = bob.call(
            "GET" if body is None else "POST",
            f"/v1/requests/{quote(rid, safe='')}{suffix}",
            body,
            signed_path=path,
        )
        assert r.status_code < 500, (rid, r.get_data(as_text=True)[:300])


def test_unsigned_garbage_is_refused_before_parsing(world: World) -> None:
    """Without a signature nothing is parsed: a 401 (or a 413 for a huge body), never a 5xx."""
    c = world.app.test_client()
    before = snapshot(world.app)
    assert_problem(
        c.post("/v1/requests", data=_deep(1000), content_type="application/json"),
        401,
        "auth_failed",
    )
    assert_problem(
        c.post("/v1/requests", data=b"x" * (2 * MB), content_type="application/json"),
        413,
        "body_too_large",
    )
    assert_unchanged(before, snapshot(world.app), allowed_events=("auth.failed",))
