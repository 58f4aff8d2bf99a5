"""Schemathesis against the `/v1/openapi.json` of a running `jit-ssh serve`, on SQLite
and on PostgreSQL: bad input at every endpoint gets a 4xx, never a 5xx, and a
refused call leaves the database as it was.

Schemathesis generates the cases (valid ones, and invalid ones: wrong types,
missing and unknown fields, odd Unicode, NUL bytes, huge numbers, raw bytes as
JSON) from the server's own OpenAPI document. Each case is then signed as one
of the enrolled people (an engineer, an on-call engineer, an approver, an admin)
over exactly the bytes that are sent, so bodies get past authentication and
reach the handlers; path parameters are often swapped for real request ids and
serials in every state, so approve/deny/cancel/fetch/revoke run against real
rows. A few cases keep schemathesis' own bogus signature header instead.

We sign and send ourselves (httpx) instead of ``case.call()``: the signature
covers the path as the server decodes it, the query exactly as sent and the
SHA-256 of the body bytes, so we must own the serialisation. Schemathesis'
own response checks (status codes, content types and response schemas as
documented) then run on each response.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server.openapi import spec

from .helpers import Deployment, Person, ServerProcess, new_key_line, pg_schema, pg_url

#: Cases per operation and generation mode (13 operations, 2 modes, 2 databases: about a
#: minute and a half). Raise it to hunt: JIT_SSH_FUZZ_EXAMPLES=500.
EXAMPLES = int(os.environ.get("JIT_SSH_FUZZ_EXAMPLES", "20"))

# Negative cases need something to get wrong: a parameter, a body or the signature header.
CASES = [
    (method.upper(), path, mode)
    for path, ops in spec()["paths"].items()
    for method, op in ops.items()
    for mode in ("positive", "negative")
    if mode == "positive" or op.get("parameters") or op.get("requestBody") or op.get("security")
]

#: Tables a refused call must leave alone (audit_events and nonces do grow: a refusal is audited).
BUSINESS_TABLES = (
    "users",
    "user_groups",
    "user_roles",
    "ssh_keys",
    "requests",
    "approvals",
    "certificates",
    "revocations",
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass
class World:
    dep: Deployment
    server: ServerProcess
    people: dict[str, Person]
    schema: Any
    #: (method, path template, status, problem code) -> calls
    outcomes: Counter[tuple[str, str, int, str]] = field(default_factory=Counter)

    @property
    def url(self) -> str:
        return self.server.url

    def snapshot(self) -> dict[str, Any]:
        from sqlalchemy import text

        with self.dep.engine().connect() as c:
            counts = {
                t: c.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in BUSINESS_TABLES
            }
            states = sorted(
                tuple(r) for r in c.execute(text("SELECT id, state, granted_seconds FROM requests"))
            )
        return {"counts": counts, "states": states}

    def real_request(self, state: str) -> tuple[str, str | None]:
        """A fresh request in ``state`` (and its certificate's serial, if it has one)."""
        olga, alice, bob = self.people["olga"], self.people["alice"], self.people["bob"]
        if state == "pending":
            return str(
                _ok(alice.call(self.url, "POST", "/v1/requests", {"target": "prod-db"}))["id"]
            ), None
        rid = str(_ok(olga.call(self.url, "POST", "/v1/requests", {"target": "demo"}))["id"])
        serial = None
        if state in ("issued", "revoked"):
            cert = _ok(
                olga.call(
                    self.url,
                    "POST",
                    f"/v1/requests/{rid}/certificate",
                    {"public_key": new_key_line()},
                )
            )
            serial = str(cert["serial"])
            if state == "revoked":
                _ok(
                    bob.call(
                        self.url, "POST", f"/v1/certificates/{serial}/revoke", {"reason": "fuzz"}
                    )
                )
        elif state == "cancelled":
            _ok(olga.call(self.url, "POST", f"/v1/requests/{rid}/cancel"))
        return rid, serial


def _ok(resp: httpx.Response) -> Any:
    assert resp.status_code < 300, (resp.status_code, resp.text[:300])
    return resp.json()


def _body_bytes(case: Any, unicode_raw: bool) -> tuple[bytes | None, str | None]:
    if isinstance(case.body, NotSet):
        return None, None
    media = case.media_type or "application/json"
    if isinstance(case.body, bytes):
        return case.body, media
    if "json" in media:
        return json.dumps(case.body, ensure_ascii=not unicode_raw).encode(
            "utf-8", "surrogatepass"
        ), media
    return str(case.body).encode("utf-8", "surrogatepass"), media


def _send(world: World, case: Any, who: Person | None, unicode_raw: bool) -> httpx.Response:
    from ca import request_signing as rs
    from ca.sshsig import sign

    path = case.formatted_path
    query = urllib.parse.urlencode(
        {
            k: (v if isinstance(v, (str, list)) else json.dumps(v))
            for k, v in (case.query or {}).items()
        },
        doseq=True,
    )
    body, media = _body_bytes(case, unicode_raw)
    headers: dict[str, str] = {}
    for name, value in (case.headers or {}).items():
        value = str(value)
        if (
            _TOKEN.fullmatch(name)
            and value.isprintable()
            and value.isascii()
            and value == value.strip()
        ):
            headers[name] = value
    if media and body is not None:
        headers["Content-Type"] = media
    if who is not None:
        # The server verifies the path as it decodes it (UTF-8, invalid bytes replaced), the
        # query string as sent, and the body's bytes.
        signed_path = urllib.parse.unquote(path, encoding="utf-8", errors="replace")
        ts, nonce = int(time.time()), secrets.token_urlsafe(18)
        try:
            msg = rs.signing_message(
                method=case.method,
                path=signed_path,
                query=query,
                body=body or b"",
                timestamp=ts,
                nonce=nonce,
                user=who.name,
            )
            headers.update(
                {
                    rs.HEADER_USER: who.name,
                    rs.HEADER_TIMESTAMP: str(ts),
                    rs.HEADER_NONCE: nonce,
                    rs.HEADER_SIGNATURE: base64.b64encode(
                        sign(msg, namespace=rs.NAMESPACE, private_key=who.key)
                    ).decode(),
                }
            )
        except ValueError:
            pass  # a newline in the decoded path cannot be signed: send it unsigned
    url = world.url + path + (f"?{query}" if query else "")
    return httpx.request(case.method, url, content=body, headers=headers, timeout=30)


def _world(tmp: Path, database: str, stack: ExitStack) -> World:
    schema_name = stack.enter_context(pg_schema("rel_fuzz")) if database == "postgresql" else None
    dep = Deployment(tmp, database_url=pg_url(schema_name) if schema_name else None)
    stack.callback(dep.close)
    people = {
        "olga": Person("olga", ("oncall",)),
        "alice": Person("alice", ("engineers",)),
        "bob": Person("bob", ("approvers",), ("requester", "approver")),
        "root": Person("root-admin", (), ("admin",)),
    }
    dep.enrol(*people.values())
    srv = dep.server(workers=2, threads=4).start()
    schema = schemathesis.openapi.from_url(srv.url + "/v1/openapi.json")
    return World(dep=dep, server=srv, people=people, schema=schema)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    with ExitStack() as stack:
        w = _world(tmp_path_factory.mktemp(f"fuzz-{request.param}"), request.param, stack)
        yield w
        log = w.server.logs()
        assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode}" for m, p, mode in CASES]
)
def test_schemathesis_no_5xx_and_refusals_change_nothing(
    world: World, method: str, path: str, mode: str
) -> None:
    operation = world.schema[path][method]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))
    has_id = "{request_id}" in path
    has_serial = "{serial}" in path
    people = list(world.people.values())
    bob = world.people["bob"]  # the approver: twice as likely, so approvals and denials happen

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=strategy,
        who=st.sampled_from([*people, *people, *people, bob, bob, None]),
        real=st.sampled_from([None, "pending", "approved", "issued", "revoked", "cancelled"]),
        unicode_raw=st.booleans(),
        real_values=st.booleans(),
    )
    def run(
        case: Any, who: Person | None, real: str | None, unicode_raw: bool, real_values: bool
    ) -> None:
        if real_values and isinstance(case.body, dict):
            # A known target and a well-formed key let the rest of the body reach deeper checks.
            if "target" in case.body:
                case.body = {
                    **case.body,
                    "target": "prod-db" if (who and who.name == "alice") else "demo",
                }
            if "public_key" in case.body:
                case.body = {**case.body, "public_key": new_key_line()}
        if real is not None and has_id:
            case.path_parameters = {
                **(case.path_parameters or {}),
                "request_id": world.real_request(real)[0],
            }
        elif real in ("issued", "revoked") and has_serial:
            case.path_parameters = {
                **(case.path_parameters or {}),
                "serial": world.real_request(real)[1],
            }
        before = world.snapshot()
        resp = _send(world, case, who, unicode_raw)
        is_problem = resp.headers.get("content-type", "").startswith("application/problem+json")
        world.outcomes[
            (method, path, resp.status_code, resp.json().get("code", "") if is_problem else "")
        ] += 1
        assert resp.status_code < 500, (
            f"{resp.status_code} for {case.method} {case.formatted_path}: {resp.text[:500]}"
        )
        assert "Traceback" not in resp.text
        case.validate_response(
            resp,
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )
        if resp.status_code >= 400:
            assert is_problem, (resp.status_code, resp.headers.get("content-type"), resp.text[:300])
            problem = resp.json()
            assert problem["status"] == resp.status_code and problem["code"], problem
            after = world.snapshot()
            assert after == before, (
                f"a refused call ({resp.status_code} {problem['code']}) changed the database"
            )

    run()
    statuses = {k[2] for k in world.outcomes if k[:2] == (method, path)}
    assert statuses, "no case was sent"
    assert statuses - {401}, (
        f"no call to {method} {path} got past authentication: the fuzz never reached the handler"
    )
