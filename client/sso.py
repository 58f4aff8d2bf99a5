"""Signing in with the server's identity provider, to enrol this machine's key (single sign-on).

``jit-ssh sso login`` (and ``jit-ssh login`` when the key is not enrolled)::

    the key        the configured identity, else <config dir>/sso_ed25519 (made here, 0600)
    GET  /v1/sso   is single sign-on on? its name, whether it offers the device flow
    POST /v1/sso/start {public_key, mode}          signed by that key, user "-"
      loopback: open authorize_url; the server sends the browser back to
                http://127.0.0.1:PORT/callback?flow=ID&code=FINISH-CODE
                POST /v1/sso/finish {flow, code}   -> the enrolment
      device:   show user_code and verification_uri; POST /v1/sso/poll {flow}
                every interval seconds              -> the enrolment
    the config     user and identity written (client.settings.update_settings)

A key the server refuses with ``key_revoked`` (an admin removed it, or revoked its
enrolment) is never enrolled again: jit-ssh's own key is moved aside
(:func:`retire_key`, ``sso_ed25519.revoked-<UTC time>``) and a new one made in its place;
a key of the user's own is left alone (:func:`is_own_key`).

The private key never leaves this machine: the server gets the public key, and
proof of possession through the SSHSIG signature on every call. Every answer is
checked by :mod:`client.verify` before anything of it is shown, opened or
written; the finish answer must name THIS key.

Errors (all :class:`ca.errors.JitSshError`, exit code 1 unless said)::

    SsoError                 "sso_error"
    ├── SsoUnavailable       "sso_unavailable"     the server has no single sign-on (or no device flow)
    ├── SignInTimedOut       "sign_in_timed_out"   the flow's expires_at passed
    ├── SignInRefused        "sign_in_refused"     the server sent the browser back with an error
    └── SsoUserMismatch      "sso_user_mismatch"   signed in as someone else than the configured user
"""

from __future__ import annotations

import base64
import hmac
import html
import http.server
import os
import re
import socket
import socketserver
import threading
import time
import urllib.parse
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ca import wire
from ca.errors import JitSshError
from ca.keys import parse_public_key

from .clock import utcnow
from .files import write_atomic
from .settings import config_path, read_file_settings, update_settings
from .verify import (
    SsoEnrolment,
    SsoInfo,
    check_sso_device_start,
    check_sso_finish,
    check_sso_info,
    check_sso_poll,
    check_sso_start,
)

if TYPE_CHECKING:
    from .http import ApiClient
    from .signing import Signer

__all__ = [
    "SsoError",
    "SsoUnavailable",
    "SignInTimedOut",
    "SignInRefused",
    "SsoUserMismatch",
    "SignInKey",
    "SignedIn",
    "UNSIGNED_USER",
    "sso_key_path",
    "sign_in_key",
    "is_own_key",
    "retire_key",
    "sso_info",
    "has_display",
    "loopback_sign_in",
    "device_sign_in",
    "save_sign_in",
    "until_text",
]

#: The user header of start, finish and poll: the key need not be enrolled yet.
UNSIGNED_USER = "-"
_KEY_NAME = "sso_ed25519"
_FINISH_CODE = re.compile(r"[A-Za-z0-9_-]{8,256}")
_REFUSAL = re.compile(r"sso_[a-z0-9_]{1,60}|user_disabled|enrolment_expired")
_HOST_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")
#: Slow down (RFC 8628 section 3.5): five more seconds between polls, at most ten minutes.
_SLOW_DOWN = 5
_MAX_INTERVAL = 600

# The clock, the sleep and the browser: module attributes, so tests replace them.
_monotonic = time.monotonic
_sleep = time.sleep
_open_browser: Callable[[str], bool] = webbrowser.open


class SsoError(JitSshError):
    code = "sso_error"


class SsoUnavailable(SsoError):
    code = "sso_unavailable"


