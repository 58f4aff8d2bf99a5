"""The single sign-on flows in the service (``server.services.sso``): who a sign-in finds,
links or creates, what happens to groups and keys, and the checks at the boundary. Only
the provider is faked (tests/server/sso_fakes.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from ca import public_key_from_crypto
from server.db import transaction
from server.errors import (
    InvalidState,
    SsoBadClaim,
    SsoFlowUnknown,
    SsoRedirectRefused,
)
from server.models import GroupsSource, KeySource, SshKey, SsoFlow, User
from server.services.sso import (
    CliSignIn,
    SsoService,
    check_flow_id,
    check_loopback_port,
    check_next_url,
    sso_subject,
)
from tests.server.conftest import Clock
from tests.server.sso_fakes import (  # noqa: F401 (fixtures)
    BASE_URL,
    ISSUER,
    FakeProvider,
    app,
    claims_for,
    events,
    fake,
    make_app,
    open_cli,
    sso_app,
)


@pytest.fixture
def sso(app: Any) -> SsoService:
    service: SsoService = app.extensions["jit_ssh"].sso()
    return service


def _key() -> Any:
    return public_key_from_crypto(ed25519.Ed25519PrivateKey.generate().public_key(), "k")


def _cli(sso: SsoService, fake: FakeProvider, claims: dict[str, Any], key: Any = None) -> Any:
    """A whole loopback flow in the service: the enrolment."""
    key = key or _key()
    started = sso.begin_cli(key.openssh, 50000, signer=key.fingerprint)
    opened = open_cli(sso, started)
    back = fake.sign_in(opened.authorize_url, claims)
    result = sso.complete_callback(
        state=back["state"], code=back["code"], issuer=back["iss"], browser_state=opened.flow
    )
    assert isinstance(result, CliSignIn)
    if result.refusal is not None:
        raise result.refusal
    code = parse_qs(urlsplit(result.redirect).query)["code"][0]
    return sso.finish_cli(started.flow, code, signer=key.fingerprint)


def _user(app: Any, name: str) -> User:
    with transaction(app.extensions["jit_ssh"].service.sessions) as s:
        u = s.execute(select(User).where(User.name == name)).scalar_one()
        _ = u.group_names
        return u


# --------------------------------------------------------------------------- the start


def test_each_flow_has_its_own_state_nonce_and_pkce_verifier(
    app: Any, sso: SsoService, fake: FakeProvider
) -> None:
    urls = [sso.begin_web("/").authorize_url for _ in range(3)]
    queries = [{k: v[0] for k, v in parse_qs(urlsplit(u).query).items()} for u in urls]
    for name in ("state", "nonce", "code_challenge"):
        assert len({q[name] for q in queries}) == 3, name
    assert {q["code_challenge_method"] for q in queries} == {"S256"}
    assert {q["redirect_uri"] for q in queries} == {f"{BASE_URL}/sso/callback"}
    # Stored as hashes and a verifier, never the state itself.
    with transaction(app.extensions["jit_ssh"].service.sessions) as s:
        rows = list(s.execute(select(SsoFlow)).scalars())
    assert {r.id_hash for r in rows}.isdisjoint({q["state"] for q in queries})
    assert all(r.code_verifier and len(r.code_verifier) >= 43 for r in rows)


def test_a_device_state_cannot_complete_a_callback(sso: SsoService, fake: FakeProvider) -> None:
    key = _key()
    started = sso.begin_device(key.openssh, signer=key.fingerprint)
    with pytest.raises(SsoFlowUnknown):
        sso.complete_callback(state=started.flow, code="x", browser_state=started.flow)


def test_a_web_state_needs_the_browser_that_started_it(sso: SsoService, fake: FakeProvider) -> None:
    started = sso.begin_web("/")
    back = fake.sign_in(started.authorize_url, claims_for("carol"))
    for other in (None, "B" * 32, 42):
        with pytest.raises(SsoFlowUnknown):
            sso.complete_callback(state=back["state"], code=back["code"], browser_state=other)
    result = sso.complete_callback(
        state=back["state"], code=back["code"], browser_state=started.flow
    )
    assert result.user == "carol"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- users


def test_a_user_is_found_by_identity_even_when_the_name_claim_changes(
    app: Any, sso: SsoService, fake: FakeProvider
) -> None:
    _cli(sso, fake, claims_for("alice", sub="s-1"))
    renamed = _cli(sso, fake, claims_for("alice2", sub="s-1"))
    assert renamed.user == "alice"
    assert len(events(app, "user.created")) == 1
    assert _user(app, "alice").sso_subject == sso_subject(ISSUER, "s-1")


def test_only_a_verified_email_is_kept_on_the_user(
    app: Any, sso: SsoService, fake: FakeProvider
) -> None:
    """The user's email names them to Slack: an address the provider did not verify (allowed
    when the email neither names the user nor is domain-checked) is never stored, and one no
    longer verified is forgotten."""
    _cli(sso, fake, claims_for("alice", sub="s-1", email_verified=False))
    assert _user(app, "alice").email is None
    _cli(sso, fake, claims_for("alice", sub="s-1"))
    assert _user(app, "alice").email == "alice@example.com"
    _cli(sso, fake, claims_for("alice", sub="s-1", email="boss@example.com", email_verified=False))
    assert _user(app, "alice").email is None


def test_a_name_of_another_identity_is_refused_and_nothing_is_written(
    app: Any, sso: SsoService, fake: FakeProvider
) -> None:
    _cli(sso, fake, claims_for("alice", sub="s-1"))
    before = len(events(app, "sso.signed_in"))
    with pytest.raises(SsoBadClaim) as e:
        _cli(sso, fake, claims_for("alice", sub="s-2"))
    assert e.value.field == "preferred_username"
    assert len(events(app, "sso.signed_in")) == before


def test_without_a_groups_claim_the_local_groups_stay(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    from server.admin import Admin

    app, fake = make_app(tmp_path, database_url, clock, groups_claim="")
    try:
        Admin(app.extensions["jit_ssh"].service).add_user("alice", groups=["engineers"])
        done = _cli(app.extensions["jit_ssh"].sso(), fake, claims_for("alice", ["other"]))
        assert done.groups == ("engineers",)
        assert done.groups_source == "local"
        assert _user(app, "alice").groups_source == GroupsSource.LOCAL
        assert events(app, "user.groups_changed") == []
    finally:
        app.extensions["jit_ssh.engine"].dispose()


def test_group_map_only_mapped_groups_count(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    app, fake = make_app(tmp_path, database_url, clock, group_map={"okta-sre": "sre"})
    try:
        done = _cli(
            app.extensions["jit_ssh"].sso(), fake, claims_for("alice", ["okta-sre", "everyone"])
        )
        assert done.groups == ("sre",)
    finally:
        app.extensions["jit_ssh.engine"].dispose()


def _roles(app: Any, name: str) -> tuple[str, ...]:
    with transaction(app.extensions["jit_ssh"].service.sessions) as s:
        return s.execute(select(User).where(User.name == name)).scalar_one().role_names


def test_a_first_sign_in_makes_a_requester_and_no_approver(
    app: Any, sso: SsoService, fake: FakeProvider
) -> None:
    _cli(sso, fake, claims_for("carol", ["approvers"]))
    assert _roles(app, "carol") == ("requester",)
    assert events(app, "user.roles_changed") == []


def test_approver_groups_give_and_take_the_approver_role_at_each_sign_in(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    """With approver_groups, membership at the provider decides the approver role: given when
    bob signs in in the group, taken when he signs in without it."""
    app, fake = make_app(tmp_path, database_url, clock, approver_groups=["approvers"])
    try:
        sso = app.extensions["jit_ssh"].sso()
        _cli(sso, fake, claims_for("bob", ["approvers"]))
        assert _roles(app, "bob") == ("approver", "requester")
        _cli(sso, fake, claims_for("bob", ["engineers"]))
        assert _roles(app, "bob") == ("requester",)
        changes = events(app, "user.roles_changed")
        assert [(c["user"], c["before"], c["after"]) for c in changes] == [
            ("bob", ["requester"], ["approver", "requester"]),
            ("bob", ["approver", "requester"], ["requester"]),
        ]
        assert {c["source"] for c in changes} == {"sso"}
    finally:
        app.extensions["jit_ssh.engine"].dispose()


def test_by_default_a_local_users_name_is_not_linked(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    """Anyone may be able to choose their preferred_username at the provider: by default a
    first sign-in naming a local user is refused, and nothing about that user changes."""
    from server.admin import Admin
    from server.errors import SsoNameTaken

    app, fake = make_app(tmp_path, database_url, clock, link_by_name=False)
    try:
        Admin(app.extensions["jit_ssh"].service).add_user("alice", groups=["engineers"])
        with pytest.raises(SsoNameTaken) as e:
            _cli(app.extensions["jit_ssh"].sso(), fake, claims_for("alice", ["sre"]))
        assert "link_by_name = true" in e.value.message
        alice = _user(app, "alice")
        assert alice.sso_subject is None and alice.group_names == ("engineers",)
        assert events(app, "user.sso_linked") == [] and events(app, "key.enrolled") == []
    finally:
        app.extensions["jit_ssh.engine"].dispose()


@pytest.mark.parametrize("how", ["admin role", "break-glass admin"])
def test_an_admin_is_never_linked_by_name(
    tmp_path: Path, database_url: str, clock: Clock, how: str
) -> None:
    """Even with link_by_name, a provider account named "root-admin" must not become the local
    admin (the review's takeover: an admin API key, no TOTP)."""
    from server.admin import Admin
    from server.errors import SsoNameTaken

    app, fake = make_app(
        tmp_path, database_url, clock, link_by_name=True, break_glass_admins=["root-admin"]
    )
    try:
        roles = ["admin"] if how == "admin role" else ["approver"]
        Admin(app.extensions["jit_ssh"].service).add_user("root-admin", roles=roles)
        with pytest.raises(SsoNameTaken):
            _cli(app.extensions["jit_ssh"].sso(), fake, claims_for("root-admin", ["engineers"]))
        assert _user(app, "root-admin").sso_subject is None
        assert events(app, "key.enrolled") == []
    finally:
        app.extensions["jit_ssh.engine"].dispose()


def test_too_many_sign_ins_in_progress_are_refused_until_some_end(
    app: Any, sso: SsoService, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone may start a sign-in: past MAX_OPEN_FLOWS in progress a start is a 429
    sso_busy, and once the old ones are over starts work again (and the old rows go)."""
    from server.errors import SsoBusy
    from server.services import sso as sso_module

    monkeypatch.setattr(sso_module, "MAX_OPEN_FLOWS", 3)
    for _ in range(3):
        sso.begin_web("/")
    with pytest.raises(SsoBusy):
        sso.begin_web("/")
    clock.advance(seconds=sso_module.FLOW_LIFETIME.total_seconds() + 1)
    for _ in range(3):
        sso.begin_web("/")  # the three that are over no longer count
    with pytest.raises(SsoBusy):
        sso.begin_web("/")
    with transaction(app.extensions["jit_ssh"].service.sessions) as s:
        assert len(s.execute(select(SsoFlow)).all()) == 3  # the refused start swept the old


# --------------------------------------------------------------------------- keys


def test_a_key_enrolled_for_someone_else_is_refused(
    app: Any, sso: SsoService, fake: FakeProvider
) -> None:
    from server.admin import Admin

    key = _key()
    Admin(app.extensions["jit_ssh"].service).add_user("bob", ssh_keys=[key.openssh])
    with pytest.raises(InvalidState) as e:
        _cli(sso, fake, claims_for("alice"), key=key)
    assert e.value.field == "public_key"
    assert events(app, "key.enrolled") == []


def test_an_admin_key_of_the_same_user_stays_an_admin_key(
    app: Any, sso: SsoService, fake: FakeProvider
) -> None:
    from server.admin import Admin

    key = _key()
    Admin(app.extensions["jit_ssh"].service).add_user("alice", ssh_keys=[key.openssh])
    done = _cli(sso, fake, claims_for("alice"), key=key)
    assert done.expires_at is None
    with transaction(app.extensions["jit_ssh"].service.sessions) as s:
        row = s.execute(select(SshKey)).scalar_one()
        assert (row.source, row.expires_at) == (KeySource.ADMIN, None)


def test_a_revoked_enrolment_is_not_renewed_by_signing_in_again(
    app: Any, sso: SsoService, fake: FakeProvider
) -> None:
    # Issue 13 review, finding A: an admin's revocation (a stolen laptop) must hold. The
    # renewal of an ended, not revoked, enrolment: tests/server/test_sso_rekey.py.
    from server.errors import KeyRevoked
    from server.services.sso import list_enrolments, revoke_enrolments

    service = app.extensions["jit_ssh"].service
    key = _key()
    _cli(sso, fake, claims_for("alice", ["engineers"]), key=key)
    revoke_enrolments(service, "alice", None, actor="admin-cli")
    assert [e.state for e in list_enrolments(service, "alice")] == ["revoked"]
    with pytest.raises(KeyRevoked):
        _cli(sso, fake, claims_for("alice", ["oncall"]), key=key)
    (row,) = list_enrolments(service, "alice")
    assert (row.state, row.groups) == ("revoked", ("engineers",))


def test_the_enrolment_records_the_groups_at_that_moment(
    app: Any, sso: SsoService, fake: FakeProvider
) -> None:
    _cli(sso, fake, claims_for("alice", ["engineers", "oncall"]))
    with transaction(app.extensions["jit_ssh"].service.sessions) as s:
        row = s.execute(select(SshKey)).scalar_one()
    assert json.loads(row.groups or "null") == ["engineers", "oncall"]
    assert row.source == KeySource.SSO and row.expires_at is not None


# --------------------------------------------------------------------------- refusals audited


def test_refusals_are_audited_but_capped(app: Any, fake: FakeProvider) -> None:
    client = app.test_client()
    for _ in range(30):
        r = client.get("/sso/callback", query_string={"state": "A" * 32, "code": "x"})
        assert r.status_code == 400
    refused = events(app, "sso.refused")
    # The first of its kind per window: one event, the rest counted in auth_failures.
    assert len(refused) == 1
    assert refused[0]["code"] == "sso_flow_unknown"
    assert refused[0]["field"] == "state"


# --------------------------------------------------------------------------- boundary checks


@given(st.text(max_size=40))
def test_flow_ids_are_exactly_32_url_safe_characters(value: str) -> None:
    ok = len(value) == 32 and all(c.isascii() and (c.isalnum() or c in "-_") for c in value)
    if ok:
        assert check_flow_id(value) == value
    else:
        with pytest.raises(SsoFlowUnknown):
            check_flow_id(value)


@given(st.text(max_size=60))
def test_next_is_a_local_path_or_refused(value: str) -> None:
    try:
        got = check_next_url(value)
    except SsoRedirectRefused:
        return
    parts = urlsplit(got)
    assert got == "/" or (got.startswith("/") and not got.startswith("//"))
    assert not parts.scheme and not parts.netloc
    assert "\\" not in got


@pytest.mark.parametrize("value", ["//x", "/\\x", "http://x/", "x", "/\x00", "/ a", "/\x7f"])
def test_next_refusals(value: str) -> None:
    with pytest.raises(SsoRedirectRefused):
        check_next_url(value)


@given(st.one_of(st.integers(), st.booleans(), st.text(max_size=6), st.floats(), st.none()))
def test_loopback_ports_are_1024_to_65535(value: object) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 1024 <= value <= 65535
    if ok:
        assert check_loopback_port(value) == value
    else:
        with pytest.raises(SsoRedirectRefused):
            check_loopback_port(value)
