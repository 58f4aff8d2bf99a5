"""Verifying a chain: an export file, export lines, or a sequence of events.

Stops at the first problem and names the event (:class:`Problem`, one of the
:class:`ProblemKind` values). What each kind means, which event it names, and
what verifying proves and cannot prove: ``docs/audit.md``.
"""

from __future__ import annotations

import bisect
import enum
import hashlib
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from cryptography.hazmat.primitives.asymmetric import ed25519

from .chain import _HEX64, GENESIS_HEX, AuditEvent, Checkpoint, _body_hash_ok, _signature_ok
from .errors import AuditError, InvalidAuditEvent, InvalidAuditExport
from .export import _B0, _EV_PREFIX, _H0, _H1, _MID, _P0, _P1, MAX_LINE_BYTES, _parse_line
from .keys import audit_key_fingerprint

__all__ = [
    "ProblemKind",
    "Problem",
    "VerifyResult",
    "verify_chain",
    "verify_export_lines",
    "verify_export_file",
]


class ProblemKind(enum.StrEnum):
    """What is wrong; ``docs/audit.md`` ("What verify detects") says which event each names."""

    #: A body that does not hash to its stored hash, or a hash recomputed on its own.
    EDITED = "edited"
    #: A gap in the ids, a checkpoint past the end, a late start.
    DELETED = "deleted"
    #: An id seen twice, an event spliced between two that still link.
    INSERTED = "inserted"
    #: Ids out of order.
    REORDERED = "reordered"
    #: The links hold but a signed head hash does not: hashes were recomputed.
    REWRITTEN = "rewritten"
    #: A signature that does not verify, or by a key not given.
    BAD_CHECKPOINT = "bad_checkpoint"
    #: Events after the last valid checkpoint, which nothing vouches for.
    UNSIGNED_TAIL = "unsigned_tail"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Problem:
    """The first thing wrong with the chain. ``event_id`` is the event named
    (``docs/audit.md`` says which one each kind names); ``until_id``
    closes a range where one is known (``rewritten``, ``deleted``,
    ``unsigned_tail``); ``line`` is the export line, when verifying a file."""

    event_id: int
    kind: ProblemKind
    message: str
    until_id: int | None = None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """``head_id``/``head_hash``: the last event that passed every check (on
    success, the export's head: keep ``head_hash`` as the ``start_hash`` of the
    next ``--since`` export). ``signed_through``: the last event id a valid
    signed checkpoint covers. ``first_id``: where the export starts."""

    ok: bool
    events_checked: int
    checkpoints_checked: int
    head_id: int | None
    head_hash: str | None
    problem: Problem | None = None
    first_id: int | None = None
    signed_through: int | None = None


