"""The database: plain SQLAlchemy 2.0 models.

Times are timezone-aware UTC, set by the service code (never a column
default: a default evaluated at import time, or by the database clock, would
not be the ``now`` the service decided with). Serials are random 63-bit
integers: PostgreSQL's bigint is signed.
"""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

import policies

__all__ = [
    "LIVE_STATES",
    "Base",
    "ApprovalDecision",
    "decision_text",
    "UTCDateTime",
    "Role",
    "RequestState",
    "User",
    "UserGroup",
    "UserRole",
    "SshKey",
    "AccessRequest",
    "Approval",
    "Certificate",
    "Revocation",
    "AuditEvent",
    "AuditCheckpoint",
    "AuditHead",
    "Nonce",
    "WebSession",
    "LoginThrottle",
    "AuthFailureCount",
    "RecordedKey",
    "PolicyState",
    "GroupsSource",
    "KeySource",
    "SsoFlowKind",
    "SsoFlow",
    "OutboxState",
    "OutboxMessage",
    "SlackMessage",
    "ChatReplay",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite has no time zones: store naive UTC.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Role(enum.StrEnum):
    REQUESTER = "requester"
    APPROVER = "approver"
    ADMIN = "admin"


class RequestState(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    ISSUED = "issued"
    REVOKED = "revoked"
    ENDED = "ended"


#: The states in which a request can still become, or already is, a valid certificate: what the
#: expiry sweep looks at and what ending a user's access ends.
LIVE_STATES = (RequestState.PENDING, RequestState.APPROVED, RequestState.ISSUED)


class GroupsSource(enum.StrEnum):
    """Where a user's groups come from: set by an admin, or by the provider's claim at the
    last single sign-on."""

    LOCAL = "local"
    SSO = "sso"


class KeySource(enum.StrEnum):
    """How an API key was enrolled: by an admin (never expires), or by a single sign-on
    (expires after the configured enrolment lifetime)."""

    ADMIN = "admin"
    SSO = "sso"


class SsoFlowKind(enum.StrEnum):
    """A single sign-on in progress: a browser's web login, the CLI's loopback
    redirect, or the CLI's device authorization grant (RFC 8628)."""

    WEB = "web"
    CLI = "cli"
    DEVICE = "device"


class ApprovalDecision(enum.StrEnum):
    """One approver's answer to a request."""

    APPROVE = "approve"
    DENY = "deny"


def _enum_column(kind: type[enum.StrEnum], length: int, name: str) -> Enum:
    """A column holding ``kind``'s values as text (as before there was an enum), with a
    CHECK constraint ``name`` that the database refuses any other value with
    (migration 0005)."""
    return Enum(
        kind,
        native_enum=False,
        length=length,
        values_callable=lambda k: [m.value for m in k],
        create_constraint=True,
        validate_strings=True,
        name=name,
    )


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    totp_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The last TOTP time step accepted: a code is never accepted twice (RFC 6238, 5.2).
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: "sso" once a single sign-on replaced the groups with the provider's claim.
    groups_source: Mapped[GroupsSource] = mapped_column(
        _enum_column(GroupsSource, 8, "ck_users_groups_source"),
        # The database's default only: a Core insert written for an older schema (the
        # migration tests) must not name the column.
        server_default=GroupsSource.LOCAL.value,
    )
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    #: SHA-256 (hex) of ``issuer + "\n" + sub``: who this user is at the provider.
    sso_subject: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)

    groups: Mapped[list[UserGroup]] = relationship(cascade="all, delete-orphan", lazy="selectin")
    roles: Mapped[list[UserRole]] = relationship(cascade="all, delete-orphan", lazy="selectin")
    # Loaded only when asked for (admin listings): every signed call loads its user.
    keys: Mapped[list[SshKey]] = relationship(cascade="all, delete-orphan", lazy="select")

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(sorted(g.name for g in self.groups))

    @property
    def role_names(self) -> tuple[str, ...]:
        return tuple(sorted(r.role for r in self.roles))

    def has_role(self, role: Role) -> bool:
        return role.value in self.role_names


class UserGroup(Base):
    __tablename__ = "user_groups"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)


