"""Errors of the service, and the one table from an error's code to its HTTP status.

Every error jit-ssh raises on purpose is a ``JitSshError`` (``ca.errors``) with a
stable ``code``. Neither ``ca`` nor ``policies`` knows about HTTP: the server
answers each error with the status :data:`HTTP_STATUS` gives its code, or the
nearest ancestor's (so a new subclass answers as its parent does), and 400 for
the rest (bad input). The whole tree, with where each class lives, its code and
its status where it is not 400::

    JitSshError                    jit_ssh_error            400  ca.errors
    ├── InvalidKeyError            invalid_key              400  ca.errors: malformed, truncated, non-base64
    │   ├── UnsupportedKeyType     unsupported_key_type     400  DSA, unknown types, sk-* keys
    │   ├── WeakKey                weak_key                 400  RSA below the minimum size
    │   ├── CertificateAsKey       certificate_as_key       400  a *-cert-v01 blob where a key belongs
    │   └── KeyTooLarge            key_too_large            413  over 16 KiB
    ├── InvalidPrincipal           invalid_principal        400  ca.errors
    ├── InvalidName                invalid_name             400  ca.errors: a login user, target or host name
    ├── InvalidDuration            invalid_duration         400  ca.errors
    ├── InvalidKeyId               invalid_key_id           400  ca.errors
    ├── InvalidSerial              invalid_serial           400  ca.errors
    ├── InvalidExtension           invalid_extension        400  ca.errors
    ├── InvalidCriticalOption      invalid_critical_option  400  ca.errors
    │   └── InvalidSourceAddress   invalid_source_address   400
    ├── InvalidCertificate         invalid_certificate      400  ca.errors
    │   └── UntrustedCA            untrusted_ca             400  signed by a key we do not trust
    ├── InvalidKRL                 invalid_krl              400  ca.errors
    │   └── UnacceptableKRL        unacceptable_krl         400  well formed, but not what jit-ssh emits
    ├── CAKeyError                 ca_key_error             500  ca.errors
    │   ├── InsecureKeyFile        insecure_key_file        500  group/other may read the private key
    │   ├── PassphraseRequired     passphrase_required      500
    │   ├── BadPassphrase          bad_passphrase           500
    │   ├── InvalidRotation        invalid_rotation         409  ca.keyring: a CA key rotation step out of order
    │   └── SigningKeyUnavailable  signing_key_unavailable  503  server.keystore: this replica lacks the signer
    ├── InvalidSignatureError      invalid_signature        401  ca.sshsig
    ├── InvalidPolicy              invalid_policy           400  policies.errors: a policy file that does not load
    ├── PolicyDenied               policy_denied            403  policies.errors: the policy refuses the request
    │   └── PolicyChanged          policy_changed           403  ... and the request in flight is refused now
    │       ├── NoPrincipalsLeft         no_principals_left       403
    │       ├── ForceCommandConflict     force_command_conflict   403
    │       ├── SourceAddressConflict    source_address_conflict  403
    │       └── MoreApprovalsRequired    more_approvals_required  403
    ├── AuditError                 audit_error              400  ca.audit
    │   ├── AuditKeyError          audit_key_error          500
    │   ├── InvalidAuditEvent      invalid_audit_event      400
    │   └── InvalidAuditExport     invalid_audit_export     400
    ├── InvalidConfig              invalid_config           500  server.config
    ├── ReplicaKeysDiffer          replica_keys_differ      500  server.keystore
    ├── LoginFailed                login_failed             401  server.web.auth
    ├── InvalidInput               invalid_input            400  a field of the body is missing or wrong
    ├── BodyTooLarge               body_too_large           413
    ├── AuthFailed                 auth_failed              401  (subclasses say why)
    │   ├── UnknownKey             unknown_key              401
    │   ├── BadSignature           bad_signature            401
    │   ├── ClockSkew              clock_skew               401
    │   ├── ReplayedNonce          replayed_nonce           401
    │   └── UserDisabled           user_disabled            401
    ├── Forbidden                  forbidden                403
    │   ├── SelfApproval           self_approval            403
    │   └── NotEligible            not_eligible             403
    ├── NotFound                   not_found                404
    ├── InvalidState               invalid_state            409
    │   ├── NotApproved            not_approved             409
    │   ├── AlreadyDecided         already_decided          409
    │   └── KeyMismatch            key_mismatch             409
    ├── RequestExpired             request_expired          410
    └── DatabaseUnavailable        database_unavailable     503

(The client's own errors, ``client.*``, never reach the server and are not listed.)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ca.errors import JitSshError

__all__ = [
    "HTTP_STATUS",
    "http_status",
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


class AuthFailed(JitSshError):
    code = "auth_failed"


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


class SelfApproval(Forbidden):
    code = "self_approval"


class NotEligible(Forbidden):
    code = "not_eligible"


class NotFound(JitSshError):
    code = "not_found"


class InvalidState(JitSshError):
    code = "invalid_state"


class NotApproved(InvalidState):
    code = "not_approved"


class AlreadyDecided(InvalidState):
    code = "already_decided"


class KeyMismatch(InvalidState):
    code = "key_mismatch"


class RequestExpired(JitSshError):
    code = "request_expired"


class DatabaseUnavailable(JitSshError):
    code = "database_unavailable"


#: The HTTP status of each error code that does not answer 400 (bad input). A code
#: not listed answers as its nearest listed ancestor does (see :func:`http_status`).
HTTP_STATUS: Mapping[str, int] = MappingProxyType(
    {
        "key_too_large": 413,
        "ca_key_error": 500,
        "invalid_rotation": 409,
        "signing_key_unavailable": 503,
        "invalid_signature": 401,
        "policy_denied": 403,
        "audit_key_error": 500,
        "invalid_config": 500,
        "replica_keys_differ": 500,
        "login_failed": 401,
        "body_too_large": 413,
        "auth_failed": 401,
        "forbidden": 403,
        "not_found": 404,
        "invalid_state": 409,
        "request_expired": 410,
        "database_unavailable": 503,
    }
)


def http_status(e: JitSshError) -> int:
    """The HTTP status the server answers ``e`` with: :data:`HTTP_STATUS` for its
    class's code or, failing that, its nearest ancestor's; else 400."""
    for cls in type(e).__mro__:
        code = cls.__dict__.get("code")
        if isinstance(code, str) and code in HTTP_STATUS:
            return HTTP_STATUS[code]
    return 400