class _Verifier:
    """The chain checks, fed one event at a time (so a file never sits in memory).

    Events arrive as ``(id, prev_hex, hash_hex, body_ok, line)``; whoever feeds
    them has already compared the body's hash with ``hash_hex`` (``body_ok``).
    """

    __slots__ = (
        "keys", "start_hex", "expect_first_id", "allow_unsigned_tail", "pending",
        "first_id", "start_prev", "head_id", "last_hash", "last_prev", "good",
        "signed_through", "events", "checkpoints", "problem", "log", "late",
    )  # fmt: skip

    def __init__(
        self,
        public_keys: Sequence[ed25519.Ed25519PublicKey] | None,
        start_hash: bytes | None,
        expect_first_id: int | None,
        allow_unsigned_tail: bool,
        *,
        keep_log: bool = False,
    ) -> None:
        self.keys: dict[str, ed25519.Ed25519PublicKey] | None = None
        if public_keys is not None:
            self.keys = {audit_key_fingerprint(k): k for k in public_keys}
        if start_hash is not None and len(start_hash) != 32:
            raise ValueError(f"start_hash must be 32 bytes, not {len(start_hash)}")
        self.start_hex = start_hash.hex() if start_hash is not None else None
        self.expect_first_id = expect_first_id
        self.allow_unsigned_tail = allow_unsigned_tail
        self.pending: dict[int, list[tuple[Checkpoint, int | None]]] = {}
        self.first_id: int | None = None
        self.start_prev: str | None = None  # what the first event links to
        self.head_id: int | None = None
        self.last_hash: str | None = None
        self.last_prev: str | None = None
        # Event ids confirmed by a checkpoint (or an anchored start), sorted.
        self.good: list[int] = []
        self.signed_through: int | None = None
        self.events = 0
        self.checkpoints = 0
        self.problem: Problem | None = None
        # Streaming a file, a checkpoint line may come after later events
        # (written at the end, say): keep every raw hash, 32 bytes an event,
        # to check it then. Given up front (verify_chain), none is needed.
        self.log: bytearray | None = bytearray() if keep_log else None
        self.late: list[tuple[Checkpoint, int | None]] = []

    # -- problems

    def fail(
        self,
        event_id: int,
        kind: ProblemKind,
        message: str,
        *,
        until: int | None = None,
        line: int | None = None,
    ) -> None:
        if self.problem is None:
            self.problem = Problem(event_id, kind, message, until, line)

    # -- checkpoints

    def add_checkpoint(self, cp: Checkpoint, line: int | None) -> None:
        eid = cp.event_id
        if self.head_id is None or eid > self.head_id:
            self.pending.setdefault(eid, []).append((cp, line))
        elif eid == self.head_id:
            self._check_cp(cp, line, self.last_hash)
        else:
            assert self.first_id is not None
            if eid == self.first_id - 1:
                self._check_cp(cp, line, self.start_prev, start=True)
            elif eid >= self.first_id:
                # Checked at the end, in id order, so that the range a
                # "rewritten" names does not depend on the order of the lines.
                self.late.append((cp, line))
            # else: it signs an event before this export's start; nothing here to check it against.

    def _authentic(self, cp: Checkpoint, line: int | None) -> bool:
        """Signed by one of the given keys (always true when no keys were given)."""
        if self.keys is None:
            return True
        eid = cp.event_id
        key = self.keys.get(cp.key_fingerprint)
        if key is None:
            self.fail(
                eid,
                ProblemKind.BAD_CHECKPOINT,
                f"the checkpoint of event {eid} is signed by an unknown key "
                f"{str(cp.key_fingerprint)[:80]} (give every audit public key, old ones too)",
                line=line,
            )
            return False
        if not _signature_ok(cp, key):
            self.fail(
                eid,
                ProblemKind.BAD_CHECKPOINT,
                f"the checkpoint of event {eid} has a signature that does not verify "
                f"under {cp.key_fingerprint}",
                line=line,
            )
            return False
        return True

    def _check_cp(
        self, cp: Checkpoint, line: int | None, actual: str | None, *, start: bool = False
    ) -> None:
        if not self._authentic(cp, line):
            return
        eid = cp.event_id
        self.checkpoints += 1
        if cp.head_hash != actual:
            assert self.first_id is not None
            if start:
                self.fail(
                    self.first_id,
                    ProblemKind.REWRITTEN,
                    f"a checkpoint signed at {cp.at} says event {eid} had hash {str(cp.head_hash)[:64]}, "
                    f"but event {self.first_id} links to {actual}: the events were rewritten",
                    line=line,
                )
                return
            # Checkpoints of earlier events read so far (held back, see
            # add_checkpoint) may narrow the range: check them first.
            earlier = sorted(
                (c for c in self.late if c[0].event_id < eid), key=lambda c: c[0].event_id
            )
            if earlier:
                self.late = [c for c in self.late if c[0].event_id >= eid]
                for c, cline in earlier:
                    self._check_late(c, cline)
                    if self.problem is not None:
                        return
            i = bisect.bisect_left(self.good, eid)
            since = self.good[i - 1] + 1 if i else self.first_id
            self.fail(
                since,
                ProblemKind.REWRITTEN,
                f"the checkpoint of event {eid} signed at {cp.at} says its hash was "
                f"{str(cp.head_hash)[:64]}, but the chain has {actual}: events were rewritten and their "
                f"hashes recomputed, starting somewhere in events {since}..{eid}",
                until=eid,
                line=line,
            )
            return
        bisect.insort(self.good, eid)
        if self.keys is not None and (self.signed_through is None or eid > self.signed_through):
            self.signed_through = eid

    # -- events

    def begin(self, eid: int, prev: str, line: int | None) -> None:
        """The first event: fix what it must link to, check checkpoints before it."""
        self.first_id = eid
        if self.expect_first_id is not None and eid != self.expect_first_id:
            if eid > self.expect_first_id:
                self.fail(
                    self.expect_first_id,
                    ProblemKind.DELETED,
                    f"the export should start at event {self.expect_first_id} but starts at {eid}: "
                    f"events {self.expect_first_id}..{eid - 1} are missing",
                    until=eid - 1,
                    line=line,
                )
            else:
                self.fail(
                    eid,
                    ProblemKind.INSERTED,
                    f"the export should start at event {self.expect_first_id} but starts at {eid}",
                    line=line,
                )
            return
        if self.start_hex is not None:
            self.start_prev = self.start_hex
            self.good = [eid - 1]
        elif eid == 1:
            self.start_prev = GENESIS_HEX
            self.good = [0]
        else:
            # A --since export: trust its first link; the checkpoints after it
            # vouch for it (each signed head hash commits to it).
            self.start_prev = prev if _HEX64.match(prev) else GENESIS_HEX
        self.last_hash = self.start_prev
        for cid in sorted(k for k in self.pending if k < eid):
            for cp, cline in self.pending.pop(cid):
                if cid == eid - 1:
                    self._check_cp(cp, cline, self.start_prev, start=True)
                # Earlier ones sign events outside this export: nothing to compare.

    def bad_link(self, eid: int, prev: str, body_ok: bool, line: int | None) -> None:
        if eid == self.first_id:
            if self.start_hex is not None:
                self.fail(
                    eid,
                    ProblemKind.REWRITTEN,
                    f"event {eid} links to {prev[:64]}, not to the expected start {self.start_hex}: "
                    "the chain before it, or this event, was rewritten",
                    line=line,
                )
            else:
                self.fail(
                    eid,
                    ProblemKind.EDITED,
                    f"event {eid} links to {prev[:64]}, not to {self.start_prev}",
                    line=line,
                )
        elif prev == self.last_prev:
            # The event before this one was spliced in: this one still links
            # to the event before that.
            self.fail(
                eid - 1,
                ProblemKind.INSERTED,
                f"event {eid - 1} was inserted: event {eid} links to event {eid - 2}'s hash",
                line=line,
            )
        elif body_ok:
            # This event is intact, so the previous one was rewritten and its
            # hash recomputed on its own.
            self.fail(
                eid - 1,
                ProblemKind.EDITED,
                f"event {eid - 1} was changed and its hash recomputed: event {eid} links to {prev[:64]}, "
                f"but event {eid - 1} now hashes to {self.last_hash}",
                line=line,
            )
        else:
            self.fail(
                eid,
                ProblemKind.EDITED,
                f"event {eid} does not link to event {eid - 1} and its body does not match its hash "
                "(edited, or events before it deleted and the rest renumbered)",
                line=line,
            )

    def accept(self, eid: int, prev: str, hsh: str, line: int | None) -> None:
        self.events += 1
        self.head_id = eid
        self.last_prev = prev
        self.last_hash = hsh
        if self.log is not None:
            self.log += bytes.fromhex(hsh)
        cps = self.pending.pop(eid, None)
        if cps:
            for cp, cline in cps:
                self._check_cp(cp, cline, hsh)

    def classify_order(
        self, expected: int, got: int, rest: Iterator[int], line: int | None
    ) -> None:
        """An id out of sequence. Which tampering it is depends on what comes later."""
        if got < expected:
            # Any permutation first shows a *larger* id than expected, so a
            # smaller one here is an id we have already seen: a duplicate.
            assert self.first_id is not None
            where = (
                "a second time"
                if got >= self.first_id
                else f"before the export's start ({self.first_id})"
            )
            self.fail(
                got,
                ProblemKind.INSERTED,
                f"event {got} appears {where}, after event {expected - 1}",
                line=line,
            )
            return
        seen_missing: int | None = None
        for later in rest:
            if later == got:
                self.fail(
                    got,
                    ProblemKind.INSERTED,
                    f"an extra event with id {got} appears between events {expected - 1} and {expected}",
                    line=line,
                )
                return
            if seen_missing is None and expected <= later < got:
                seen_missing = later
        if seen_missing is not None:
            self.fail(
                expected,
                ProblemKind.REORDERED,
                f"event {expected} is out of order: event {got} appears before it",
                line=line,
            )
        else:
            self.fail(
                expected,
                ProblemKind.DELETED,
                f"events {expected}..{got - 1} are missing (event {got} follows event {expected - 1})"
                if got - 1 > expected
                else f"event {expected} is missing (event {got} follows event {expected - 1})",
                until=got - 1,
                line=line,
            )

    def _check_late(self, cp: Checkpoint, line: int | None) -> None:
        assert (
            self.log is not None and self.first_id is not None
        )  # only a streamed file holds checkpoints back
        i = (cp.event_id - self.first_id) * 32
        self._check_cp(cp, line, self.log[i : i + 32].hex())

    def finish(self) -> VerifyResult:
        late, self.late = sorted(self.late, key=lambda c: c[0].event_id), []
        for cp, cline in late:
            if self.problem is not None:
                break
            self._check_late(cp, cline)
        if self.problem is None and self.pending:
            # A checkpoint past the last event: the tail it signed is gone.
            # Its signature is checked first: a forged checkpoint is reported
            # as such, not taken as evidence of deletion.
            cid = min(self.pending)
            cp, cline = self.pending[cid][0]
            if self._authentic(cp, cline):
                start = self.head_id + 1 if self.head_id is not None else cid
                end_text = (
                    f"the export ends at event {self.head_id}"
                    if self.head_id is not None
                    else "the export has no events"
                )
                self.fail(
                    start,
                    ProblemKind.DELETED,
                    f"a checkpoint signs event {cid} but {end_text}: events {start}..{cid} are missing",
                    until=cid,
                    line=cline,
                )
        if (
            self.problem is None
            and self.keys is not None
            and not self.allow_unsigned_tail
            and self.head_id is not None
            and (self.signed_through is None or self.signed_through < self.head_id)
        ):
            assert self.first_id is not None
            start = max(self.first_id, (self.signed_through or 0) + 1)
            self.fail(
                start,
                ProblemKind.UNSIGNED_TAIL,
                f"events {start}..{self.head_id} are not covered by a signed checkpoint "
                "(export again: the server signs the head on export)",
                until=self.head_id,
            )
        return VerifyResult(
            ok=self.problem is None,
            events_checked=self.events,
            checkpoints_checked=self.checkpoints,
            head_id=self.head_id,
            head_hash=self.last_hash if self.head_id is not None else None,
            problem=self.problem,
            first_id=self.first_id,
            signed_through=self.signed_through,
        )


