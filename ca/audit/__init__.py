"""The tamper-evident audit log as a pure library: hash chain, signed checkpoints, export, verify.

Standard library and ``cryptography`` only: no Flask, no SQLAlchemy, no click,
no clock (times are arguments). The server calls :func:`make_event` and
:func:`sign_checkpoint` and stores what they return; ``jit-ssh audit export``
writes :func:`export_lines`; ``jit-ssh audit verify`` calls
:func:`verify_export_file`, offline.

* :mod:`ca.audit.chain`: canonical event bodies, chain hashing, linking, checkpoints.
* :mod:`ca.audit.keys`: the audit key (generate, save, load, print, fingerprint).
* :mod:`ca.audit.export`: the export format, written and read.
* :mod:`ca.audit.verify`: verifying an export or a sequence of events; the problem kinds.
* :mod:`ca.audit.errors`: the error tree.

The design, for a security reviewer (what verify proves and what it does not):
``docs/audit.md``.
"""

from .chain import (
    CHECKPOINT_DOMAIN,
    GENESIS_HASH,
    GENESIS_HEX,
    MAX_BODY_BYTES,
    AuditEvent,
    Checkpoint,
    JsonObject,
    JsonValue,
    canonical_json,
    chain_hash,
    checkpoint_payload,
    format_at,
    make_event,
    sign_checkpoint,
    verify_checkpoint,
)
from .errors import AuditError, AuditKeyError, InvalidAuditEvent, InvalidAuditExport
from .export import (
    MAX_LINE_BYTES,
    LineKind,
    checkpoint_line,
    event_line,
    export_lines,
    iter_export,
    parse_export,
)
from .keys import (
    AuditKey,
    audit_key_fingerprint,
    audit_public_key_text,
    generate_audit_key,
    load_audit_key,
    load_audit_public_keys,
    save_audit_key,
)
from .verify import (
    Problem,
    ProblemKind,
    VerifyResult,
    verify_chain,
    verify_export_file,
    verify_export_lines,
)

__all__ = [
    # chain
    "JsonValue",
    "JsonObject",
    "GENESIS_HASH",
    "GENESIS_HEX",
    "CHECKPOINT_DOMAIN",
    "MAX_BODY_BYTES",
    "canonical_json",
    "chain_hash",
    "format_at",
    "AuditEvent",
    "make_event",
    "Checkpoint",
    "checkpoint_payload",
    "sign_checkpoint",
    "verify_checkpoint",
    # keys
    "AuditKey",
    "generate_audit_key",
    "save_audit_key",
    "load_audit_key",
    "audit_public_key_text",
    "audit_key_fingerprint",
    "load_audit_public_keys",
    # export
    "MAX_LINE_BYTES",
    "LineKind",
    "event_line",
    "checkpoint_line",
    "export_lines",
    "iter_export",
    "parse_export",
    # verify
    "ProblemKind",
    "Problem",
    "VerifyResult",
    "verify_chain",
    "verify_export_lines",
    "verify_export_file",
    # errors
    "AuditError",
    "InvalidAuditEvent",
    "InvalidAuditExport",
    "AuditKeyError",
]
