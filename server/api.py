"""The JSON API under ``/v1``. Views parse and serialise; ``server.services`` decides."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from flask import Blueprint, Response, g, request
from flask.typing import ResponseReturnValue

from ca import InvalidDuration, parse_duration

from .api_auth import authenticate_request, signed
from .auth import SigningKey
from .deps import deps
from .errors import Forbidden, InvalidInput
from .models import AccessRequest, GroupsSource, RequestState, Role, User

if TYPE_CHECKING:
    import policies
    from server.services.requests import WhoMayApprove

__all__ = ["api", "request_to_dict"]

api = Blueprint("api", __name__, url_prefix="/v1")


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat().replace("+00:00", "Z")


def _body() -> dict[str, object]:
    """The JSON object in the body (``{}`` when there is none)."""
    if not request.data:
        return {}
    if not (request.mimetype == "application/json"):
        raise InvalidInput("send the body as application/json", field="body")
    try:
        data = json.loads(request.get_data(as_text=False))
    except (ValueError, RecursionError):
        raise InvalidInput("the body is not valid JSON", field="body") from None
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    _check_unicode(data)
    return data


def _check_unicode(data: object) -> None:
    # JSON may spell a lone surrogate ("\ud800") and json.loads decodes UTF-8 with
    # 'surrogatepass': such a string is not text, and the database driver (or the
    # audit log's canonical JSON) fails on it later. Refuse it here, as bad input.
    # The depth is bounded: json.loads has already refused deeper nesting.
    stack: list[object] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInput(
                    "the body holds a string that is not valid Unicode (a lone surrogate)",
                    field="body",
                ) from None


def _duration(value: object, name: str) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidDuration(f"{name} must be seconds or a duration like '30m'", field=name)
    if isinstance(value, int):
        if value <= 0 or value > 10**7:
            raise InvalidDuration(f"{name} must be between 1 and 10000000 seconds", field=name)
        return timedelta(seconds=value)
    if isinstance(value, str):
        return parse_duration(value, field=name)
    raise InvalidDuration(f"{name} must be seconds or a duration like '30m'", field=name)


def request_to_dict(
    req: AccessRequest, *, base_url: str, approvers: WhoMayApprove | None = None
) -> dict[str, object]:
    """A request as the API shows it. ``approvers`` (one request's view, while it is
    pending) adds who may still approve it: the requester's wait shows it."""
    decision = req.stored_decision()
    cert = req.certificate
    out: dict[str, object] = {
        "id": req.id,
        "state": req.state,
        "requester": req.requester.name,
        "target": req.target,
        "reason": req.reason,
        "requested_seconds": req.requested_seconds,
        "duration_seconds": req.granted_seconds,
        "created_at": _iso(req.created_at),
        "pending_until": _iso(req.pending_until),
        "claim_until": _iso(req.claim_until),
        "decided_at": _iso(req.decided_at),
        "rule": req.rule,
        "policy_version": req.policy_version,
        "auto_approved": req.auto_approved,
        "break_glass": req.break_glass,
        "approvals_required": req.approvals_required,
        "approvals": [
            {
                "approver": a.approver.name,
                "decision": a.decision,
                "comment": a.comment,
                "duration_seconds": a.shortened_seconds,
                "at": _iso(a.created_at),
            }
            for a in req.approvals
        ],
        "deny_reason": req.deny_reason,
        "decision": decision.to_record(),
        "principals": list(decision.principals),
        "certificate": None
        if cert is None
        else {
            "serial": str(cert.serial),
            "key_id": cert.key_id,
            "valid_after": _iso(cert.valid_after),
            "valid_before": _iso(cert.valid_before),
            "principals": json.loads(cert.principals),
            "public_key_fingerprint": cert.public_key_fingerprint,
            "revoked": cert.revocation is not None,
        },
        "approval_url": f"{base_url.rstrip('/')}/requests/{req.id}",
        "groups_used": req.groups_used_list,
        "groups_source": None if req.groups_source is None else str(req.groups_source),
        "warn_before_seconds": _warn_before_seconds(req),
    }
    if approvers is not None:
        out["approvers"] = {
            "groups": list(approvers.groups),
            "users": list(approvers.users),
            "eligible": list(approvers.eligible),
            "eligible_total": approvers.eligible_total,
        }
    return out


