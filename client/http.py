"""Talking to the jit-ssh server: the CLI's one HTTP client, over httpx.

Every command that talks to a server goes through :class:`ApiClient`, so every
call gets the same rules:

* one URL check (:func:`check_server_url`): https, or plain http only to
  localhost (the certificate and the signed calls must not cross a network
  in clear); no credentials, query or fragment in the server URL;
* TLS verified, against a custom CA bundle if one is configured;
* no redirect is ever followed: a 3xx is an error naming where it pointed
  (a redirect could lead to plain http, or to a host the URL check would
  refuse, or to another server altogether);
* only a 2xx answer is a result; anything else is an error, never ``{}``;
* answers are read up to a size limit.

The transport is injectable (``httpx.MockTransport`` in unit tests).
"""

from __future__ import annotations

import json
import re
import secrets
import time
import unicodedata
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httpx

from ca import request_signing as rs

from .clock import unix_time
from .errors import (
    ApiError,
    BadServerAnswer,
    InsecureServerURL,
    InvalidApiPath,
    RedirectRefused,
    ServerUnreachable,
)
from .signing import Signer, SignerError

__all__ = [
    "defang",
    "check_api_path",
    "InvalidApiPath",
    "ApiClient",
    "ApiError",
    "BadServerAnswer",
    "RedirectRefused",
    "ServerUnreachable",
    "InsecureServerURL",
    "check_server_url",
    "MAX_ANSWER_BYTES",
]

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
#: The largest answer read by default (JSON, CA keys); callers may pass their own (the KRL).
MAX_ANSWER_BYTES = 16 * 1024 * 1024


