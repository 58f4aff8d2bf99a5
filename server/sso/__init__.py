"""Single sign-on: jit-ssh as an OpenID Connect relying party (issue 13).

The package is split so that the light parts import without the heavy ones:

* :mod:`server.sso.settings` — the ``[sso]`` table of the server TOML (standard library only;
  :mod:`server.config` imports it);
* :mod:`server.sso.oidc` — discovery, JWKS, authorization URL, code exchange, device grant and
  ID-token validation (httpx, Authlib, joserfc);
* :mod:`server.sso.identity` — from validated claims to a jit-ssh identity (user name, groups);
* :mod:`server.sso.check` — ``jit-ssh sso check``: what is wrong with a provider's configuration.

Only the settings are re-exported here: importing :mod:`server.config` must not pull in httpx,
Authlib or joserfc.
"""

from __future__ import annotations

from .settings import DEFAULT_SCOPES, SsoSettings, parse_sso_settings

__all__ = ["SsoSettings", "parse_sso_settings", "DEFAULT_SCOPES"]
