"""jit-ssh's OpenID client (``server.sso.oidc``) against the real test provider.

The unit tests feed :class:`server.sso.oidc.OidcProvider` hand-made answers; here it talks to
oidc-provider on 127.0.0.1: discovery and JWKS accepted as they are, the authorization URL it
builds taken by the provider and signed in through the real login page in Chromium, the code
exchanged (PKCE S256, client_secret_basic or client_secret_post as the provider lists), the ID
token validated, and the claims turned into a jit-ssh identity with its groups (mapped through
``group_map``). The device grant too, polled until the provider says yes. And the refusals that
need a real provider: a nonce that is not the one sent, a code used twice, a verifier that is
not the one whose challenge was sent.

Without node, the locked npm package, Chromium or Playwright these tests skip and say why;
under CI=true they fail instead.
"""

from __future__ import annotations

import http.server
import queue
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.oidc_support import (
    OidcProvider,
    chromium,
    complete_device_flow,
    complete_provider_login,
    new_context,
    provider_factory,
)

pytestmark = pytest.mark.integration


class Listener:
    """The redirect URI: records each callback's query and answers a small page."""

    def __init__(self) -> None:
        self.hits: queue.Queue[dict[str, str]] = queue.Queue()
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.put({k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()})
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/sso/callback"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


@pytest.fixture(scope="module", params=["client_secret_basic", "client_secret_post"])
def provider(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, listener: Listener
) -> Iterator[OidcProvider]:
    with provider_factory(tmp_path_factory.mktemp("oidc")) as start:
        yield start(redirect_uris=[listener.uri], token_endpoint_auth_method=request.param)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = new_context(browser)
    yield context.new_page()
    context.close()


def _client(provider: OidcProvider, **overrides: Any) -> Any:
    from server.sso.oidc import OidcProvider as Client
    from server.sso.settings import parse_sso_settings

    table = {
        "issuer": provider.issuer,
        "client_id": provider.client_id,
        "client_secret_file": str(provider.secret_file),
        "scopes": ["openid", "email", "profile", "groups"],
        "username_claim": "preferred_username",
        "groups_claim": "groups",
        **overrides,
    }
    return Client(parse_sso_settings(table, env={}))


def _code(
    client: Any, listener: Listener, page: Any, login: str, *, nonce: str, verifier: str
) -> str:
    from server.sso.oidc import code_challenge

    state = "state-" + "s" * 20
    while not listener.hits.empty():  # nothing left from an earlier test
        listener.hits.get_nowait()
    page.goto(client.authorization_url(state, nonce, code_challenge(verifier), listener.uri))
    complete_provider_login(page, login)
    hit = listener.hits.get(timeout=15)
    assert hit.get("state") == state, hit
    assert "code" in hit, hit
    return hit["code"]


def test_discovery_and_jwks_of_the_real_provider_are_accepted(provider: OidcProvider) -> None:
    client = _client(provider)
    meta = client.metadata()
    assert meta.issuer == provider.issuer
    assert meta.device_authorization_endpoint == provider.issuer + "/device/auth"
    assert "S256" in meta.code_challenge_methods_supported
    assert len(client.jwks().keys) >= 1


def test_code_flow_validated_into_an_identity(
    provider: OidcProvider, listener: Listener, page: Any
) -> None:
    from server.sso.identity import identity_from_claims
    from server.sso.oidc import new_code_verifier, new_nonce

    client = _client(provider, group_map={"engineers": "sre"})
    nonce, verifier = new_nonce(), new_code_verifier()
    code = _code(client, listener, page, "alice", nonce=nonce, verifier=verifier)
    tokens = client.exchange_code(code, verifier, listener.uri)
    claims = client.validate_id_token(tokens.id_token, nonce=nonce, now=datetime.now(UTC))
    assert claims.issuer == provider.issuer
    assert claims.subject == "alice"
    assert provider.client_id in claims.audience
    identity = identity_from_claims(claims, client.settings)
    assert identity.name == "alice"
    assert identity.email == "alice@example.com" and identity.email_verified
    assert identity.groups == ("sre",)
    assert identity.provider_groups == ("engineers",)


def test_a_nonce_other_than_the_one_sent_is_refused(
    provider: OidcProvider, listener: Listener, page: Any
) -> None:
    from server.errors import SsoTokenInvalid
    from server.sso.oidc import new_code_verifier, new_nonce

    client = _client(provider)
    verifier = new_code_verifier()
    code = _code(client, listener, page, "bob", nonce=new_nonce(), verifier=verifier)
    tokens = client.exchange_code(code, verifier, listener.uri)
    with pytest.raises(SsoTokenInvalid) as refused:
        client.validate_id_token(tokens.id_token, nonce=new_nonce(), now=datetime.now(UTC))
    assert refused.value.field == "nonce"


def test_a_code_used_twice_or_with_another_verifier_is_refused(
    provider: OidcProvider, listener: Listener, browser: Any, page: Any
) -> None:
    from server.errors import SsoTokenInvalid
    from server.sso.oidc import new_code_verifier, new_nonce

    client = _client(provider)
    verifier = new_code_verifier()
    code = _code(client, listener, page, "bob", nonce=new_nonce(), verifier=verifier)
    with pytest.raises(SsoTokenInvalid) as wrong:
        client.exchange_code(code, new_code_verifier(), listener.uri)
    assert wrong.value.field == "code"
    # oidc-provider consumes a code on any redemption attempt, as RFC 6749 allows: the right
    # verifier is too late now. A fresh code with the right verifier works, once.
    again = new_context(browser)  # a browser with no provider session: the login page again
    try:
        code = _code(
            client, listener, again.new_page(), "bob", nonce=new_nonce(), verifier=verifier
        )
    finally:
        again.close()
    client.exchange_code(code, verifier, listener.uri)
    with pytest.raises(SsoTokenInvalid) as replayed:
        client.exchange_code(code, verifier, listener.uri)
    assert replayed.value.field == "code"


def test_device_grant_polled_until_the_person_signs_in(provider: OidcProvider, page: Any) -> None:
    from server.sso.identity import identity_from_claims
    from server.sso.oidc import DevicePending

    client = _client(provider)
    grant = client.device_authorization()
    assert grant.verification_uri == provider.issuer + "/device"
    assert isinstance(client.poll_device_token(grant.device_code), DevicePending)
    complete_device_flow(page, grant.verification_uri, grant.user_code, "bob")
    deadline = time.monotonic() + 15
    while True:
        answer = client.poll_device_token(grant.device_code)
        if not isinstance(answer, DevicePending):
            break
        assert time.monotonic() < deadline, "the device grant never completed"
        time.sleep(0.5)
    claims = client.validate_id_token(answer.id_token, nonce=None, now=datetime.now(UTC))
    assert identity_from_claims(claims, client.settings).groups == ("approvers",)
