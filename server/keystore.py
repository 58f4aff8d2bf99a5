"""The keys every replica must hold, recorded in the database, and staged CA rotation.

The first start on a database records this data directory's CA public keys
(with their rotation state, see :mod:`ca.keyring`) and its audit public key
in ``recorded_keys``. Every later start, by any replica and by every command
that opens the database (``ca sign``, the admin commands), compares:

* a CA key this data directory trusts that the database does not know (a
  replica that generated its own key on first start), or a database signing
  key this directory lacks: the replica would sign certificates hosts do not
  trust. It refuses to start, naming both fingerprints;
* an audit key other than the recorded one: its checkpoints would make
  ``audit verify`` fail for good. It refuses likewise.

Which CA key signs and which are trusted lives in the database, so that
every replica agrees: :class:`LiveKeyring` reads it at start and again at
most once a second (``maybe_refresh``: a request older than that starts a
re-read in a short-lived thread and does not wait for it), so a
``jit-ssh ca promote`` reaches running replicas without a restart. A replica
that lacks the private half of a newly promoted key refuses to sign (503)
until it has it, instead of signing with the old one.

Rotation (``jit-ssh ca add-key``, ``promote``, ``retire``) changes the rows
and writes an audit event in one transaction; the data directory's
``ca/keyring.json`` is then rewritten to match (best effort: it is a copy).

Errors::

    JitSshError
    ├── ReplicaKeysDiffer   "replica_keys_differ"  500  refuse to start
    └── CAKeyError (ca.errors)
        └── InvalidRotation   "invalid_rotation"     409  (ca.keyring)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from ca import keyring as kr
from ca.audit import audit_key_fingerprint, audit_public_key_text
from ca.errors import CAKeyError, JitSshError
from ca.keyring import Keyring, KeyState
from ca.keys import CAKey, PublicKey, parse_public_key

from . import audit
from .db import transaction
from .models import RecordedKey

if TYPE_CHECKING:
    from .services import Service

__all__ = [
    "ReplicaKeysDiffer",
    "SigningKeyUnavailable",
    "RecordedState",
    "check_and_record",
    "LiveKeyring",
    "add_key",
    "promote_key",
    "retire_key",
    "list_keys",
]

log = logging.getLogger("jit_ssh.server")

CA = "ca"
AUDIT = "audit"


class ReplicaKeysDiffer(JitSshError):
    """This data directory's keys are not the ones the database recorded."""

    code = "replica_keys_differ"


class SigningKeyUnavailable(CAKeyError):
    """The database's signing key is not (yet) in this replica's data directory."""

    code = "signing_key_unavailable"


@dataclass(frozen=True)
class RecordedState:
    """The CA rotation state as the database holds it."""

    states: dict[str, KeyState]
    public_keys: dict[str, PublicKey]

    @property
    def signer(self) -> str:
        return next(fp for fp, st in self.states.items() if st is KeyState.SIGNING)


def _lock(s: Session) -> None:
    # Two replicas starting together on an empty table must not both record
    # their own keys. SQLite: every transaction already holds the write lock.
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(7242013)"))


def _read(s: Session) -> tuple[RecordedState, list[RecordedKey]]:
    rows = list(
        s.execute(
            select(RecordedKey).order_by(RecordedKey.created_at, RecordedKey.fingerprint)
        ).scalars()
    )
    ca_rows = [r for r in rows if r.purpose == CA]
    state = RecordedState(
        states={r.fingerprint: KeyState(r.state) for r in ca_rows},
        public_keys={
            r.fingerprint: parse_public_key(r.public_key, field="recorded_keys", min_rsa_bits=3072)
            for r in ca_rows
        },
    )
    return state, [r for r in rows if r.purpose == AUDIT]


def _describe(pub: PublicKey | None, fp: str) -> str:
    return f"{fp} ({pub.key_type})" if pub is not None else fp


