"""The server's KRL: how long a revoked serial stays, and its version, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text, update

from ca import parse_certificate
from ca.krl import krl_version_at, parse_krl
from server.models import Revocation

from .conftest import Caller, Clock, build_app, user_key_line


def _issue(caller: Caller) -> Any:
    """An auto-approved certificate for ``caller`` (an on-call user), parsed."""
    r = caller.post("/v1/requests", {"target": "demo", "duration": "10m"})
    assert r.status_code == 201 and r.json["state"] == "approved", r.json
    cert = caller.post(f"/v1/requests/{r.json['id']}/certificate", {"public_key": user_key_line()})
    assert cert.status_code == 200, cert.json
    return parse_certificate(cert.json["certificate"])


def _revoke(caller: Caller, serial: int) -> None:
    rv = caller.post(f"/v1/certificates/{serial}/revoke", {"reason": "test"})
    assert rv.status_code == 200, rv.json


def _krl(app: Any, service: Any = None) -> Any:
    data, _etag = (service or app.extensions["jit_ssh"].service).krl()
    return parse_krl(data)


def _listed(app: Any, serial: int) -> bool:
    return any(s.revokes_serial(serial) for s in _krl(app).cert_sections)


def _newest_revoked_at(app: Any) -> datetime:
    with app.extensions["jit_ssh"].service.sessions() as s:
        return s.scalar(select(func.max(Revocation.revoked_at)))


def test_a_revoked_serial_stays_listed_until_valid_before_plus_the_clock_skew(
    app: Any, oncall: Caller, clock: Clock
) -> None:
    cert = _issue(oncall)
    _revoke(oncall, cert.serial)
    valid_before = cert.valid_before
    # From here on only the KRL is read (no signed calls): the clock may jump.
    clock.freeze()
    base = clock.frozen
    assert base is not None

    def at(moment: datetime) -> bool:
        clock.offset = moment - base
        return _listed(app, cert.serial)

    assert at(valid_before - timedelta(seconds=1))
    # Expired for the server, not yet for a host whose clock lags by up to 5 minutes:
    # sshd there still takes the certificate, so the KRL must still refuse it.
    assert at(valid_before)
    assert at(valid_before + timedelta(minutes=5) - timedelta(microseconds=1))
    # A host lagging by exactly the skew sees valid_before: sshd calls that expired.
    assert not at(valid_before + timedelta(minutes=5))


def test_the_clock_skew_is_a_setting(
    app: Any, oncall: Caller, clock: Clock, tmp_path: Any, database_url: str
) -> None:
    from server.config import InvalidConfig, load_config

    assert (
        load_config(
            None, {"JIT_SSH_DATA_DIR": str(tmp_path), "JIT_SSH_KRL_CLOCK_SKEW": "3600"}
        ).krl_clock_skew
        == 3600
    )
    try:
        load_config(None, {"JIT_SSH_DATA_DIR": str(tmp_path), "JIT_SSH_KRL_CLOCK_SKEW": "-1"})
        raise AssertionError("a negative krl_clock_skew was accepted")
    except InvalidConfig as e:
        assert e.field == "krl_clock_skew"
    # A second replica on the same database: it must hold the same keys, or it refuses to start.
    import shutil

    (tmp_path / "other").mkdir()
    shutil.copytree(
        tmp_path / "data",
        tmp_path / "other" / "data",
        ignore=shutil.ignore_patterns("*.db*", "*.lock"),
    )
    other = build_app(tmp_path / "other", database_url, clock, krl_clock_skew=3600)
    try:
        assert other.extensions["jit_ssh"].service.krl_clock_skew == 3600
    finally:
        other.extensions["jit_ssh.engine"].dispose()

    cert = _issue(oncall)
    _revoke(oncall, cert.serial)
    service = dataclasses.replace(app.extensions["jit_ssh"].service, krl_clock_skew=3600)
    clock.freeze()
    assert clock.frozen is not None
    clock.offset = cert.valid_before + timedelta(minutes=30) - clock.frozen
    assert any(s.revokes_serial(cert.serial) for s in _krl(app, service).cert_sections)
    assert not _listed(app, cert.serial)  # the default, 5 minutes, has let it go


def test_the_version_is_the_newest_revocation_time_and_expiry_never_lowers_it(
    app: Any, oncall: Caller, clock: Clock
) -> None:
    assert _krl(app).version == 0  # nothing revoked yet
    first, second = _issue(oncall), _issue(oncall)
    _revoke(oncall, first.serial)
    v1 = _krl(app).version
    assert v1 == krl_version_at(_newest_revoked_at(app))
    # A real, recent time (not a counter): within a minute of the server's clock.
    assert abs(v1 - krl_version_at(clock())) < 60 * 10**6
    _revoke(oncall, second.serial)
    v2 = _krl(app).version
    assert v2 > v1
    # Long after both certificates expired the list is empty, and the version stays.
    clock.advance(days=30)
    later = _krl(app)
    assert not later.cert_sections
    assert later.version == v2


def test_after_a_restore_the_version_drops_and_the_next_revocation_is_newer_than_before(
    app: Any, oncall: Caller
) -> None:
    a, b, c = _issue(oncall), _issue(oncall), _issue(oncall)
    _revoke(oncall, a.serial)
    _revoke(oncall, b.serial)
    before_restore = _krl(app).version
    # The database comes back from a backup taken before b's revocation (a restore
    # puts PostgreSQL's id sequence back too: ids are handed out again).
    with app.extensions["jit_ssh"].service.sessions.begin() as s:
        s.execute(delete(Revocation).where(Revocation.serial == b.serial))
        if s.get_bind().dialect.name == "postgresql":
            s.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('revocations', 'id'), (SELECT max(id) FROM revocations))"
                )
            )
    restored = _krl(app).version
    assert restored < before_restore  # hosts see an older KRL and say so
    _revoke(oncall, c.serial)
    # ... and the next revocation, stamped now, is newer than anything before the restore.
    assert _krl(app).version > before_restore


def test_replicas_with_different_clocks_serve_the_same_version(app: Any, oncall: Caller) -> None:
    cert = _issue(oncall)
    _revoke(oncall, cert.serial)
    service = app.extensions["jit_ssh"].service
    real = service.clock
    ahead = dataclasses.replace(service, clock=lambda: real() + timedelta(seconds=3))
    behind = dataclasses.replace(service, clock=lambda: real() - timedelta(seconds=3))
    versions = {_krl(app, s).version for s in (service, ahead, behind)}
    assert len(versions) == 1


def test_a_revocation_stamped_by_a_clock_far_ahead_is_listed_but_not_the_version(
    app: Any, oncall: Caller
) -> None:
    good, odd = _issue(oncall), _issue(oncall)
    _revoke(oncall, good.serial)
    _revoke(oncall, odd.serial)
    # As if a replica with a clock a year fast had recorded it.
    future = datetime.now(UTC) + timedelta(days=365)
    with app.extensions["jit_ssh"].service.sessions.begin() as s:
        s.execute(
            update(Revocation).where(Revocation.serial == odd.serial).values(revoked_at=future)
        )
        good_at = s.scalar(select(Revocation.revoked_at).where(Revocation.serial == good.serial))
    krl = _krl(app)
    assert krl.version == krl_version_at(good_at)
    assert any(s.revokes_serial(odd.serial) for s in krl.cert_sections)


def test_the_etag_follows_the_version(app: Any, oncall: Caller) -> None:
    cert = _issue(oncall)
    _revoke(oncall, cert.serial)
    service = app.extensions["jit_ssh"].service
    _, etag = service.krl()
    with service.sessions.begin() as s:
        s.execute(update(Revocation).values(revoked_at=datetime.now(UTC) - timedelta(days=1)))
    # Same serials, older version (a restore): the ETag must change, or hosts would never hear of it.
    _, after = service.krl()
    assert after != etag


def test_the_servers_krl_passes_the_hosts_check(app: Any, oncall: Caller, clock: Clock) -> None:
    from ca.krl import accept_krl

    cert = _issue(oncall)
    _revoke(oncall, cert.serial)
    service = app.extensions["jit_ssh"].service
    data, _ = service.krl()
    trusted = [k.public.blob for k in service.keyring.keys]
    krl = accept_krl(data, trusted_ca_keys=trusted, now=clock())
    assert krl.is_revoked(cert.serial, cert.key_id, cert.ca_public_key.blob)
