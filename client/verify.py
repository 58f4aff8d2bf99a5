"""The client trusts nothing the server sends: check an issued certificate before writing a byte.

A compromised or impersonated server must not be able to run code on the
engineer's machine, nor hand it a certificate other than the one it says it
issued. :func:`verify_issued` is the one place where the answer to
``POST /v1/requests/<id>/certificate`` becomes something the client writes
(``<target>-cert.pub``, ``<target>.json``, ssh_config) or passes to ``ssh``.
It refuses the certificate unless:

* it parses, and certifies exactly the public key the client just made;
* it is a user certificate signed by one of the CA keys the server
  publishes (``GET /v1/ca.pub``); the signature key is compared first, as
  cryptography's ``verify_cert_signature()`` does not say WHICH key signed;
* its serial, key id, principals (in order) and window are exactly those the
  server's JSON answer stated;
* every principal, the login user, the target and the key id pass the
  strict checks of :mod:`ca.names` (no whitespace, control or format
  characters, ``%``, quotes or a leading ``-``).
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ca.certs import IssuedCertificate, verify_certificate
from ca.errors import InvalidCertificate, JitSshError
from ca.keys import PublicKey, load_public_keys, parse_public_key
from ca.names import check_key_id, check_login_user, check_principal, check_target

from .errors import BadServerAnswer

__all__ = [
    "CertificateMismatch",
    "IssueAnswer",
    "VerifiedCertificate",
    "Approval",
    "Approvers",
    "RequestCertificate",
    "TargetAccess",
    "RequestView",
    "TargetView",
    "check_request_answer",
    "MAX_WARN_BEFORE_SECONDS",
    "check_request_list",
    "check_target_list",
    "check_request_id",
    "check_serial",
    "fetch_ca_keys",
    "parse_issue_answer",
    "verify_issued",
    "SsoInfo",
    "SsoStart",
    "SsoDeviceStart",
    "SsoEnrolment",
    "SsoPoll",
    "check_browser_url",
    "check_flow_id",
    "check_sso_info",
    "check_sso_start",
    "check_sso_device_start",
    "check_sso_poll",
    "check_sso_finish",
    "WhoAmI",
    "check_whoami",
]

_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SERIAL = re.compile(r"[0-9]{1,20}")
_MAX_PRINCIPALS = 256
#: A user or group name as the server makes them (server.admin, policies.loader).
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,63}")
#: The longest comment, reason or pattern shown from a request's view (the server's limit).
_MAX_TEXT = 1000
#: The most approver names (and groups) one view may list.
_MAX_NAMES = 256


class CertificateMismatch(InvalidCertificate):
    """The certificate the server sent is not the one its answer describes, or not for this key."""

    code = "certificate_mismatch"


@dataclass(frozen=True)
class IssueAnswer:
    """A typed view of the JSON answer to ``POST /v1/requests/<id>/certificate``."""

    certificate: str
    serial: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: datetime
    valid_before: datetime
    reissued: bool


@dataclass(frozen=True)
class VerifiedCertificate:
    """A certificate that passed :func:`verify_issued`: safe to write and to pass to ssh."""

    certificate: IssuedCertificate
    request_id: str
    target: str
    #: The account the first ``LOGIN@TARGET`` principal names, if it has that form.
    login_user: str | None

    @property
    def openssh(self) -> str:
        return self.certificate.openssh

    @property
    def serial(self) -> int:
        return self.certificate.serial

    @property
    def principals(self) -> tuple[str, ...]:
        return self.certificate.principals


def _field(answer: Mapping[str, Any], name: str, kind: type) -> Any:
    value = answer.get(name)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise BadServerAnswer(
            f"the server's answer has no valid {name!r} ({kind.__name__} expected)", field=name
        )
    return value


def check_serial(value: Any) -> int:
    """A certificate serial as the API writes it: a decimal string of 1 to 2**64-1."""
    if not isinstance(value, str) or not _SERIAL.fullmatch(value) or not 0 < int(value) < 2**64:
        raise BadServerAnswer(
            f"the server's serial {str(value)[:32]!r} is not a number between 1 and 2**64-1",
            field="serial",
        )
    return int(value)


def _time(value: Any, name: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise BadServerAnswer(f"the server's {name} is not a time", field=name)
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadServerAnswer(
            f"the server's {name} {value[:40]!r} is not an ISO 8601 time", field=name
        ) from None
    if t.tzinfo is None or t.utcoffset() is None:
        raise BadServerAnswer(f"the server's {name} {value!r} has no time zone", field=name)
    return t


def _principals(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or len(value) > _MAX_PRINCIPALS:
        raise BadServerAnswer(
            f"the server's principals must be a list of 1 to {_MAX_PRINCIPALS} names",
            field="principals",
        )
    out = tuple(check_principal(p, field="the server's principal") for p in value)
    if len(set(out)) != len(out):
        raise BadServerAnswer("the server's principals list a name twice", field="principals")
    return out


def check_request_id(value: Any, *, field: str = "request id") -> str:
    """A request id as the server makes them: letters, digits, '_' and '-', at most 64."""
    if not isinstance(value, str) or not _REQUEST_ID.fullmatch(value):
        raise BadServerAnswer(
            f"{field} {str(value)[:64]!r} must be 1-64 letters, digits, '_' or '-'", field=field
        )
    return value


_REQUEST_STATES = frozenset(
    {"pending", "approved", "issued", "denied", "cancelled", "expired", "revoked", "ended"}
)


def _answer_error(message: str, field: str) -> JitSshError:
    return BadServerAnswer(f"the server's answer is malformed: {message}", field=field)


@dataclass(frozen=True)
class Approval:
    """One approver's decision on a request, as the server lists it."""

    decision: str
    approver: str
    comment: str = ""
    at: datetime | None = None