def check_and_record(
    sessions: sessionmaker[Session],
    data_dir: Path,
    writer: audit.AuditWriter,
    *,
    now: datetime,
    say: Callable[[str], None] = log.warning,
) -> RecordedState:
    """Record this data directory's keys on the database's first start; on
    every later start refuse (:class:`ReplicaKeysDiffer`) unless they match."""
    files = kr.key_files(data_dir)
    local = kr.local_states(data_dir)
    file_pubs = {pub.fingerprint: pub for _, pub in files}
    trusted_here = [
        fp for fp, st in local.items() if st is not KeyState.RETIRED and fp in file_pubs
    ]
    local_signer = next((fp for fp, st in local.items() if st is KeyState.SIGNING), None)
    audit_key = writer.signing_key
    audit_fp = audit_key_fingerprint(audit_key)
    where = kr.ca_dir(data_dir)
    with transaction(sessions) as s:
        _lock(s)
        state, audit_rows = _read(s)
        recorded: dict[str, object] = {}
        if not state.states:
            if local_signer is None or local_signer not in file_pubs:
                raise CAKeyError(
                    f"no signing CA key in {where}; create one with: jit-ssh ca init",
                    field="data_dir",
                )
            for fp in trusted_here:
                pub = file_pubs[fp]
                s.add(
                    RecordedKey(
                        purpose=CA,
                        fingerprint=fp,
                        key_type=pub.key_type,
                        public_key=pub.openssh,
                        state=str(local[fp]),
                        created_at=now,
                        changed_at=now,
                    )
                )
            recorded["ca"] = [{"fingerprint": fp, "state": str(local[fp])} for fp in trusted_here]
            state = RecordedState(
                {fp: local[fp] for fp in trusted_here}, {fp: file_pubs[fp] for fp in trusted_here}
            )
        else:
            signer = state.signer
            unknown = [fp for fp in trusted_here if fp not in state.states]
            problems = []
            if signer not in file_pubs:
                problems.append(
                    f"the database's signing CA key {_describe(state.public_keys.get(signer), signer)} is not in {where}"
                    f" (this data directory signs with {local_signer or 'nothing'})"
                )
            if unknown:
                problems.append(
                    f"{where} holds CA key(s) {', '.join(_describe(file_pubs[fp], fp) for fp in unknown)} that the "
                    f"database never recorded (its signing key is {signer})"
                )
            if problems:
                raise ReplicaKeysDiffer(
                    "this replica's CA keys differ from the ones the database recorded: "
                    + "; ".join(problems)
                    + ". Refusing to start: it would sign certificates hosts do not trust. Give every replica "
                    "the same ca/ directory (or point this one at its own database)",
                    field="data_dir",
                )
        if not audit_rows:
            s.add(
                RecordedKey(
                    purpose=AUDIT,
                    fingerprint=audit_fp,
                    key_type="ssh-ed25519",
                    public_key=audit_public_key_text(audit_key),
                    state=str(KeyState.SIGNING),
                    created_at=now,
                    changed_at=now,
                )
            )
            recorded["audit"] = audit_fp
        elif audit_fp not in {r.fingerprint for r in audit_rows}:
            theirs = ", ".join(r.fingerprint for r in audit_rows)
            raise ReplicaKeysDiffer(
                f"this replica's audit key {audit_fp} (audit/audit_ed25519) is not the one the database recorded "
                f"({theirs}). Refusing to start: its checkpoints would make `jit-ssh audit verify` fail for good. "
                "Give every replica the same audit/ directory",
                field="audit_key",
            )
        if recorded:
            s.flush()
            writer.record(s, type="keys.recorded", now=now, actor="jit-ssh", data=recorded)
    if recorded:
        say(
            f"recorded this data directory's keys in the database: {', '.join(trusted_here) or '-'}"
            f"{'; audit ' + audit_fp if 'audit' in recorded else ''}"
        )
    _mirror(data_dir, state, say=say)
    return state


def _mirror(
    data_dir: Path, state: RecordedState, *, say: Callable[[str], None] = log.warning
) -> None:
    """Make ``ca/keyring.json`` match the database (a copy for the commands that run without it)."""
    mine = {fp: st for fp, st in state.states.items()}
    try:
        if kr.read_states(data_dir) != mine:
            kr.write_states(data_dir, mine)
    except (OSError, CAKeyError) as e:
        say(
            f"could not update {kr.ca_dir(data_dir) / kr.STATE_FILE} to the database's key states: {e}"
        )


