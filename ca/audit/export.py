"""The export format: JSON lines, one event or checkpoint each, one spelling per line.

Writing (:func:`export_lines`) and reading (:func:`iter_export`,
:func:`parse_export`). Reading refuses any line that is not byte for byte
what the writer produces. The format, and why it is that strict:
``docs/audit.md``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Iterator
from typing import Any, Final

from .chain import _HEX64, AuditEvent, Checkpoint
from .errors import AuditError, InvalidAuditExport

__all__ = [
    "MAX_LINE_BYTES",
    "LineKind",
    "event_line",
    "checkpoint_line",
    "export_lines",
    "iter_export",
    "parse_export",
]

#: The reader refuses longer lines (the largest event line is about
#: MAX_BODY_BYTES + 200 bytes).
MAX_LINE_BYTES: Final = 1024 * 1024


class LineKind(enum.StrEnum):
    """The ``kind`` of an export line, its first key."""

    EVENT = "event"
    CHECKPOINT = "checkpoint"

    def __str__(self) -> str:
        return self.value


_BODY_KEYS = frozenset({"id", "at", "type", "actor", "request_id", "data"})
_KEYS = {
    LineKind.EVENT: _BODY_KEYS | {"kind", "prev_hash", "hash"},
    LineKind.CHECKPOINT: frozenset(
        {"kind", "event_id", "head_hash", "at", "key_fingerprint", "signature"}
    ),
}

# The byte layout of an event line as event_line writes it; the verifier's
# fast path (ca.audit.verify) slices lines by these offsets.
_EV_PREFIX = b'{"kind":"event","prev_hash":"'
_P0 = len(_EV_PREFIX)  # prev_hash hex starts here
_P1 = _P0 + 64
_MID = b'","hash":"'
_H0 = _P1 + len(_MID)  # hash hex starts here
_H1 = _H0 + 64
_B0 = _H1 + 2  # after '",': the body's first key; the body is b"{" + line[_B0:]


# ---------------------------------------------------------------------- write


def event_line(event: AuditEvent) -> str:
    """One export line (no newline). Also the event's line in the server log."""
    try:
        body = event.body()
    except AuditError:
        body = None
    if (
        body is not None
        and type(event.prev_hash) is str
        and type(event.hash) is str
        and _HEX64.match(event.prev_hash)
        and _HEX64.match(event.hash)
    ):
        return f'{{"kind":"event","prev_hash":"{event.prev_hash}","hash":"{event.hash}",{body[1:].decode("utf-8")}'
    # A row the database holds but make_event would never have produced (a
    # float in data, a mangled hash): write it faithfully in plain JSON, so
    # that verify reports the event instead of export crashing.
    obj = {"kind": "event", "prev_hash": event.prev_hash, "hash": event.hash, **event.body_dict()}
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=repr)


def checkpoint_line(cp: Checkpoint) -> str:
    """One export line (no newline): ``kind`` first, then the fields, sorted."""
    rest = {
        "at": cp.at,
        "event_id": cp.event_id,
        "head_hash": cp.head_hash,
        "key_fingerprint": cp.key_fingerprint,
        "signature": cp.signature,
    }
    return (
        '{"kind":"checkpoint",'
        + json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)[1:]
    )


def export_lines(events: Iterable[AuditEvent], checkpoints: Iterable[Checkpoint]) -> Iterator[str]:
    """The export, line by line (each ending in ``\\n``), streaming ``events``.

    Events are written in the order given (the database's id order; they are
    not sorted here, so a tampered table shows up as it is). Each checkpoint
    follows the event it signs; checkpoints of events before the first come
    first, those past the last come last. ``checkpoints`` is read whole (there
    is one per N events).
    """
    pending = sorted(checkpoints, key=lambda c: c.event_id)
    i = 0
    for ev in events:
        while i < len(pending) and pending[i].event_id < ev.id:
            yield checkpoint_line(pending[i]) + "\n"
            i += 1
        yield event_line(ev) + "\n"
        while i < len(pending) and pending[i].event_id == ev.id:
            yield checkpoint_line(pending[i]) + "\n"
            i += 1
    for cp in pending[i:]:
        yield checkpoint_line(cp) + "\n"


# ----------------------------------------------------------------------- read


