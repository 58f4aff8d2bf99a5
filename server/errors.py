"""Errors of the service, on top of the CA core's tree (``ca.errors``)::

JitSshError
├── (ca.errors: InvalidKeyError, InvalidPrincipal, InvalidDuration, ...)   400
├── (policies: InvalidPolicy 500 at load, PolicyDenied 403)
├── InvalidInput        "invalid_input"        400  a field of the body is missing or wrong
├── BodyTooLarge        "body_too_large"       413
├── AuthFailed          "auth_failed"          401  (subclasses say why)
│   ├── UnknownKey      "unknown_key"
│   ├── BadSignature    "bad_signature"
│   ├── ClockSkew       "clock_skew"
│   ├── ReplayedNonce   "replayed_nonce"
│   └── UserDisabled    "user_disabled"
├── Forbidden           "forbidden"            403
│   ├── SelfApproval    "self_approval"
│   └── NotEligible     "not_eligible"
├── NotFound            "not_found"            404
├── InvalidState            "invalid_state"        409
│   ├── NotApproved     "not_approved"
│   ├── AlreadyDecided  "already_decided"
│   └── KeyMismatch     "key_mismatch"
├── RequestExpired      "request_expired"      410
└── DatabaseUnavailable         "database_unavailable" 503
"""

from __future__ import annotations

from ca.errors import JitSshError

__all__ = [
    "InvalidInput",
    "BodyTooLarge",
    "AuthFailed",
    "UnknownKey",
    "BadSignature",
    "ClockSkew",
    "ReplayedNonce",
    "UserDisabled",
    "Forbidden",
    "SelfApproval",
    "NotEligible",
    "NotFound",
    "InvalidState",
    "NotApproved",
    "AlreadyDecided",
    "KeyMismatch",
    "RequestExpired",
    "DatabaseUnavailable",
]


class InvalidInput(JitSshError):
    code = "invalid_input"


class BodyTooLarge(JitSshError):
    code = "body_too_large"
    http_status = 413


class AuthFailed(JitSshError):
    code = "auth_failed"
    http_status = 401


class UnknownKey(AuthFailed):
    code = "unknown_key"


class BadSignature(AuthFailed):
    code = "bad_signature"


class ClockSkew(AuthFailed):
    code = "clock_skew"


class ReplayedNonce(AuthFailed):
    code = "replayed_nonce"


class UserDisabled(AuthFailed):
    code = "user_disabled"


class Forbidden(JitSshError):
    code = "forbidden"
    http_status = 403


class SelfApproval(Forbidden):
    code = "self_approval"


class NotEligible(Forbidden):
    code = "not_eligible"


class NotFound(JitSshError):
    code = "not_found"
    http_status = 404


class InvalidState(JitSshError):
    code = "invalid_state"
    http_status = 409


class NotApproved(InvalidState):
    code = "not_approved"


class AlreadyDecided(InvalidState):
    code = "already_decided"


class KeyMismatch(InvalidState):
    code = "key_mismatch"


class RequestExpired(JitSshError):
    code = "request_expired"
    http_status = 410


class DatabaseUnavailable(JitSshError):
    code = "database_unavailable"
    http_status = 503
