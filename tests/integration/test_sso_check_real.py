"""``jit-ssh sso check`` and server.sso's relying party against the real OpenID provider.

oidc-provider (tests/oidc/provider.mjs) on 127.0.0.1: its real discovery document, JWKS and
token endpoint. The check must find nothing wrong with the configuration tests/oidc_support.py
writes for it, and must name what is wrong when the issuer or the client secret is not the
provider's. Then server.sso.oidc's own calls, end to end: the authorization URL through the
provider's login page in Chromium, the code exchange, the ID token's validation and the
identity; the device grant through the provider's device pages; client_secret_post.

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
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click
import httpx
import pytest
from click.testing import CliRunner

from client.commands.sso_check import check
from server.config import resolve_config
from server.errors import SsoTokenInvalid
from server.sso.check import check_provider
from server.sso.identity import identity_from_claims
from server.sso.oidc import (
    DevicePending,
    code_challenge,
    new_code_verifier,
    new_nonce,
)
from server.sso.oidc import (
    OidcProvider as RelyingParty,
)
from server.sso.settings import SsoSettings
from tests.oidc_support import (
    OidcProvider,
    chromium,
    complete_device_flow,
    complete_provider_login,
    new_context,
    provider_factory,
)

pytestmark = pytest.mark.integration

BASE_URL = "http://127.0.0.1:8022"


class Listener:
    """A redirect URI on 127.0.0.1 that records each callback's query."""

    def __init__(self) -> None:
        hits: queue.Queue[dict[str, str]] = queue.Queue()
        self.hits = hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.put({k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()})
                body = b"<!DOCTYPE html><title>ok</title><p>ok</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/callback"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


@pytest.fixture(scope="module")
def provider(
    tmp_path_factory: pytest.TempPathFactory, listener: Listener
) -> Iterator[OidcProvider]:
    with provider_factory(tmp_path_factory.mktemp("oidc")) as start:
        yield start(redirect_uris=[f"{BASE_URL}/sso/callback", listener.uri])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = new_context(browser)
    yield context.new_page()
    context.close()


def _settings(tmp_path: Path, provider: OidcProvider, **overrides: Any) -> SsoSettings:
    cfg = resolve_config(_config(tmp_path, provider, **overrides), env={"HOME": str(tmp_path)})
    assert cfg.sso is not None
    return cfg.sso


def _config(tmp_path: Path, provider: OidcProvider, **overrides: Any) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(f'base_url = "{BASE_URL}"\n' + provider.server_toml(**overrides), "utf-8")
    return path


def _run(config: Path) -> Any:
    @click.group()
    def root() -> None:
        pass

    root.add_command(check)
    return CliRunner().invoke(root, ["check", "--config", str(config)])


def test_the_test_provider_passes_every_check(provider: OidcProvider, tmp_path: Path) -> None:
    cfg = resolve_config(_config(tmp_path, provider), env={"HOME": str(tmp_path)})
    assert cfg.sso is not None
    with httpx.Client() as http:
        found = check_provider(cfg.sso, cfg.base_url, http)
    assert [f.what for f in found if not f.ok] == []
    text = "\n".join(f.what for f in found)
    assert f"redirect URI to register at the provider: {BASE_URL}/sso/callback" in text
    assert "PKCE S256 supported" in text
    assert "device_authorization_endpoint" in text
    assert "JWKS fetched" in text
    # The made-up code reached the token endpoint with the right credentials.
    assert "accepted the client id and secret" in text

    result = _run(_config(tmp_path, provider))
    assert result.exit_code == 0, result.output
    assert "all good" in result.output