class LiveKeyring:
    """The CA keyring as the database says it is now; what the service signs with and publishes.

    Offers what :class:`ca.keyring.Keyring` offers (``keys``, ``signing_key``,
    ``trusted_user_ca_keys()``). The private key of each signer is loaded
    once from the data directory.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        data_dir: Path,
        state: RecordedState,
        *,
        passphrase: bytes | None = None,
        max_age: float = 1.0,
    ) -> None:
        self.sessions = sessions
        self.data_dir = data_dir
        self.passphrase = passphrase
        self.max_age = max_age
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._privates: dict[str, CAKey] = {}
        self._checked = time.monotonic()
        self._state = state
        self._ring, self._error = self._build(state)
        if self._error is not None:
            raise self._error

    def _build(self, state: RecordedState) -> tuple[Keyring, CAKeyError | None]:
        signer_fp = state.signer
        error: CAKeyError | None = None
        signing = self._privates.get(signer_fp)
        if signing is None:
            try:
                signing = kr.load_private_key_for(
                    self.data_dir, signer_fp, passphrase=self.passphrase
                )
                self._privates[signer_fp] = signing
            except CAKeyError as e:
                if type(e) is not CAKeyError:  # a passphrase or file-mode problem: say exactly that
                    error = e
                else:
                    error = SigningKeyUnavailable(
                        f"this replica cannot sign: the signing CA key {signer_fp} is not in "
                        f"{kr.ca_dir(self.data_dir)} (copy it there from the machine that ran jit-ssh ca add-key)",
                        field="data_dir",
                    )
        # Oldest first: this directory's file order, then keys only the database has.
        here = {pub.fingerprint: (path, pub) for path, pub in kr.key_files(self.data_dir)}
        trusted = [fp for fp, st in state.states.items() if st is not KeyState.RETIRED]
        ordered = [fp for fp in here if fp in trusted] + [fp for fp in trusted if fp not in here]
        keys = []
        for fp in ordered:
            if fp == signer_fp and signing is not None:
                keys.append(signing)
            elif fp in here:
                keys.append(CAKey(public=here[fp][1], path=here[fp][0]))
            else:
                keys.append(CAKey(public=state.public_keys[fp]))
        return Keyring(keys=tuple(keys), signing=signing), error

    # -- what Keyring offers

    @property
    def keys(self) -> tuple[CAKey, ...]:
        return self._ring.keys

    @property
    def signing_key(self) -> CAKey:
        if self._error is not None:
            raise self._error
        return self._ring.signing_key

    def trusted_user_ca_keys(self) -> str:
        return self._ring.trusted_user_ca_keys()

    @property
    def state(self) -> RecordedState:
        return self._state

    # -- following the database

    def refresh(self) -> None:
        with transaction(self.sessions) as s:
            state, _ = _read(s)
        with self._lock:
            if state == self._state:
                return
            ring, error = self._build(state)
            if error is not None:
                log.error("%s", error)
            elif state.signer != self._state.signer:
                log.warning(
                    "CA key %s signs from now on (was %s)", state.signer, self._state.signer
                )
            self._state, self._ring, self._error = state, ring, error
        _mirror(self.data_dir, state)

    def maybe_refresh(self, monotonic: float | None = None) -> None:
        """Read the database's state again if it is older than ``max_age`` seconds,
        in a short-lived thread: a request never waits for it (a database that
        hangs must still give a quick 503, not two connect timeouts in a row)."""
        t = time.monotonic() if monotonic is None else monotonic
        if t - self._checked < self.max_age:
            return
        with self._start_lock:
            if t - self._checked < self.max_age or (
                self._thread is not None and self._thread.is_alive()
            ):
                return
            self._checked = t
            self._thread = threading.Thread(
                target=self._refresh_logged, name="jit-ssh-keyring", daemon=True
            )
            self._thread.start()

    def _refresh_logged(self) -> None:
        try:
            self.refresh()
        except Exception as e:
            log.error(
                "could not read the CA key states from the database: %s",
                str(e).splitlines()[0][:300],
            )

    def join(self, timeout: float | None = None) -> None:
        """Wait for a refresh :meth:`maybe_refresh` started (tests)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)


