"""The OpenAPI 3.1 document served at ``/v1/openapi.json``."""

from __future__ import annotations

__all__ = ["spec"]

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_SIGNED: list[dict[str, list[str]]] = [{"sshsig": []}]


def _op(
    summary: str,
    *,
    body: dict[str, object] | None = None,
    ok: int = 200,
    schema: str = "Request",
    signed: bool = True,
    params: list[dict[str, object]] | None = None,
    errors: tuple[int, ...] = (400, 401, 403, 404, 409),
    media: str = "application/json",
) -> dict[str, object]:
    responses: dict[str, object] = {
        str(ok): {
            "description": "OK",
            "content": {media: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
    }
    for code in errors:
        responses[str(code)] = _PROBLEM
    responses["503"] = _PROBLEM
    op: dict[str, object] = {"summary": summary, "responses": responses}
    if signed:
        op["security"] = _SIGNED
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


_ID = [
    {
        "name": "request_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "maxLength": 32},
    }
]
#: What the single sign-on calls answer besides 200: bad input, refused, not configured (404),
#: a conflicting key (409), an expired flow (410), the provider out of reach (502).
_SSO_ERRORS = (400, 401, 403, 404, 409, 410, 413, 502)
_DURATION = {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "example": "30m"}]}


def spec() -> dict[str, object]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jit-ssh",
            "version": "1",
            "description": "Just-in-time SSH certificates. Calls are signed with an enrolled SSH key (SSHSIG, namespace jit-ssh-api); see ca/request_signing.py.",
        },
        "paths": {
            "/v1/requests": {
                "post": _op(
                    "Request access",
                    ok=201,
                    body={
                        "type": "object",
                        "anyOf": [{"required": ["target"]}, {"required": ["extends"]}],
                        "additionalProperties": False,
                        "properties": {
                            "target": {
                                "type": "string",
                                "maxLength": 128,
                                "description": "With extends: optional, and must be the "
                                "original's target",
                            },
                            "duration": _DURATION,
                            "reason": {"type": "string", "maxLength": 1000},
                            "break_glass": {"type": "boolean"},
                            "extends": {
                                "type": "string",
                                "maxLength": 32,
                                "description": "An extension (jit-ssh extend): the id of the "
                                "caller's issued, unexpired, unrevoked request it extends; "
                                "409 not_extendable or extension_pending otherwise",
                            },
                        },
                    },
                ),
                "get": _op(
                    "List requests",
                    schema="RequestList",
                    params=[
                        {
                            "name": "mine",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["1", "true"]},
                        },
                        {
                            "name": "pending_for_me",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["1", "true"]},
                        },
                    ],
                ),
            },
            "/v1/requests/{request_id}": {"get": _op("A request", params=_ID)},
            "/v1/requests/{request_id}/approve": {
                "post": _op(
                    "Approve",
                    params=_ID,
                    body={
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "comment": {"type": "string", "maxLength": 1000},
                            "duration": _DURATION,
                        },
                    },
                )
            },
            "/v1/requests/{request_id}/deny": {
                "post": _op(
                    "Deny",
                    params=_ID,
                    body={
                        "type": "object",
                        "required": ["reason"],
                        "additionalProperties": False,
                        "properties": {
                            "reason": {"type": "string", "minLength": 1, "maxLength": 1000}
                        },
                    },
                )
            },
            "/v1/requests/{request_id}/cancel": {"post": _op("Cancel", params=_ID)},
            "/v1/requests/{request_id}/certificate": {
                "post": _op(
                    "Fetch the certificate",
                    params=_ID,
                    schema="Certificate",
                    errors=(400, 401, 403, 404, 409, 410, 413),
                    body={
                        "type": "object",
                        "required": ["public_key"],
                        "additionalProperties": False,
                        "properties": {"public_key": {"type": "string", "maxLength": 16384}},
                    },
                )
            },
            "/v1/certificates/{serial}/revoke": {
                "post": _op(
                    "Revoke a certificate",
                    schema="Revocation",
                    params=[
                        {
                            "name": "serial",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
                        }
                    ],
                    body={
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"reason": {"type": "string", "maxLength": 1000}},
                    },
                )
            },
            "/v1/whoami": {"get": _op("Who am I", schema="WhoAmI")},
            "/v1/sso": {
                "get": _op(
                    "Whether the server offers single sign-on, and how",
                    schema="SsoInfo",
                    signed=False,
                    errors=(),
                )
            },
            "/v1/sso/start": {
                "post": _op(
                    "Start a single sign-on for a key (signed by that key, user header '-')",
                    schema="SsoStarted",
                    body={
                        "type": "object",
                        "required": ["public_key", "mode"],
                        "additionalProperties": False,
                        "properties": {
                            "public_key": {"type": "string", "maxLength": 16384},
                            "mode": {"type": "string", "enum": ["loopback", "device"]},
                            "loopback_port": {
                                "type": "integer",
                                "minimum": 1024,
                                "maximum": 65535,
                            },
                        },
                    },
                    errors=_SSO_ERRORS,
                )
            },
            "/v1/sso/finish": {
                "post": _op(
                    "Enrol the key of a loopback sign-in (signed by that key, user header '-')",
                    schema="SsoEnrolment",
                    body={
                        "type": "object",
                        "required": ["flow", "code"],
                        "additionalProperties": False,
                        "properties": {
                            "flow": {"type": "string", "maxLength": 32},
                            "code": {"type": "string", "maxLength": 43},
                        },
                    },
                    errors=_SSO_ERRORS,
                )
            },
            "/v1/sso/poll": {
                "post": _op(
                    "Poll a device sign-in; enrols the key once done (signed by that key)",
                    schema="SsoEnrolment",
                    body={
                        "type": "object",
                        "required": ["flow"],
                        "additionalProperties": False,
                        "properties": {"flow": {"type": "string", "maxLength": 32}},
                    },
                    errors=_SSO_ERRORS,
                )
            },
            "/v1/ca.pub": {
                "get": {
                    "summary": "Trusted CA keys (TrustedUserCAKeys text)",
                    "responses": {
                        "200": {
                            "description": "OK",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/v1/krl": {
                "get": {
                    "summary": "The current KRL (PROTOCOL.krl)",
                    "responses": {
                        "200": {
                            "description": "OK",
                            "headers": {"ETag": {"schema": {"type": "string"}}},
                            "content": {
                                "application/octet-stream": {
                                    "schema": {"type": "string", "format": "binary"}
                                }
                            },
                        },
                        "304": {"description": "Not modified"},
                    },
                }
            },
            "/v1/targets": {
                "get": {
                    "summary": "Targets with principals and login users; with mine=1 (signed), "
                    "only those the caller may request, with what the deciding rule grants them",
                    "parameters": [
                        {
                            "name": "mine",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["1", "true"]},
                            "description": "A signed call: only the caller's targets, each with "
                            "access and break_glass",
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "OK",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/TargetList"}
                                }
                            },
                        },
                        "401": _PROBLEM,
                    },
                }
            },
            "/v1/audit": {
                "get": _op(
                    "Audit export (admins), JSON lines",
                    schema="AuditLines",
                    media="application/x-ndjson",
                    params=[
                        {
                            "name": "since",
                            "in": "query",
                            "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                        }
                    ],
                )
            },
        },
        "components": {
            "securitySchemes": {
                "sshsig": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Jit-Signature",
                    "description": "SSHSIG over the canonical request; with X-Jit-User, X-Jit-Timestamp, X-Jit-Nonce.",
                }
            },
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem",
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                }
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "code"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "code": {"type": "string"},
                        "field": {"type": "string"},
                    },
                },
                "Request": {
                    "type": "object",
                    "required": ["id", "state", "requester", "target"],
                    "properties": {
                        "id": {"type": "string"},
                        "state": {
                            "type": "string",
                            "enum": [
                                "pending",
                                "approved",
                                "denied",
                                "expired",
                                "cancelled",
                                "issued",
                                "revoked",
                                "ended",
                            ],
                        },
                        "requester": {"type": "string"},
                        "target": {"type": "string"},
                        "reason": {"type": "string"},
                        "duration_seconds": {"type": "integer"},
                        "groups_used": {
                            "type": ["array", "null"],
                            "items": {"type": "string"},
                            "description": "The requester's groups the decision at submit used",
                        },
                        "groups_source": {
                            "type": ["string", "null"],
                            "enum": ["local", "sso", None],
                            "description": "Where those groups came from: jit-ssh, or the provider's claim",
                        },
                        "approvals_required": {"type": "integer"},
                        "pending_until": {
                            "type": "string",
                            "format": "date-time",
                            "description": "When the request lapses if nobody answers it",
                        },
                        "approvals": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "approver": {"type": "string"},
                                    "decision": {"type": "string", "enum": ["approve", "deny"]},
                                    "comment": {"type": "string", "maxLength": 1000},
                                    "duration_seconds": {"type": ["integer", "null"]},
                                    "at": {"type": "string", "format": "date-time"},
                                },
                            },
                        },
                        "approvers": {
                            "type": "object",
                            "description": "Who may still approve it (one pending request's "
                            "own view only): the rule's approver groups and users, and the "
                            "eligible accounts (at most 20 named, all counted)",
                            "properties": {
                                "groups": {"type": "array", "items": {"type": "string"}},
                                "users": {"type": "array", "items": {"type": "string"}},
                                "eligible": {"type": "array", "items": {"type": "string"}},
                                "eligible_total": {"type": "integer"},
                            },
                        },
                        "principals": {"type": "array", "items": {"type": "string"}},
                        "certificate": {"type": ["object", "null"]},
                        "approval_url": {"type": "string"},
                        "extends": {
                            "type": ["string", "null"],
                            "description": "The request this one extends (jit-ssh extend)",
                        },
                        "extension": {
                            "type": ["object", "null"],
                            "description": "An extension: the request it extends, the time it "
                            "adds, the access's extensions so far (this one included) and the "
                            "whole access's time",
                            "required": [
                                "of",
                                "added_seconds",
                                "extensions_seconds",
                                "total_seconds",
                            ],
                            "properties": {
                                "of": {"type": "string"},
                                "added_seconds": {"type": "integer"},
                                "extensions_seconds": {"type": "integer"},
                                "total_seconds": {"type": "integer"},
                            },
                        },
                        "warn_before_seconds": {
                            "type": "integer",
                            "description": "How long before the certificate's valid_before "
                            "its requester is warned (the rule's warn_before; 300 when the "
                            "rule is gone)",
                        },
                    },
                },
                "TargetAccess": {
                    "type": ["object", "null"],
                    "properties": {
                        "rule": {"type": "string"},
                        "max_duration_seconds": {"type": "integer"},
                        "default_duration_seconds": {"type": "integer"},
                        "approvals_required": {"type": "integer"},
                        "approver_groups": {"type": "array", "items": {"type": "string"}},
                        "approver_users": {"type": "array", "items": {"type": "string"}},
                        "auto_approve": {
                            "type": ["object", "null"],
                            "description": "Only when it applies to the caller",
                            "properties": {
                                "max_duration_seconds": {"type": "integer"},
                                "window": {"type": ["string", "null"]},
                            },
                        },
                        "reason_required": {"type": "boolean"},
                        "reason_pattern": {"type": ["string", "null"]},
                        "pending_ttl_seconds": {"type": "integer"},
                    },
                },
                "TargetList": {
                    "type": "object",
                    "properties": {
                        "policy_version": {"type": "string"},
                        "user": {"type": "string", "description": "mine=1: the caller"},
                        "targets": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "principals", "login_users"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "description": {"type": "string"},
                                    "principals": {"type": "array", "items": {"type": "string"}},
                                    "login_users": {"type": "array", "items": {"type": "string"}},
                                    "access": {"$ref": "#/components/schemas/TargetAccess"},
                                    "break_glass": {"$ref": "#/components/schemas/TargetAccess"},
                                },
                            },
                        },
                    },
                },
                "RequestList": {
                    "type": "object",
                    "properties": {
                        "requests": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Request"},
                        }
                    },
                },
                "Certificate": {
                    "type": "object",
                    "required": ["certificate", "serial"],
                    "properties": {
                        "certificate": {"type": "string"},
                        "serial": {"type": "string"},
                        "key_id": {"type": "string"},
                        "principals": {"type": "array", "items": {"type": "string"}},
                        "valid_after": {"type": "string"},
                        "valid_before": {"type": "string"},
                        "reissued": {"type": "boolean"},
                        "replaces_serial": {
                            "type": ["string", "null"],
                            "description": "An extension's certificate: the serial it "
                            "replaced, revoked in the same transaction",
                        },
                    },
                },
                "Revocation": {
                    "type": "object",
                    "properties": {
                        "serial": {"type": "string"},
                        "revoked_at": {"type": "string"},
                        "revoked_by": {"type": "string"},
                    },
                },
                "WhoAmI": {
                    "type": "object",
                    "properties": {
                        "user": {"type": "string"},
                        "groups": {"type": "array"},
                        "roles": {"type": "array"},
                        "groups_source": {"type": "string", "enum": ["local", "sso"]},
                        "enrolment_expires_at": {
                            "type": "string",
                            "format": "date-time",
                            "description": "When the calling key's single sign-on enrolment ends",
                        },
                    },
                },
                "SsoInfo": {
                    "type": "object",
                    "required": ["enabled"],
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "display_name": {"type": "string"},
                        "device_flow": {"type": "boolean"},
                        "enrolment_lifetime_seconds": {"type": "integer"},
                    },
                },
                "SsoStarted": {
                    "type": "object",
                    "required": ["flow", "expires_at"],
                    "properties": {
                        "flow": {"type": "string"},
                        "authorize_url": {
                            "type": "string",
                            "description": (
                                "loopback mode: this server's confirmation page "
                                "{base_url}/sso/cli/<token> (one-time), which shows the key "
                                "and continues to the provider; open it in the browser"
                            ),
                        },
                        "user_code": {"type": "string", "description": "device mode"},
                        "verification_uri": {"type": "string"},
                        "verification_uri_complete": {"type": ["string", "null"]},
                        "interval": {"type": "integer"},
                        "expires_at": {"type": "string", "format": "date-time"},
                    },
                },
                "SsoEnrolment": {
                    "type": "object",
                    "properties": {
                        "status": {"type": "string", "enum": ["pending", "slow_down", "done"]},
                        "interval": {"type": "integer"},
                        "user": {"type": "string"},
                        "groups": {"type": "array", "items": {"type": "string"}},
                        "groups_source": {"type": "string", "enum": ["local", "sso"]},
                        "fingerprint": {"type": "string"},
                        "expires_at": {"type": ["string", "null"], "format": "date-time"},
                    },
                },
                "AuditLines": {"type": "string"},
            },
        },
    }
