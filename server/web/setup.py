"""What ``create_app`` needs to serve the pages safely: the secret key, the
session cookie, the security headers."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from flask import Flask, Response, has_request_context, request
from flask.sessions import SecureCookieSessionInterface

from server.config import InvalidConfig, ServerConfig

__all__ = [
    "SECRET_KEY_FILE",
    "secret_key_path",
    "load_or_create_secret_key",
    "SessionInterface",
    "CSP",
    "set_security_headers",
]

log = logging.getLogger("jit_ssh.web")

SECRET_KEY_FILE = "web-secret-key"

#: No scripts at all (the pages need none), styles only from our own static file,
#: forms only back to us, never framed.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def secret_key_path(config: ServerConfig) -> Path:
    return config.secret_key_file or config.data_dir / SECRET_KEY_FILE


def load_or_create_secret_key(config: ServerConfig) -> bytes:
    """The key that signs session cookies and CSRF tokens, made on first start (mode 0600).

    Replicas behind one load balancer must share it: point ``secret_key_file``
    in the server configuration at the same file on each of them.
    """
    path = secret_key_path(config)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Write a temporary file, then link it into place: several gunicorn
        # workers starting at once all end up reading the same key, and nobody
        # ever reads a half-written one.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (secrets.token_hex(32) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
            log.warning("created the web session key %s", path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s is readable by others (mode %o): chmod 600 it", path, mode)
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise InvalidConfig(
            f"{path}: the web secret key must hold at least 32 characters", field="secret_key_file"
        )
    return key


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure when the server is reached over https:
    by configuration (``base_url`` https://...) or by the request itself."""

    def get_cookie_secure(self, app: Flask) -> bool:
        if app.config.get("SESSION_COOKIE_SECURE"):
            return True
        return bool(has_request_context() and request.is_secure)


def set_security_headers(resp: Response) -> Response:
    headers = resp.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Frame-Options", "DENY")
    # same-origin, not no-referrer: Flask-WTF checks the Referer of POSTs over
    # https (WTF_CSRF_SSL_STRICT), and other sites learn nothing either way.
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    return resp
