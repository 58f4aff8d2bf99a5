"""Behind a TLS-terminating proxy (issue 10): ``trusted_proxies`` makes the same-origin
check and the audit ``remote`` right, and X-Forwarded-* from anyone else is ignored.

The proxy speaks plain http to the server and says ``X-Forwarded-Proto: https``:
believed, the request is https, so Flask-WTF compares the Referer of every form
POST with ``https://<X-Forwarded-Host>/``; not believed (before), the request
looked like plain http and no Referer was checked at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from server.proxy import parse_networks, resolve_forwarded
from tests.server.conftest import Clock, build_app

from .conftest import PASSWORD, Browser

PROXY = "10.1.2.3"  # in the trusted 10.1.0.0/16
CLIENT = "203.0.113.7"
SITE = "jit.example.test"
REFUSED = "did not come from this site"


@pytest.fixture
def proxied(tmp_path: Path, database_url: str, clock: Clock) -> Iterator[Any]:
    app = build_app(tmp_path, database_url, clock, trusted_proxies=("10.0.0.5", "10.1.0.0/16"))
    yield app
    app.extensions["jit_ssh.engine"].dispose()


def _web_user(app: Any, name: str = "bob") -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from ca import public_key_from_crypto
    from server.admin import Admin

    admin = Admin(app.extensions["jit_ssh"].service)
    key = public_key_from_crypto(ed25519.Ed25519PrivateKey.generate().public_key()).openssh
    admin.add_user(name, groups=("approvers",), roles=("requester", "approver"), ssh_keys=[key])
    admin.set_password(name, PASSWORD)
    app.extensions["jit_ssh.web"].sleep = lambda s: None


def _via(peer: str, **headers: str) -> dict[str, Any]:
    return {"environ_base": {"REMOTE_ADDR": peer}, "headers": headers}


def _login(
    app: Any,
    peer: str,
    referer: str | None,
    *,
    base_url: str = "http://10.9.9.9:8022",
    **forwarded: str,
) -> Any:
    b = Browser(app, "bob", base_url=base_url)
    token = b.token("/login")
    headers = dict(forwarded)
    if referer is not None:
        headers["Referer"] = referer
    return b.client.post(
        "/login",
        data={"username": "bob", "password": PASSWORD, "csrf_token": token},
        base_url=base_url,
        **_via(peer, **headers),
    )


def _last(app: Any, type_: str) -> dict[str, Any]:
    with app.extensions["jit_ssh.engine"].connect() as c:
        row = c.execute(
            text("SELECT data FROM audit_events WHERE type = :t ORDER BY id DESC"), {"t": type_}
        ).first()
    assert row is not None, f"no {type_} event"
    return json.loads(row[0])


FORWARDED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": SITE,
    "X-Forwarded-For": f"198.51.100.66, {CLIENT}",
}


def test_through_a_trusted_proxy_the_referer_is_checked_against_the_public_origin(
    proxied: Any,
) -> None:
    _web_user(proxied)
    resp = _login(proxied, PROXY, "https://evil.example/login", **FORWARDED)
    assert resp.status_code == 400 and REFUSED in resp.get_data(as_text=True)
    resp = _login(proxied, PROXY, None, **FORWARDED)
    assert resp.status_code == 400, "over https a POST without a Referer is refused"
    resp = _login(proxied, PROXY, f"https://{SITE}/login", **FORWARDED)
    assert resp.status_code == 303, resp.get_data(as_text=True)[:300]
    # The client's address, not the proxy's (nor what the client wrote further left).
    assert _last(proxied, "web.login")["remote"] == CLIENT


def test_the_audit_remote_of_a_failed_api_call_is_the_client_behind_the_proxy(proxied: Any) -> None:
    c = proxied.test_client()
    assert c.get("/v1/whoami", **_via(PROXY, **FORWARDED)).status_code == 401
    assert _last(proxied, "auth.failed")["remote"] == CLIENT


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(proxied: Any) -> None:
    _web_user(proxied)
    # A direct caller claims a client address, https and our host: none of it is believed.
    resp = _login(proxied, "192.0.2.50", "https://evil.example/login", **FORWARDED)
    assert resp.status_code == 303  # plain http: Flask-WTF checks no Referer
    assert _last(proxied, "web.login")["remote"] == "192.0.2.50"
    # Over real https, a forged X-Forwarded-Host does not move the origin the Referer must match.
    resp = _login(
        proxied,
        "192.0.2.50",
        "https://evil.example/login",
        base_url=f"https://{SITE}",
        **{"X-Forwarded-Host": "evil.example"},
    )
    assert resp.status_code == 400 and REFUSED in resp.get_data(as_text=True)


def test_by_default_no_proxy_is_trusted(tmp_path: Path, database_url: str, clock: Clock) -> None:
    app = build_app(tmp_path, database_url, clock)
    try:
        c = app.test_client()
        assert c.get("/v1/whoami", **_via("127.0.0.1", **FORWARDED)).status_code == 401
        assert _last(app, "auth.failed")["remote"] == "127.0.0.1"
    finally:
        app.extensions["jit_ssh.engine"].dispose()


# ---- the resolution itself ---------------------------------------------------------------------

TRUSTED = parse_networks(["10.0.0.5", "10.1.0.0/16", "fd00::/8"])


@pytest.mark.parametrize(
    "peer, xff, proto, host, want",
    [
        # Untrusted peer: everything ignored.
        ("192.0.2.1", "1.2.3.4", "https", "evil.example", ("192.0.2.1", None, None)),
        # One trusted proxy.
        ("10.0.0.5", CLIENT, "https", SITE, (CLIENT, "https", SITE)),
        # The client wrote an entry of its own further left: the rightmost untrusted one counts.
        ("10.0.0.5", f"6.6.6.6, {CLIENT}", "https", SITE, (CLIENT, "https", SITE)),
        # A spoofed trusted-looking address left of the client is not reached.
        ("10.0.0.5", f"10.1.9.9, {CLIENT}", "https", SITE, (CLIENT, "https", SITE)),
        # Two trusted proxies: the outer one's scheme and host (each proxy appends what it saw).
        (
            "10.0.0.5",
            f"{CLIENT}, 10.1.0.7",
            "https, http",
            f"{SITE}, internal:8022",
            (CLIENT, "https", SITE),
        ),
        # A proxy that replaces the header rather than appending.
        ("10.0.0.5", f"{CLIENT}, 10.1.0.7", "https", SITE, (CLIENT, "https", SITE)),
        # Ports and IPv6.
        ("10.0.0.5", f"{CLIENT}:51234", None, None, (CLIENT, None, None)),
        (
            "fd00::1",
            "[2001:db8::7]:443",
            "https",
            "[2001:db8::1]:8443",
            ("2001:db8::7", "https", "[2001:db8::1]:8443"),
        ),
        ("::ffff:10.0.0.5", CLIENT, None, None, (CLIENT, None, None)),
        # Garbage is never believed.
        ("10.0.0.5", "not-an-address", "javascript", "evil.example/path", ("10.0.0.5", None, None)),
        ("10.0.0.5", None, None, None, ("10.0.0.5", None, None)),
    ],
)
def test_resolve_forwarded(
    peer: str,
    xff: str | None,
    proto: str | None,
    host: str | None,
    want: tuple[str | None, str | None, str | None],
) -> None:
    assert (
        resolve_forwarded(
            peer, TRUSTED, forwarded_for=xff, forwarded_proto=proto, forwarded_host=host
        )
        == want
    )


def test_the_setting_is_read_from_toml_and_the_environment(tmp_path: Path) -> None:
    from server.config import InvalidConfig, load_config

    toml = tmp_path / "server.toml"
    toml.write_text('trusted_proxies = ["10.0.0.5", "10.1.0.0/16"]\n')
    env = {"JIT_SSH_DATA_DIR": str(tmp_path / "d")}
    assert load_config(toml, env).trusted_proxies == ("10.0.0.5/32", "10.1.0.0/16")
    assert load_config(
        toml, {**env, "JIT_SSH_TRUSTED_PROXIES": "192.0.2.0/24, ::1"}
    ).trusted_proxies == ("192.0.2.0/24", "::1/128")
    assert load_config(None, env).trusted_proxies == ()
    toml.write_text('trusted_proxies = ["10.0.0.5", "proxy.example"]\n')
    with pytest.raises(InvalidConfig, match="proxy.example"):
        load_config(toml, env)
    toml.write_text('trusted_proxies = "10.0.0.5"\n')
    assert load_config(toml, env).trusted_proxies == ("10.0.0.5/32",)