def test_a_wrong_secret_and_a_wrong_issuer_are_named(
    provider: OidcProvider, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not-the-secret\n")
    wrong.chmod(0o600)
    result = _run(_config(tmp_path, provider, client_secret_file=str(wrong)))
    assert result.exit_code == 1, result.output
    assert "refused the client id or secret (invalid_client)" in result.output

    result = _run(_config(tmp_path, provider, issuer=provider.issuer + "/"))
    assert result.exit_code == 1, result.output
    assert f"fix: set [sso] issuer = '{provider.issuer}'" in result.output


def test_a_provider_that_is_down(provider: OidcProvider, tmp_path: Path) -> None:
    from tests.support import free_port

    down = f"http://127.0.0.1:{free_port()}"
    result = _run(_config(tmp_path, provider, issuer=down))
    assert result.exit_code == 4, result.output
    assert "cannot reach" in result.output


def test_the_code_flow_end_to_end(
    provider: OidcProvider, listener: Listener, page: Any, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, provider)
    rp = RelyingParty(settings)
    state, nonce, verifier = new_nonce(), new_nonce(), new_code_verifier()
    page.goto(rp.authorization_url(state, nonce, code_challenge(verifier), listener.uri))
    complete_provider_login(page, "alice")
    hit = listener.hits.get(timeout=15)
    assert hit["state"] == state and "code" in hit, hit

    tokens = rp.exchange_code(hit["code"], verifier, listener.uri)
    claims = rp.validate_id_token(tokens.id_token, nonce=nonce, now=datetime.now(UTC))
    assert claims.issuer == provider.issuer and claims.nonce == nonce
    ident = identity_from_claims(claims, settings)
    assert ident.name == "alice" and ident.groups == ("engineers",)
    assert ident.email == "alice@example.com" and ident.email_verified

    # The same token for another sign-in (another nonce) is refused; so is the code again.
    with pytest.raises(SsoTokenInvalid) as e:
        rp.validate_id_token(tokens.id_token, nonce=new_nonce(), now=datetime.now(UTC))
    assert e.value.field == "nonce"
    with pytest.raises(SsoTokenInvalid) as e:
        rp.exchange_code(hit["code"], verifier, listener.uri)
    assert e.value.field == "code"


def test_a_wrong_code_verifier_is_refused(
    provider: OidcProvider, listener: Listener, page: Any, tmp_path: Path
) -> None:
    rp = RelyingParty(_settings(tmp_path, provider))
    state, verifier = new_nonce(), new_code_verifier()
    page.goto(rp.authorization_url(state, new_nonce(), code_challenge(verifier), listener.uri))
    complete_provider_login(page, "alice")
    hit = listener.hits.get(timeout=15)
    with pytest.raises(SsoTokenInvalid) as e:
        rp.exchange_code(hit["code"], new_code_verifier(), listener.uri)
    assert e.value.field == "code"


def test_the_device_grant_end_to_end(provider: OidcProvider, page: Any, tmp_path: Path) -> None:
    settings = _settings(tmp_path, provider)
    rp = RelyingParty(settings)
    grant = rp.device_authorization()
    assert rp.poll_device_token(grant.device_code) == DevicePending(slow_down=False)
    complete_device_flow(page, grant.verification_uri, grant.user_code, "bob")
    deadline = time.monotonic() + 30
    while True:
        answer = rp.poll_device_token(grant.device_code)
        if not isinstance(answer, DevicePending):
            break
        assert time.monotonic() < deadline, "the device grant never finished"
        time.sleep(grant.interval + (5 if answer.slow_down else 0))
    claims = rp.validate_id_token(answer.id_token, nonce=None, now=datetime.now(UTC))
    ident = identity_from_claims(claims, settings)
    assert ident.name == "bob" and ident.groups == ("approvers",)


def test_a_client_registered_for_client_secret_post(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    with provider_factory(tmp_path_factory.mktemp("oidc-post")) as start:
        post = start(
            redirect_uris=[f"{BASE_URL}/sso/callback"],
            token_endpoint_auth_method="client_secret_post",
        )
        result = _run(_config(tmp_path, post))
    assert result.exit_code == 0, result.output
    assert "accepted the client id and secret" in result.output