class UserRole(Base):
    __tablename__ = "user_roles"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16), primary_key=True)


class SshKey(Base):
    """An enrolled API key. Removing a key keeps the row (``removed_at``) for the audit trail."""

    __tablename__ = "ssh_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    key_type: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(Text)
    comment: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    source: Mapped[KeySource] = mapped_column(
        _enum_column(KeySource, 8, "ck_ssh_keys_source"),
        default=KeySource.ADMIN,
        server_default=KeySource.ADMIN.value,
    )
    #: When a single sign-on enrolment ends (``None``: an admin's key, which does not expire).
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The user's groups at enrolment, as a JSON list (SSO enrolments).
    groups: Mapped[str | None] = mapped_column(Text, nullable=True)


class AccessRequest(Base):
    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    target: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
    requested_seconds: Mapped[int] = mapped_column(Integer)
    granted_seconds: Mapped[int] = mapped_column(Integer)
    state: Mapped[RequestState] = mapped_column(
        _enum_column(RequestState, 16, "ck_requests_state"), index=True
    )
    policy_version: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: The policy's decision, as canonical JSON of :meth:`policies.Decision.to_record`.
    decision: Mapped[str] = mapped_column(Text)
    approvals_required: Mapped[int] = mapped_column(Integer, default=0)
    auto_approved: Mapped[bool] = mapped_column(Boolean, default=False)
    break_glass: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    pending_until: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    claim_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deny_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The requester's groups the decision at submit used (a JSON list), and where they came
    #: from; ``None`` for requests made before single sign-on existed.
    groups_used: Mapped[str | None] = mapped_column(Text, nullable=True)
    groups_source: Mapped[GroupsSource | None] = mapped_column(
        _enum_column(GroupsSource, 8, "ck_requests_groups_source"), nullable=True
    )
    #: An extension: the request whose running access this one extends (``jit-ssh extend``).
    extends_id: Mapped[str | None] = mapped_column(
        ForeignKey("requests.id", name="fk_requests_extends_id"), nullable=True, index=True
    )

    requester: Mapped[User] = relationship(lazy="joined", innerjoin=True)
    approvals: Mapped[list[Approval]] = relationship(
        lazy="selectin", order_by="Approval.id", back_populates="request"
    )
    certificate: Mapped[Certificate | None] = relationship(
        lazy="selectin", back_populates="request"
    )

    @property
    def groups_used_list(self) -> list[str] | None:
        """:attr:`groups_used` as a list (``None`` for a request from before it was kept)."""
        if self.groups_used is None:
            return None
        value = json.loads(self.groups_used)
        return [str(g) for g in value] if isinstance(value, list) else None

    def stored_decision(self, *, requester: str | None = None) -> policies.Decision:
        """The policy decision stored with this request, as a value. ``requester``:
        the requester's name when the caller has it (else read from the relationship)."""
        record = json.loads(self.decision)
        if not isinstance(record, dict):
            raise ValueError(f"request {self.id}: the stored decision is not a JSON object")
        return policies.Decision.from_record(
            record,
            requester=self.requester.name if requester is None else requester,
            target=self.target,
        )


def decision_text(decision: policies.Decision) -> str:
    """What :attr:`AccessRequest.decision` stores: ``decision``'s record as canonical JSON."""
    return json.dumps(decision.to_record(), sort_keys=True, separators=(",", ":"))


