"""``jit-ssh sso check`` and server.sso.check against a fake provider (httpx.MockTransport)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner

from client.commands.sso_check import check
from server.sso.check import Finding, Level, check_provider
from server.sso.settings import SsoSettings
from tests.server.test_sso_tokens import CLIENT_ID, ISSUER, FakeProvider, keys, public

BASE_URL = "https://jit.example.test"


@pytest.fixture
def fake() -> FakeProvider:
    f = FakeProvider()
    f.token_answer = (400, {"error": "invalid_grant"})
    return f


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text("s3cret\n")
    path.chmod(0o600)
    return path


def settings(secret: Path | None, **changes: Any) -> SsoSettings:
    return SsoSettings(ISSUER, CLIENT_ID, client_secret_file=secret, **changes)


def findings(fake: FakeProvider, secret: Path | None, base_url: str = BASE_URL) -> list[Finding]:
    return check_provider(settings(secret), base_url, fake.http())


def problems(found: list[Finding]) -> list[str]:
    return [f.what for f in found if not f.ok]


def test_all_good(fake: FakeProvider, secret: Path) -> None:
    found = findings(fake, secret)
    assert problems(found) == []
    text = "\n".join(f.what for f in found)
    assert f"redirect URI to register at the provider: {BASE_URL}/sso/callback" in text
    assert "issuer is exactly" in text
    assert "PKCE S256 supported" in text
    assert "JWKS fetched: 3 usable signing key(s)" in text
    assert "accepted the client id and secret" in text
    assert "device_authorization_endpoint" in text
    assert not any(f.unreachable for f in found)


def test_a_groups_scope_the_table_does_not_ask_for_is_warned_about(
    fake: FakeProvider, secret: Path
) -> None:
    """The provider offers scope "groups" (oidc-provider, Okta custom servers put the claim
    in the ID token only then): without it in [sso] scopes nobody gets groups."""
    from server.sso.check import Level

    fake.discovery["scopes_supported"] = ["openid", "email", "profile", "groups"]
    found = findings(fake, secret)
    warned = [f for f in found if f.level is Level.WARN and "scope 'groups'" in f.what]
    assert warned and "scopes = ['openid', 'email', 'profile', 'groups']" in warned[0].fix
    asked = check_provider(
        settings(secret, scopes=("openid", "email", "profile", "groups")), BASE_URL, fake.http()
    )
    assert not [f for f in asked if "scope 'groups'" in f.what]


def test_approver_groups_without_a_group_map_are_warned_about(
    fake: FakeProvider, secret: Path
) -> None:
    from server.sso.check import Level

    bare = check_provider(settings(secret, approver_groups=("approvers",)), BASE_URL, fake.http())
    assert any(f.level is Level.WARN and "no group_map" in f.what for f in bare)
    mapped = check_provider(
        settings(secret, approver_groups=("approvers",), group_map={"okta-approvers": "approvers"}),
        BASE_URL,
        fake.http(),
    )
    assert not any("no group_map" in f.what for f in mapped)


def test_an_issuer_that_differs(fake: FakeProvider, secret: Path) -> None:
    fake.discovery["issuer"] = ISSUER.rstrip("/")
    found = findings(fake, secret)
    (bad,) = [f for f in found if not f.ok]
    assert "issuer" in bad.what and "set [sso] issuer = 'https://login.example.test'" in bad.fix


def test_an_http_endpoint(fake: FakeProvider, secret: Path) -> None:
    fake.discovery["token_endpoint"] = "http://login.example.test/token"
    assert any("must be https" in p for p in problems(findings(fake, secret)))


def test_no_code_flow_and_no_s256(fake: FakeProvider, secret: Path) -> None:
    fake.discovery["response_types_supported"] = ["id_token"]
    fake.discovery["code_challenge_methods_supported"] = ["plain"]
    found = problems(findings(fake, secret))
    assert any("lacks 'code'" in p for p in found)
    assert any("lacks S256" in p for p in found)


def test_s256_not_published_is_only_information(fake: FakeProvider, secret: Path) -> None:
    del fake.discovery["code_challenge_methods_supported"]
    found = findings(fake, secret)
    assert problems(found) == []
    assert any(f.level is Level.INFO and "not published" in f.what for f in found)


def test_no_device_endpoint_is_only_information(fake: FakeProvider, secret: Path) -> None:
    del fake.discovery["device_authorization_endpoint"]
    found = findings(fake, secret)
    assert problems(found) == []
    assert any(f.level is Level.INFO and "--headless" in f.what for f in found)


def test_no_algorithm_in_common(fake: FakeProvider, secret: Path) -> None:
    fake.discovery["id_token_signing_alg_values_supported"] = ["HS256", "none"]
    assert any("shares nothing" in p for p in problems(findings(fake, secret)))


def test_jwks_without_a_usable_key(fake: FakeProvider, secret: Path) -> None:
    fake.jwks = {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}
    assert any("JWKS" in p and "no key usable" in p for p in problems(findings(fake, secret)))


def test_jwks_keys_that_fit_no_advertised_algorithm(fake: FakeProvider, secret: Path) -> None:
    fake.discovery["id_token_signing_alg_values_supported"] = ["ES384"]
    fake.jwks = {"keys": [public(keys()["rsa"])]}
    assert any("none of its keys" in p for p in problems(findings(fake, secret)))


def test_a_missing_secret_file(fake: FakeProvider, tmp_path: Path) -> None:
    found = problems(findings(fake, tmp_path / "nope"))
    assert any("cannot be read" in p for p in found)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_a_secret_file_others_may_read(fake: FakeProvider, secret: Path) -> None:
    secret.chmod(0o644)
    found = findings(fake, secret)
    assert problems(found) == []
    (warn,) = [f for f in found if f.level is Level.WARN]
    assert "0644" in warn.what and warn.fix == f"chmod 600 {secret}"


def test_a_wrong_client_secret(fake: FakeProvider, secret: Path) -> None:
    fake.token_answer = (401, {"error": "invalid_client"})
    assert any("invalid_client" in p for p in problems(findings(fake, secret)))


def test_no_base_url(fake: FakeProvider, secret: Path) -> None:
    assert any("base_url" in p for p in problems(findings(fake, secret, base_url="")))


def test_a_public_client_the_provider_does_not_take(fake: FakeProvider) -> None:
    found = problems(findings(fake, None))
    assert any("public clients" in p for p in found)
    fake.discovery["token_endpoint_auth_methods_supported"].append("none")
    assert problems(findings(fake, None)) == []


def test_an_unreachable_provider(secret: Path) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    found = check_provider(
        settings(secret), BASE_URL, httpx.Client(transport=httpx.MockTransport(down))
    )
    assert any(f.unreachable and not f.ok for f in found)


def test_a_discovery_document_that_is_not_json(fake: FakeProvider, secret: Path) -> None:
    fake.override["/.well-known/openid-configuration"] = lambda r: httpx.Response(200, text="<")
    found = findings(fake, secret)
    assert any("not JSON" in p for p in problems(found))
    assert not any(f.unreachable for f in found)


# -- the command ------------------------------------------------------------------------------


def _invoke(config: Path, transport: httpx.BaseTransport) -> Any:
    @click.group()
    @click.pass_context
    def root(ctx: click.Context) -> None:
        ctx.meta["jit_ssh.transport"] = transport

    root.add_command(check)
    return CliRunner().invoke(root, ["check", "--config", str(config)])


def _config(tmp_path: Path, secret: Path | None, extra: str = "") -> Path:
    path = tmp_path / "server.toml"
    lines = [
        f'base_url = "{BASE_URL}"',
        "[sso]",
        f'issuer = "{ISSUER}"',
        f'client_id = "{CLIENT_ID}"',
    ]
    if secret is not None:
        lines.append(f'client_secret_file = "{secret}"')
    path.write_text("\n".join(lines) + "\n" + extra, "utf-8")
    return path


def test_the_command_all_good(fake: FakeProvider, secret: Path, tmp_path: Path) -> None:
    result = _invoke(_config(tmp_path, secret), httpx.MockTransport(fake.handler))
    assert result.exit_code == 0, result.output
    assert f"info     redirect URI to register at the provider: {BASE_URL}/sso/callback" in (
        result.output
    )
    assert "ok       issuer is exactly" in result.output
    assert "all good" in result.output
    assert "s3cret" not in result.output


def test_without_base_url_the_command_uses_serves_address_as_serve_does(
    fake: FakeProvider, secret: Path, tmp_path: Path
) -> None:
    """The README's sso-demo.toml sets no base_url: serve then answers at its own address
    (http://127.0.0.1:8022, or --bind), so that is the redirect URI to check and register."""
    path = _config(tmp_path, secret)
    path.write_text(path.read_text().replace(f'base_url = "{BASE_URL}"\n', ""))
    result = _invoke(path, httpx.MockTransport(fake.handler))
    assert result.exit_code == 0, result.output
    assert (
        "note     base_url is not set: the server's URL is http://127.0.0.1:8022" in result.output
    )
    assert "redirect URI to register at the provider: http://127.0.0.1:8022/sso/callback" in (
        result.output
    )


def test_the_command_with_a_problem(fake: FakeProvider, secret: Path, tmp_path: Path) -> None:
    fake.discovery["issuer"] = "https://other.example.test/"
    result = _invoke(_config(tmp_path, secret), httpx.MockTransport(fake.handler))
    assert result.exit_code == 1, result.output
    assert "problem  issuer:" in result.output
    assert "         fix: set [sso] issuer = 'https://other.example.test/'" in result.output
    assert "1 problem to fix" in result.output


def test_the_command_with_the_provider_down(secret: Path, tmp_path: Path) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    result = _invoke(_config(tmp_path, secret), httpx.MockTransport(down))
    assert result.exit_code == 4, result.output
    assert "could not be reached" in result.output


def test_the_command_without_sso(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text('base_url = "https://x.example.test"\n')
    result = _invoke(path, httpx.MockTransport(lambda r: httpx.Response(500)))
    assert result.exit_code == 1
    assert "not configured" in result.output


def test_the_command_with_a_bad_table(tmp_path: Path) -> None:
    path = _config(tmp_path, None, 'colour = "blue"\n')
    result = _invoke(path, httpx.MockTransport(lambda r: httpx.Response(500)))
    assert result.exit_code != 0
    assert "unknown setting 'colour'" in str(result.exception) + result.output


_PROBE = """
import json, sys
import client.commands.sso_check
import server.sso.check
heavy = sorted(
    m for m in sys.modules if m.split(".")[0] in ("flask", "werkzeug", "flask_wtf", "sqlalchemy")
)
print(json.dumps(heavy))
"""


def test_the_check_imports_no_flask_and_no_database() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []
