"""Operations endpoints: ``/healthz`` for load balancers, ``/metrics`` for Prometheus."""

from __future__ import annotations

from flask import Blueprint, Response
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select, text

from server.deps import deps
from server.errors import DatabaseUnavailable
from server.metrics import BUCKETS
from server.models import AccessRequest, AuthFailureCount, Certificate, Revocation
from server.problems import problem

__all__ = ["ops"]

ops = Blueprint("ops", __name__)


@ops.get("/healthz")
def healthz() -> ResponseReturnValue:
    d = deps()
    try:
        with d.engine.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as e:
        return problem(DatabaseUnavailable(f"database check failed: {type(e).__name__}"))
    return {
        "status": "ok",
        "policy_version": d.service.policy.get().version,
        "ca": d.keyring.signing_key.fingerprint,
    }


@ops.get("/metrics")
def metrics() -> ResponseReturnValue:
    d = deps()
    lines = []
    with d.service._tx() as s:
        lines.append("# HELP jit_ssh_requests Access requests by state.")
        lines.append("# TYPE jit_ssh_requests gauge")
        for state, n in s.execute(
            select(AccessRequest.state, func.count()).group_by(AccessRequest.state)
        ):
            lines.append(f'jit_ssh_requests{{state="{state}"}} {n}')
        lines.append("# HELP jit_ssh_certificates_issued_total Certificates issued.")
        lines.append("# TYPE jit_ssh_certificates_issued_total counter")
        lines.append(
            f"jit_ssh_certificates_issued_total {s.scalar(select(func.count()).select_from(Certificate))}"
        )
        lines.append("# HELP jit_ssh_revocations_total Certificates revoked.")
        lines.append("# TYPE jit_ssh_revocations_total counter")
        lines.append(
            f"jit_ssh_revocations_total {s.scalar(select(func.count()).select_from(Revocation))}"
        )
        lines.append("# HELP jit_ssh_auth_failures_total Failed API authentications.")
        lines.append("# TYPE jit_ssh_auth_failures_total counter")
        failures = s.scalar(
            select(func.coalesce(func.sum(AuthFailureCount.count), 0)).where(
                AuthFailureCount.code != ""
            )
        )
        lines.append(f"jit_ssh_auth_failures_total {failures}")
    counts, oldest = d.outbox.stats()
    lines.append("# HELP jit_ssh_outbox_messages Notifications in the outbox by state.")
    lines.append("# TYPE jit_ssh_outbox_messages gauge")
    for name in ("pending", "delivered", "dead"):
        lines.append(f'jit_ssh_outbox_messages{{state="{name}"}} {counts.get(name, 0)}')
    lines.append(
        "# HELP jit_ssh_outbox_oldest_pending_seconds Age of the oldest undelivered notification."
    )
    lines.append("# TYPE jit_ssh_outbox_oldest_pending_seconds gauge")
    lines.append(f"jit_ssh_outbox_oldest_pending_seconds {oldest:.0f}")
    lines.append("# HELP jit_ssh_http_request_duration_seconds Request latency (this worker).")
    lines.append("# TYPE jit_ssh_http_request_duration_seconds histogram")
    for endpoint, b in d.metrics.snapshot():
        lbl = endpoint.replace('"', "")
        for i, le in enumerate(BUCKETS):
            lines.append(
                f'jit_ssh_http_request_duration_seconds_bucket{{endpoint="{lbl}",le="{le}"}} {b.within[i]}'
            )
        lines.append(
            f'jit_ssh_http_request_duration_seconds_bucket{{endpoint="{lbl}",le="+Inf"}} {b.count}'
        )
        lines.append(
            f'jit_ssh_http_request_duration_seconds_sum{{endpoint="{lbl}"}} {b.seconds:.6f}'
        )
        lines.append(f'jit_ssh_http_request_duration_seconds_count{{endpoint="{lbl}"}} {b.count}')
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")
