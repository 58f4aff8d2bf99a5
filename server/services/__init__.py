"""The service layer: every decision and every write, one transaction each.

Views parse and serialise; functions here lock, check, change state, write the
audit event and commit, together. Row locks (``with_for_update``) are what
make concurrent approvals and fetches safe on PostgreSQL; on SQLite every
transaction already holds the write lock from BEGIN (see ``server.db``).

One module per hop of a request:

    validation.py      the checks of outside values (text, target, id, serial)
    policy_source.py   PolicyHolder: the current policy, reloaded when its file changes
    base.py            what the hops share: locks, deadlines, re-deciding under the current policy
    requests.py        submit, get, list, approve, deny, cancel, expire
    certificates.py    fetch (issue), revoke, the KRL
    users.py           disable a user, remove a key, end their access
    expiry.py          the time-driven events: expiry warnings, requests past their deadlines
    fast.py            the hand-built SQL statements of the hot path, and why
"""

from __future__ import annotations

from dataclasses import dataclass

from .certificates import CertificateResult, CertificateService
from .expiry import ExpiryService
from .policy_source import PolicyHolder
from .requests import MayDecide, NotDecidable, RequestService
from .users import UserService
from .validation import MAX_COMMENT, MAX_REASON

__all__ = [
    "Service",
    "PolicyHolder",
    "CertificateResult",
    "MayDecide",
    "NotDecidable",
    "MAX_REASON",
    "MAX_COMMENT",
]


@dataclass
class Service(RequestService, CertificateService, UserService, ExpiryService):
    """The whole service: every hop, over one set of dependencies (``ServiceBase``'s fields)."""