@dataclass(frozen=True)
class Approvers:
    """Who may still approve a pending request (its view's ``approvers``): the rule's
    approver groups and users, and the eligible accounts by name (at most 20 named,
    ``eligible_total`` counted)."""

    groups: tuple[str, ...]
    users: tuple[str, ...]
    eligible: tuple[str, ...]
    eligible_total: int


@dataclass(frozen=True)
class RequestCertificate:
    """What a request's answer says of its certificate."""

    serial: int


@dataclass(frozen=True)
class RequestView:
    """A typed view of a request as the server describes it (``GET /v1/requests/ID``, a row
    of a list, the answer to submit, approve, deny), built by :func:`check_request_answer`."""

    id: str
    state: str
    target: str
    requester: str
    reason: str
    created_at: str
    approval_url: str | None
    deny_reason: str | None
    duration_seconds: int
    approvals_required: int
    approvals: tuple[Approval, ...]
    certificate: RequestCertificate | None
    #: When a pending request lapses unanswered (``pending_until``), if the server says.
    pending_until: datetime | None = None
    #: Who may still approve it (pending requests' own view only).
    approvers: Approvers | None = None
    #: How long before its certificate expires the requester is warned (the rule's
    #: ``warn_before``), if the server says (an older one does not).
    warn_before_seconds: int | None = None
    #: The checked answer itself, for ``--json`` output (its serial normalised to a string).
    answer: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def approved_by(self) -> tuple[str, ...]:
        return tuple(a.approver for a in self.approvals if a.decision == "approve")

    @property
    def denied_by(self) -> tuple[str, ...]:
        return tuple(a.approver for a in self.approvals if a.decision == "deny")


@dataclass(frozen=True)
class TargetView:
    """One target of ``GET /v1/targets``: its name, principals and login users, as sent (each
    is checked strictly where it is used: ``host setup`` checks the names it writes)."""

    name: str
    principals: tuple[str, ...]
    login_users: tuple[str, ...]
    description: str = ""
    #: What the caller's deciding rule grants (``GET /v1/targets?mine=1`` only).
    access: TargetAccess | None = None
    #: The caller's break-glass rule for the target, if any (``mine=1`` only).
    break_glass: TargetAccess | None = None


@dataclass(frozen=True)
class TargetAccess:
    """What a rule grants the caller on a target: for how long, and who approves."""

    rule: str
    max_duration_seconds: int
    default_duration_seconds: int
    approvals_required: int
    approver_groups: tuple[str, ...]
    approver_users: tuple[str, ...]
    #: The auto-approval that applies to the caller: its maximum, and its window if any.
    auto_approve_seconds: int | None
    auto_approve_window: str | None
    reason_required: bool
    reason_pattern: str | None


#: The longest lead time of an expiry warning: a certificate's longest life (24 h).
MAX_WARN_BEFORE_SECONDS = 24 * 3600