class SignInTimedOut(SsoError):
    code = "sign_in_timed_out"


class SignInRefused(SsoError):
    """The server sent the browser back with a refusal: ``code`` is the server's own
    (``sso_domain_refused``, ...)."""

    code = "sign_in_refused"

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, field="error")
        self.code = code


class SsoUserMismatch(SsoError):
    code = "sso_user_mismatch"


# --------------------------------------------------------------------------- the key


@dataclass(frozen=True)
class SignInKey:
    """The key a sign-in enrols: it signs start, finish and poll, and every call after."""

    signer: Signer
    #: The public key line sent to the server (never the private key).
    public_key: str
    fingerprint: str
    #: What ``identity`` names it by: the private key file, or the agent key's fingerprint.
    identity: str
    #: Made by this sign-in (it did not exist before).
    created: bool = False


def sso_key_path(env: Mapping[str, str] = os.environ) -> Path:
    """The key jit-ssh makes for single sign-on: ``<config dir>/sso_ed25519``."""
    return config_path(env).parent / _KEY_NAME


def _comment() -> str:
    # The host name tells an admin's list of enrolments which machine a key is on.
    host = socket.gethostname().split(".", 1)[0]
    return f"jit-ssh-sso@{host}" if _HOST_LABEL.fullmatch(host) else "jit-ssh-sso"


def _make_key(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, pem, mode=0o600)
    write_atomic(path.with_name(path.name + ".pub"), pub.decode("ascii") + f" {_comment()}\n")


def sign_in_key(
    identity: str | None,
    *,
    signer_for: Callable[[str], Signer],
    env: Mapping[str, str] = os.environ,
) -> SignInKey:
    """The configured ``identity`` (a key file, or ``SHA256:`` for an ssh-agent key), else
    jit-ssh's own key at :func:`sso_key_path`, made now if it does not exist yet.

    ``signer_for(identity)`` opens a signer (ssh-agent or the file, with a passphrase prompt).
    """
    created = False
    if identity is None:
        path = sso_key_path(env)
        if not path.exists():
            _make_key(path)
            created = True
        identity = str(path)
    signer = signer_for(identity)
    blob = signer.public_key_blob
    key_type = wire.Reader(blob, context="identity").text("key type", max_length=64)
    public = parse_public_key(
        f"{key_type} {base64.b64encode(blob).decode('ascii')}", field="identity"
    )
    line = public.openssh
    pub_file = Path(identity).with_name(Path(identity).name + ".pub")
    if not identity.startswith("SHA256:") and pub_file.is_file():
        # The .pub's comment names the machine for the admin's list, when it is the same key.
        try:
            on_disk = parse_public_key(pub_file.read_text("utf-8").strip(), field="identity")
            if on_disk == public and on_disk.comment:
                line = on_disk.openssh
        except (JitSshError, OSError, UnicodeDecodeError):
            pass
    return SignInKey(
        signer=signer,
        public_key=line,
        fingerprint=signer.fingerprint,
        identity=identity,
        created=created,
    )


def is_own_key(key: SignInKey, env: Mapping[str, str] = os.environ) -> bool:
    """Whether ``key`` is jit-ssh's own (:func:`sso_key_path`), not a key of the user's."""
    if key.identity.startswith("SHA256:"):
        return False
    return Path(key.identity).expanduser().resolve() == sso_key_path(env).resolve()


def retire_key(path: Path, now: datetime | None = None) -> Path:
    """Move the key file at ``path`` (and its .pub) aside, never over another file, as
    ``<name>.revoked-<UTC time>``; return where the private key went. Never deleted: the
    person may want to know which key it was."""
    stamp = f"{(now or utcnow()).astimezone(UTC):%Y%m%dT%H%M%SZ}"
    base = f"{path.name}.revoked-{stamp}"
    target = path.with_name(base)
    n = 1
    while target.exists() or target.with_name(target.name + ".pub").exists():
        n += 1
        target = path.with_name(f"{base}-{n}")
    path.rename(target)
    pub = path.with_name(path.name + ".pub")
    if pub.exists():
        pub.rename(target.with_name(target.name + ".pub"))
    return target