class Approval(Base):
    """One approver's decision on one request (approve or deny)."""

    __tablename__ = "approvals"
    __table_args__ = (UniqueConstraint("request_id", "approver_id", name="uq_approval_once"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"), index=True)
    approver_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    decision: Mapped[ApprovalDecision] = mapped_column(
        _enum_column(ApprovalDecision, 8, "ck_approvals_decision")
    )
    comment: Mapped[str] = mapped_column(Text, default="")
    shortened_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: How it was given: "web", "api" or "chat" (None: before migration 0010).
    via: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    request: Mapped[AccessRequest] = relationship(back_populates="approvals")
    approver: Mapped[User] = relationship(lazy="joined", innerjoin=True)


class Certificate(Base):
    __tablename__ = "certificates"

    serial: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    # Unique: one approved request yields at most one certificate.
    request_id: Mapped[str | None] = mapped_column(
        ForeignKey("requests.id"), unique=True, nullable=True
    )
    key_id: Mapped[str] = mapped_column(Text)
    principals: Mapped[str] = mapped_column(Text)  # JSON list
    valid_after: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_before: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    public_key_fingerprint: Mapped[str] = mapped_column(String(64))
    ca_fingerprint: Mapped[str] = mapped_column(String(64))
    certificate: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    backdate_seconds: Mapped[int] = mapped_column(Integer, default=0)
    offline: Mapped[bool] = mapped_column(Boolean, default=False)
    #: When the expiry warning (``certificate.expiring``) was recorded; once per certificate.
    warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    request: Mapped[AccessRequest | None] = relationship(back_populates="certificate")
    revocation: Mapped[Revocation | None] = relationship(lazy="selectin")


class Revocation(Base):
    __tablename__ = "revocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    serial: Mapped[int] = mapped_column(ForeignKey("certificates.serial"), unique=True)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    # Copied from the certificate so the KRL query needs no join.
    valid_before: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AuditEvent(Base):
    """Append-only. ``hash = SHA-256(prev_hash || body)``; ``body`` is the canonical JSON that was hashed."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    at: Mapped[str] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    data: Mapped[str] = mapped_column(Text)  # canonical JSON of the event's data
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(BigInteger, index=True)
    head_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[str] = mapped_column(String(40))
    key_fingerprint: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)


class AuditHead(Base):
    """One row: the chain head. Writers lock it (FOR UPDATE), which orders the chain."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))


class Nonce(Base):
    """Nonces of signed API calls seen within the allowed clock skew: a replay hits the primary key."""

    __tablename__ = "nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_fingerprint: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class WebSession(Base):
    """A logged-in browser. The cookie holds a random id; this row holds its SHA-256,
    so a database leak yields no usable session. Logging out deletes the row."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    #: Derived from the password hash and TOTP secret at login: changing either ends every session.
    auth_stamp: Mapped[str] = mapped_column(String(64))
    #: How it signed in: "password" or "sso" (None: before migration 0010), and whether a
    #: TOTP code was given. A rule's ``approver_auth`` is judged on these and ``created_at``.
    via: Mapped[str | None] = mapped_column(String(16), nullable=True)
    totp_used: Mapped[bool] = mapped_column(Boolean, default=False)


class LoginThrottle(Base):
    """Failed web logins for names that match no account, keyed by an HMAC of the name.

    Accounts keep their count on the user row (``failed_logins``, ``locked_until``);
    unknown names get the same slow-down and lockout from here, so the answers do
    not tell whether an account exists.
    """

    __tablename__ = "login_throttle"

    name_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AuthFailureCount(Base):
    """Failed API authentications, counted per time window, claimed user and reason.

    Anyone can send a failing call, naming any user: one audit event per call
    would let anyone flood the hash chain and write events under a user's
    name. So the chain gets an event for the first failure of each (window,
    claimed user, code) only, and a bounded number per window; this table
    counts them all (and every failure is one JSON line in the server log).
    ``claimed_user`` is ``''`` when the call named no plausible user; the row
    with ``claimed_user == code == ''`` counts the window's audit events.
    """

    __tablename__ = "auth_failures"

    window_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    claimed_user: Mapped[str] = mapped_column(String(64), primary_key=True)
    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RecordedKey(Base):
    """The keys every replica must hold, recorded by the first start.

    ``purpose`` "ca": a CA key and its rotation state (``staged``: trusted and
    published, not signing; ``signing``: the one signer; ``retired``). The
    public key is kept, so that a replica publishes a staged key even before
    its files reach that replica. ``purpose`` "audit": the audit (checkpoint)
    key, ``state`` "signing". A replica whose keys differ refuses to start
    (server/keystore.py).
    """

    __tablename__ = "recorded_keys"

    purpose: Mapped[str] = mapped_column(String(8), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_type: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PolicyState(Base):
    """One row (``id`` 1): the policy version the audit log last recorded.

    Every worker of every replica notices a changed policy file on its own; the
    one that moves this row from the recorded version to the new one, under its
    row lock (SQLite: the write lock), records ``policy.reloaded`` in the same
    transaction, and the others find the row already moved and record nothing
    (``server.services.requests.RequestService.record_policy_version``). A
    change back to an earlier version moves the row again: it is recorded too.
    ``version`` is ``None`` until the first start records one (silently: a
    first load is not a change). Migration 0006 creates the row.
    """

    __tablename__ = "policy_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The ``policy.reloaded`` event that recorded ``version`` (None for the first one).
    audit_event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class SsoFlow(Base):
    """A single sign-on in progress (``server.services.sso``).

    ``id_hash`` is the SHA-256 of the flow's id, which is also the OAuth ``state``:
    a database dump holds no usable state. ``used_at`` is set once, when the
    provider's answer was taken (the callback, or the device grant's token): a
    replayed state finds it set. ``finish_code_hash`` (cli) is the SHA-256 of the
    one-time code the browser carried back to the loopback listener; ``done_at`` is
    set when the key was enrolled (finish, or the device poll that got the token).
    """

    __tablename__ = "sso_flows"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[SsoFlowKind] = mapped_column(_enum_column(SsoFlowKind, 8, "ck_sso_flows_kind"))
    nonce: Mapped[str | None] = mapped_column(String(64), nullable=True)
    code_verifier: Mapped[str | None] = mapped_column(String(128), nullable=True)
    next_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    loopback_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    public_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    key_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    device_code: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Seconds between device-token polls (the provider's, raised by each slow_down).
    poll_interval: Mapped[int | None] = mapped_column(Integer, nullable=True)
    polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True
    )
    finish_code_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: cli: the SHA-256 of the one-time token of the confirmation page ``/sso/cli/<token>``
    #: (the URL the CLI opens; never the state), and the state sealed with that token, so
    #: that only the token's holder can put the state in a browser.
    open_token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    open_state: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: cli: when a browser continued from the confirmation page (once: that browser holds
    #: the state in its session cookie), and the address the flow was started from.
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_from: Mapped[str | None] = mapped_column(String(64), nullable=True)


class OutboxState(enum.StrEnum):
    """Where a notification stands: waiting (first try or a retry), delivered, or given up on
    after the last attempt (kept, and shown by ``jit-ssh admin outbox``)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class OutboxMessage(Base):
    """One notification for one sink, written in the transaction of the audit event it
    reports (the transactional outbox); the worker delivers it at least once."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The idempotency key receivers de-duplicate on: ``"<audit event id>.<sink>"``.
    key: Mapped[str] = mapped_column(String(160), unique=True)
    #: ``"webhook:<name>"``, ``"slack.channel"``, ``"slack.dm"``.
    sink: Mapped[str] = mapped_column(String(96))
    event_id: Mapped[int] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    #: The event as JSON (type, at, actor, request_id, data), as recorded.
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[OutboxState] = mapped_column(
        _enum_column(OutboxState, 16, "ck_outbox_state"), default=OutboxState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: A worker's claim: no other worker takes the message until it lapses.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SlackMessage(Base):
    """The channel message a request was posted as, updated in place on every change."""

    __tablename__ = "slack_messages"

    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64))
    ts: Mapped[str] = mapped_column(String(32))
    posted_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChatReplay(Base):
    """A Slack interaction seen within the signature's age limit: a replay hits the key."""

    __tablename__ = "chat_replays"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


Index("ix_outbox_due", OutboxMessage.state, OutboxMessage.next_attempt_at)
Index("ix_requests_requester_state", AccessRequest.requester_id, AccessRequest.state)
# An approver's decisions, newest first (the web page "Decided by me").
Index("ix_approvals_approver", Approval.approver_id, Approval.id)
