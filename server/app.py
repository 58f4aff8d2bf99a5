"""The Flask app factory. Nothing here runs at import time.

The dependency graph is built without Flask (:func:`server.deps.build_deps`);
this wraps it in an app: the blueprints ``api`` (``/v1``, server/api.py),
``sso_api`` (``/v1/sso``, server/sso_api.py), ``slack`` (``/slack/interactions``,
server/slack/interactions.py),
``web`` (the approver's pages) and ``ops`` (``/healthz``, ``/metrics``), and
the one error handler (server/problems.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from flask import Flask, Response, g, request

from .config import InvalidConfig, ServerConfig
from .deps import Deps, bootstrap, build_deps, start_outbox_worker
from .keystore import RecordedState
from .problems import install_error_handlers
from .proxy import TrustedProxies, parse_networks
from .web.setup import set_security_headers

__all__ = ["create_app", "bootstrap", "Deps"]

log = logging.getLogger("jit_ssh.server")


def _init_web(app: Flask, config: ServerConfig) -> None:
    """The approver's pages: cookie sessions and CSRF tokens for them, none for the signed /v1 API."""
    from flask_wtf.csrf import CSRFProtect

    from .api import api
    from .slack.interactions import slack_bp
    from .sso_api import sso_api
    from .web import SessionInterface, WebSettings, load_or_create_secret_key, web

    app.secret_key = load_or_create_secret_key(config)
    app.session_interface = SessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="jit_ssh_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # Secure when the configured URL is https; SessionInterface adds it for any https request.
        SESSION_COOKIE_SECURE=config.base_url.lower().startswith("https://"),
        # The server-side session has its own idle timeout; the token lives as long as the page.
        WTF_CSRF_TIME_LIMIT=None,
    )
    app.extensions["jit_ssh.web"] = WebSettings()
    csrf = CSRFProtect(app)
    csrf.exempt(api)
    csrf.exempt(sso_api)
    # Slack's callbacks carry Slack's signature instead (server/slack/interactions.py).
    csrf.exempt(slack_bp)
    app.register_blueprint(web)


def create_app(
    config: ServerConfig,
    *,
    clock: Callable[[], datetime] | None = None,
    say: Callable[[str], None] | None = None,
    recorded_keys: RecordedState | None = None,
    worker: bool = False,
) -> Flask:
    """The app, over :func:`server.deps.build_deps` (which see for ``recorded_keys``).

    ``worker``: also start this process's notification worker (when ``[notifications]
    worker`` is true): a server process asks for it; a check, a tool or a test does not."""
    # The proxy list is checked before anything is built or written.
    try:
        proxies = parse_networks(config.trusted_proxies)
    except ValueError as e:
        raise InvalidConfig(str(e), field="trusted_proxies") from None
    d = build_deps(config, clock=clock, say=say, recorded_keys=recorded_keys)

    app = Flask("jit_ssh")
    # The client's address, scheme and host, believing X-Forwarded-* from trusted proxies only.
    app.wsgi_app = TrustedProxies(app.wsgi_app, proxies)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["JSON_SORT_KEYS"] = False
    app.extensions["jit_ssh"] = d
    app.extensions["jit_ssh.engine"] = d.engine

    from .api import api
    from .ops import ops
    from .slack.interactions import slack_bp
    from .sso_api import sso_api

    app.register_blueprint(api)
    app.register_blueprint(slack_bp)
    app.register_blueprint(sso_api)
    app.register_blueprint(ops)
    _init_web(app, config)

    @app.before_request
    def _start() -> None:
        g.t0 = time.perf_counter()
        d.keyring.maybe_refresh()  # a `ca promote` on another machine reaches this replica

    @app.after_request
    def _headers(resp: Response) -> Response:
        t0 = getattr(g, "t0", None)
        if t0 is not None:
            d.metrics.observe(
                request.url_rule.rule if request.url_rule else "unknown", time.perf_counter() - t0
            )
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Cache-Control", "no-store")
        return set_security_headers(resp)

    install_error_handlers(app, max_body_bytes=config.max_body_bytes)
    if worker:
        app.extensions["jit_ssh.outbox_worker"] = start_outbox_worker(d)
    return app
