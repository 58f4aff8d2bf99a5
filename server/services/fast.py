"""The hand-built SQL statements of the hot path, fenced here.

Why they exist: on the two calls an engineer waits for (submitting a request
and fetching its certificate), building a ``select()`` costs about as much as
running it, and the ORM's unit of work costs more than the statements it
emits. So these statements are built once, at import, and the new request
row, the state change to ``issued`` and the certificate row are written with
Core statements on the session's connection, inside the
caller's transaction and under the request's row lock. Nothing else in the
service layer writes past the ORM; whoever changes the ``requests`` or
``certificates`` tables changes these statements with them
(``tests/server/test_fast_paths.py`` checks that a request written this way
answers and records as one read back from the database would).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session, lazyload

from server.models import AccessRequest, Certificate, RequestState

__all__ = ["lock_request_row", "insert_request", "mark_issued", "insert_certificate"]

# A request under its row lock, with its relationships loaded up front.
_LOCK = (
    select(AccessRequest)
    .where(AccessRequest.id == bindparam("request_id"))
    .with_for_update(of=AccessRequest)
)
# The same without its relationships; each loads (lazily, in the same session
# and under the same row lock) only if read.
_LOCK_LEAN = _LOCK.options(
    lazyload(AccessRequest.requester),
    lazyload(AccessRequest.approvals),
    lazyload(AccessRequest.certificate),
)
_REQUESTS = cast(Table, AccessRequest.__table__)
_INSERT_REQUEST = insert(_REQUESTS)
_UPDATE_STATE = (
    update(_REQUESTS)
    .where(_REQUESTS.c.id == bindparam("request_id"))
    .values(state=bindparam("new_state"))
)
_INSERT_CERTIFICATE = insert(cast(Table, Certificate.__table__))


def lock_request_row(s: Session, request_id: str, *, lean: bool) -> AccessRequest | None:
    """The request ``request_id``, its row locked ``FOR UPDATE`` (None when there is none)."""
    return s.execute(_LOCK_LEAN if lean else _LOCK, {"request_id": request_id}).scalar_one_or_none()


def insert_request(s: Session, values: Mapping[str, object]) -> None:
    """Write a new request row (every column) in ``s``'s transaction."""
    # The ORM's pending changes go first: the statement bypasses autoflush.
    s.flush()
    s.connection().execute(_INSERT_REQUEST, dict(values))


def mark_issued(s: Session, request_id: str) -> None:
    """Move the (locked) request to ``issued``; the caller updates its loaded copy."""
    s.flush()
    s.connection().execute(
        _UPDATE_STATE, {"request_id": request_id, "new_state": RequestState.ISSUED}
    )


def insert_certificate(s: Session, values: Mapping[str, object]) -> None:
    """Write a certificate row (every column) in ``s``'s transaction."""
    s.connection().execute(_INSERT_CERTIFICATE, dict(values))
