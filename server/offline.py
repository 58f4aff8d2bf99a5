"""Recording a break-glass certificate signed offline by ``jit-ssh ca sign``.

The certificate row and its ``certificate.issued`` audit event commit in one
transaction before the command shows the certificate, exactly as for the
service's own issuances; the row has no request and ``offline = true``, and
the KRL covers it like any other (``jit-ssh`` revokes it by serial).

``ca sign`` refuses to show a certificate it could not record. With
``--no-record`` the admin says: sign even so (the database is down and
someone must get in). The certificate is still recorded, as soon as that is
possible: at once when the database answers (the event says
``no_record: true``); otherwise it is appended, before it is shown, to
``pending-records.jsonl`` in the data directory (0600, fsynced), and the next
process that opens the database from that data directory (``jit-ssh serve``
or any admin, audit or ca command) moves it into the chain with
``recorded_late: true`` and empties the file. A pending record is only on
that machine's disk until then: the command says so, loudly.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from ca import IssuedCertificate, parse_certificate

from .db import transaction
from .models import Certificate
from .services import Service

__all__ = ["record_offline_issuance", "write_pending", "flush_pending", "PENDING_FILE"]

log = logging.getLogger("jit_ssh.server")

PENDING_FILE = "pending-records.jsonl"


def certificate_fields(cert: IssuedCertificate, *, backdate: timedelta) -> dict[str, object]:
    """What an offline signing records of its certificate, in the audit event and in
    ``issuances.jsonl`` alike (each caller adds its own ``serial`` form and context)."""
    return {
        "serial": cert.serial,
        "key_id": cert.key_id,
        "principals": list(cert.principals),
        "valid_after": cert.valid_after.isoformat(),
        "valid_before": cert.valid_before.isoformat(),
        "backdate_seconds": int(backdate.total_seconds()),
        "public_key_fingerprint": cert.public_key.fingerprint,
        "ca_fingerprint": cert.ca_public_key.fingerprint,
        "critical_options": dict(cert.critical_options),
        "extensions": list(cert.extensions),
    }


def record_offline_issuance(
    service: Service,
    cert: IssuedCertificate,
    *,
    reason: str,
    by: str,
    backdate: timedelta,
    no_record: bool = False,
    signed_at: datetime | None = None,
) -> bool:
    """The row and its audit event, in one transaction. ``signed_at``: when a
    pending record was signed (it is being recorded late). Returns ``False``
    when this very certificate was recorded already (a flush retried)."""
    now = service.now()
    with transaction(service.sessions) as s:
        existing = s.get(Certificate, cert.serial)
        if existing is not None:
            if existing.certificate == cert.openssh:
                return False
            raise ValueError(f"serial {cert.serial} is already recorded for another certificate")
        s.add(
            Certificate(
                serial=cert.serial,
                request_id=None,
                key_id=cert.key_id,
                principals=json.dumps(list(cert.principals)),
                valid_after=cert.valid_after,
                valid_before=cert.valid_before,
                public_key_fingerprint=cert.public_key.fingerprint,
                ca_fingerprint=cert.ca_public_key.fingerprint,
                certificate=cert.openssh,
                issued_at=signed_at or now,
                backdate_seconds=int(backdate.total_seconds()),
                offline=True,
            )
        )
        s.flush()
        data: dict[str, object] = {
            "offline": True,
            "reason": reason,
            **certificate_fields(cert, backdate=backdate),
            "serial": str(cert.serial),
        }
        if no_record:
            data["no_record"] = True
        if signed_at is not None:
            data["recorded_late"] = True
            data["signed_at"] = signed_at.isoformat()
        service.audit.record(
            s,
            type="certificate.issued",
            now=now,
            actor=by[:64],
            data=data,
        )
    return True


def _pending_path(data_dir: Path) -> Path:
    return Path(data_dir) / PENDING_FILE


class _Locked:
    """An exclusive flock beside the pending file: writers and flushers (every worker) take turns."""

    def __init__(self, data_dir: Path) -> None:
        self.path = _pending_path(data_dir).with_name(PENDING_FILE + ".lock")

    def __enter__(self) -> _Locked:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def write_pending(
    data_dir: Path,
    cert: IssuedCertificate,
    *,
    reason: str,
    by: str,
    backdate: timedelta,
    signed_at: datetime,
    error: str,
) -> Path:
    """Append a certificate that could not be recorded now; durable before it is shown."""
    entry = {
        "certificate": cert.openssh,
        "reason": reason,
        "by": by,
        "backdate_seconds": int(backdate.total_seconds()),
        "signed_at": signed_at.isoformat(),
        "error": error[:500],
    }
    path = _pending_path(data_dir)
    with _Locked(data_dir):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def flush_pending(
    service: Service, data_dir: Path, *, say: Callable[[str], None] = log.warning
) -> int:
    """Record every pending certificate in the chain; keep in the file only those that failed."""
    path = _pending_path(data_dir)
    if not path.exists():
        return 0
    done = 0
    with _Locked(data_dir):
        try:
            lines = path.read_text("utf-8").splitlines()
        except FileNotFoundError:
            return 0
        keep: list[str] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                cert = parse_certificate(entry["certificate"])
                record_offline_issuance(
                    service,
                    cert,
                    reason=str(entry["reason"]),
                    by=str(entry["by"]),
                    backdate=timedelta(seconds=int(entry["backdate_seconds"])),
                    no_record=True,
                    signed_at=datetime.fromisoformat(entry["signed_at"]),
                )
                done += 1
            except Exception as e:
                log.error("could not record a pending break-glass certificate from %s: %s", path, e)
                keep.append(line)
        tmp = path.with_name(f".{PENDING_FILE}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, "".join(k + "\n" for k in keep).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if not keep:
            path.unlink(missing_ok=True)
    if done:
        say(f"recorded {done} break-glass certificate(s) signed with --no-record from {path}")
    return done
