"""The test OpenID provider itself (tests/oidc/provider.mjs), before jit-ssh relies on it.

A real oidc-provider on 127.0.0.1, driven as a relying party would: its discovery document
and JWKS, one authorization-code flow with PKCE through its real login page in Chromium to a
redirect URI served by a small listener here, the code exchanged over HTTP (httpx) and the ID
token checked with joserfc; the device authorization grant completed through its /device
pages; and a group removed at the provider showing on the next sign-in.

Without node, the locked npm package, Chromium or Playwright these tests skip and say why;
under CI=true they fail instead.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import queue
import secrets
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.oidc_support import (
    CLIENT_ID,
    OidcProvider,
    ProviderLoginRefused,
    chromium,
    complete_device_flow,
    complete_provider_login,
    new_context,
    provider_factory,
)

pytestmark = pytest.mark.integration

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SCOPE = "openid email profile groups"


class RedirectListener:
    """The relying party's redirect URI: a one-path HTTP listener on 127.0.0.1."""

    def __init__(self) -> None:
        self.hits: queue.Queue[dict[str, str]] = queue.Queue()
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/callback":
                    self.send_error(404)
                    return
                hits.put({k: v[0] for k, v in parse_qs(url.query).items()})
                body = b"<!DOCTYPE html><title>signed in</title><p>You may close this page.</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/callback"

    def next_hit(self, timeout: float = 15) -> dict[str, str]:
        return self.hits.get(timeout=timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def listener() -> Iterator[RedirectListener]:
    rl = RedirectListener()
    yield rl
    rl.close()


@pytest.fixture(scope="module")
def provider(
    tmp_path_factory: pytest.TempPathFactory, listener: RedirectListener
) -> Iterator[OidcProvider]:
    with provider_factory(tmp_path_factory.mktemp("oidc")) as start:
        yield start(redirect_uris=[listener.uri])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context: no provider session left from an earlier sign-in."""
    context = new_context(browser)
    yield context.new_page()
    context.close()


def _jwks(provider: OidcProvider) -> dict[str, Any]:
    discovery = provider.discovery()
    r = httpx.get(discovery["jwks_uri"], timeout=10)
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


def _id_token_claims(provider: OidcProvider, raw: str, nonce: str | None) -> dict[str, Any]:
    """The ID token's claims, after joserfc checked its signature (RS256) and iss/aud/nonce/exp."""
    from joserfc import jwt
    from joserfc.jwk import KeySet

    keys = KeySet.import_key_set(_jwks(provider))  # type: ignore[arg-type]
    token = jwt.decode(raw, keys, algorithms=["RS256"])
    assert token.header["alg"] == "RS256"
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": provider.issuer},
        aud={"essential": True, "value": CLIENT_ID},
        exp={"essential": True},
        iat={"essential": True},
        sub={"essential": True},
        **({"nonce": {"essential": True, "value": nonce}} if nonce is not None else {}),
    )
    registry.validate(token.claims)
    return dict(token.claims)


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def _authorize_url(
    provider: OidcProvider, redirect_uri: str, scope: str = SCOPE, **params: str
) -> str:
    query = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "scope": scope,
        "redirect_uri": redirect_uri,
        **params,
    }
    return f"{provider.discovery()['authorization_endpoint']}?{urlencode(query)}"


def _sign_in(
    provider: OidcProvider, listener: RedirectListener, page: Any, login: str, scope: str = SCOPE
) -> dict[str, Any]:
    """One authorization-code + PKCE flow through the provider's login page; the ID token's claims."""
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    verifier, challenge = _pkce()
    page.goto(
        _authorize_url(
            provider,
            listener.uri,
            scope,
            state=state,
            nonce=nonce,
            code_challenge=challenge,
            code_challenge_method="S256",
        )
    )
    complete_provider_login(page, login)
    hit = listener.next_hit()
    assert page.url.startswith(listener.uri + "?"), page.url
    assert hit["state"] == state
    assert hit["iss"] == provider.issuer  # RFC 9207: the provider names itself
    r = httpx.post(
        provider.discovery()["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": hit["code"],
            "redirect_uri": listener.uri,
            "code_verifier": verifier,
        },
        auth=(CLIENT_ID, provider.client_secret),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert tokens["token_type"].lower() == "bearer"
    return _id_token_claims(provider, tokens["id_token"], nonce)


# --------------------------------------------------------------------------- metadata


def test_discovery_names_the_issuer_pkce_and_the_device_endpoint(provider: OidcProvider) -> None:
    d = provider.discovery()
    assert d["issuer"] == provider.issuer
    assert not d["issuer"].endswith("/")
    assert d["jwks_uri"].startswith(provider.issuer + "/")
    assert d["code_challenge_methods_supported"] == ["S256"]
    assert d["device_authorization_endpoint"].startswith(provider.issuer + "/")
    assert "RS256" in d["id_token_signing_alg_values_supported"]
    assert d["token_endpoint_auth_methods_supported"] == ["client_secret_basic"]
    assert {"openid", "email", "profile", "groups"} <= set(d["scopes_supported"])
    assert {"email", "email_verified", "groups", "preferred_username"} <= set(d["claims_supported"])


def test_jwks_has_an_rs256_signing_key_and_no_private_parts(provider: OidcProvider) -> None:
    keys = _jwks(provider)["keys"]
    rsa = [k for k in keys if k["kty"] == "RSA" and k.get("alg") == "RS256"]
    assert rsa and rsa[0]["use"] == "sig" and rsa[0]["kid"]
    for key in keys:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key), key["kid"]


