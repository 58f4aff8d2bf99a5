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
    ├── SsoProviderError           sso_provider_error       502  the OpenID provider is unreachable or answers nonsense
    ├── SsoFlowUnknown             sso_flow_unknown         400  no such sign-in flow (or state), or already used
    ├── SsoFlowExpired             sso_flow_expired         410  the sign-in flow's ten minutes have passed
    ├── SsoRedirectRefused         sso_redirect_refused     400  a redirect (next URL, loopback port) jit-ssh will not follow
    ├── SsoBusy                    sso_busy                 429  too many sign-ins in progress; try again in a minute
    ├── SlackSignatureInvalid      slack_signature_invalid  401  a Slack callback's X-Slack-Signature is missing or wrong
    │   ├── SlackTimestampStale    slack_timestamp_stale    401  signed more than five minutes from the server's clock
    │   └── SlackReplayed          slack_replayed           401  a signature seen already
    ├── InvalidInput               invalid_input            400  a field of the body is missing or wrong
    ├── BodyTooLarge               body_too_large           413
    ├── AuthFailed                 auth_failed              401  (subclasses say why)
    │   ├── UnknownKey             unknown_key              401
    │   ├── BadSignature           bad_signature            401
    │   ├── ClockSkew              clock_skew               401
    │   ├── ReplayedNonce          replayed_nonce           401
    │   ├── UserDisabled           user_disabled            401
    │   ├── EnrolmentExpired       enrolment_expired        401  the key's single sign-on enrolment has ended
    │   ├── SsoTokenInvalid        sso_token_invalid        401  an ID token refused (field: iss, aud, azp, exp, iat, nbf, nonce, alg, signature, kid)
    │   ├── SsoEmailUnverified     sso_email_unverified     401  the email that names the user is not verified
    │   └── SsoBadClaim            sso_bad_claim            401  a claim missing or unusable (field: the claim)
    ├── Forbidden                  forbidden                403
    │   ├── SelfApproval           self_approval            403
    │   ├── NotEligible            not_eligible             403
    │   ├── SsoDomainRefused       sso_domain_refused       403  the email's domain is not in allowed_email_domains
    │   ├── SsoNameTaken           sso_name_taken           403  the name is a local user's, not linked to this identity
    │   ├── SsoDenied              sso_denied               403  the provider answered an error (access_denied...), not a sign-in
    │   ├── PasswordLoginDisabled  password_login_disabled  403  password_login = false, and not a break-glass admin
    │   ├── ApproverAuthRequired   approver_auth_required   403  the rule's approver_auth asks for TOTP or a fresh SSO sign-in
    │   ├── ChatApprovalOff        chat_approval_off        403  the rule does not let approvers decide from chat
    │   └── SlackUserUnknown       slack_user_unknown       403  the Slack user maps to no enabled jit-ssh user
    ├── NotFound                   not_found                404
    │   ├── SsoNotConfigured       sso_not_configured       404  the server has no [sso] table
    │   └── SlackNotConfigured     slack_not_configured     404  the server has no [slack] table
    ├── InvalidState               invalid_state            409
    │   ├── NotApproved            not_approved             409
    │   ├── AlreadyDecided         already_decided          409
    │   ├── KeyMismatch            key_mismatch             409
    │   ├── KeyRevoked             key_revoked              409  an admin removed the key (or revoked its enrolment): never enrolled again
    │   ├── NotExtendable          not_extendable           409  jit-ssh extend names a request with no running access
    │   └── ExtensionPending       extension_pending        409  the access has an extension waiting already
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
    "NotExtendable",
    "ExtensionPending",
    "ApproverAuthRequired",
    "ChatApprovalOff",
    "SlackNotConfigured",
    "SlackSignatureInvalid",
    "SlackTimestampStale",
    "SlackReplayed",
    "SlackUserUnknown",
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
    "KeyRevoked",
    "RequestExpired",
    "DatabaseUnavailable",
    "EnrolmentExpired",
    "SsoTokenInvalid",
    "SsoEmailUnverified",
    "SsoBadClaim",
    "SsoDomainRefused",
    "SsoNameTaken",
    "SsoBusy",
    "SsoDenied",
    "PasswordLoginDisabled",
    "SsoNotConfigured",
    "SsoProviderError",
    "SsoFlowUnknown",
    "SsoFlowExpired",
    "SsoRedirectRefused",
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


class EnrolmentExpired(AuthFailed):
    """The key's single sign-on enrolment has ended: sign in again (``jit-ssh sso login``)."""

    code = "enrolment_expired"


