"""Behind a TLS-terminating proxy: who the client is, by the proxies' addresses.

A proxy's ``X-Forwarded-For`` / ``-Proto`` / ``-Host`` headers say where the
call really came from, but anyone can send them: they are honoured only when
the immediate peer is one of the ``trusted_proxies`` (addresses or networks)
of the server configuration. Then the client is the rightmost
``X-Forwarded-For`` entry that is not itself a trusted proxy (each proxy
appends the address it was called from: entries further left were written
by the client, and prove nothing), and the scheme and host are those the
outermost trusted proxy saw. From any other peer the headers are removed, so
nothing downstream can read them by mistake.

Werkzeug's ``ProxyFix`` counts hops instead (trust the last N entries,
whoever sent them): one direct connection that skips the proxy then spoofs
its way in. So this is by address.

What it sets is what the rest reads: ``request.remote_addr`` (the audit
``remote``, the web login's), ``request.scheme`` / ``is_secure`` (Secure
cookies, Flask-WTF's same-origin Referer check over https) and
``request.host`` (the origin that check compares with).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["Network", "parse_networks", "resolve_forwarded", "TrustedProxies"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_HEADERS = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_X_FORWARDED_PREFIX",
    "HTTP_FORWARDED",
)
# A host as a proxy forwards it: a name or IPv4 address, or a bracketed IPv6 one, and a port.
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)
_MAX_ENTRIES = 32


def parse_networks(values: Iterable[str], *, field: str = "trusted_proxies") -> tuple[Network, ...]:
    """``["10.0.0.5", "10.1.0.0/16", "::1"]`` as networks; ValueError naming a bad entry."""
    out = []
    for v in values:
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"{field}: {v!r} is not an IP address or network")
        try:
            out.append(ipaddress.ip_network(v.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"{field}: {v!r} is not an IP address or network (e.g. 10.0.0.5 or 10.1.0.0/16)"
            ) from None
    return tuple(out)


def _address(text: str) -> Address | None:
    """An address as it appears in X-Forwarded-For (some proxies add a port), or None."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _trusted(addr: Address | None, trusted: Sequence[Network]) -> bool:
    return addr is not None and any(addr.version == n.version and addr in n for n in trusted)


def _values(header: str | None) -> list[str]:
    return [v.strip() for v in (header or "").split(",")][-_MAX_ENTRIES:] if header else []


def resolve_forwarded(
    peer: str | None,
    trusted: Sequence[Network],
    *,
    forwarded_for: str | None = None,
    forwarded_proto: str | None = None,
    forwarded_host: str | None = None,
) -> tuple[str | None, str | None, str | None]:
    """``(client address, scheme, host)`` of a call that came from ``peer`` with these
    headers; ``scheme`` and ``host`` are None where nothing trustworthy says otherwise,
    and the client is ``peer`` itself unless ``peer`` is a trusted proxy."""
    peer_addr = _address(peer or "")
    if not _trusted(peer_addr, trusted):
        return peer, None, None
    client = str(peer_addr)
    hops = 1  # trusted proxies the call went through, the peer included
    for entry in reversed(_values(forwarded_for)):
        addr = _address(entry)
        if addr is None:
            # Not an address: a trusted proxy appends only addresses, so this was
            # written by someone else. The last trusted hop is what we know.
            break
        client = str(addr)
        if not _trusted(addr, trusted):
            break
        hops += 1
    # Each proxy appends what it saw, so the outermost trusted proxy's value is the
    # hops-th from the right (or the leftmost, from proxies that replace the header).
    scheme = None
    protos = _values(forwarded_proto)
    if protos:
        p = protos[-min(hops, len(protos))].lower()
        scheme = p if p in ("http", "https") else None
    host = None
    hosts = _values(forwarded_host)
    if hosts:
        h = hosts[-min(hops, len(hosts))]
        host = h if _HOST.fullmatch(h) else None
    return client, scheme, host


class TrustedProxies:
    """WSGI middleware: :func:`resolve_forwarded` applied to every call's environ."""

    def __init__(self, app: WSGIApplication, trusted: Sequence[Network]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        client, scheme, host = resolve_forwarded(
            environ.get("REMOTE_ADDR"),
            self.trusted,
            forwarded_for=environ.get("HTTP_X_FORWARDED_FOR"),
            forwarded_proto=environ.get("HTTP_X_FORWARDED_PROTO"),
            forwarded_host=environ.get("HTTP_X_FORWARDED_HOST"),
        )
        for h in _HEADERS:
            environ.pop(h, None)
        if client is not None:
            environ["REMOTE_ADDR"] = client
        if scheme is not None:
            environ["wsgi.url_scheme"] = scheme
        if host is not None:
            environ["HTTP_HOST"] = host
        return self.app(environ, start_response)