# --------------------------------------------------------------------------- the server


def sso_info(api: ApiClient) -> SsoInfo:
    """``GET /v1/sso``, checked. A server without the endpoint (older) has no single sign-on."""
    from .errors import ApiError

    try:
        answer = api.get("/v1/sso", signed=False, printable=False)
    except ApiError as e:
        if e.status in (404, 405):
            return SsoInfo(enabled=False)
        raise
    return check_sso_info(answer)


def has_display(env: Mapping[str, str] = os.environ, platform: str | None = None) -> bool:
    """Whether a browser can open here: on Linux and the BSDs only with an X or Wayland display
    (without one, ``webbrowser`` would start a text browser in this very terminal)."""
    import sys

    platform = platform or sys.platform
    if platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))
    return True


def _seconds_until(when: datetime) -> float:
    return (when - utcnow()).total_seconds()


def until_text(when: datetime, now: datetime | None = None) -> str:
    """``22:15 UTC`` today, else ``2026-01-02 22:15 UTC``."""
    now = now or utcnow()
    t = when.astimezone(UTC)
    return f"{t:%H:%M} UTC" if t.date() == now.astimezone(UTC).date() else f"{t:%Y-%m-%d %H:%M} UTC"


def _finish(api: ApiClient, key: SignInKey, flow: str, code: str) -> SsoEnrolment:
    answer = api.post("/v1/sso/finish", {"flow": flow, "code": code}, printable=False)
    return check_sso_finish(answer, fingerprint=key.fingerprint, now=utcnow())


# --------------------------------------------------------------------------- loopback


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>jit-ssh</title>
<style>body{{font-family:sans-serif;max-width:36em;margin:4em auto}}</style></head>
<body><h1>{title}</h1><p>{text}</p></body></html>
"""


class _Callback(http.server.BaseHTTPRequestHandler):
    """One request to the loopback listener. Only ``GET /callback?flow=<ours>`` counts."""

    server: _Listener
    # A connection that sends nothing must not hold the one-at-a-time listener for long.
    timeout = 10
    server_version = "jit-ssh"
    sys_version = ""

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        if parts.path != "/callback":
            self._page(404, "Not found", "This is jit-ssh's sign-in listener.")
            return
        host = self.headers.get("Host", "")
        if host not in (f"127.0.0.1:{self.server.port}", f"localhost:{self.server.port}"):
            # A page that rebinds its own name to 127.0.0.1 cannot reach the listener.
            self._page(400, "Wrong address", "jit-ssh listens on 127.0.0.1 only.")
            return
        try:
            query = urllib.parse.parse_qs(
                parts.query, strict_parsing=True, max_num_fields=8, keep_blank_values=True
            )
        except ValueError:
            query = {}
        flow = query.get("flow", [])
        if len(flow) != 1 or not hmac.compare_digest(
            flow[0].encode("utf-8", "replace"), self.server.flow.encode("ascii")
        ):
            self._page(
                400,
                "Not this sign-in",
                "This is not the sign-in jit-ssh is waiting for; it keeps waiting. "
                "Start again from the link jit-ssh printed.",
            )
            return
        codes, errors = query.get("code", []), query.get("error", [])
        refused = len(errors) == 1 and not codes
        if not refused and (len(codes) != 1 or errors or not _FINISH_CODE.fullmatch(codes[0])):
            self._page(400, "Not a sign-in answer", "jit-ssh keeps waiting.")
            return
        # One answer counts: a second visit (a reload, a second tab) finds it taken.
        with self.server.lock:
            if self.server.taken:
                self._page(
                    409, "Already answered", "This sign-in has its answer; see the terminal."
                )
                return
            self.server.taken = True
        outcome: SsoEnrolment | BaseException
        if refused:
            # The server's own code, if it is one of a sign-in's: it picks the advice shown.
            error = errors[0] if _REFUSAL.fullmatch(errors[0]) else "sso_error"
            outcome = SignInRefused("the server refused the sign-in", code=error)
            page = (200, "Sign-in failed", f"The sign-in failed ({error}). See the terminal.")
        else:
            # The finish call runs before the page is answered: the page says how it ended.
            try:
                outcome = self.server.finish(codes[0])
                page = (200, "Signed in", f"Signed in as {outcome.user}; you can close this tab.")
            except JitSshError as e:
                outcome = e
                page = (200, "Sign-in failed", f"{e} [{e.code}]. See the terminal.")
            except BaseException as e:
                outcome = e
                page = (500, "Sign-in failed", "See the terminal.")
        try:
            self._page(*page)
        finally:
            # Only once the page is sent: the command may exit as soon as it sees the outcome.
            self.server.outcome = outcome
            self.server.done.set()

    def _page(self, status: int, title: str, text: str) -> None:
        body = _PAGE.format(title=html.escape(title), text=html.escape(text)).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        # The URL holds the finish code: no Referer from this page, nothing it loads.
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the terminal shows the sign-in, not an access log


class _Listener(http.server.ThreadingHTTPServer):
    """A one-flow HTTP listener on 127.0.0.1 (never any other address), any free port.

    Each connection gets its own thread: a browser's idle preconnection (Chromium opens
    them) must not hold up the one request that counts."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Callback)
        self.port: int = self.server_address[1]
        self.flow = ""
        self.finish: Callable[[str], SsoEnrolment] = _no_finish
        self.lock = threading.Lock()
        self.taken = False
        self.outcome: SsoEnrolment | BaseException | None = None
        self.done = threading.Event()

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the address up in DNS (getfqdn): not for 127.0.0.1.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