def _visible(value: Any, name: str, *, limit: int = _MAX_TEXT, optional: bool = False) -> Any:
    """A text the server sends for the screen: a string of at most ``limit`` characters,
    without control or format characters (a tab aside)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _answer_error(f"{name} must be a string, not {type(value).__name__}", name)
    if len(value) > limit:
        raise _answer_error(f"{name} is longer than {limit} characters", name)
    bad = next(
        (c for c in value if c != "\t" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")),
        None,
    )
    if bad is not None:
        raise _answer_error(f"{name} holds the control character U+{ord(bad):04X}", name)
    return value


def _name_list(value: Any, name: str) -> tuple[str, ...]:
    """A list of user or group names (each as the server makes names), at most 256."""
    if not isinstance(value, list) or len(value) > _MAX_NAMES:
        raise _answer_error(f"{name} must be a list of at most {_MAX_NAMES} names", name)
    for v in value:
        if not isinstance(v, str) or not _NAME.fullmatch(v):
            raise _answer_error(f"{name} holds {str(v)[:64]!r}, which is not a name", name)
    return tuple(value)


def _count(value: Any, name: str, *, limit: int = 10**9) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise _answer_error(
            f"{name} must be a whole number from 0 to {limit}, not {value!r:.32}", name
        )
    return value


def _approval(a: Any) -> Approval:
    if not (
        isinstance(a, dict)
        and isinstance(a.get("decision"), str)
        and isinstance(a.get("approver", ""), str)
    ):
        raise _answer_error("approvals must be a list of {decision, approver} objects", "approvals")
    approver = a.get("approver", "")
    if approver and not _NAME.fullmatch(approver):
        raise _answer_error(f"an approval's approver {approver[:64]!r} is not a name", "approvals")
    at = a.get("at")
    return Approval(
        decision=a["decision"],
        approver=approver,
        comment=_visible(a.get("comment") or "", "an approval's comment"),
        at=None if at is None else _time(at, "an approval's time"),
    )


def _approvers(value: Any) -> Approvers | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _answer_error("approvers must be an object", "approvers")
    eligible = _name_list(value.get("eligible", []), "approvers.eligible")
    total = _count(value.get("eligible_total", len(eligible)), "approvers.eligible_total")
    if total < len(eligible):
        raise _answer_error("approvers.eligible_total is less than the names listed", "approvers")
    return Approvers(
        groups=_name_list(value.get("groups", []), "approvers.groups"),
        users=_name_list(value.get("users", []), "approvers.users"),
        eligible=eligible,
        eligible_total=total,
    )


def check_request_answer(answer: Any) -> RequestView:
    """A request as the server describes it, checked field by field before any command
    reads it: the id goes into URL paths, the rest onto the screen. Raises
    :class:`client.errors.BadServerAnswer` naming the field.
    """
    if not isinstance(answer, dict):
        raise _answer_error(
            f"a request must be a JSON object, not {type(answer).__name__}", "request"
        )
    request_id = check_request_id(answer.get("id"), field="request id")
    state = answer.get("state")
    if state not in _REQUEST_STATES:
        raise _answer_error(f"request state {str(state)[:32]!r} is not one jit-ssh knows", "state")
    for name in ("target", "requester", "reason", "created_at", "approval_url", "deny_reason"):
        value = answer.get(name)
        if value is not None and not isinstance(value, str):
            raise _answer_error(f"{name} must be a string, not {type(value).__name__}", name)
    target = answer.get("target")
    if not isinstance(target, str):
        raise _answer_error("the request names no target", "target")
    counts: dict[str, int] = {}
    for name in ("duration_seconds", "approvals_required"):
        value = answer.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _answer_error(f"{name} must be a whole number >= 0, not {value!r:.32}", name)
        counts[name] = value
    approvals = answer.setdefault("approvals", [])
    if not isinstance(approvals, list) or len(approvals) > _MAX_NAMES:
        raise _answer_error("approvals must be a list of {decision, approver} objects", "approvals")
    checked_approvals = tuple(_approval(a) for a in approvals)
    pending_until = answer.get("pending_until")
    warn_before = answer.get("warn_before_seconds")
    certificate = answer.get("certificate")
    summary = None
    if certificate is not None:
        if not isinstance(certificate, dict):
            raise _answer_error("certificate must be an object", "certificate")
        serial = certificate.get("serial")
        if isinstance(serial, int) and not isinstance(serial, bool):
            serial = str(serial)
        summary = RequestCertificate(serial=check_serial(serial))
        certificate["serial"] = str(summary.serial)
    return RequestView(
        id=request_id,
        state=state,
        target=target,
        requester=answer.get("requester") or "",
        reason=answer.get("reason") or "",
        created_at=answer.get("created_at") or "",
        approval_url=answer.get("approval_url"),
        deny_reason=answer.get("deny_reason"),
        duration_seconds=counts["duration_seconds"],
        approvals_required=counts["approvals_required"],
        approvals=checked_approvals,
        certificate=summary,
        pending_until=None if pending_until is None else _time(pending_until, "pending_until"),
        approvers=_approvers(answer.get("approvers")),
        warn_before_seconds=None
        if warn_before is None
        else _count(warn_before, "warn_before_seconds", limit=MAX_WARN_BEFORE_SECONDS),
        answer=answer,
    )


def check_request_list(answer: Any) -> list[RequestView]:
    """The ``requests`` of a ``GET /v1/requests`` answer, each checked by :func:`check_request_answer`."""
    rows = answer.get("requests") if isinstance(answer, dict) else None
    if not isinstance(rows, list):
        raise _answer_error("'requests' must be a list", "requests")
    return [check_request_answer(r) for r in rows]


def _names(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _answer_error(f"a target's {what} must be a list of strings", what)
    return tuple(value)


def check_target_list(answer: Any) -> dict[str, TargetView]:
    """The targets of a ``GET /v1/targets`` answer, by name, each field checked for its kind."""
    rows = answer.get("targets") if isinstance(answer, dict) else None
    if not isinstance(rows, list):
        raise _answer_error("'targets' must be a list", "targets")
    out: dict[str, TargetView] = {}
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise _answer_error("each target must be an object with a name", "targets")
        out[row["name"]] = TargetView(
            name=row["name"],
            principals=_names(row.get("principals", []), "principals"),
            login_users=_names(row.get("login_users", []), "login_users"),
            description=_visible(row.get("description") or "", "a target's description"),
            access=_target_access(row.get("access"), "access"),
            break_glass=_target_access(row.get("break_glass"), "break_glass"),
        )
    return out


def _target_access(value: Any, name: str) -> TargetAccess | None:
    """A target's ``access`` or ``break_glass`` (``GET /v1/targets?mine=1``), checked."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _answer_error(f"a target's {name} must be an object", name)
    rule = value.get("rule")
    if not isinstance(rule, str) or not _NAME.fullmatch(rule):
        raise _answer_error(f"a target's {name} names no valid rule", name)
    auto = value.get("auto_approve")
    if auto is not None and not isinstance(auto, dict):
        raise _answer_error(f"a target's {name}.auto_approve must be an object", name)
    reason_required = value.get("reason_required", False)
    if not isinstance(reason_required, bool):
        raise _answer_error(f"a target's {name}.reason_required must be true or false", name)
    year = 366 * 86400
    return TargetAccess(
        rule=rule,
        max_duration_seconds=_count(
            value.get("max_duration_seconds"), f"{name}.max_duration_seconds", limit=year
        ),
        default_duration_seconds=_count(
            value.get("default_duration_seconds"), f"{name}.default_duration_seconds", limit=year
        ),
        approvals_required=_count(
            value.get("approvals_required", 0), f"{name}.approvals_required", limit=1000
        ),
        approver_groups=_name_list(value.get("approver_groups", []), f"{name}.approver_groups"),
        approver_users=_name_list(value.get("approver_users", []), f"{name}.approver_users"),
        auto_approve_seconds=None
        if auto is None
        else _count(auto.get("max_duration_seconds"), f"{name}.auto_approve", limit=year),
        auto_approve_window=None
        if auto is None
        else _visible(auto.get("window"), f"{name}.auto_approve.window", limit=200, optional=True),
        reason_required=reason_required,
        reason_pattern=_visible(
            value.get("reason_pattern"), f"{name}.reason_pattern", optional=True
        ),
    )


