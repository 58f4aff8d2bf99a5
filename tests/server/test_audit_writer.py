"""The audit log's one writer: it holds the signing key and the checkpoint interval."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from ca.audit import generate_audit_key, verify_checkpoint
from server import audit
from server.db import make_engine, make_session_factory, transaction
from server.migrate import upgrade
from server.models import AuditCheckpoint

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_the_writer_signs_a_checkpoint_every_nth_event(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    try:
        upgrade(engine)
        sessions = make_session_factory(engine)
        writer = audit.AuditWriter(generate_audit_key(), checkpoint_every=2)
        with transaction(sessions) as s:
            for i in range(5):
                writer.record(s, type="test.event", now=NOW, data={"i": i})
        with transaction(sessions) as s:
            rows = s.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.event_id)).scalars()
            assert [c.event_id for c in rows] == [2, 4]
            # On demand too (before an export), over the head.
            cp = writer.checkpoint(s, NOW)
            assert cp is not None and cp.event_id == 5
            assert verify_checkpoint(cp, writer.public_key)
            assert s.scalar(select(func.count()).select_from(AuditCheckpoint)) == 3
    finally:
        engine.dispose()


def test_no_caller_passes_the_key_or_the_interval() -> None:
    # The module-level append takes neither: only the writer signs.
    params = inspect.signature(audit.record).parameters
    assert "signing_key" not in params and "checkpoint_every" not in params
    root = Path(audit.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text("utf-8")
        assert "signing_key=" not in text, path
        assert "checkpoint_every=" not in text.replace("checkpoint_every=config.", ""), path