class SsoTokenInvalid(AuthFailed):
    """An ID token refused; ``field`` names what: iss, aud, azp, exp, iat, nbf, nonce, alg,
    signature, kid (or token, when it is not a JWT at all)."""

    code = "sso_token_invalid"


class SsoEmailUnverified(AuthFailed):
    code = "sso_email_unverified"


class SsoBadClaim(AuthFailed):
    """A claim is missing or unusable; ``field`` names the claim."""

    code = "sso_bad_claim"


class Forbidden(JitSshError):
    code = "forbidden"


class SelfApproval(Forbidden):
    code = "self_approval"


class NotEligible(Forbidden):
    code = "not_eligible"


class SsoDomainRefused(Forbidden):
    code = "sso_domain_refused"


class SsoNameTaken(Forbidden):
    """The username claim names a local jit-ssh user who is not linked to this provider
    identity, and may not be linked by name (``link_by_name`` off, or an admin)."""

    code = "sso_name_taken"


class SsoDenied(Forbidden):
    """The provider answered with an error instead of a sign-in (the person declined,
    ``access_denied``, or another OAuth error): nothing is signed in."""

    code = "sso_denied"


class PasswordLoginDisabled(Forbidden):
    code = "password_login_disabled"


class NotFound(JitSshError):
    code = "not_found"


class SsoNotConfigured(NotFound):
    code = "sso_not_configured"


class SsoProviderError(JitSshError):
    """The OpenID provider is unreachable or answered something jit-ssh refuses; ``field``
    names the part of its answer (``issuer``, ``jwks_uri``, ``token_type``...).
    ``unreachable``: no answer at all (a connection refused, a timeout), not a wrong one."""

    code = "sso_provider_error"

    def __init__(self, message: str, *, field: str | None = None, unreachable: bool = False):
        super().__init__(message, field=field)
        self.unreachable = unreachable


class SsoFlowUnknown(JitSshError):
    """No such sign-in flow (or OAuth ``state``), or it was already used: a replay."""

    code = "sso_flow_unknown"


class SsoFlowExpired(JitSshError):
    code = "sso_flow_expired"


class SsoRedirectRefused(JitSshError):
    code = "sso_redirect_refused"


class SsoBusy(JitSshError):
    """More sign-ins are in progress than the server keeps (``MAX_OPEN_FLOWS``)."""

    code = "sso_busy"


class InvalidState(JitSshError):
    code = "invalid_state"


class NotApproved(InvalidState):
    code = "not_approved"


class AlreadyDecided(InvalidState):
    code = "already_decided"


class KeyMismatch(InvalidState):
    code = "key_mismatch"


class KeyRevoked(InvalidState):
    """The key was removed by an admin, or its single sign-on enrolment revoked: a removed
    key is never enrolled again (signing in with it is refused); make a new key."""

    code = "key_revoked"


class RequestExpired(JitSshError):
    code = "request_expired"


class DatabaseUnavailable(JitSshError):
    code = "database_unavailable"


# ---- notifications, chat approvals and extensions ---------------------------------------


class NotExtendable(InvalidState):
    """``jit-ssh extend`` names a request with no running access: not issued, expired,
    revoked, or itself replaced by an extension."""

    code = "not_extendable"


class ExtensionPending(InvalidState):
    """The access already has an extension waiting for approval or to be fetched."""

    code = "extension_pending"


class ApproverAuthRequired(Forbidden):
    """The rule's ``approver_auth`` asks for a sign-in this approval was not made with
    (a TOTP code, or a fresh single sign-on, in the web form)."""

    code = "approver_auth_required"


class ChatApprovalOff(Forbidden):
    """The rule does not let approvers decide from chat (``chat_approval``)."""

    code = "chat_approval_off"


class SlackNotConfigured(NotFound):
    code = "slack_not_configured"


class SlackSignatureInvalid(JitSshError):
    """A Slack callback whose ``X-Slack-Signature`` is missing or wrong."""

    code = "slack_signature_invalid"


class SlackTimestampStale(SlackSignatureInvalid):
    """A Slack callback signed more than five minutes from the server's clock."""

    code = "slack_timestamp_stale"


class SlackReplayed(SlackSignatureInvalid):
    """A Slack callback whose signature was seen already."""

    code = "slack_replayed"


class SlackUserUnknown(Forbidden):
    """The Slack user maps to no enabled jit-ssh user (by verified email or mapping)."""

    code = "slack_user_unknown"


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
        "sso_provider_error": 502,
        "sso_flow_expired": 410,
        "sso_busy": 429,
        "slack_signature_invalid": 401,
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