def _parse_obj(obj: object, n: int) -> AuditEvent | Checkpoint:
    if not isinstance(obj, dict):
        raise InvalidAuditExport(f"expected a JSON object, got {type(obj).__name__}", line=n)
    raw_kind = obj.get("kind")
    if raw_kind not in ("event", "checkpoint"):
        raise InvalidAuditExport(
            f'"kind" must be "event" or "checkpoint", got {str(raw_kind)[:40]!r}',
            line=n,
            field="kind",
        )
    kind = LineKind(raw_kind)
    expected = _KEYS[kind]
    keys = set(obj)
    if keys != expected:
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        what = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(extra)}" if extra else "",
            )
            if part
        )
        raise InvalidAuditExport(f"{kind}: {what}", line=n, field=(missing or extra)[0])

    def need(name: str, types: tuple[type, ...]) -> Any:
        v = obj[name]
        if type(v) not in types:
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise InvalidAuditExport(
                f"{kind}: {name} must be {names}, got {type(v).__name__}", line=n, field=name
            )
        return v

    str_or_none = (str, type(None))
    if kind is LineKind.EVENT:
        return AuditEvent(
            id=need("id", (int,)),
            at=need("at", (str,)),
            type=need("type", (str,)),
            actor=need("actor", str_or_none),
            request_id=need("request_id", str_or_none),
            data=need("data", (dict,)),
            prev_hash=need("prev_hash", (str,)),
            hash=need("hash", (str,)),
        )
    return Checkpoint(
        event_id=need("event_id", (int,)),
        head_hash=need("head_hash", (str,)),
        at=need("at", (str,)),
        key_fingerprint=need("key_fingerprint", (str,)),
        signature=need("signature", (str,)),
    )


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the LAST of two equal keys, while a reader (or grep)
    # may see the first: one line, two meanings. Never accept that.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return obj


def _canonical_line(item: AuditEvent | Checkpoint) -> bytes:
    """The exact bytes :func:`export_lines` writes for ``item`` (no newline)."""
    text = checkpoint_line(item) if isinstance(item, Checkpoint) else event_line(item)
    return text.encode("utf-8", "surrogatepass")


def _parse_line(line: str | bytes, n: int) -> AuditEvent | Checkpoint | None:
    """One export line, parsed, and refused unless it is byte for byte what
    :func:`export_lines` writes for the event or checkpoint it parses to.

    A line that means something other than what it shows (a duplicate key, of
    which JSON parsers keep the last) or that can be written in more than one
    way (key order, whitespace, escapes) is refused, naming the line: the
    export is evidence, and evidence has one spelling.
    """
    if len(line) > MAX_LINE_BYTES:
        raise InvalidAuditExport(f"longer than {MAX_LINE_BYTES} bytes", line=n)
    if not line.strip():
        return None
    try:
        obj = json.loads(line, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as e:
        raise InvalidAuditExport(
            f"duplicate key {str(e)[:64]!r}: not the canonical form of an export line",
            line=n,
            field=str(e)[:64],
        ) from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise InvalidAuditExport(f"not valid JSON ({e})", line=n) from None
    except RecursionError:
        raise InvalidAuditExport("nested too deeply", line=n) from None
    item = _parse_obj(obj, n)
    raw = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line
    if raw.endswith(b"\n"):
        raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
    if raw != _canonical_line(item):
        raise InvalidAuditExport(
            f"{obj['kind']} is not in canonical form (key order, whitespace or escapes differ from what "
            "`jit-ssh audit export` writes); verify the export as it was written, not a reformatted copy",
            line=n,
        )
    return item


def iter_export(lines: Iterable[str | bytes]) -> Iterator[AuditEvent | Checkpoint]:
    """Parse an export lazily. Blank lines are skipped; anything else that is
    not an event or checkpoint object raises :class:`InvalidAuditExport` with
    its line number. Field *types* are checked here; whether the values are
    what was hashed and signed is for the verifier (:mod:`ca.audit.verify`)."""
    for n, line in enumerate(lines, 1):
        item = _parse_line(line, n)
        if item is not None:
            yield item


def parse_export(lines: Iterable[str | bytes]) -> tuple[list[AuditEvent], list[Checkpoint]]:
    """An export as (events, checkpoints), in file order. Holds everything in memory;
    :func:`ca.audit.verify.verify_export_file` streams instead."""
    events: list[AuditEvent] = []
    checkpoints: list[Checkpoint] = []
    for item in iter_export(lines):
        if isinstance(item, Checkpoint):
            checkpoints.append(item)
        else:
            events.append(item)
    return events, checkpoints
