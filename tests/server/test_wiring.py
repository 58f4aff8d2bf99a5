"""The wiring: one typed dependency graph, built without Flask, reached one way by views."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from server.audit import AuditWriter
from server.deps import Deps, build_deps
from server.keystore import LiveKeyring
from server.metrics import Metrics
from server.services import Service

from .conftest import TEST_POLICY, Clock


def test_the_graph_builds_without_flask() -> None:
    code = (
        "import sys, server.deps, server.services, server.audit, server.models\n"
        "assert 'flask' not in sys.modules and 'werkzeug' not in sys.modules, 'Flask imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_build_deps_gives_typed_dependencies(tmp_path: Path, clock: Clock) -> None:
    from server.config import ServerConfig

    policy = tmp_path / "policy.toml"
    policy.write_text(TEST_POLICY)
    cfg = ServerConfig(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'jit.sqlite3'}",
        policy_path=policy,
        audit_checkpoint_every=7,
    )
    d = build_deps(cfg, clock=clock, say=lambda m: None)
    try:
        assert isinstance(d, Deps) and isinstance(d.service, Service)
        assert isinstance(d.keyring, LiveKeyring) and isinstance(d.metrics, Metrics)
        # One audit writer, shared by the service, holding the interval from the config.
        assert isinstance(d.audit, AuditWriter) and d.service.audit is d.audit
        assert d.audit.checkpoint_every == 7
        assert d.service.clock is clock and d.clock is clock
    finally:
        d.engine.dispose()


def test_ops_endpoints_have_their_own_blueprint(app: Any) -> None:
    rules = {r.rule: r.endpoint for r in app.url_map.iter_rules()}
    assert rules["/healthz"] == "ops.healthz" and rules["/metrics"] == "ops.metrics"
    assert isinstance(app.extensions["jit_ssh"], Deps)
    c = app.test_client()
    assert c.get("/healthz").json["status"] == "ok"
    c.get("/v1/targets")
    metrics = c.get("/metrics").text
    assert 'jit_ssh_http_request_duration_seconds_count{endpoint="/v1/targets"} 1' in metrics


def test_api_authentication_is_the_api_blueprints(app: Any) -> None:
    from server import api, api_auth

    assert api.signed is api_auth.signed
    r = app.test_client().get("/v1/whoami")
    assert r.status_code == 401 and r.json["code"] == "auth_failed"