# --------------------------------------------------------------------------- authorization code


def test_authorization_code_with_pkce_through_the_login_page(
    provider: OidcProvider, listener: RedirectListener, page: Any
) -> None:
    claims = _sign_in(provider, listener, page, "alice")
    assert claims["sub"] == "alice"
    assert claims["email"] == "alice@example.com"
    assert claims["email_verified"] is True
    assert claims["preferred_username"] == "alice"
    assert claims["groups"] == ["engineers"]


@pytest.mark.parametrize(
    ("scope", "released"),
    [
        ("openid", {"sub"}),
        ("openid email", {"sub", "email", "email_verified"}),
        # jit-ssh's default scopes: the groups come with "profile" too.
        (
            "openid email profile",
            {"sub", "email", "email_verified", "preferred_username", "name", "groups"},
        ),
        ("openid groups", {"sub", "groups"}),
    ],
)
def test_the_scopes_decide_which_claims_the_id_token_carries(
    provider: OidcProvider,
    listener: RedirectListener,
    page: Any,
    scope: str,
    released: set[str],
) -> None:
    registered = {"iss", "aud", "exp", "iat", "auth_time", "nonce", "sid", "azp", "at_hash", "jti"}
    claims = _sign_in(provider, listener, page, "alice", scope)
    assert set(claims) - registered == released


def test_an_authorization_request_without_pkce_is_refused(
    provider: OidcProvider, listener: RedirectListener, page: Any
) -> None:
    page.goto(_authorize_url(provider, listener.uri, state="s1", nonce="n1"))
    hit = listener.next_hit()
    assert hit["error"] == "invalid_request", hit
    assert "PKCE" in hit.get("error_description", ""), hit


