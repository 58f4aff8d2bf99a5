"""Recording a break-glass certificate signed offline by ``jit-ssh ca sign``.

The certificate row and its ``certificate.issued`` audit event commit in one
transaction before the command shows the certificate, exactly as for the
service's own issuances; the row has no request and ``offline = true``, and
the KRL covers it like any other (``jit-ssh`` revokes it by serial).
"""

from __future__ import annotations

import json
from datetime import timedelta

from ca import IssuedCertificate

from . import audit
from .db import transaction
from .models import Certificate
from .services import Service

__all__ = ["record_offline_issuance"]


def record_offline_issuance(service: Service, cert: IssuedCertificate, *, reason: str, by: str, backdate: timedelta) -> None:
    now = service.now()
    with transaction(service.sessions) as s:
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
                issued_at=now,
                backdate_seconds=int(backdate.total_seconds()),
                offline=True,
            )
        )
        s.flush()
        audit.record(
            s, type="certificate.issued", now=now, actor=by[:64],
            data={
                "offline": True, "reason": reason, "serial": str(cert.serial), "key_id": cert.key_id,
                "principals": list(cert.principals), "valid_after": cert.valid_after.isoformat(),
                "valid_before": cert.valid_before.isoformat(), "backdate_seconds": int(backdate.total_seconds()),
                "public_key_fingerprint": cert.public_key.fingerprint, "ca_fingerprint": cert.ca_public_key.fingerprint,
                "critical_options": dict(cert.critical_options), "extensions": list(cert.extensions),
            },
            signing_key=service.audit_key, checkpoint_every=service.checkpoint_every,
        )