# What the verifier is fed. Plain tuples, not NamedTuples or dataclasses: one
# is built per event, and a class's constructor made the file fast path about
# 15 % slower (a million events are to verify in a few seconds).
#: An event: (id, prev_hash hex, hash hex, body_ok, export line). ``body_ok``:
#: its body, linked to prev_hash, hashes to hash (whoever built it checked).
_Link = tuple[int, str, str, bool, int | None]
#: A checkpoint and its export line; told from a _Link by its length.
_Signed = tuple[Checkpoint, int | None]
_Item = _Link | _Signed


def _ids_after(items: Iterator[_Item]) -> Iterator[int]:
    """The ids of the events still to come (to tell a deletion from a reordering)."""
    try:
        for it in items:
            if len(it) != 2:
                yield it[0]
    except AuditError:
        return  # a malformed line further on: classify with what was seen; the first problem stands


def _run(items: Iterator[_Item], v: _Verifier) -> VerifyResult:
    expected: int | None = None
    for item in items:
        if len(item) == 2:
            v.add_checkpoint(*item)
            if v.problem is not None:
                break
            continue
        eid, prev, hsh, body_ok, line = item
        if eid != expected:
            if expected is None:
                v.begin(eid, prev, line)
                if v.problem is not None:
                    break
            elif not body_ok and prev == v.last_hash:
                # It links where event `expected` belongs but does not hash:
                # that event, with its id changed, not a moved one.
                v.fail(
                    expected,
                    ProblemKind.EDITED,
                    f"event {expected} was edited: its id was changed to {eid}",
                    line=line,
                )
                break
            else:
                v.classify_order(expected, eid, _ids_after(items), line)
                break
        if prev != v.last_hash:
            v.bad_link(eid, prev, body_ok, line)
            break
        if not body_ok:
            v.fail(
                eid,
                ProblemKind.EDITED,
                f"event {eid} was edited: its contents do not hash to its stored hash",
                line=line,
            )
            break
        v.accept(eid, prev, hsh, line)
        if v.problem is not None:
            break
        expected = eid + 1
    return v.finish()