# ---------------------------------------------------------------- rotation


def _record(
    service: Service, s: Session, type: str, now: datetime, by: str, data: dict[str, object]
) -> None:
    service.audit.record(s, type=type, now=now, actor=by[:64], data=data)


def _ca_rows(s: Session) -> dict[str, RecordedKey]:
    return {
        r.fingerprint: r
        for r in s.execute(select(RecordedKey).where(RecordedKey.purpose == CA)).scalars()
    }


def add_key(
    service: Service,
    keyring: LiveKeyring,
    *,
    now: datetime,
    by: str,
    key_type: str = "ed25519",
    bits: int | None = None,
    passphrase: bytes | None = None,
) -> CAKey:
    """Create a CA key in the data directory and record it *staged*: trusted and
    published from now on, signing nothing until :func:`promote_key`."""
    key = kr.init_keyring(
        keyring.data_dir, now=now, key_type=key_type, bits=bits, passphrase=passphrase, record=False
    )
    try:
        with transaction(service.sessions) as s:
            _lock(s)
            s.add(
                RecordedKey(
                    purpose=CA,
                    fingerprint=key.fingerprint,
                    key_type=key.public.key_type,
                    public_key=key.public.openssh,
                    state=str(KeyState.STAGED),
                    created_at=now,
                    changed_at=now,
                )
            )
            s.flush()
            _record(
                service,
                s,
                "ca.key_added",
                now,
                by,
                {
                    "fingerprint": key.fingerprint,
                    "key_type": key.public.key_type,
                    "state": "staged",
                },
            )
    except BaseException:
        assert key.path is not None
        for p in (key.path, key.path.with_name(key.path.name + ".pub")):
            p.unlink(missing_ok=True)
        raise
    keyring.refresh()
    return key


def _change(
    service: Service,
    keyring: LiveKeyring,
    fingerprint: str,
    *,
    now: datetime,
    by: str,
    step: Callable[[Mapping[str, KeyState], str], dict[str, KeyState]],
    event: str,
) -> RecordedState:
    with transaction(service.sessions) as s:
        _lock(s)
        rows = _ca_rows(s)
        before = {fp: KeyState(r.state) for fp, r in rows.items()}
        after = step(before, fingerprint)
        if step is kr.promote:
            # Only a key this machine can sign with becomes the signer here; the
            # other replicas refuse to sign until they have it too (see LiveKeyring).
            kr.load_private_key_for(keyring.data_dir, fingerprint, passphrase=keyring.passphrase)
        for fp, st in after.items():
            if before[fp] is not st:
                rows[fp].state = str(st)
                rows[fp].changed_at = now
        s.flush()
        previous = next(fp for fp, st in before.items() if st is KeyState.SIGNING)
        _record(
            service,
            s,
            event,
            now,
            by,
            {
                "fingerprint": fingerprint,
                "signing_before": previous,
                "signing_after": next(fp for fp, st in after.items() if st is KeyState.SIGNING),
            },
        )
    keyring.refresh()
    return keyring.state


def promote_key(
    service: Service, keyring: LiveKeyring, fingerprint: str, *, now: datetime, by: str
) -> RecordedState:
    """Make a staged key the signer (explicitly, once hosts trust it); the old signer stays trusted."""
    return _change(
        service, keyring, fingerprint, now=now, by=by, step=kr.promote, event="ca.key_promoted"
    )


def retire_key(
    service: Service, keyring: LiveKeyring, fingerprint: str, *, now: datetime, by: str
) -> RecordedState:
    """Stop trusting and publishing a key (never the signer)."""
    return _change(
        service, keyring, fingerprint, now=now, by=by, step=kr.retire, event="ca.key_retired"
    )


def list_keys(sessions: sessionmaker[Session]) -> list[RecordedKey]:
    with transaction(sessions) as s:
        return list(
            s.execute(
                select(RecordedKey).order_by(
                    RecordedKey.purpose, RecordedKey.created_at, RecordedKey.fingerprint
                )
            ).scalars()
        )
