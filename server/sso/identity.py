"""From a validated ID token to a jit-ssh identity: the user name, the email, the groups.

The token's signature and registered claims were checked by :mod:`server.sso.oidc`; the other
claims are still whatever the provider (or an admin there) put in them. Refusals:

* :class:`~server.errors.SsoBadClaim` (401, ``field`` = the claim): the username claim missing,
  not a string or not a valid jit-ssh user name; the groups claim not a list of strings, or
  too long; an email that is needed but missing or malformed;
* :class:`~server.errors.SsoEmailUnverified` (401): the email names the user, or
  ``allowed_email_domains`` is set, and ``email_verified`` is not ``true`` (anyone may type any
  address into a provider's self-service profile);
* :class:`~server.errors.SsoDomainRefused` (403): the verified email is outside the allowed
  domains.

Groups: with a ``group_map``, only mapped provider groups count (each becomes its jit-ssh
name); without one, each provider group that is a valid jit-ssh group name counts as itself and
the rest are dropped (a provider group "Domain Users" cannot be named by a policy anyway).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.errors import SsoBadClaim, SsoDomainRefused, SsoEmailUnverified

from .oidc import IdTokenClaims
from .settings import _GROUP_NAME, _USER_NAME, SsoSettings

__all__ = ["SsoIdentity", "identity_from_claims", "subject_key", "MAX_GROUPS"]

#: More entries than this in the groups claim is refused, not cut short: a cut list would drop
#: groups at random.
MAX_GROUPS = 1000
_MAX_GROUP_TEXT = 256
_MAX_EMAIL = 254


def subject_key(issuer: str, subject: str) -> str:
    """What ``users.sso_subject`` stores: sha256 of issuer + newline + sub, hex. A ``sub`` is
    unique only within its issuer, hence both."""
    return hashlib.sha256(f"{issuer}\n{subject}".encode()).hexdigest()


@dataclass(frozen=True)
class SsoIdentity:
    """Who signed in, as jit-ssh will record them."""

    issuer: str
    subject: str
    #: The jit-ssh user name (from ``username_claim``).
    name: str
    email: str | None
    email_verified: bool
    #: The jit-ssh groups, mapped and sorted: what replaces the user's groups.
    groups: tuple[str, ...]
    #: The groups as the provider named them (for the audit log).
    provider_groups: tuple[str, ...]

    @property
    def subject_key(self) -> str:
        return subject_key(self.issuer, self.subject)


def _email(claims: Mapping[str, Any], settings: SsoSettings) -> tuple[str | None, bool]:
    value = claims.get("email")
    verified = claims.get("email_verified") is True
    well_formed = (
        isinstance(value, str)
        and 3 <= len(value) <= _MAX_EMAIL
        and value.count("@") == 1
        and not value.startswith("@")
        and not value.endswith("@")
        and value.isprintable()
        and not any(c.isspace() for c in value)
    )
    if not settings.email_required:
        return (value if well_formed else None), verified and well_formed
    if value is None:
        raise SsoBadClaim(
            "the provider sent no email claim (is 'email' among the scopes?)", field="email"
        )
    if not well_formed:
        raise SsoBadClaim("the provider's email claim is not an email address", field="email")
    assert isinstance(value, str)
    if not verified:
        raise SsoEmailUnverified(
            f"the email {value!r} is not verified at the provider (email_verified is "
            f"{claims.get('email_verified')!r}); verify it there, then sign in again",
            field="email_verified",
        )
    if settings.allowed_email_domains:
        domain = value.rsplit("@", 1)[1].lower()
        if domain not in settings.allowed_email_domains:
            raise SsoDomainRefused(
                f"{domain!r} is not one of the allowed email domains "
                f"({', '.join(settings.allowed_email_domains)})",
                field="email",
            )
    return value, True


def _name(claims: Mapping[str, Any], settings: SsoSettings) -> str:
    claim = settings.username_claim
    value = claims.get(claim)
    if value is None:
        raise SsoBadClaim(
            f"the provider sent no {claim!r} claim, which names the user here "
            "([sso] username_claim)",
            field=claim,
        )
    if not isinstance(value, str):
        raise SsoBadClaim(
            f"the provider's {claim!r} claim is a {type(value).__name__}, not a name", field=claim
        )
    if claim == "email":
        # Email addresses are matched without regard to case; user names are not.
        value = value.lower()
    if not _USER_NAME.fullmatch(value):
        raise SsoBadClaim(
            f"the provider's {claim!r} claim {value[:64]!r} is not a valid jit-ssh user name "
            "(1-64 letters, digits or _ . @ + -, not starting with a symbol)",
            field=claim,
        )
    return value


def _groups(claims: Mapping[str, Any], settings: SsoSettings) -> tuple[tuple[str, ...], ...]:
    claim = settings.groups_claim
    if not claim:
        return (), ()
    names = claims.get("_claim_names")
    if isinstance(names, dict) and claim in names:
        # Microsoft Entra ID leaves the groups out of a token when there are too many (over
        # 200) and points elsewhere instead: treating that as "no groups" would be wrong.
        raise SsoBadClaim(
            f"the provider left the {claim!r} claim out of the token (too many groups); "
            "filter the groups the application receives at the provider",
            field=claim,
        )
    value = claims.get(claim)
    if value is None:
        return (), ()
    if not isinstance(value, list):
        raise SsoBadClaim(
            f"the provider's {claim!r} claim is a {type(value).__name__}, not a list of groups",
            field=claim,
        )
    if len(value) > MAX_GROUPS:
        raise SsoBadClaim(
            f"the provider's {claim!r} claim lists {len(value)} groups (at most {MAX_GROUPS})",
            field=claim,
        )
    for g in value:
        if not isinstance(g, str) or len(g) > _MAX_GROUP_TEXT:
            raise SsoBadClaim(
                f"the provider's {claim!r} claim holds {str(g)[:64]!r}, not a group name",
                field=claim,
            )
    provider = tuple(dict.fromkeys(value))
    if settings.group_map:
        mapped = {settings.group_map[g] for g in provider if g in settings.group_map}
    else:
        mapped = {g for g in provider if _GROUP_NAME.fullmatch(g)}
    return tuple(sorted(mapped)), provider


def identity_from_claims(claims: IdTokenClaims, settings: SsoSettings) -> SsoIdentity:
    """The identity the validated ``claims`` describe, under ``settings``' rules."""
    raw = claims.claims
    email, verified = _email(raw, settings)
    name = _name(raw, settings)
    groups, provider_groups = _groups(raw, settings)
    return SsoIdentity(
        issuer=claims.issuer,
        subject=claims.subject,
        name=name,
        email=email,
        email_verified=verified,
        groups=groups,
        provider_groups=provider_groups,
    )