def parse_issue_answer(answer: Any) -> IssueAnswer:
    """The certificate answer's fields, each checked for its kind (names through :mod:`ca.names`)."""
    if not isinstance(answer, Mapping):
        raise BadServerAnswer(
            "the server's certificate answer is not a JSON object", field="certificate"
        )
    return IssueAnswer(
        certificate=_field(answer, "certificate", str),
        serial=check_serial(answer.get("serial")),
        key_id=check_key_id(answer.get("key_id"), field="the server's key_id"),  # type: ignore[arg-type]
        principals=_principals(answer.get("principals")),
        valid_after=_time(answer.get("valid_after"), "valid_after"),
        valid_before=_time(answer.get("valid_before"), "valid_before"),
        reissued=bool(answer.get("reissued", False)),
    )


def fetch_ca_keys(api: Any) -> tuple[PublicKey, ...]:
    """The CA keys the server publishes (``GET /v1/ca.pub``, what ``host setup --server`` trusts)."""
    resp = api.get("/v1/ca.pub", signed=False, raw=True, max_bytes=1024 * 1024)
    try:
        text = resp.content.decode("ascii")
    except UnicodeDecodeError:
        raise BadServerAnswer(
            "the server's CA keys (/v1/ca.pub) are not ASCII text", field="ca_keys"
        ) from None
    keys = load_public_keys(text, field="the server's CA keys")
    if not keys:
        raise BadServerAnswer(
            "the server publishes no CA key (/v1/ca.pub is empty)", field="ca_keys"
        )
    return keys