def _link_of(ev: AuditEvent, line: int | None) -> _Link:
    if type(ev.id) is not int:
        raise InvalidAuditEvent(f"event id must be an int, got {ev.id!r}", field="id")
    # An event built from a tampered row may hold anything: a hash that is not
    # a string links to nothing.
    prev = ev.prev_hash if type(ev.prev_hash) is str else ""
    hsh = ev.hash if type(ev.hash) is str else ""
    return (ev.id, prev, hsh, _body_hash_ok(ev), line)


def verify_chain(
    events: Iterable[AuditEvent],
    checkpoints: Iterable[Checkpoint],
    public_keys: Sequence[ed25519.Ed25519PublicKey] | None,
    *,
    start_hash: bytes | None = None,
    expect_first_id: int | None = None,
    allow_unsigned_tail: bool = False,
) -> VerifyResult:
    """Verify a chain segment (streamed) against its checkpoints.

    ``public_keys``: the audit public keys checkpoints may be signed with;
    ``None`` skips signatures (and so proves nothing against an attacker).
    ``start_hash``: the hash the first event must link to (the head of an
    earlier verified export); by default event 1 links to the genesis hash
    and a later first event is trusted as the start of a ``--since`` export.
    ``expect_first_id``: fail unless the export starts there (1 for a full
    export). ``allow_unsigned_tail``: accept events after the last checkpoint.
    Checkpoints may come in any order; one of an event before ``first_id - 1``
    has nothing in this segment to be compared with and is skipped.
    ``docs/audit.md`` says what each :class:`ProblemKind` means.
    """
    v = _Verifier(public_keys, start_hash, expect_first_id, allow_unsigned_tail)
    for cp in checkpoints:
        v.pending.setdefault(cp.event_id, []).append((cp, None))
    return _run((_link_of(ev, None) for ev in events), v)


