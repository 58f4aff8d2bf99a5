"""``jit-ssh sso check``: what is wrong between the ``[sso]`` table and the provider.

:func:`check_provider` fetches the discovery document and the JWKS as the server would and
returns one :class:`Finding` per thing it looked at, so an admin sees every problem at once
rather than the first one a sign-in trips over. It never raises for what the provider says;
each finding says what was found and, when something is wrong, how to fix it.

No Flask, no database: the command runs on a freshly written configuration, before the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import httpx

from server.config import InvalidConfig
from server.errors import SsoProviderError, SsoTokenInvalid

from .oidc import (
    ALLOWED_ALGORITHMS,
    OidcProvider,
    _check_jwks,
    _check_metadata,
    _check_url,
    _fits,
    _show,
    _strings,
    new_code_verifier,
)
from .settings import SsoSettings

__all__ = ["Finding", "Level", "check_provider"]


class Level(Enum):
    OK = "ok"
    #: Worth knowing, nothing to fix (no device endpoint: no headless sign-in).
    INFO = "info"
    #: Works, but should be fixed (a secret file others may read).
    WARN = "warn"
    PROBLEM = "problem"


@dataclass(frozen=True)
class Finding:
    """One thing checked. ``ok`` is False for a problem (the command then exits 1);
    ``unreachable``: the provider did not answer at all (exit 4)."""

    ok: bool
    what: str
    fix: str = ""
    level: Level = field(default=Level.OK)
    unreachable: bool = False

    def __post_init__(self) -> None:
        if not self.ok:
            object.__setattr__(self, "level", Level.PROBLEM)
        elif self.level is Level.PROBLEM:
            object.__setattr__(self, "level", Level.OK)


def _ok(what: str) -> Finding:
    return Finding(True, what)


def _info(what: str, fix: str = "") -> Finding:
    return Finding(True, what, fix, Level.INFO)


def _warn(what: str, fix: str) -> Finding:
    return Finding(True, what, fix, Level.WARN)


def _problem(what: str, fix: str) -> Finding:
    return Finding(False, what, fix)


def check_provider(
    settings: SsoSettings,
    base_url: str,
    http: httpx.Client | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
) -> list[Finding]:
    """Every finding about ``settings``' provider, in the order an admin would fix them.

    ``http``: the client to fetch with; without one, a client of its own (over ``transport``,
    when given: tests pass an ``httpx.MockTransport``), closed before returning."""
    if http is None:
        with httpx.Client(transport=transport) as own:
            return _check_provider(settings, base_url, own)
    return _check_provider(settings, base_url, http)


def _check_provider(settings: SsoSettings, base_url: str, http: httpx.Client) -> list[Finding]:
    findings: list[Finding] = []
    provider = OidcProvider(settings, http)
    findings.extend(_check_secret(settings))
    findings.append(_check_redirect(settings, base_url))

    url = settings.discovery_url
    try:
        doc = provider._get_json(url, "discovery document")
    except SsoProviderError as e:
        findings.append(
            Finding(
                False,
                f"discovery: {e}",
                "check [sso] issuer (discovery is {issuer}/.well-known/openid-configuration) "
                "and that this machine can reach the provider",
                unreachable=e.unreachable,
            )
        )
        return findings
    if not isinstance(doc, dict):
        findings.append(_problem(f"discovery: {url} is not a JSON object", "check [sso] issuer"))
        return findings
    findings.append(_ok(f"discovery document fetched from {url}"))

    issuer = doc.get("issuer")
    if issuer == settings.issuer:
        findings.append(_ok(f"issuer is exactly {settings.issuer!r}"))
    else:
        fix = (
            f"set [sso] issuer = {issuer!r} (exactly, trailing '/' included)"
            if isinstance(issuer, str) and len(issuer) < 2048 and issuer.isprintable()
            else "the provider's document names no usable issuer"
        )
        findings.append(
            _problem(
                f"issuer: the provider says {_show(issuer)}, [sso] issuer is {settings.issuer!r}",
                fix,
            )
        )

    endpoints_ok = True
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        value = doc.get(name)
        if not isinstance(value, str) or not value:
            findings.append(_problem(f"{name} is missing", "the provider must publish it"))
            endpoints_ok = False
            continue
        try:
            _check_url(name, value)
        except SsoProviderError as e:
            findings.append(_problem(str(e), "the provider's endpoints must be https"))
            endpoints_ok = False
        else:
            findings.append(_ok(f"{name} {value}"))

    findings.extend(_check_lists(doc, settings))

    device = doc.get("device_authorization_endpoint")
    if device is None:
        findings.append(
            _info(
                "no device_authorization_endpoint: `jit-ssh sso login --headless` will not work",
                "enable the device authorization grant for the client at the provider, if wanted",
            )
        )
    else:
        try:
            _check_url("device_authorization_endpoint", device if isinstance(device, str) else "")
        except SsoProviderError as e:
            findings.append(_problem(str(e), "the provider's endpoints must be https"))
        else:
            findings.append(_ok(f"device_authorization_endpoint {device} (headless sign-in)"))

    if not endpoints_ok:
        return findings
    findings.extend(_check_keys(provider, doc))
    if issuer != settings.issuer:
        return findings
    try:
        _check_metadata(doc, settings)
    except SsoProviderError as e:
        if not any(not f.ok for f in findings):
            findings.append(_problem(str(e), "the server refuses this discovery document"))
        return findings
    findings.extend(_check_client(provider))
    return findings


def _check_secret(settings: SsoSettings) -> list[Finding]:
    if settings.client_secret_file is None:
        return [
            _info(
                "no client_secret_file: jit-ssh signs in as a public client (PKCE only)",
                "set [sso] client_secret_file if the provider gave the client a secret",
            )
        ]
    try:
        settings.client_secret()
    except InvalidConfig as e:
        return [
            _problem(
                str(e),
                "write the client secret into that file (one line), readable by the server only",
            )
        ]
    found = [_ok(f"client secret readable from {settings.client_secret_file}")]
    mode = settings.client_secret_mode_problem()
    if mode:
        found.append(_warn(mode, f"chmod 600 {settings.client_secret_file}"))
    return found


def _check_redirect(settings: SsoSettings, base_url: str) -> Finding:
    try:
        uri = settings.redirect_uri(base_url)
    except InvalidConfig as e:
        return _problem(str(e), "set base_url in the server TOML to the URL people reach it at")
    return _info(
        f"redirect URI to register at the provider: {uri}",
        "register exactly this URI (scheme, host, port and path) for the client",
    )


def _check_lists(doc: dict[str, object], settings: SsoSettings) -> list[Finding]:
    found: list[Finding] = []
    try:
        responses = _strings(doc, "response_types_supported")
        methods = _strings(doc, "code_challenge_methods_supported")
        algs = _strings(doc, "id_token_signing_alg_values_supported")
        auth = _strings(doc, "token_endpoint_auth_methods_supported", ("client_secret_basic",))
    except SsoProviderError as e:
        return [_problem(str(e), "the provider's discovery document is malformed")]
    if "code" in responses:
        found.append(_ok("response type 'code' supported"))
    else:
        found.append(
            _problem(
                f"response_types_supported lacks 'code' ({_show(list(responses))})",
                "enable the authorization code flow for the client at the provider",
            )
        )
    if "S256" in methods:
        found.append(_ok("PKCE S256 supported"))
    elif not methods:
        found.append(
            _info(
                "code_challenge_methods_supported is not published; jit-ssh sends S256 anyway",
                "make sure the provider enforces PKCE for this client",
            )
        )
    else:
        found.append(
            _problem(
                f"code_challenge_methods_supported lacks S256 ({_show(list(methods))})",
                "enable PKCE with S256 at the provider",
            )
        )
    usable = [a for a in algs if a in ALLOWED_ALGORITHMS]
    if usable:
        found.append(_ok(f"ID tokens may be signed with {', '.join(usable)}"))
    else:
        found.append(
            _problem(
                f"id_token_signing_alg_values_supported ({_show(list(algs))}) shares nothing "
                f"with the algorithms jit-ssh accepts ({', '.join(ALLOWED_ALGORITHMS)})",
                "have the provider sign ID tokens with RS256 (or ES256) for this client",
            )
        )
    found.extend(_check_groups_scope(doc, settings))
    if settings.client_secret_file is not None:
        if not {"client_secret_basic", "client_secret_post"} & set(auth):
            found.append(
                _problem(
                    f"the token endpoint takes neither client_secret_basic nor "
                    f"client_secret_post ({_show(list(auth))})",
                    "allow client_secret_basic for the client at the provider",
                )
            )
    elif "none" not in auth:
        found.append(
            _problem(
                f"there is no client_secret_file, and the token endpoint does not take public "
                f"clients ({_show(list(auth))})",
                "set [sso] client_secret_file, or make the client public at the provider",
            )
        )
    return found


def _check_groups_scope(doc: dict[str, object], settings: SsoSettings) -> list[Finding]:
    """Many providers (oidc-provider, Okta's custom servers) put the groups claim in the ID
    token only when a scope of that name is asked for: without it every sign-in has no groups,
    and every policy rule that names a group refuses."""
    if not settings.groups_claim:
        return []
    found: list[Finding] = []
    if settings.approver_groups and not settings.group_map:
        found.append(
            _warn(
                f"approver_groups ({', '.join(settings.approver_groups)}) with no group_map: any "
                "provider group of that name makes its members approvers",
                "where people can make or join groups at the provider, map the approver group "
                'from one only admins control: [sso] group_map = { "<provider group>" = '
                f'"{settings.approver_groups[0]}" }}',
            )
        )
    return found + _check_groups_claim(doc, settings)


def _check_groups_claim(doc: dict[str, object], settings: SsoSettings) -> list[Finding]:
    try:
        scopes = _strings(doc, "scopes_supported")
        claims = _strings(doc, "claims_supported")
    except SsoProviderError:
        return []  # optional lists; a malformed one says nothing about groups
    name = settings.groups_claim
    if name in scopes and name not in settings.scopes:
        wanted = [*settings.scopes, name]
        return [
            _warn(
                f"the provider offers a scope {name!r}, and [sso] scopes does not ask for it: "
                f"ID tokens may then carry no {name!r} claim, so nobody has groups",
                f"set [sso] scopes = {wanted!r}",
            )
        ]
    if claims and name not in claims:
        return [
            _info(
                f"the provider does not list the claim {name!r} in claims_supported",
                f"make sure it puts {name!r} in the ID token (a groups mapper or claim "
                "rule); `jit-ssh sso login` prints the groups a sign-in brought",
            )
        ]
    return []


def _check_keys(provider: OidcProvider, doc: dict[str, object]) -> list[Finding]:
    url = str(doc["jwks_uri"])
    try:
        keys = _check_jwks(provider._get_json(url, "jwks_uri"))
    except SsoProviderError as e:
        return [
            Finding(
                False,
                f"JWKS: {e}",
                "the provider must publish its signing keys at jwks_uri",
                unreachable=e.unreachable,
            )
        ]
    algs = [
        a for a in _strings(doc, "id_token_signing_alg_values_supported") if a in ALLOWED_ALGORITHMS
    ]
    kids = ", ".join(str(k.kid) for k in keys)
    covered = [a for a in algs if any(_fits(k, a) for k in keys)]
    if algs and not covered:
        return [
            _problem(
                f"JWKS: none of its keys ({kids}) fits {', '.join(algs)}",
                "the provider's keys do not match the algorithms it says it signs with",
            )
        ]
    return [_ok(f"JWKS fetched: {len(keys.keys)} usable signing key(s) ({kids})")]


def _check_client(provider: OidcProvider) -> list[Finding]:
    """Ask the token endpoint about a made-up code: an ``invalid_client`` answer means the
    client id or secret is wrong; ``invalid_grant`` means they were accepted."""
    try:
        provider.exchange_code("jit-ssh-sso-check", new_code_verifier(), "https://invalid/")
    except SsoProviderError as e:
        if e.unreachable:
            return [Finding(False, f"token endpoint: {e}", "check the network", unreachable=True)]
        if "invalid_client" in str(e):
            return [
                _problem(
                    "the token endpoint refused the client id or secret (invalid_client)",
                    "check [sso] client_id and the client secret file",
                )
            ]
        return [_info(f"could not tell whether the client credentials work: {e}")]
    except SsoTokenInvalid:
        # invalid_grant: the client authenticated, the made-up code was (rightly) refused.
        return [_ok("the token endpoint accepted the client id and secret")]
    except InvalidConfig:
        return []  # the secret file's finding says it
    return [_info("the token endpoint accepted a made-up code: it checks nothing?")]