def _escape_char(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def defang(value: Any) -> Any:
    """The server's JSON with every string made safe to print on a terminal.

    Reasons, comments, names and problem details reach the engineer's terminal.
    A hostile server could send ESC sequences (move the cursor, rewrite what is
    on screen, set the window title), a carriage return that overwrites the
    line, or U+202E and other invisible format characters that reorder or hide
    text. Each such character (C0 and C1 controls except newline and tab, DEL,
    Unicode category Cf) becomes a visible escape such as ``\\x1b`` or
    ``\\u202e``; every other character is kept. Values that are checked
    strictly later (principals, key ids, certificates) then fail their checks,
    as they should.
    """
    if isinstance(value, str):
        if value.isprintable():
            return value
        return "".join(
            _escape_char(c) if c not in "\n\t" and (unicodedata.category(c) in ("Cc", "Cf")) else c
            for c in value
        )
    if isinstance(value, dict):
        return {defang(k): defang(v) for k, v in value.items()}
    if isinstance(value, list):
        return [defang(v) for v in value]
    return value


# An API path: segments of letters, digits, '_', '-' and '.', none starting with
# '.', so neither "." nor ".." (which httpx would resolve: "/v1/requests/../../x"
# goes out as "/x"), no '?' or '#' that would start a query or fragment, no
# '%' escapes. Request ids and serials from the server's answers are put into
# paths: this is the one check every call goes through, whoever built the path.
_API_PATH = re.compile(r"(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)+")


def check_api_path(path: str) -> str:
    """``path`` if it is a plain API path (``/v1/requests/ID/certificate``), else :class:`InvalidApiPath`."""
    if not isinstance(path, str) or len(path) > 512 or not _API_PATH.fullmatch(path):
        raise InvalidApiPath(
            f"refusing to call {str(path)[:80]!r}: an API path is /-separated letters, digits, '_', '-' and '.' "
            "(no '..', '?', '#', '%' or spaces); a request id or serial the server sent may be malformed",
            field="path",
        )
    return path


def check_server_url(url: str) -> str:
    """The one check of a server URL, for every command: ``https://HOST[:PORT][/PATH]``,
    or ``http://`` to localhost only. Returns it without a trailing slash."""
    if not isinstance(url, str) or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise InsecureServerURL(
            f"server URL {url!r} must be https://HOST[:PORT], without spaces or control characters",
            field="server",
        )
    try:
        parts = urllib.parse.urlsplit(url)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise InsecureServerURL(f"server URL {url!r} is not a valid URL", field="server") from None
    if parts.scheme not in ("https", "http") or not hostname:
        raise InsecureServerURL(f"server URL {url!r} must be https://HOST[:PORT]", field="server")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise InsecureServerURL(
            f"server URL {url!r} must not hold credentials, a query or a fragment", field="server"
        )
    if parts.scheme == "http" and hostname not in _LOCAL_HOSTS:
        raise InsecureServerURL(
            f"refusing plain http to {hostname}: use https (plain http is allowed only to localhost)",
            field="server",
        )
    return url.rstrip("/")


@dataclass
class ApiClient:
    server: str
    user: str | None = None
    signer: Signer | None = None
    transport: httpx.BaseTransport | None = None
    ca_bundle: str | None = None
    timeout: float = 15.0
    retries: int = 3

    def __post_init__(self) -> None:
        self.server = check_server_url(self.server)
        verify: Any = self.ca_bundle if self.ca_bundle else True
        self._http = httpx.Client(
            base_url=self.server,
            transport=self.transport,
            verify=verify,
            timeout=self.timeout,
            follow_redirects=False,
            headers={"User-Agent": "jit-ssh-client/1"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _signed_headers(self, method: str, path: str, query: str, body: bytes) -> dict[str, str]:
        import base64

        if self.signer is None or not self.user:
            raise SignerError(
                "no identity to sign the call with (configure user and identity)", field="identity"
            )
        ts = int(unix_time())
        nonce = secrets.token_urlsafe(18)
        msg = rs.signing_message(
            method=method,
            path=path,
            query=query,
            body=body,
            timestamp=ts,
            nonce=nonce,
            user=self.user,
        )
        sig = self.signer.sign(msg, namespace=rs.NAMESPACE)
        return {
            rs.HEADER_USER: self.user,
            rs.HEADER_TIMESTAMP: str(ts),
            rs.HEADER_NONCE: nonce,
            rs.HEADER_SIGNATURE: base64.b64encode(sig).decode("ascii"),
        }

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        query: dict[str, str] | None = None,
        signed: bool = True,
        raw: bool = False,
        headers: dict[str, str] | None = None,
        also_ok: tuple[int, ...] = (),
        max_bytes: int = MAX_ANSWER_BYTES,
        printable: bool = True,
    ) -> Any:
        """One call; retried with backoff only when the server could not be reached
        (a fresh nonce and signature each time).

        Returns the JSON object of a 2xx answer, or with ``raw`` the response
        itself (its body read, at most ``max_bytes``). Any other status is an
        error (:class:`ApiError`; :class:`RedirectRefused` for a 3xx), except
        the statuses in ``also_ok`` (``raw`` only, e.g. 304 for a conditional GET).
        With ``printable`` (the default) every string in the answer went
        through :func:`defang`; ``printable=False`` keeps them as sent, for an
        answer that a strict verifier checks value by value before anything of
        it is printed or written (the issued certificate: :mod:`client.verify`).
        """
        check_api_path(path)
        body = b"" if json_body is None else json.dumps(json_body).encode("utf-8")
        query_text = urllib.parse.urlencode(query or {})
        base_path = urllib.parse.urlsplit(self.server).path.rstrip("/")
        full_path = base_path + path
        last: Exception | None = None
        for attempt in range(self.retries):
            h = dict(headers or {})
            if body:
                h["Content-Type"] = "application/json"
            if signed:
                h.update(self._signed_headers(method, full_path, query_text, body))
            try:
                resp = self._send(
                    method, path + (f"?{query_text}" if query_text else ""), body, h, max_bytes
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                last = e
                if attempt + 1 < self.retries:
                    time.sleep(min(0.5 * 2**attempt, 4))
                continue
            except httpx.HTTPError as e:
                raise ServerUnreachable(f"{self.server}: {e}") from None
            if resp.status_code == 503 and attempt + 1 < self.retries:
                time.sleep(min(0.5 * 2**attempt, 4))
                last = None
                continue
            return self._result(
                resp, raw, also_ok if raw else (), f"{self.server}{path}", printable
            )
        raise ServerUnreachable(
            f"cannot reach {self.server} after {self.retries} attempts: {last or 'service unavailable'}"
        )

    def _send(
        self, method: str, url: str, body: bytes, headers: dict[str, str], max_bytes: int
    ) -> httpx.Response:
        """Send, and read the answer's body up to ``max_bytes`` (never all of a huge answer into memory)."""
        request = self._http.build_request(method, url, content=body or None, headers=headers)
        resp = self._http.send(request, stream=True, follow_redirects=False)
        try:
            declared = resp.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise BadServerAnswer(
                    f"{request.url}: answer of {declared} bytes is larger than {max_bytes}",
                    field="server",
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise BadServerAnswer(
                        f"{request.url}: answer larger than {max_bytes} bytes", field="server"
                    )
                chunks.append(chunk)
        finally:
            resp.close()
        # The body is decoded already: drop the headers that described the encoded one.
        kept = [
            (k, v)
            for k, v in resp.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            resp.status_code, headers=kept, content=b"".join(chunks), request=request
        )

    @staticmethod
    def _result(
        resp: httpx.Response,
        raw: bool,
        also_ok: tuple[int, ...] = (),
        where: str = "the server",
        printable: bool = True,
    ) -> Any:
        status = resp.status_code
        if status in also_ok:
            return resp
        if 300 <= status < 400:
            location = resp.headers.get("Location")
            to = f" to {location[:200]!r}" if location else " (no Location)"
            raise RedirectRefused(
                f"{where} answered HTTP {status}, a redirect{to}; jit-ssh never follows redirects: "
                "if that address is the right server, configure it as the server URL",
                field="server",
            )
        if not 200 <= status < 300:
            try:
                problem = resp.json()
            except ValueError:
                problem = {}
            if not isinstance(problem, dict):
                problem = {}
            problem = defang(problem)
            raise ApiError(
                status,
                str(problem.get("code") or f"http_{status}"),
                str(problem.get("detail") or resp.reason_phrase or f"HTTP {status}"),
                problem.get("field"),
                problem,
            )
        if raw:
            return resp
        if not resp.content:
            raise BadServerAnswer(
                f"{where} answered HTTP {status} with no body where a JSON object was expected",
                field="server",
            )
        try:
            data = resp.json()
        except ValueError:
            raise BadServerAnswer(
                f"{where} answered HTTP {status} with a body that is not JSON", field="server"
            ) from None
        if not isinstance(data, dict):
            raise BadServerAnswer(
                f"{where} answered HTTP {status} with JSON that is not an object", field="server"
            )
        return defang(data) if printable else data

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json_body=body if body is not None else {}, **kw)
