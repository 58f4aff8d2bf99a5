"""What a signed API call signs: one canonical text, shared by client and server.

A call carries four headers::

    X-Jit-User:       alice
    X-Jit-Timestamp:  1764417600              (Unix seconds)
    X-Jit-Nonce:      22 to 64 URL-safe characters, fresh for every call
    X-Jit-Signature:  base64 of an SSHSIG blob (``ssh-keygen -Y sign -n jit-ssh-api``)

and the SSHSIG signature covers, with namespace ``jit-ssh-api``::

    jit-ssh-api-v1
    <METHOD>
    <path>
    <query string, exactly as sent, or empty>
    <SHA-256 hex of the body>
    <timestamp>
    <nonce>
    <user>

lines joined by ``\\n``, no trailing newline. So a signature is bound to one
method, path, query, body, moment and nonce; the server refuses a stale
timestamp and a nonce it has seen.
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "NAMESPACE",
    "VERSION",
    "HEADER_USER",
    "HEADER_TIMESTAMP",
    "HEADER_NONCE",
    "HEADER_SIGNATURE",
    "NONCE_PATTERN",
    "signing_message",
]

NAMESPACE = "jit-ssh-api"
VERSION = "jit-ssh-api-v1"
HEADER_USER = "X-Jit-User"
HEADER_TIMESTAMP = "X-Jit-Timestamp"
HEADER_NONCE = "X-Jit-Nonce"
HEADER_SIGNATURE = "X-Jit-Signature"
NONCE_PATTERN = re.compile(r"[A-Za-z0-9_-]{22,64}")


def signing_message(
    *, method: str, path: str, query: str, body: bytes, timestamp: int, nonce: str, user: str
) -> bytes:
    """The exact bytes a client signs and a server verifies."""
    for name, value in (
        ("method", method),
        ("path", path),
        ("query", query),
        ("nonce", nonce),
        ("user", user),
    ):
        if "\n" in value or "\r" in value:
            raise ValueError(f"{name} must not contain a newline")
    lines = [
        VERSION,
        method.upper(),
        path,
        query,
        hashlib.sha256(body).hexdigest(),
        str(int(timestamp)),
        nonce,
        user,
    ]
    return "\n".join(lines).encode("utf-8")
