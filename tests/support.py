"""Test helpers that more than one test module needs (one copy, imported by each)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

#: One private key maker per key type the signing code supports (name -> generate()).
KEY_SPECS: dict[str, Callable[[], Any]] = {
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "p521": lambda: ec.generate_private_key(ec.SECP521R1()),
    "rsa2048": lambda: rsa.generate_private_key(65537, 2048),
    "rsa3072": lambda: rsa.generate_private_key(65537, 3072),
}


def signed_headers(
    key: Any,
    user: str,
    method: str,
    path: str,
    body: bytes = b"",
    query: str = "",
    *,
    ts: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers of an API call signed as ``user`` with ``key`` (as jit-ssh's client signs):
    now and a fresh nonce unless given, and a JSON content type when there is a body."""
    import base64
    import secrets
    import time

    from ca import request_signing as rs
    from ca.sshsig import sign

    ts = int(time.time()) if ts is None else ts
    nonce = nonce or secrets.token_urlsafe(18)
    msg = rs.signing_message(
        method=method, path=path, query=query, body=body, timestamp=ts, nonce=nonce, user=user
    )
    headers = {
        rs.HEADER_USER: user,
        rs.HEADER_TIMESTAMP: str(ts),
        rs.HEADER_NONCE: nonce,
        rs.HEADER_SIGNATURE: base64.b64encode(
            sign(msg, namespace=rs.NAMESPACE, private_key=key)
        ).decode(),
    }
    if body:
        headers["Content-Type"] = "application/json"
    return headers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (a server started on it may still
    lose a race for it: callers retry on "Address already in use")."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: Any, probe: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``probe()`` until it says yes (True), or ``proc`` exits or ``timeout`` seconds pass (False)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if probe():
            return True
        time.sleep(interval)
    return False


def answers_healthz(url: str) -> bool:
    """True when ``URL/healthz`` answers 200 (a refused connection, a timeout or an error status: False)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def assert_refusal(err: Any, cls: type, field: str) -> Any:
    """``err`` is exactly ``cls``, with its code and ``field`` named, in a one-line message."""
    assert type(err) is cls, f"expected {cls.__name__}, got {type(err).__name__}: {err}"
    assert err.code == cls.code
    assert err.field == field
    assert field in str(err), str(err)
    assert "\n" not in str(err)
    return err
