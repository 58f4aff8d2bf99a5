"""Errors as HTTP answers: RFC 9457 problem documents, and the app's one error handler."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from flask import Flask, Response
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ca.errors import JitSshError
from server.errors import DatabaseUnavailable, http_status

__all__ = ["problem", "problem_response", "install_error_handlers"]

log = logging.getLogger("jit_ssh.server")


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    field: str | None = None,
    extra: Mapping[str, object] | None = None,
) -> Response:
    body: dict[str, object] = {
        "type": f"urn:jit-ssh:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if field:
        body["field"] = field
    if extra:
        body.update(extra)
    return Response(json.dumps(body), status=status, mimetype="application/problem+json")


def problem(e: JitSshError, *, title: str | None = None) -> Response:
    """``e`` as a problem document, with the status :func:`server.errors.http_status` gives it."""
    decision = getattr(e, "decision", None)
    extra = {"reasons": list(decision.reasons)} if decision is not None else None
    return problem_response(
        http_status(e), e.code, title or type(e).__name__, str(e), e.field, extra
    )


def install_error_handlers(app: Flask, *, max_body_bytes: int) -> None:
    @app.errorhandler(JitSshError)
    def _jit_error(e: JitSshError) -> Response:
        return problem(e)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(e: RequestEntityTooLarge) -> Response:
        return problem_response(
            413,
            "body_too_large",
            "BodyTooLarge",
            f"the body is larger than {max_body_bytes} bytes",
        )

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}.get(
            e.code or 500, "http_error"
        )
        return problem_response(e.code or 500, code, e.name, e.description or e.name)

    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    def _db_down(e: Exception) -> Response:
        log.error("database error: %s", str(e).splitlines()[0][:300])
        return problem(
            DatabaseUnavailable("the database is unavailable; nothing was changed, try again")
        )

    @app.errorhandler(Exception)
    def _bug(e: Exception) -> Response:
        log.exception("unhandled error")
        return problem_response(
            500, "internal_error", "InternalError", "an internal error occurred; it was logged"
        )
