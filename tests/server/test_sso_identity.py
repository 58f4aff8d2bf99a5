"""From validated claims to a jit-ssh identity (server.sso.identity): names, email, groups."""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest

from server.errors import SsoBadClaim, SsoDomainRefused, SsoEmailUnverified, http_status
from server.sso.identity import MAX_GROUPS, SsoIdentity, identity_from_claims, subject_key
from server.sso.oidc import IdTokenClaims
from server.sso.settings import SsoSettings

ISSUER = "https://login.example.test/"
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
_DROP = object()


def claims(**changes: Any) -> IdTokenClaims:
    raw: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "00u1abcd",
        "aud": "jit-ssh",
        "email": "alice@example.com",
        "email_verified": True,
        "preferred_username": "alice",
        "groups": ["okta-sre", "Everyone"],
    }
    for k, v in changes.items():
        if v is _DROP:
            raw.pop(k, None)
        else:
            raw[k] = v
    return IdTokenClaims(ISSUER, "00u1abcd", ("jit-ssh",), NOW, NOW, None, MappingProxyType(raw))


def settings(**changes: Any) -> SsoSettings:
    return SsoSettings(issuer=ISSUER, client_id="jit-ssh", **changes)


def test_the_identity() -> None:
    ident = identity_from_claims(claims(), settings())
    assert ident == SsoIdentity(
        issuer=ISSUER,
        subject="00u1abcd",
        name="alice",
        email="alice@example.com",
        email_verified=True,
        groups=("Everyone", "okta-sre"),
        provider_groups=("okta-sre", "Everyone"),
    )
    assert ident.subject_key == subject_key(ISSUER, "00u1abcd")
    assert len(ident.subject_key) == 64
    assert subject_key(ISSUER, "a") != subject_key(ISSUER + "x", "a")


# -- the user name ----------------------------------------------------------------------------


def test_the_username_claim_missing() -> None:
    with pytest.raises(SsoBadClaim) as e:
        identity_from_claims(claims(preferred_username=_DROP), settings())
    assert e.value.field == "preferred_username" and http_status(e.value) == 401


@pytest.mark.parametrize(
    "name",
    ["alice smith", "-alice", "a" * 65, "", "alice\n", "al;ice", ".alice", "ålice", "a/b"],
)
def test_bad_user_names(name: str) -> None:
    with pytest.raises(SsoBadClaim) as e:
        identity_from_claims(claims(preferred_username=name), settings())
    assert e.value.field == "preferred_username"


@pytest.mark.parametrize("value", [5, True, ["alice"], {"n": "alice"}, 1.5])
def test_a_user_name_that_is_not_a_string(value: object) -> None:
    with pytest.raises(SsoBadClaim, match="not a name") as e:
        identity_from_claims(claims(preferred_username=value), settings())
    assert e.value.field == "preferred_username"


def test_another_username_claim() -> None:
    ident = identity_from_claims(claims(upn="alice.smith"), settings(username_claim="upn"))
    assert ident.name == "alice.smith"
    with pytest.raises(SsoBadClaim) as e:
        identity_from_claims(claims(), settings(username_claim="upn"))
    assert e.value.field == "upn"


def test_the_email_as_the_user_name() -> None:
    ident = identity_from_claims(
        claims(email="Alice@Example.com"), settings(username_claim="email")
    )
    assert ident.name == "alice@example.com"


# -- the email --------------------------------------------------------------------------------


@pytest.mark.parametrize("verified", [False, _DROP, "true", 1, None])
def test_an_unverified_email_when_it_names_the_user(verified: object) -> None:
    with pytest.raises(SsoEmailUnverified) as e:
        identity_from_claims(claims(email_verified=verified), settings(username_claim="email"))
    assert e.value.field == "email_verified" and http_status(e.value) == 401


