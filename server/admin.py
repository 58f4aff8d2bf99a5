"""Administration straight on the database: users, groups, roles, keys, passwords.

Used by ``jit-ssh admin ...``. Every change is one transaction with its audit event.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import select

import policies
from ca import parse_public_key

from .db import transaction
from .errors import InvalidInput, InvalidState, NotFound
from .models import Role, SshKey, User, UserGroup, UserRole
from .services import Service
from .services.sso import EnrolmentInfo, list_enrolments, revoke_enrolments

__all__ = ["Admin", "UserInfo", "password_hasher", "validate_user_name", "policy_groups"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,63}")
_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_PASSWORD = 1024
MIN_PASSWORD = 12


def password_hasher() -> PasswordHasher:
    # argon2id with argon2-cffi's RFC 9106 "low memory" profile defaults (64 MiB, t=3).
    return PasswordHasher()


def validate_user_name(name: Any, field: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(
            f"{field} must be 1-64 letters, digits or _ . @ + - (not starting with a symbol)",
            field=field,
        )
    return name


def policy_groups(policy: policies.Policy) -> frozenset[str]:
    """Every group a rule of ``policy`` names: who may request, approve, or is auto-approved."""
    named: set[str] = set()
    for rule in policy.rules:
        named |= rule.groups | rule.approver_groups
        if rule.auto_approve is not None:
            named |= rule.auto_approve.groups
    return frozenset(named)


@dataclass(frozen=True)
class UserInfo:
    name: str
    disabled: bool
    groups: tuple[str, ...]
    roles: tuple[str, ...]
    keys: tuple[str, ...]
    has_password: bool


def _info(u: User) -> UserInfo:
    return UserInfo(
        name=u.name,
        disabled=u.disabled,
        groups=u.group_names,
        roles=u.role_names,
        keys=tuple(
            f"{k.key_type} {k.fingerprint} {k.comment}".strip()
            for k in u.keys
            if k.removed_at is None
        ),
        has_password=u.password_hash is not None,
    )


class Admin:
    def __init__(self, service: Service, *, actor: str = "admin-cli") -> None:
        self.service = service
        self.actor = actor

    def _record(self, s: Any, type: str, now: datetime, data: dict[str, Any]) -> None:
        self.service.audit.record(
            s,
            type=type,
            now=now,
            actor=self.actor,
            data=data,
        )

    def _user(self, s: Any, name: str) -> User:
        u: User | None = s.execute(
            select(User).where(User.name == name).with_for_update(of=User)
        ).scalar_one_or_none()
        if u is None:
            raise NotFound(f"no user {name!r}", field="name")
        return u

    def add_user(
        self,
        name: str,
        *,
        groups: Sequence[str] = (),
        roles: Sequence[str] = (),
        ssh_keys: Sequence[str] = (),
        password: str | None = None,
    ) -> UserInfo:
        validate_user_name(name)
        groups = [self._group(g) for g in groups]
        role_values = [self._role(r) for r in (roles or [Role.REQUESTER.value])]
        parsed = [parse_public_key(k, field="ssh_key") for k in ssh_keys]
        hashed = self._hash(password) if password is not None else None
        now = self.service.now()
        with transaction(self.service.sessions) as s:
            if s.execute(select(User).where(User.name == name)).scalar_one_or_none() is not None:
                raise InvalidState(f"user {name!r} already exists", field="name")
            u = User(
                name=name, disabled=False, password_hash=hashed, created_at=now, failed_logins=0
            )
            u.groups = [UserGroup(name=g) for g in dict.fromkeys(groups)]
            u.roles = [UserRole(role=r) for r in dict.fromkeys(role_values)]
            s.add(u)
            s.flush()
            for k in parsed:
                self._add_key(s, u, k, now)
            self._record(
                s,
                "user.added",
                now,
                {
                    "user": name,
                    "groups": sorted(set(groups)),
                    "roles": sorted(set(role_values)),
                    "keys": [k.fingerprint for k in parsed],
                    "password": hashed is not None,
                },
            )
            s.flush()
            s.refresh(u)
            return _info(u)

    def _add_key(self, s: Any, u: User, key: Any, now: datetime) -> None:
        existing = s.execute(
            select(SshKey).where(SshKey.fingerprint == key.fingerprint)
        ).scalar_one_or_none()
        if existing is not None:
            if existing.user_id == u.id and existing.removed_at is not None:
                existing.removed_at = None
                return
            holder = s.get(User, existing.user_id)
            who = repr(holder.name) if holder is not None else f"#{existing.user_id}"
            if existing.removed_at is not None:
                # The row stays for the audit trail, so the key cannot be enrolled again.
                raise InvalidState(
                    f"key {key.fingerprint} was enrolled for user {who} and removed;"
                    " a removed key cannot be enrolled again: make a new key",
                    field="ssh_key",
                )
            raise InvalidState(
                f"key {key.fingerprint} is already enrolled for user {who}", field="ssh_key"
            )
        s.add(
            SshKey(
                user_id=u.id,
                fingerprint=key.fingerprint,
                key_type=key.key_type,
                public_key=key.openssh,
                comment=key.comment[:255],
                created_at=now,
            )
        )

    @staticmethod
    def _group(g: str) -> str:
        if not isinstance(g, str) or not _GROUP.fullmatch(g):
            raise InvalidInput(
                f"group {g!r} must be letters, digits, '.', '_' or '-'", field="group"
            )
        return g

    @staticmethod
    def _role(r: str) -> str:
        try:
            return Role(r).value
        except ValueError:
            raise InvalidInput(
                f"role {r!r} is not one of requester, approver, admin", field="role"
            ) from None

    @staticmethod
    def _hash(password: str) -> str:
        if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise InvalidInput(
                f"a password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters",
                field="password",
            )
        return password_hasher().hash(password)

    def group_warnings(self, groups: Iterable[str]) -> list[str]:
        """One warning per group in ``groups`` that no rule of the current policy names (a
        typo, most likely: such a group grants nothing), with the closest one it does name.

        A warning only: groups may be given ahead of the policy change that uses them.
        """
        named = policy_groups(self.service.policy.current())
        listed = ", ".join(sorted(named)) or "none"
        out = []
        for g in sorted(set(groups) - named):
            close = difflib.get_close_matches(g, sorted(named), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(
                f"no rule of the policy names the group {g!r}{hint}; the groups it names: {listed}"
            )
        return out

    def list_users(self) -> list[UserInfo]:
        with transaction(self.service.sessions) as s:
            return [_info(u) for u in s.execute(select(User).order_by(User.name)).scalars()]

    def set_disabled(self, name: str, disabled: bool = True) -> UserInfo:
        # Through the service: disabling also ends the user's access (one transaction).
        return _info(self.service.set_user_disabled(name, disabled, actor=self.actor))

    def enroll_key(self, name: str, public_key: str) -> UserInfo:
        key = parse_public_key(public_key, field="ssh_key")
        now = self.service.now()
        with transaction(self.service.sessions) as s:
            u = self._user(s, name)
            self._add_key(s, u, key, now)
            self._record(
                s, "user.key_enrolled", now, {"user": name, "fingerprint": key.fingerprint}
            )
            s.flush()
            s.refresh(u)
            return _info(u)

    def remove_key(self, name: str, fingerprint: str) -> UserInfo:
        # Through the service: removing the last key also ends the user's access.
        return _info(self.service.remove_key(name, fingerprint, actor=self.actor))

    def enrolments(self, name: str) -> list[EnrolmentInfo]:
        """Every API key of ``name``: admin keys and single sign-on enrolments, with their state."""
        return list_enrolments(self.service, name)

    def revoke_enrolments(
        self, name: str, fingerprints: Sequence[str] | None
    ) -> list[EnrolmentInfo]:
        """End ``name``'s single sign-on enrolments ``fingerprints`` (``None``: every active one)."""
        return revoke_enrolments(self.service, name, fingerprints, actor=self.actor)

    def set_password(self, name: str, password: str) -> None:
        hashed = self._hash(password)
        now = self.service.now()
        with transaction(self.service.sessions) as s:
            u = self._user(s, name)
            u.password_hash = hashed
            u.failed_logins = 0
            u.locked_until = None
            self._record(s, "user.password_set", now, {"user": name})

    def set_groups(
        self, name: str, groups: Iterable[str], roles: Iterable[str] | None = None
    ) -> UserInfo:
        gs = [self._group(g) for g in groups]
        now = self.service.now()
        with transaction(self.service.sessions) as s:
            u = self._user(s, name)
            u.groups = [UserGroup(name=g) for g in dict.fromkeys(gs)]
            data: dict[str, Any] = {"user": name, "groups": sorted(set(gs))}
            if roles is not None:
                rs = [self._role(r) for r in roles]
                u.roles = [UserRole(role=r) for r in dict.fromkeys(rs)]
                data["roles"] = sorted(set(rs))
            self._record(s, "user.updated", now, data)
            s.flush()
            s.refresh(u)
            return _info(u)