def verify_issued(
    answer: Any,
    *,
    public_key: PublicKey | str,
    ca_keys: Sequence[PublicKey],
    request: RequestView,
    target: str,
) -> VerifiedCertificate:
    """Check the server's certificate answer for the key just made; raise unless every check passes.

    ``request`` is the server's request (its ``id`` and ``target``), as
    :func:`check_request_answer` checked it; ``target`` is the one the
    engineer asked for.
    """
    check_target(target, field="target")
    request_id = check_request_id(request.id, field="the server's request id")
    if request.target != target:
        raise CertificateMismatch(
            f"the server's request {request_id} is for target {request.target[:64]!r}, not {target!r}",
            field="target",
        )
    stated = parse_issue_answer(answer)
    key = (
        parse_public_key(public_key, field="public key")
        if isinstance(public_key, str)
        else public_key
    )
    # Trust and signature first: nothing else in a certificate means anything
    # before we know which key signed it.
    cert = verify_certificate(stated.certificate, ca_keys)
    if cert.cert_type != "user":
        raise CertificateMismatch(
            "the server sent a host certificate, not a user certificate", field="certificate"
        )
    if cert.public_key != key:
        raise CertificateMismatch(
            f"the certificate certifies {cert.public_key.fingerprint}, not the key made for this access "
            f"({key.fingerprint})",
            field="certificate",
        )
    differences = [
        name
        for name, got, said in (
            ("serial", cert.serial, stated.serial),
            ("key id", cert.key_id, stated.key_id),
            ("principals", cert.principals, stated.principals),
            ("valid_after", cert.valid_after, stated.valid_after),
            ("valid_before", cert.valid_before, stated.valid_before),
        )
        if got != said
    ]
    if differences:
        raise CertificateMismatch(
            f"the certificate and the server's answer disagree on {', '.join(differences)}",
            field="certificate",
        )
    if cert.valid_before <= cert.valid_after:
        raise CertificateMismatch("the certificate's window is empty", field="certificate")
    login_user = None
    first = cert.principals[0]
    if "@" in first:
        login_user = check_login_user(first.split("@", 1)[0], field="the certificate's login user")
    return VerifiedCertificate(
        certificate=cert, request_id=request_id, target=target, login_user=login_user
    )


def describe_refusal(e: JitSshError) -> str:
    return f"refusing the certificate the server sent: {e} [{e.code}]; nothing was written"


__all__.append("describe_refusal")


# --------------------------------------------------------------------------- single sign-on
#
# The answers of /v1/sso, /v1/sso/start, /v1/sso/poll and /v1/sso/finish. The
# authorize and verification URLs are shown to a person and opened in a browser:
# a hostile server must not be able to run script (javascript:), open a local
# file (file:), hide the real host (user:pass@, a backslash browsers read as '/'),
# or fill the terminal. The finish answer names the user and key the client
# then writes into its config: only a valid name, and only this key.

_FLOW_ID = re.compile(r"[A-Za-z0-9_-]{16,128}")
#: RFC 8628 user codes as providers make them: "WDJB-MJHT", "GQVQJKEC", "ABC-DEF-GHI".
_USER_CODE = re.compile(r"[A-Za-z0-9]{1,16}(?:-[A-Za-z0-9]{1,16}){0,4}")
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\]")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
#: The longest URL shown or opened (an authorize URL with PKCE, state and nonce is ~600).
MAX_URL = 4096
#: The longest a sign-in flow may last, by the server's own expires_at.
_MAX_FLOW = timedelta(days=1)
_MAX_INTERVAL = 600


