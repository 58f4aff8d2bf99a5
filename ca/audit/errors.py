"""The audit library's errors (design: ``docs/audit.md``)::

    JitSshError (ca.errors)
    └── AuditError              code "audit_error"
        ├── InvalidAuditEvent   "invalid_audit_event"   make_event/canonical_json input, naming the field
        ├── InvalidAuditExport  "invalid_audit_export"  a malformed export line (``.line`` is its number)
        └── AuditKeyError       "audit_key_error"       not an Ed25519 key, unreadable key file

The key file itself raises ``ca.errors.InsecureKeyFile``, ``PassphraseRequired``
and ``BadPassphrase``, as the CA key does.
"""

from __future__ import annotations

from ca.errors import JitSshError

__all__ = ["AuditError", "InvalidAuditEvent", "InvalidAuditExport", "AuditKeyError"]


class AuditError(JitSshError):
    code = "audit_error"


class InvalidAuditEvent(AuditError):
    code = "invalid_audit_event"


class InvalidAuditExport(AuditError):
    """A line of an export that is not an event or a checkpoint. ``line`` is 1-based."""

    code = "invalid_audit_export"

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message, field=field)
        self.line = line


class AuditKeyError(AuditError):
    code = "audit_key_error"
    # A server whose audit key cannot be used is misconfigured (500 in server.errors.HTTP_STATUS).