def test_a_wrong_code_verifier_is_refused_at_the_token_endpoint(
    provider: OidcProvider, listener: RedirectListener, page: Any
) -> None:
    _verifier, challenge = _pkce()
    page.goto(
        _authorize_url(
            provider,
            listener.uri,
            state="s2",
            nonce="n2",
            code_challenge=challenge,
            code_challenge_method="S256",
        )
    )
    complete_provider_login(page, "bob")
    hit = listener.next_hit()
    r = httpx.post(
        provider.discovery()["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": hit["code"],
            "redirect_uri": listener.uri,
            "code_verifier": secrets.token_urlsafe(48),
        },
        auth=(CLIENT_ID, provider.client_secret),
        timeout=10,
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text


def test_an_unregistered_redirect_uri_is_refused(
    provider: OidcProvider, listener: RedirectListener, page: Any
) -> None:
    _verifier, challenge = _pkce()
    page.goto(
        _authorize_url(
            provider,
            listener.uri + "-elsewhere",
            state="s3",
            code_challenge=challenge,
            code_challenge_method="S256",
        )
    )
    # The provider shows its own error page and sends nothing to either URI.
    assert "redirect_uri" in page.inner_text("body")
    assert page.url.startswith(provider.issuer)
    assert listener.hits.empty()


def test_a_login_name_without_an_account_is_refused(
    provider: OidcProvider, listener: RedirectListener, page: Any
) -> None:
    _verifier, challenge = _pkce()
    page.goto(
        _authorize_url(
            provider,
            listener.uri,
            state="s4",
            code_challenge=challenge,
            code_challenge_method="S256",
        )
    )
    with pytest.raises(ProviderLoginRefused):
        complete_provider_login(page, "mallory")
    assert listener.hits.empty()


# --------------------------------------------------------------------------- device flow


def test_device_flow_completed_through_the_device_page(provider: OidcProvider, page: Any) -> None:
    d = provider.discovery()
    auth = (CLIENT_ID, provider.client_secret)
    r = httpx.post(d["device_authorization_endpoint"], data={"scope": SCOPE}, auth=auth)
    assert r.status_code == 200, r.text
    grant = r.json()
    assert grant["verification_uri"] == f"{provider.issuer}/device"
    assert grant["verification_uri_complete"].startswith(grant["verification_uri"] + "?")
    assert grant["expires_in"] > 0

    def poll() -> httpx.Response:
        return httpx.post(
            d["token_endpoint"],
            data={"grant_type": DEVICE_GRANT, "device_code": grant["device_code"]},
            auth=auth,
            timeout=10,
        )

    pending = poll()
    assert pending.status_code == 400 and pending.json()["error"] == "authorization_pending"

    complete_device_flow(page, grant["verification_uri"], grant["user_code"], "bob")

    done = poll()
    assert done.status_code == 200, done.text
    claims = _id_token_claims(provider, done.json()["id_token"], nonce=None)
    assert claims["sub"] == "bob"
    assert claims["groups"] == ["approvers"]
    assert claims["email"] == "bob@example.com"
    # The device code is single use.
    again = poll()
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant", again.text


def test_device_flow_through_the_complete_verification_uri(
    provider: OidcProvider, page: Any
) -> None:
    d = provider.discovery()
    auth = (CLIENT_ID, provider.client_secret)
    grant = httpx.post(d["device_authorization_endpoint"], data={"scope": SCOPE}, auth=auth).json()
    complete_device_flow(page, grant["verification_uri_complete"], None, "alice")
    r = httpx.post(
        d["token_endpoint"],
        data={"grant_type": DEVICE_GRANT, "device_code": grant["device_code"]},
        auth=auth,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert _id_token_claims(provider, r.json()["id_token"], None)["groups"] == ["engineers"]


# --------------------------------------------------------------------------- accounts change


def test_a_group_removed_at_the_provider_shows_on_the_next_sign_in(
    provider: OidcProvider, listener: RedirectListener, browser: Any
) -> None:
    provider.set_account(
        "carol", email="carol@example.com", email_verified=True, groups=["engineers", "sre"]
    )
    first = new_context(browser)
    try:
        assert _sign_in(provider, listener, first.new_page(), "carol")["groups"] == [
            "engineers",
            "sre",
        ]
    finally:
        first.close()

    provider.remove_group("carol", "sre")
    second = new_context(browser)
    try:
        assert _sign_in(provider, listener, second.new_page(), "carol")["groups"] == ["engineers"]
    finally:
        second.close()


def test_the_provider_stops_cleanly_on_sigterm(
    tmp_path_factory: pytest.TempPathFactory, listener: RedirectListener
) -> None:
    with provider_factory(tmp_path_factory.mktemp("oidc-stop")) as start:
        p = start(redirect_uris=[listener.uri])
        assert p.discovery()["issuer"] == p.issuer
        proc = p.proc
        assert proc is not None
        p.stop()
        assert proc.returncode == 0, p.log_text()


def test_client_secret_post_when_the_provider_is_started_for_it(
    tmp_path_factory: pytest.TempPathFactory, listener: RedirectListener
) -> None:
    with provider_factory(tmp_path_factory.mktemp("oidc-post")) as start:
        p = start(redirect_uris=[listener.uri], token_endpoint_auth_method="client_secret_post")
        d = p.discovery()
        assert d["token_endpoint_auth_methods_supported"] == ["client_secret_post"]
        endpoint = d["device_authorization_endpoint"]
        in_body = httpx.post(
            endpoint,
            data={"scope": SCOPE, "client_id": CLIENT_ID, "client_secret": p.client_secret},
            timeout=10,
        )
        assert in_body.status_code == 200, in_body.text
        # A wrong secret is refused. (oidc-provider takes the secret in a Basic header too: it
        # treats the two client_secret methods as one, whatever discovery lists.)
        wrong = httpx.post(
            endpoint,
            data={"scope": SCOPE, "client_id": CLIENT_ID, "client_secret": "x" * 43},
            timeout=10,
        )
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