def _warn_before_seconds(req: AccessRequest) -> int:
    """How long before its certificate expires the requester is warned: the rule's
    ``warn_before`` under the current policy (the default, 5 minutes, once the rule is gone)."""
    rule = None if req.rule is None else deps().service.policy.get().rule(req.rule)
    return 300 if rule is None else int(rule.warn_before.total_seconds())


def _out(req: AccessRequest, status: int = 200) -> tuple[dict[str, object], int]:
    """One request's view; while it is pending, with who may still approve it."""
    d = deps()
    approvers = d.service.who_may_approve(req) if req.state == RequestState.PENDING else None
    return request_to_dict(req, base_url=d.base_url, approvers=approvers), status


@api.post("/requests")
@signed
def create_request() -> ResponseReturnValue:
    body = _body()
    unknown = set(body) - {"target", "duration", "reason", "break_glass"}
    if unknown:
        raise InvalidInput(
            f"unknown field(s): {', '.join(sorted(unknown))[:200]}", field=sorted(unknown)[0][:64]
        )
    if "target" not in body:
        raise InvalidInput("target is required", field="target")
    bg = body.get("break_glass", False)
    if not isinstance(bg, bool):
        raise InvalidInput("break_glass must be true or false", field="break_glass")
    req = deps().service.submit(
        g.user,
        target=body["target"],
        duration=_duration(body.get("duration"), "duration"),
        reason=body.get("reason", ""),
        break_glass=bg,
    )
    return _out(req, 201)


@api.get("/requests/<request_id>")
@signed
def get_request(request_id: str) -> ResponseReturnValue:
    return _out(deps().service.get(g.user, request_id))


@api.get("/requests")
@signed
def list_requests() -> ResponseReturnValue:
    mine = request.args.get("mine") in ("1", "true")
    pending = request.args.get("pending_for_me") in ("1", "true")
    rows = deps().service.list(g.user, mine=mine, pending_for_me=pending)
    base = deps().base_url
    return {"requests": [request_to_dict(r, base_url=base) for r in rows]}


@api.post("/requests/<request_id>/approve")
@signed
def approve(request_id: str) -> ResponseReturnValue:
    body = _body()
    if set(body) - {"comment", "duration"}:
        raise InvalidInput("approve takes only comment and duration", field="body")
    req = deps().service.approve(
        g.user,
        request_id,
        comment=body.get("comment", ""),
        duration=_duration(body.get("duration"), "duration"),
    )
    return _out(req)


@api.post("/requests/<request_id>/deny")
@signed
def deny(request_id: str) -> ResponseReturnValue:
    body = _body()
    if set(body) - {"reason"}:
        raise InvalidInput("deny takes only reason", field="body")
    return _out(deps().service.deny(g.user, request_id, reason=body.get("reason")))


@api.post("/requests/<request_id>/cancel")
@signed
def cancel(request_id: str) -> ResponseReturnValue:
    if _body():
        raise InvalidInput("cancel takes no fields", field="body")
    return _out(deps().service.cancel(g.user, request_id))


@api.post("/requests/<request_id>/certificate")
@signed
def certificate(request_id: str) -> ResponseReturnValue:
    body = _body()
    if "public_key" not in body:
        raise InvalidInput("public_key is required", field="public_key")
    if set(body) - {"public_key"}:
        raise InvalidInput("certificate takes only public_key", field="body")
    r = deps().service.fetch_certificate(g.user, request_id, body["public_key"])
    return {
        "certificate": r.certificate,
        "serial": str(r.serial),
        "key_id": r.key_id,
        "principals": list(r.principals),
        "valid_after": _iso(r.valid_after),
        "valid_before": _iso(r.valid_before),
        "reissued": r.reissued,
    }


@api.post("/certificates/<serial>/revoke")
@signed
def revoke(serial: str) -> ResponseReturnValue:
    body = _body()
    if set(body) - {"reason"}:
        raise InvalidInput("revoke takes only reason", field="body")
    rev = deps().service.revoke(g.user, serial, reason=body.get("reason", ""))
    return {
        "serial": str(rev.serial),
        "revoked_at": _iso(rev.revoked_at),
        "revoked_by": rev.revoked_by,
    }


@api.get("/whoami")
@signed
def whoami() -> ResponseReturnValue:
    u: User = g.user
    out: dict[str, object] = {
        "user": u.name,
        "groups": list(u.group_names),
        "roles": list(u.role_names),
        "groups_source": str(u.groups_source or GroupsSource.LOCAL),
    }
    key: SigningKey | None = g.get("signing_key")
    if key is not None and key.expires_at is not None:
        out["enrolment_expires_at"] = _iso(key.expires_at)
    return out