@dataclass(frozen=True)
class SsoInfo:
    """``GET /v1/sso``: whether the server signs people in with an identity provider."""

    enabled: bool
    display_name: str = "single sign-on"
    device_flow: bool = False
    enrolment_lifetime_seconds: int | None = None


@dataclass(frozen=True)
class SsoStart:
    """A loopback flow (``POST /v1/sso/start`` with ``mode: loopback``)."""

    flow: str
    authorize_url: str
    expires_at: datetime


@dataclass(frozen=True)
class SsoDeviceStart:
    """A device flow (``POST /v1/sso/start`` with ``mode: device``)."""

    flow: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    interval: int
    expires_at: datetime


@dataclass(frozen=True)
class SsoEnrolment:
    """The finish answer (``POST /v1/sso/finish``, or a poll that says ``done``)."""

    user: str
    groups: tuple[str, ...]
    groups_source: str
    fingerprint: str
    #: None: the key was enrolled by an admin already (for this user), and does not expire.
    expires_at: datetime | None


@dataclass(frozen=True)
class SsoPoll:
    """One ``POST /v1/sso/poll`` answer: ``pending`` or ``slow_down`` (with the interval to
    wait), or ``done`` with the enrolment."""

    status: str
    interval: int | None = None
    enrolment: SsoEnrolment | None = None


