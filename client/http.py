"""Talking to the jit-ssh server: signed calls over httpx.

The transport is injectable (``httpx.MockTransport`` in unit tests). Plain
http is refused except to localhost: the certificate and the signed calls
must not cross a network in clear. TLS is verified, against a custom CA
bundle if one is configured.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httpx

from ca import request_signing as rs
from ca.errors import JitSshError

from .signing import Signer

__all__ = ["ApiClient", "ApiError", "Unreachable", "InsecureServerURL", "check_server_url"]

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


class ApiError(JitSshError):
    """The server answered with a problem (RFC 9457); ``code`` is the server's code."""

    def __init__(self, status: int, code: str, detail: str, field: str | None = None, body: dict[str, Any] | None = None):
        super().__init__(detail, field=field)
        self.status = status
        self.code = code  # type: ignore[misc]
        self.body = body or {}


class Unreachable(JitSshError):
    code = "server_unreachable"


class InsecureServerURL(JitSshError):
    code = "insecure_server_url"


def check_server_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InsecureServerURL(f"server URL {url!r} must be https://HOST[:PORT]", field="server")
    if parts.scheme == "http" and parts.hostname not in _LOCAL_HOSTS:
        raise InsecureServerURL(
            f"refusing plain http to {parts.hostname}: use https (plain http is allowed only to localhost)",
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
        self._http = httpx.Client(base_url=self.server, transport=self.transport, verify=verify, timeout=self.timeout,
                                  headers={"User-Agent": "jit-ssh-client/1"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _signed_headers(self, method: str, path: str, query: str, body: bytes) -> dict[str, str]:
        import base64

        if self.signer is None or not self.user:
            raise JitSshError("no identity to sign the call with (configure user and identity)", field="identity")
        ts = int(time.time())
        nonce = secrets.token_urlsafe(18)
        msg = rs.signing_message(method=method, path=path, query=query, body=body, timestamp=ts, nonce=nonce, user=self.user)
        sig = self.signer.sign(msg, namespace=rs.NAMESPACE)
        return {
            rs.HEADER_USER: self.user,
            rs.HEADER_TIMESTAMP: str(ts),
            rs.HEADER_NONCE: nonce,
            rs.HEADER_SIGNATURE: base64.b64encode(sig).decode("ascii"),
        }

    def request(self, method: str, path: str, *, json_body: Any = None, query: dict[str, str] | None = None,
                signed: bool = True, raw: bool = False, headers: dict[str, str] | None = None) -> Any:
        """One call; retried with backoff only when the server could not be reached
        (a fresh nonce and signature each time). Returns JSON (or the response if ``raw``)."""
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
                resp = self._http.request(method, path + (f"?{query_text}" if query_text else ""), content=body or None, headers=h)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                last = e
                if attempt + 1 < self.retries:
                    time.sleep(min(0.5 * 2**attempt, 4))
                continue
            except httpx.HTTPError as e:
                raise Unreachable(f"{self.server}: {e}") from None
            if resp.status_code == 503 and attempt + 1 < self.retries:
                time.sleep(min(0.5 * 2**attempt, 4))
                last = None
                continue
            return self._result(resp, raw)
        raise Unreachable(f"cannot reach {self.server} after {self.retries} attempts: {last or 'service unavailable'}")

    @staticmethod
    def _result(resp: httpx.Response, raw: bool) -> Any:
        if resp.status_code >= 400:
            try:
                problem = resp.json()
            except ValueError:
                problem = {}
            if not isinstance(problem, dict):
                problem = {}
            raise ApiError(resp.status_code, str(problem.get("code") or f"http_{resp.status_code}"),
                           str(problem.get("detail") or resp.reason_phrase), problem.get("field"), problem)
        if raw:
            return resp
        if resp.status_code == 204 or not resp.content:
            return {}
        return resp.json()

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json_body=body if body is not None else {}, **kw)