@api.get("/ca.pub")
def ca_pub() -> ResponseReturnValue:
    return Response(deps().keyring.trusted_user_ca_keys(), mimetype="text/plain")


@api.get("/krl")
def krl() -> ResponseReturnValue:
    data, etag = deps().service.krl()
    if request.if_none_match and etag in request.if_none_match:
        return Response(status=304, headers={"ETag": f'"{etag}"'})
    # The digest lets a host refuse a KRL cut short in transit: a KRL truncated
    # at a section boundary still parses (the format has no length or end
    # marker) and would silently revoke less.
    return Response(
        data,
        mimetype="application/octet-stream",
        headers={
            "ETag": f'"{etag}"',
            "Cache-Control": "no-cache",
            "X-KRL-SHA256": hashlib.sha256(data).hexdigest(),
        },
    )


def _rule_for(
    policy: policies.Policy, name: str, groups: frozenset[str], target: str, *, break_glass: bool
) -> policies.Rule | None:
    """The rule that decides ``name``'s requests for ``target``: as ``policies.decide``
    picks it, the first (break-glass exactly when asked) naming the user or a group."""
    for rule in policy.rules:
        if rule.break_glass == break_glass and target in rule.targets:
            if name in rule.users or groups & rule.groups:
                return rule
    return None


def _access(rule: policies.Rule, name: str, groups: frozenset[str]) -> dict[str, object]:
    """What ``rule`` grants the caller: for how long, and who approves."""
    auto = rule.auto_approve
    mine = auto is not None and (name in auto.users or bool(groups & auto.groups))
    return {
        "rule": rule.name,
        "max_duration_seconds": int(rule.max_duration.total_seconds()),
        "default_duration_seconds": int(rule.default_duration.total_seconds()),
        "approvals_required": 0 if rule.break_glass else rule.approvals_required,
        "approver_groups": sorted(rule.approver_groups),
        "approver_users": sorted(rule.approver_users),
        "auto_approve": None
        if auto is None or not mine
        else {
            "max_duration_seconds": int(auto.max_duration.total_seconds()),
            "window": None if auto.window is None else auto.window.describe(),
        },
        "reason_required": rule.reason_required or rule.break_glass,
        "reason_pattern": None if rule.reason_pattern is None else rule.reason_pattern.pattern,
        "pending_ttl_seconds": int(rule.pending_ttl.total_seconds()),
    }


@api.get("/targets")
def targets() -> ResponseReturnValue:
    """Every target (``host setup`` reads it unsigned). With ``mine=1``, a signed call:
    only the targets the caller may request, each with what the deciding rule grants
    them (``access``) and, where one applies, their break-glass rule (``break_glass``)."""
    mine = request.args.get("mine") in ("1", "true")
    me: User | None = authenticate_request(deps(), request) if mine else None
    policy = deps().service.policy.get()
    rows: list[dict[str, object]] = []
    for t in policy.targets:
        row: dict[str, object] = {
            "name": t.name,
            "description": t.description,
            "principals": list(t.principals),
            "login_users": list(t.login_users),
        }
        if me is not None:
            groups = frozenset(me.group_names)
            rule = _rule_for(policy, me.name, groups, t.name, break_glass=False)
            glass = _rule_for(policy, me.name, groups, t.name, break_glass=True)
            if rule is None and glass is None:
                continue
            row["access"] = None if rule is None else _access(rule, me.name, groups)
            row["break_glass"] = None if glass is None else _access(glass, me.name, groups)
        rows.append(row)
    answer: dict[str, object] = {"policy_version": policy.version, "targets": rows}
    if me is not None:
        answer["user"] = me.name
    return answer


@api.get("/audit")
@signed
def audit_export() -> ResponseReturnValue:
    u: User = g.user
    if not u.has_role(Role.ADMIN):
        raise Forbidden("the audit log is for admins", field="user")
    raw = request.args.get("since", "0")
    # isascii(): str.isdigit() is also true for '²' (int() refuses it) and '١' (int() reads it).
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise InvalidInput("since must be an event id", field="since")
    lines = deps().export_audit(int(raw))
    return Response(
        "".join(line if line.endswith("\n") else line + "\n" for line in lines),
        mimetype="application/x-ndjson",
    )


@api.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    from .openapi import spec

    return spec()
