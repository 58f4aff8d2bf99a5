"""Faults with real processes: two replicas on one PostgreSQL, `kill -9` under load,
and a database outage (a TCP proxy in front of PostgreSQL, stopped and started).

What must hold whatever happens: every certificate a client received is in the
certificates table and has its ``certificate.issued`` audit event; serials are
unique; approvals are counted once; no request is left half done; the audit
export verifies (`jit-ssh audit verify`); and a server error is a 503 with the
code ``database_unavailable``, never a 500 and never a certificate.

Each test is bounded in count and time and stops what it started.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import httpx
import pytest

from .helpers import (
    Deployment,
    LoadResult,
    Person,
    Received,
    ServerProcess,
    TcpProxy,
    check_consistency,
    export_and_verify_audit,
    issue_loop,
    json_problem,
    new_key_line,
    pg_schema,
    pg_url,
    run_threads,
    server_errors,
)


def _people() -> dict[str, Person]:
    # Fresh keys per test: a Person holds its private key.
    return {
        **{f"oncall{i}": Person(f"oncall{i}", ("oncall",)) for i in range(4)},
        "alice": Person("alice", ("engineers",)),
        "bob": Person("bob", ("approvers",), ("requester", "approver")),
        "carol": Person("carol", ("approvers",), ("requester", "approver")),
        "dave": Person("dave", ("approvers",), ("requester", "approver")),
        "auditor": Person("auditor", (), ("admin",)),
    }


def _db_count(dep: Deployment, sql: str, **params: Any) -> Any:
    from sqlalchemy import text

    with dep.engine().connect() as c:
        return c.execute(text(sql), params).scalar_one()


def _wait_until(pred: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ---- two replicas, one PostgreSQL -------------------------------------------------------------


def test_two_replicas_on_one_postgresql(tmp_path: Path) -> None:
    with pg_schema("rel_two") as schema:
        dep = Deployment(tmp_path, database_url=pg_url(schema))
        try:
            p = _people()
            dep.enrol(*p.values())
            a, b = dep.server(), dep.server()
            a.start()
            b.start()
            urls = [a.url, b.url]
            result = LoadResult()
            stop = threading.Event()
            deadline = time.monotonic() + 60
            approval_outcomes: list[dict[str, Any]] = []

            def two_approval_requests() -> None:
                from client.http import ApiError

                def approve(who: str, url: str, rid: str) -> tuple[str, int, str]:
                    with p[who].client(url) as api:
                        try:
                            api.post(
                                f"/v1/requests/{rid}/approve", {"comment": f"{who} via {url[-5:]}"}
                            )
                            return who, 200, "ok"
                        except ApiError as e:
                            return who, e.status, e.code

                def fetch(url: str, rid: str, key: str) -> dict[str, Any]:
                    with p["alice"].client(url) as api:
                        return api.post(f"/v1/requests/{rid}/certificate", {"public_key": key})  # type: ignore[no-any-return]

                with ThreadPoolExecutor(4) as pool:
                    for k in range(6):
                        if time.monotonic() > deadline:
                            return
                        with p["alice"].client(urls[k % 2]) as api:
                            rid = api.post(
                                "/v1/requests", {"target": "prod-db", "duration": "20m"}
                            )["id"]
                        # Three approvers race through both replicas; bob twice, once through each.
                        votes = list(
                            pool.map(
                                lambda args: approve(*args),
                                [
                                    ("bob", a.url, rid),
                                    ("bob", b.url, rid),
                                    ("carol", b.url, rid),
                                    ("dave", a.url, rid),
                                ],
                            )
                        )
                        key = new_key_line()
                        # The requester fetches through both replicas at once, with the same key.
                        certs = list(pool.map(lambda u: fetch(u, rid, key), urls))
                        approval_outcomes.append({"id": rid, "votes": votes, "certs": certs})
                        for c in certs:
                            result.add(Received(rid, int(c["serial"]), c["certificate"], key))

            loops = [
                lambda person=person: issue_loop(
                    person, urls, result, iterations=15, deadline=deadline, stop=stop
                )
                for person in (p[f"oncall{i}"] for i in range(4))
            ]
            run_threads([*loops, two_approval_requests], timeout=90)

            assert result.statuses["issued"] == 4 * 15, result.statuses
            assert not result.unsure
            assert len(approval_outcomes) == 6
            for out in approval_outcomes:
                ok = [who for who, status, _ in out["votes"] if status == 200]
                assert len(ok) == 2 and len(set(ok)) == 2, out["votes"]
                refused = [(status, code) for _, status, code in out["votes"] if status != 200]
                assert all(
                    s == 409 and c in ("already_decided", "invalid_state") for s, c in refused
                ), out["votes"]
                assert len({c["serial"] for c in out["certs"]}) == 1, (
                    "two fetches with one key got two certificates"
                )
                assert sorted(c["reissued"] for c in out["certs"]) == [False, True]
            # Both fetches of a two-approval request report one serial: keep it once.
            received = list({r.serial: r for r in result.received}.values())

            events = export_and_verify_audit(dep, p["auditor"], b.url)
            counts = check_consistency(dep, events, received)
            assert counts["certificates"] == 4 * 15 + 6
            with dep.engine().connect() as c:
                from sqlalchemy import text

                approved = c.execute(
                    text("SELECT count(*) FROM approvals WHERE decision = 'approve'")
                ).scalar_one()
            assert approved == 6 * 2
            assert server_errors(a, b) == []
        finally:
            dep.close()


# ---- kill -9 under load -----------------------------------------------------------------------


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_kill9_under_load_then_restart(tmp_path: Path, database: str) -> None:
    with pg_schema("rel_kill") if database == "postgresql" else nullcontext(None) as schema:
        dep = Deployment(tmp_path, database_url=pg_url(schema) if schema else None)
        try:
            p = _people()
            dep.enrol(*p.values())
            srv = dep.server(workers=2, threads=4).start()
            result = LoadResult()
            stop = threading.Event()
            deadline = time.monotonic() + 45
            issued = lambda: result.statuses["issued"]  # noqa: E731

            def crash_and_restart() -> None:
                try:
                    _wait_until(lambda: issued() >= 25, 20, "25 issuances before the crash")
                    srv.kill9()
                    at_kill = issued()
                    time.sleep(0.3)
                    srv.start()
                    _wait_until(
                        lambda: issued() >= at_kill + 25, 20, "25 issuances after the restart"
                    )
                finally:
                    stop.set()

            loops = [
                lambda person=person: issue_loop(
                    person, [srv.url], result, iterations=10_000, deadline=deadline, stop=stop
                )
                for person in (p[f"oncall{i}"] for i in range(4))
            ]
            run_threads([*loops, crash_and_restart], timeout=60)
            assert srv.starts == 2 and srv.alive()
            assert result.statuses["unreachable"] > 0, (
                "the crash happened while no call was in flight"
            )

            # A fetch whose answer was lost in the crash is simply asked again, with the
            # same key: the certificate it may have committed, or a fresh one, never two.
            for name, rid, key in result.unsure:
                with p[name].client(srv.url) as api:
                    cert = api.post(f"/v1/requests/{rid}/certificate", {"public_key": key})
                result.add(Received(rid, int(cert["serial"]), cert["certificate"], key))

            events = export_and_verify_audit(dep, p["auditor"], srv.url)
            counts = check_consistency(dep, events, result.received)
            assert counts["received"] >= 50
            assert server_errors(srv) == []
        finally:
            dep.close()


# ---- the database goes away, and comes back ---------------------------------------------------


def _problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    body = json_problem(resp)
    assert body["code"] == code, body
    assert "certificate" not in body and "ssh-ed25519-cert" not in resp.text
    return body


def _signed(person: Person, url: str, method: str, path: str, body: Any = None) -> httpx.Response:
    return person.call(url, method, path, body)


def _proxied(
    tmp_path: Path, schema: str
) -> tuple[Deployment, TcpProxy, ServerProcess, dict[str, Person]]:
    proxy = TcpProxy().start()
    dep = Deployment(tmp_path, database_url=pg_url(schema))
    p = _people()
    dep.enrol(*p.values())
    srv = dep.server(workers=2, threads=4, database_url=pg_url(schema, port=proxy.port)).start()
    return dep, proxy, srv, p


def test_database_down_then_back_without_restart(tmp_path: Path) -> None:
    with pg_schema("rel_down") as schema:
        dep, proxy, srv, p = _proxied(tmp_path, schema)
        try:
            olga, alice, bob, carol = p["oncall0"], p["alice"], p["bob"], p["carol"]
            url = srv.url
            with olga.client(url) as api:
                first = api.post("/v1/requests", {"target": "demo"})
                api.post(f"/v1/requests/{first['id']}/certificate", {"public_key": new_key_line()})
                waiting = api.post("/v1/requests", {"target": "demo"})  # approved, not fetched yet
            assert waiting["state"] == "approved"
            with alice.client(url) as api:
                pending = api.post("/v1/requests", {"target": "prod-db"})
            with bob.client(url) as api:
                api.post(f"/v1/requests/{pending['id']}/approve", {})
            certs_before = _db_count(dep, "SELECT count(*) FROM certificates")
            key = new_key_line()
            pid = srv.proc.pid  # type: ignore[union-attr]

            proxy.stop()
            # Several rounds, so that both workers (and their pooled connections) meet the outage.
            for _ in range(6):
                _problem(httpx.get(url + "/healthz", timeout=10), 503, "database_unavailable")
                _problem(
                    _signed(olga, url, "POST", "/v1/requests", {"target": "demo"}),
                    503,
                    "database_unavailable",
                )
                _problem(
                    _signed(
                        olga,
                        url,
                        "POST",
                        f"/v1/requests/{waiting['id']}/certificate",
                        {"public_key": key},
                    ),
                    503,
                    "database_unavailable",
                )
                _problem(
                    _signed(carol, url, "POST", f"/v1/requests/{pending['id']}/approve", {}),
                    503,
                    "database_unavailable",
                )
                _problem(
                    _signed(olga, url, "GET", f"/v1/requests/{waiting['id']}"),
                    503,
                    "database_unavailable",
                )
                _problem(httpx.get(url + "/v1/krl", timeout=10), 503, "database_unavailable")
            # Nothing was issued or decided while the database was away.
            assert _db_count(dep, "SELECT count(*) FROM certificates") == certs_before
            assert (
                _db_count(dep, "SELECT state FROM requests WHERE id = :i", i=waiting["id"])
                == "approved"
            )
            assert (
                _db_count(
                    dep, "SELECT count(*) FROM approvals WHERE request_id = :i", i=pending["id"]
                )
                == 1
            )
            assert srv.alive()

            proxy.start()
            _wait_until(
                lambda: httpx.get(url + "/healthz", timeout=5).status_code == 200,
                15,
                "/healthz to recover",
            )
            # Recovered without a restart: the same processes answer, and every kind of call works.
            assert srv.alive() and srv.proc.pid == pid and srv.starts == 1  # type: ignore[union-attr]
            received = []
            with olga.client(url) as api:
                cert = api.post(f"/v1/requests/{waiting['id']}/certificate", {"public_key": key})
                assert cert["reissued"] is False
                received.append(
                    Received(waiting["id"], int(cert["serial"]), cert["certificate"], key)
                )
                fresh = api.post("/v1/requests", {"target": "demo"})
                k2 = new_key_line()
                cert = api.post(f"/v1/requests/{fresh['id']}/certificate", {"public_key": k2})
                received.append(Received(fresh["id"], int(cert["serial"]), cert["certificate"], k2))
            with carol.client(url) as api:
                assert api.post(f"/v1/requests/{pending['id']}/approve", {})["state"] == "approved"
            with alice.client(url) as api:
                k3 = new_key_line()
                cert = api.post(f"/v1/requests/{pending['id']}/certificate", {"public_key": k3})
                received.append(
                    Received(pending["id"], int(cert["serial"]), cert["certificate"], k3)
                )
            assert _db_count(dep, "SELECT count(*) FROM certificates") == certs_before + 3

            events = export_and_verify_audit(dep, p["auditor"], url)
            check_consistency(dep, events, received)
            assert server_errors(srv) == []

            # The checks bite: a certificate the server never recorded, or an issuance
            # whose audit event is missing, is reported.
            ghost = Received("feedfacefeedface", 4242, "ssh-ed25519-cert-v01@openssh.com AAAA", k2)
            with pytest.raises(AssertionError, match="not in the database"):
                check_consistency(dep, events, [*received, ghost])
            unaudited = [
                ev
                for ev in events
                if not (ev.type == "certificate.issued" and ev.request_id == fresh["id"])
            ]
            with pytest.raises(AssertionError, match="has 0 (certificate.)?issued events"):
                check_consistency(dep, unaudited, received)
        finally:
            dep.close()
            proxy.stop()


def test_database_flapping_under_load(tmp_path: Path) -> None:
    """The proxy is cut twice while clients issue: in-flight transactions die at any
    point. Clients see certificates or 503s, never a 500; afterwards nothing is half done."""
    with pg_schema("rel_flap") as schema:
        dep, proxy, srv, p = _proxied(tmp_path, schema)
        try:
            result = LoadResult()
            stop = threading.Event()
            deadline = time.monotonic() + 40
            issued = lambda: result.statuses["issued"]  # noqa: E731

            def flap() -> None:
                try:
                    for _ in range(2):
                        n = issued()
                        _wait_until(lambda: issued() >= n + 15, 15, "issuances before the cut")
                        proxy.stop()
                        time.sleep(0.7)
                        proxy.start()
                    n = issued()
                    _wait_until(
                        lambda: issued() >= n + 15, 15, "issuances after the database came back"
                    )
                finally:
                    stop.set()

            loops = [
                lambda person=person: issue_loop(
                    person, [srv.url], result, iterations=10_000, deadline=deadline, stop=stop
                )
                for person in (p[f"oncall{i}"] for i in range(3))
            ]
            run_threads([*loops, flap], timeout=60)

            assert srv.alive() and srv.starts == 1
            # Every failure was the clear one; none was a bug or a dropped connection.
            assert set(result.statuses) <= {"issued", "database_unavailable"}, result.statuses
            assert result.statuses["database_unavailable"] > 0, (
                "the outage was never seen by a client"
            )

            for name, rid, key in result.unsure:
                with p[name].client(srv.url) as api:
                    cert = api.post(f"/v1/requests/{rid}/certificate", {"public_key": key})
                result.add(Received(rid, int(cert["serial"]), cert["certificate"], key))
            events = export_and_verify_audit(dep, p["auditor"], srv.url)
            check_consistency(dep, events, result.received)
            assert server_errors(srv) == []
        finally:
            dep.close()
            proxy.stop()


def test_database_that_hangs_gets_a_fast_503(tmp_path: Path) -> None:
    """A database that stops answering must look like one that refuses: a 503 within
    seconds, not a call that hangs until a worker is killed."""
    with pg_schema("rel_hang") as schema:
        dep, proxy, srv, p = _proxied(tmp_path, schema)
        try:
            olga = p["oncall0"]
            assert olga.call(srv.url, "POST", "/v1/requests", {"target": "demo"}).status_code == 201
            # Open connections are cut (so pool_pre_ping notices); new ones are accepted, never answered.
            proxy.blackhole()
            limit = 8.0
            try:
                _problem(
                    httpx.get(srv.url + "/healthz", timeout=limit), 503, "database_unavailable"
                )
                _problem(
                    olga.call(srv.url, "POST", "/v1/requests", {"target": "demo"}, timeout=limit),
                    503,
                    "database_unavailable",
                )
            except httpx.TimeoutException as e:
                raise AssertionError(
                    f"the call hung for more than {limit} s while the database hung"
                ) from e
            proxy.stop()
            proxy.start()
            _wait_until(
                lambda: httpx.get(srv.url + "/healthz", timeout=5).status_code == 200,
                15,
                "/healthz to recover",
            )
            assert olga.call(srv.url, "POST", "/v1/requests", {"target": "demo"}).status_code == 201
        finally:
            proxy.stop()  # the hung calls end now: their connections are cut
            srv.kill9()
            dep.close()