def test_an_unverified_email_when_domains_are_restricted() -> None:
    s = settings(allowed_email_domains=["example.com"])
    with pytest.raises(SsoEmailUnverified):
        identity_from_claims(claims(email_verified=False), s)


def test_an_unverified_email_that_names_nobody_is_kept_unverified() -> None:
    ident = identity_from_claims(claims(email_verified=False), settings())
    assert ident.name == "alice" and ident.email == "alice@example.com"
    assert ident.email_verified is False


def test_no_email_when_one_is_needed() -> None:
    with pytest.raises(SsoBadClaim) as e:
        identity_from_claims(claims(email=_DROP), settings(username_claim="email"))
    assert e.value.field == "email"


@pytest.mark.parametrize("email", ["alice", "a@b@c", "@example.com", "alice@", 5, "a b@x.com"])
def test_a_malformed_email_when_one_is_needed(email: object) -> None:
    with pytest.raises(SsoBadClaim) as e:
        identity_from_claims(claims(email=email), settings(allowed_email_domains=["example.com"]))
    assert e.value.field == "email"


def test_a_malformed_email_that_is_not_needed_is_dropped() -> None:
    assert identity_from_claims(claims(email=5), settings()).email is None


def test_a_domain_outside_the_allowed_ones() -> None:
    s = settings(allowed_email_domains=["example.com"])
    with pytest.raises(SsoDomainRefused) as e:
        identity_from_claims(claims(email="alice@example.com.evil.test"), s)
    assert e.value.field == "email" and http_status(e.value) == 403
    with pytest.raises(SsoDomainRefused):
        identity_from_claims(claims(email="alice@sub.example.com"), s)


def test_an_allowed_domain_in_any_case() -> None:
    s = settings(allowed_email_domains=["example.com"])
    assert identity_from_claims(claims(email="alice@EXAMPLE.com"), s).email_verified


# -- groups -----------------------------------------------------------------------------------


def test_group_mapping_counts_only_mapped_groups() -> None:
    s = settings(group_map={"okta-sre": "sre", "okta-dba": "dba", "sre-too": "sre"})
    ident = identity_from_claims(claims(groups=["okta-sre", "Everyone", "sre-too"]), s)
    assert ident.groups == ("sre",)
    assert ident.provider_groups == ("okta-sre", "Everyone", "sre-too")


def test_without_a_map_invalid_group_names_are_dropped() -> None:
    ident = identity_from_claims(
        claims(groups=["sre", "Domain Users", "-x", "ops", "sre", "a" * 65]), settings()
    )
    assert ident.groups == ("ops", "sre")
    assert ident.provider_groups == ("sre", "Domain Users", "-x", "ops", "a" * 65)


def test_no_groups_claim_means_no_groups() -> None:
    ident = identity_from_claims(claims(groups=_DROP), settings())
    assert ident.groups == () and ident.provider_groups == ()


def test_groups_off() -> None:
    ident = identity_from_claims(claims(groups=[1, 2]), settings(groups_claim=""))
    assert ident.groups == () and ident.provider_groups == ()


def test_another_groups_claim() -> None:
    ident = identity_from_claims(claims(roles=["admins"]), settings(groups_claim="roles"))
    assert ident.groups == ("admins",)


@pytest.mark.parametrize(
    "groups",
    [
        "okta-sre",
        {"okta-sre": True},
        5,
        True,
        ["okta-sre", 5],
        ["okta-sre", None],
        [["nested"]],
        ["x" * 257],
        ["g"] * (MAX_GROUPS + 1),
    ],
)
def test_bad_groups_claims(groups: object) -> None:
    with pytest.raises(SsoBadClaim) as e:
        identity_from_claims(claims(groups=groups), settings())
    assert e.value.field == "groups"


def test_entra_group_overage() -> None:
    c = claims(groups=_DROP, _claim_names={"groups": "src1"})
    with pytest.raises(SsoBadClaim, match="too many groups") as e:
        identity_from_claims(c, settings())
    assert e.value.field == "groups"