def _need_object(answer: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(answer, dict):
        raise _answer_error(f"{what} must be a JSON object, not {type(answer).__name__}", what)
    return answer


def check_browser_url(value: Any, name: str) -> str:
    """A URL the client prints for a person and opens in a browser: ``https://HOST[:PORT]/...``,
    or ``http://`` to 127.0.0.1, localhost or [::1] only; printable ASCII without spaces,
    quotes, backslashes or credentials, at most :data:`MAX_URL` characters."""
    if not isinstance(value, str):
        raise _answer_error(f"{name} must be a string, not {type(value).__name__}", name)
    if len(value) > MAX_URL:
        raise _answer_error(f"{name} is longer than {MAX_URL} characters", name)
    bad = next((c for c in value if not 0x21 <= ord(c) <= 0x7E or c in "\\\"'<>`"), None)
    if bad is not None:
        raise _answer_error(
            f"{name} holds U+{ord(bad):04X}: a URL to open is printable ASCII without "
            "spaces, quotes or backslashes",
            name,
        )
    scheme = value.split(":", 1)[0] if ":" in value else ""
    if scheme not in ("https", "http") or not value.startswith(f"{scheme}://"):
        shown = f"a {scheme[:20]}: URL" if scheme else "no URL"
        raise _answer_error(f"{name} must be an https:// URL, not {shown}", name)
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise _answer_error(f"{name} {value[:80]!r} is not a valid URL", name) from None
    host = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
    if "@" in parts.netloc:
        raise _answer_error(f"{name} must not hold credentials (user@host)", name)
    if not host or not _HOSTNAME.fullmatch(host):
        raise _answer_error(f"{name} names no valid host", name)
    if parts.fragment:
        raise _answer_error(f"{name} must not have a fragment", name)
    if scheme == "http" and host.lower() not in _LOOPBACK_HOSTS:
        raise _answer_error(
            f"{name} is plain http to {host[:64]}: only https (plain http only to localhost)",
            name,
        )
    return value


def check_flow_id(value: Any, name: str = "flow") -> str:
    """A sign-in flow's id (the OAuth state): 16 to 128 url-safe characters."""
    if not isinstance(value, str) or not _FLOW_ID.fullmatch(value):
        raise _answer_error(f"{name} {str(value)[:40]!r} is not a flow id", name)
    return value


def _flow_expiry(value: Any, now: datetime) -> datetime:
    expires_at = _time(value, "expires_at")
    if expires_at <= now:
        raise _answer_error(
            "expires_at is already past (is this machine's clock right?)", "expires_at"
        )
    if expires_at - now > _MAX_FLOW:
        raise _answer_error("expires_at is more than a day away", "expires_at")
    return expires_at


def _interval(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_INTERVAL:
        raise _answer_error(
            f"interval must be a whole number of seconds from 1 to {_MAX_INTERVAL}, "
            f"not {value!r:.32}",
            "interval",
        )
    return value


def check_sso_info(answer: Any) -> SsoInfo:
    """``GET /v1/sso``: ``{"enabled": false}``, or enabled with a display name (at most 100
    printable characters), whether the device flow is offered, and the enrolment lifetime."""
    answer = _need_object(answer, "the /v1/sso answer")
    enabled = answer.get("enabled")
    if not isinstance(enabled, bool):
        raise _answer_error("enabled must be true or false", "enabled")
    if not enabled:
        return SsoInfo(enabled=False)
    display_name = _visible(answer.get("display_name", "single sign-on"), "display_name", limit=100)
    if not display_name.strip() or "\t" in display_name:
        raise _answer_error("display_name must be a name to show", "display_name")
    device_flow = answer.get("device_flow", False)
    if not isinstance(device_flow, bool):
        raise _answer_error("device_flow must be true or false", "device_flow")
    lifetime = answer.get("enrolment_lifetime_seconds")
    return SsoInfo(
        enabled=True,
        display_name=display_name,
        device_flow=device_flow,
        enrolment_lifetime_seconds=None
        if lifetime is None
        else _count(lifetime, "enrolment_lifetime_seconds", limit=366 * 86400),
    )


def check_sso_start(answer: Any, *, now: datetime) -> SsoStart:
    """The answer to a loopback start: the flow id, the provider URL to open, and when the
    flow ends (after ``now``, within a day)."""
    answer = _need_object(answer, "the sign-in start answer")
    return SsoStart(
        flow=check_flow_id(answer.get("flow")),
        authorize_url=check_browser_url(answer.get("authorize_url"), "authorize_url"),
        expires_at=_flow_expiry(answer.get("expires_at"), now),
    )


def check_sso_device_start(answer: Any, *, now: datetime) -> SsoDeviceStart:
    """The answer to a device start: the code to type (a strict pattern), the page to type it
    on, the page with the code filled in (null, or on the same site), how often to poll."""
    answer = _need_object(answer, "the sign-in start answer")
    code = answer.get("user_code")
    if not isinstance(code, str) or len(code) > 40 or not _USER_CODE.fullmatch(code):
        raise _answer_error(
            f"user_code {str(code)[:40]!r} is not a code to type (letters and digits in "
            "groups joined by '-')",
            "user_code",
        )
    uri = check_browser_url(answer.get("verification_uri"), "verification_uri")
    complete = answer.get("verification_uri_complete")
    if complete is not None:
        complete = check_browser_url(complete, "verification_uri_complete")
        site = urllib.parse.urlsplit(uri)
        other = urllib.parse.urlsplit(complete)
        if (site.scheme, site.netloc.lower()) != (other.scheme, other.netloc.lower()):
            raise _answer_error(
                "verification_uri_complete is on another site than verification_uri",
                "verification_uri_complete",
            )
    return SsoDeviceStart(
        flow=check_flow_id(answer.get("flow")),
        user_code=code,
        verification_uri=uri,
        verification_uri_complete=complete,
        interval=_interval(answer.get("interval", 5)),
        expires_at=_flow_expiry(answer.get("expires_at"), now),
    )


def check_sso_finish(answer: Any, *, fingerprint: str, now: datetime) -> SsoEnrolment:
    """The finish answer: the user (a valid name), their groups, where the groups came from,
    the key enrolled (it must be THIS key, ``fingerprint``) and until when (in the future;
    ``null`` when an admin had enrolled the key for this user already: it does not expire)."""
    answer = _need_object(answer, "the sign-in finish answer")
    user = answer.get("user")
    if not isinstance(user, str) or not _NAME.fullmatch(user):
        raise _answer_error(f"user {str(user)[:64]!r} is not a user name", "user")
    groups = _name_list(answer.get("groups", []), "groups")
    source = answer.get("groups_source", "sso")
    if source not in ("sso", "local"):
        raise _answer_error(
            f"groups_source {str(source)[:32]!r} is not sso or local", "groups_source"
        )
    got = answer.get("fingerprint")
    if not isinstance(got, str) or not _FINGERPRINT.fullmatch(got):
        raise _answer_error(
            f"fingerprint {str(got)[:64]!r} is not a SHA256 fingerprint", "fingerprint"
        )
    if got != fingerprint:
        raise _answer_error(
            f"the server enrolled {got}, not this key ({fingerprint})", "fingerprint"
        )
    if "expires_at" not in answer:
        raise _answer_error("the sign-in finish answer has no expires_at", "expires_at")
    stated = answer["expires_at"]
    expires_at = None if stated is None else _time(stated, "expires_at")
    if expires_at is not None and expires_at <= now:
        raise _answer_error("the enrolment's expires_at is already past", "expires_at")
    return SsoEnrolment(
        user=user,
        groups=groups,
        groups_source=source,
        fingerprint=got,
        expires_at=expires_at,
    )


def check_sso_poll(answer: Any, *, fingerprint: str, now: datetime) -> SsoPoll:
    """A poll answer: ``pending`` / ``slow_down`` with an interval, or ``done`` with the
    finish answer's fields (checked by :func:`check_sso_finish`)."""
    answer = _need_object(answer, "the sign-in poll answer")
    status = answer.get("status")
    if status in ("pending", "slow_down"):
        return SsoPoll(status=status, interval=_interval(answer.get("interval", 5)))
    if status == "done":
        return SsoPoll(
            status="done", enrolment=check_sso_finish(answer, fingerprint=fingerprint, now=now)
        )
    raise _answer_error(f"status {str(status)[:32]!r} is not pending, slow_down or done", "status")


@dataclass(frozen=True)
class WhoAmI:
    """``GET /v1/whoami``: who the key is, their groups and where those came from, and when
    an enrolment made by signing in ends (None for a key an admin enrolled)."""

    user: str
    groups: tuple[str, ...]
    groups_source: str
    enrolment_expires_at: datetime | None


def check_whoami(answer: Any) -> WhoAmI:
    """The ``/v1/whoami`` answer, each field checked."""
    answer = _need_object(answer, "the /v1/whoami answer")
    user = answer.get("user")
    if not isinstance(user, str) or not _NAME.fullmatch(user):
        raise _answer_error(f"user {str(user)[:64]!r} is not a user name", "user")
    source = answer.get("groups_source", "local")
    if source not in ("sso", "local"):
        raise _answer_error(
            f"groups_source {str(source)[:32]!r} is not sso or local", "groups_source"
        )
    expires = answer.get("enrolment_expires_at")
    return WhoAmI(
        user=user,
        groups=_name_list(answer.get("groups", []), "groups"),
        groups_source=source,
        enrolment_expires_at=None if expires is None else _time(expires, "enrolment_expires_at"),
    )


# ------------------------------------------------------------------------------ extensions
#
# An extension (``jit-ssh extend``) is a request linked to a running access: its view says
# which request it extends and how much time it adds; its certificate answer says which
# serial it replaced. Both are checked before anything is printed or written.

#: The longest a duration the server states may be (ten years): anything longer is nonsense.
_MAX_SECONDS = 10 * 366 * 24 * 3600


@dataclass(frozen=True)
class ExtensionView:
    """What an extension adds to the access it extends (a request view's ``extension``)."""

    of: str
    added_seconds: int
    extensions_seconds: int
    total_seconds: int


def check_extension(request: RequestView) -> ExtensionView | None:
    """The request's ``extends`` and ``extension``, checked (``None``: it extends nothing).
    Raises :class:`client.errors.BadServerAnswer` naming the field."""
    answer = request.answer
    extends = answer.get("extends")
    extension = answer.get("extension")
    if extends is None and extension is None:
        return None
    of = check_request_id(extends, field="extends")
    if not isinstance(extension, Mapping):
        raise _answer_error("an extension's view must describe it (extension)", "extension")
    if check_request_id(extension.get("of"), field="extension.of") != of:
        raise _answer_error("extension.of and extends name different requests", "extension")
    counts = {
        name: _count(extension.get(name), f"extension.{name}", limit=_MAX_SECONDS)
        for name in ("added_seconds", "extensions_seconds", "total_seconds")
    }
    if not counts["added_seconds"] <= counts["extensions_seconds"] <= counts["total_seconds"]:
        raise _answer_error(
            "an extension's times do not add up (added <= extensions <= total)", "extension"
        )
    return ExtensionView(of=of, **counts)


def check_replaces_serial(answer: Any) -> int | None:
    """The serial an extension's certificate replaced (``replaces_serial``), if the answer names one."""
    value = answer.get("replaces_serial") if isinstance(answer, Mapping) else None
    return None if value is None else check_serial(value)


__all__ += ["ExtensionView", "check_extension", "check_replaces_serial"]
