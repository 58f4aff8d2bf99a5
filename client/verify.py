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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
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
    "check_request_answer",
    "check_request_list",
    "check_request_id",
    "check_serial",
    "fetch_ca_keys",
    "parse_issue_answer",
    "verify_issued",
]

_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SERIAL = re.compile(r"[0-9]{1,20}")
_MAX_PRINCIPALS = 256


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


def check_request_answer(answer: Any) -> dict[str, Any]:
    """A request as the server describes it (``GET /v1/requests/ID``, a row of a
    list, the answer to submit, approve, deny), checked field by field before
    any command reads it: the id goes into URL paths, the rest onto the screen.
    Returns ``answer`` itself; raises :class:`client.errors.BadServerAnswer` naming the field.
    """
    if not isinstance(answer, dict):
        raise _answer_error(
            f"a request must be a JSON object, not {type(answer).__name__}", "request"
        )
    check_request_id(answer.get("id"), field="request id")
    state = answer.get("state")
    if state not in _REQUEST_STATES:
        raise _answer_error(f"request state {str(state)[:32]!r} is not one jit-ssh knows", "state")
    for name in ("target", "requester", "reason", "created_at", "approval_url", "deny_reason"):
        value = answer.get(name)
        if value is not None and not isinstance(value, str):
            raise _answer_error(f"{name} must be a string, not {type(value).__name__}", name)
    if not isinstance(answer.get("target"), str):
        raise _answer_error("the request names no target", "target")
    for name in ("duration_seconds", "approvals_required"):
        value = answer.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _answer_error(f"{name} must be a whole number >= 0, not {value!r:.32}", name)
    approvals = answer.setdefault("approvals", [])
    if not isinstance(approvals, list) or not all(
        isinstance(a, dict)
        and isinstance(a.get("decision"), str)
        and isinstance(a.get("approver", ""), str)
        for a in approvals
    ):
        raise _answer_error("approvals must be a list of {decision, approver} objects", "approvals")
    certificate = answer.get("certificate")
    if certificate is not None:
        if not isinstance(certificate, dict):
            raise _answer_error("certificate must be an object", "certificate")
        serial = certificate.get("serial")
        if isinstance(serial, int) and not isinstance(serial, bool):
            serial = str(serial)
        certificate["serial"] = str(check_serial(serial))
    return answer


def check_request_list(answer: Any) -> list[dict[str, Any]]:
    """The ``requests`` of a ``GET /v1/requests`` answer, each checked by :func:`check_request_answer`."""
    rows = answer.get("requests") if isinstance(answer, dict) else None
    if not isinstance(rows, list):
        raise _answer_error("'requests' must be a list", "requests")
    return [check_request_answer(r) for r in rows]


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
    request: Mapping[str, Any],
    target: str,
) -> VerifiedCertificate:
    """Check the server's certificate answer for the key just made; raise unless every check passes.

    ``request`` is the server's JSON for the request (its ``id`` and
    ``target``); ``target`` is the one the engineer asked for.
    """
    check_target(target, field="target")
    if not isinstance(request, Mapping):
        raise BadServerAnswer("the server's request is not a JSON object", field="request")
    request_id = check_request_id(request.get("id"), field="the server's request id")
    if request.get("target") != target:
        raise CertificateMismatch(
            f"the server's request {request_id} is for target {str(request.get('target'))[:64]!r}, not {target!r}",
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