def _file_items(lines: Iterable[bytes | str], *, check_fast: bool = False) -> Iterator[_Item]:
    """Export lines as links and checkpoints. ``check_fast``: also parse the
    lines the fast path accepted, to refuse non-canonical ones (needed only
    when no audit key authenticates the hashes; see docs/audit.md)."""
    sha256 = hashlib.sha256
    fromhex = bytes.fromhex
    prefix, mid = _EV_PREFIX, _MID
    p0, p1, h0, h1, b0 = _P0, _P1, _H0, _H1, _B0
    last_hash = b""
    last_raw = b""
    for n, text in enumerate(lines, 1):
        line = text.encode("utf-8") if isinstance(text, str) else text
        if len(line) > MAX_LINE_BYTES:
            raise InvalidAuditExport(f"longer than {MAX_LINE_BYTES} bytes", line=n)
        end = len(line)
        if line.endswith(b"\n"):
            end -= 2 if line.endswith(b"\r\n") else 1
        # Fast path: the layout event_line writes. The body is a literal
        # slice, so it is hashed as it stands; its id is the last top-level
        # "id" key (canonical order puts only request_id and type after it,
        # and their string values cannot hold an unescaped quote).
        if (
            line.startswith(prefix)
            and line[p1:h0] == mid
            and line[h1:b0] == b'",'
            and line[end - 1 : end] == b"}"
        ):
            prev = line[p0:p1]
            hsh = line[h0:h1]
            j = line.rfind(b',"id":', b0, end)
            k = line.find(b",", j + 6, end) if j >= 0 else -1
            digits = line[j + 6 : k]
            if (
                0 < len(digits) <= 19
                and digits.isdigit()
                and (digits[:1] != b"0" or len(digits) == 1)
            ):
                # The link check will want prev == the previous hash: reuse
                # its raw bytes rather than decoding hex again.
                if prev == last_hash:
                    raw = last_raw
                else:
                    try:
                        raw = fromhex(prev.decode("ascii"))
                    except (ValueError, UnicodeDecodeError):
                        raw = b""
                digest = sha256(raw + b"{" + line[b0:end]).digest() if len(raw) == 32 else b""
                if digest.hex().encode("ascii") == hsh:
                    if check_fast:
                        _parse_line(line, n)
                    last_hash, last_raw = hsh, digest
                    yield (int(digits), prev.decode("ascii"), hsh.decode("ascii"), True, n)
                    continue
                # No match: the slow way below parses the line, refuses it
                # unless it is canonical, and names the edit if it is.
        item = _parse_line(line, n)
        if item is None:
            continue
        if isinstance(item, Checkpoint):
            yield (item, n)
            continue
        link = _link_of(item, n)
        _, _, hex_hash, body_ok, _ = link
        last_hash, last_raw = b"", b""
        if body_ok:
            last_hash, last_raw = hex_hash.encode("ascii"), bytes.fromhex(hex_hash)
        yield link