def _no_finish(code: str) -> SsoEnrolment:
    raise SsoError("the listener has no flow yet")


def loopback_sign_in(
    api: ApiClient,
    key: SignInKey,
    *,
    open_browser: bool,
    say: Callable[[str], None],
    fall_back: Callable[[], SsoEnrolment] | None = None,
) -> SsoEnrolment:
    """The browser flow: listen on 127.0.0.1, start, open the provider's page, wait for the
    one callback of this flow, finish. ``fall_back`` (the device flow) runs instead when the
    browser cannot be opened."""
    with _Listener() as listener:
        answer = api.post(
            "/v1/sso/start",
            {"public_key": key.public_key, "mode": "loopback", "loopback_port": listener.port},
            printable=False,
        )
        start = check_sso_start(answer, now=utcnow())
        listener.flow = start.flow
        listener.finish = lambda code: _finish(api, key, start.flow, code)
        say(f"Opening {start.authorize_url} in your browser (or open it yourself)")
        if open_browser and not _browser(start.authorize_url):
            if fall_back is not None:
                say("No browser could be opened; signing in with a code instead.")
                listener.server_close()
                return fall_back()
            say("No browser could be opened: open the address above yourself.")
        say(f"Waiting for the sign-in until {until_text(start.expires_at)} (Ctrl-C to stop)...")
        deadline = _monotonic() + _seconds_until(start.expires_at)
        serving = threading.Thread(
            target=listener.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        serving.start()
        try:
            while not listener.done.wait(timeout=max(0.0, min(deadline - _monotonic(), 1.0))):
                if deadline - _monotonic() <= 0:
                    raise SignInTimedOut(
                        f"the sign-in was not completed before it expired at "
                        f"{until_text(start.expires_at)}; run: jit-ssh sso login",
                        field="expires_at",
                    )
        finally:
            listener.shutdown()
        outcome = listener.outcome
        assert outcome is not None
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _browser(url: str) -> bool:
    try:
        return bool(_open_browser(url))
    except Exception:  # webbrowser.Error, or a browser that failed to start
        return False


# --------------------------------------------------------------------------- device


def device_sign_in(api: ApiClient, key: SignInKey, *, say: Callable[[str], None]) -> SsoEnrolment:
    """The device flow (RFC 8628): show the code and the page to enter it on, then poll at
    the server's interval (five seconds more on each slow_down) until done or expired."""
    answer = api.post(
        "/v1/sso/start", {"public_key": key.public_key, "mode": "device"}, printable=False
    )
    start = check_sso_device_start(answer, now=utcnow())
    say(f"To sign in, open {start.verification_uri} and enter the code {start.user_code}")
    if start.verification_uri_complete:
        say(f"  or open this link, the code filled in: {start.verification_uri_complete}")
    say(f"Waiting for the sign-in until {until_text(start.expires_at)} (Ctrl-C to stop)...")
    deadline = _monotonic() + _seconds_until(start.expires_at)
    interval = start.interval
    while True:
        left = deadline - _monotonic()
        if left <= 0:
            raise SignInTimedOut(
                f"the code was not entered before it expired at {until_text(start.expires_at)}; "
                "run: jit-ssh sso login --headless",
                field="expires_at",
            )
        _sleep(min(interval, left))
        if deadline - _monotonic() <= 0:
            continue
        answer = api.post("/v1/sso/poll", {"flow": start.flow}, printable=False)
        poll = check_sso_poll(answer, fingerprint=key.fingerprint, now=utcnow())
        if poll.enrolment is not None:
            return poll.enrolment
        assert poll.interval is not None
        if poll.status == "slow_down":
            interval = min(max(poll.interval, interval + _SLOW_DOWN), _MAX_INTERVAL)
        else:
            interval = poll.interval


# --------------------------------------------------------------------------- the config


@dataclass(frozen=True)
class SignedIn:
    """A finished sign-in: who, the key, and what was written to the config file."""

    enrolment: SsoEnrolment
    key: SignInKey
    config: Path
    written: tuple[str, ...]


def save_sign_in(
    enrolment: SsoEnrolment,
    key: SignInKey,
    *,
    configured_user: str | None,
    server: str | None = None,
    env: Mapping[str, str] = os.environ,
    path: Path | None = None,
) -> SignedIn:
    """Write ``user`` and ``identity`` to the client config, keeping everything else
    (and ``server``, when the file names none).

    A user configured already (file, environment or flag) must be the one the server
    signed in: otherwise :class:`SsoUserMismatch`, and nothing is written. ``identity`` is
    written when the file has none, names jit-ssh's own key, or names a file that does
    not exist; a different key of the user's own is never replaced.
    """
    p = path or config_path(env)
    if configured_user and configured_user != enrolment.user:
        raise SsoUserMismatch(
            f"signed in as {enrolment.user!r}, but this machine's settings name {configured_user!r} "
            f"as your user; nothing was changed here (the server enrolled the key for "
            f"{enrolment.user!r}). Fix `user` in {p} or $JIT_SSH_USER, then run: jit-ssh sso login",
            field="user",
        )
    current = read_file_settings(p)
    values: dict[str, str] = {}
    if server and not current.get("server"):
        # Given as a flag or in the environment: the next command finds it too.
        values["server"] = server
    if current.get("user") != enrolment.user:
        values["user"] = enrolment.user
    file_identity = current.get("identity")
    ours = str(sso_key_path(env))
    if file_identity is None or (
        _expanded(file_identity) != key.identity
        and (
            _expanded(file_identity) == ours
            or not (file_identity.startswith("SHA256:") or Path(_expanded(file_identity)).exists())
        )
    ):
        values["identity"] = key.identity
    if values:
        update_settings(values, p)
    return SignedIn(enrolment=enrolment, key=key, config=p, written=tuple(values))


def _expanded(identity: str) -> str:
    return str(Path(identity).expanduser())