def verify_export_lines(
    lines: Iterable[bytes | str],
    public_keys: Sequence[ed25519.Ed25519PublicKey] | None,
    *,
    start_hash: bytes | None = None,
    expect_first_id: int | None = None,
    allow_unsigned_tail: bool = False,
    extra_checkpoints: Iterable[Checkpoint] = (),
) -> VerifyResult:
    """:func:`verify_chain` over export lines (bytes or str), streamed.

    A malformed line raises :class:`InvalidAuditExport` naming it.
    ``extra_checkpoints``: checkpoints kept from earlier exports; one past
    this export's end reports the tail as ``deleted``.
    """
    v = _Verifier(public_keys, start_hash, expect_first_id, allow_unsigned_tail, keep_log=True)
    for cp in extra_checkpoints:
        v.pending.setdefault(cp.event_id, []).append((cp, None))
    return _run(_file_items(lines, check_fast=public_keys is None), v)


def verify_export_file(
    path: str | os.PathLike[str] | IO[bytes] | IO[str],
    public_keys: Sequence[ed25519.Ed25519PublicKey] | None,
    *,
    start_hash: bytes | None = None,
    expect_first_id: int | None = None,
    allow_unsigned_tail: bool = False,
    extra_checkpoints: Iterable[Checkpoint] = (),
) -> VerifyResult:
    """Verify an export file (a path, or a file object such as
    ``sys.stdin.buffer``) without holding it in memory. Same checks and
    keywords as :func:`verify_export_lines`."""

    def run(f: IO[bytes] | IO[str]) -> VerifyResult:
        # readline with a limit, so one hostile endless line cannot take all
        # memory; a line cut at the limit is then refused as too long.
        # A text stream (sys.stdin rather than its .buffer) ends with "", not b"".
        sentinel: str | bytes = "" if isinstance(f, io.TextIOBase) else b""
        lines: Iterator[bytes | str] = iter(lambda: f.readline(MAX_LINE_BYTES + 1), sentinel)
        return verify_export_lines(
            lines,
            public_keys,
            start_hash=start_hash,
            expect_first_id=expect_first_id,
            allow_unsigned_tail=allow_unsigned_tail,
            extra_checkpoints=extra_checkpoints,
        )

    if isinstance(path, str | os.PathLike):
        with open(path, "rb") as f:
            return run(f)
    return run(path)
