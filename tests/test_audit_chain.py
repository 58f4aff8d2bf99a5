"""ca.audit: canonical JSON, the hash chain, checkpoints, export, and verify
naming the first tampered event."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import io
import json
import math
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ca.audit import (
    CHECKPOINT_DOMAIN,
    GENESIS_HASH,
    GENESIS_HEX,
    MAX_BODY_BYTES,
    MAX_LINE_BYTES,
    AuditEvent,
    AuditKeyError,
    Checkpoint,
    InvalidAuditEvent,
    InvalidAuditExport,
    ProblemKind,
    VerifyResult,
    audit_key_fingerprint,
    audit_public_key_text,
    canonical_json,
    chain_hash,
    checkpoint_line,
    checkpoint_payload,
    event_line,
    export_lines,
    format_at,
    generate_audit_key,
    iter_export,
    load_audit_key,
    load_audit_public_keys,
    make_event,
    parse_export,
    save_audit_key,
    sign_checkpoint,
    verify_chain,
    verify_checkpoint,
    verify_export_file,
    verify_export_lines,
)
from ca.errors import BadPassphrase, InsecureKeyFile, JitSshError, PassphraseRequired
from tests.conftest import require_tool

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
KEY = generate_audit_key()
PUB = KEY.public_key()
OTHER_KEY = generate_audit_key()

# --------------------------------------------------------------------------- helpers


def at(i: int) -> str:
    return format_at(T0 + timedelta(seconds=i))


def build(
    n: int,
    *,
    every: int = 10,
    key: ed25519.Ed25519PrivateKey = KEY,
    head: bool = True,
    data: Callable[[int], dict[str, Any]] | None = None,
) -> tuple[list[AuditEvent], list[Checkpoint]]:
    """n events; a checkpoint every ``every`` events and (``head``) one of the last, as the server does on export."""
    events: list[AuditEvent] = []
    cps: list[Checkpoint] = []
    prev = None
    for i in range(1, n + 1):
        prev = make_event(
            prev,
            id=i,
            at=at(i),
            type="request.created",
            actor=f"user{i % 3}",
            request_id=f"r{i}",
            data=data(i) if data else {"n": i, "who": ["alice", "bob"]},
        )
        events.append(prev)
        if every and i % every == 0:
            cps.append(sign_checkpoint(key, prev, at(i)))
    if head and events and (not cps or cps[-1].event_id != n):
        cps.append(sign_checkpoint(key, events[-1], at(n + 1)))
    return events, cps


def rehash_from(
    events: list[AuditEvent], k: int, new_data: dict[str, Any] | None = None
) -> list[AuditEvent]:
    """An attacker's consistent rewrite: event k changed, every hash from k on recomputed."""
    out = events[: k - 1]
    prev = out[-1] if out else None
    for ev in events[k - 1 :]:
        data = new_data if (ev.id == k and new_data is not None) else ev.data
        prev = make_event(
            prev,
            id=ev.id,
            at=ev.at,
            type=ev.type,
            actor=ev.actor,
            request_id=ev.request_id,
            data=data,
        )
        out.append(prev)
    return out


def rehash_one(ev: AuditEvent, **changes: Any) -> AuditEvent:
    """Event changed and its own hash recomputed (over its unchanged prev_hash)."""
    ev = dataclasses.replace(ev, **changes)
    return dataclasses.replace(ev, hash=chain_hash(bytes.fromhex(ev.prev_hash), ev.body()).hex())


def via_objects(
    events: list[AuditEvent], cps: list[Checkpoint], keys: Any = (PUB,), **kw: Any
) -> VerifyResult:
    return verify_chain(events, cps, list(keys) if keys is not None else None, **kw)


def via_file(
    events: list[AuditEvent], cps: list[Checkpoint], keys: Any = (PUB,), **kw: Any
) -> VerifyResult:
    data = "".join(export_lines(events, cps)).encode("utf-8")
    return verify_export_file(io.BytesIO(data), list(keys) if keys is not None else None, **kw)


VERIFIERS = [pytest.param(via_objects, id="objects"), pytest.param(via_file, id="file")]


def expect(result: VerifyResult, kind: str, event_id: int) -> None:
    assert not result.ok, result
    assert result.problem is not None
    assert (result.problem.kind, result.problem.event_id) == (kind, event_id), result.problem


# --------------------------------------------------------------------------- canonical JSON


def test_canonical_json_golden_bytes() -> None:
    assert canonical_json({"b": [1, True, None], "a": 'é\n"', "c": {}}) == (
        '{"a":"é\\n\\"","b":[1,true,null],"c":{}}'.encode()
    )


def test_canonical_json_is_independent_of_insertion_order() -> None:
    a = {"x": 1, "y": {"q": [1, 2], "p": "z"}}
    b = {"y": {"p": "z", "q": [1, 2]}, "x": 1}
    assert canonical_json(a) == canonical_json(b)


class Color(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        1.5,
        b"bytes",
        {1, 2},
        (1, 2),
        {1: "int key"},
        Color.RED,
        T0,
        "\ud800",  # a lone surrogate is not Unicode
        {"nested": [{"deep": math.nan}]},
        object(),
    ],
    ids=lambda v: type(v).__name__,
)
def test_canonical_json_rejects(value: Any) -> None:
    with pytest.raises(InvalidAuditEvent):
        canonical_json(value)


def test_canonical_json_names_the_path() -> None:
    with pytest.raises(InvalidAuditEvent, match=r"\$\.a\[1\]\.b"):
        canonical_json({"a": [0, {"b": 0.5}]})


def test_canonical_json_refuses_deep_nesting() -> None:
    deep: Any = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(InvalidAuditEvent, match="deeper"):
        canonical_json(deep)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_canonical_json_round_trips_and_is_deterministic(value: Any) -> None:
    try:
        out = canonical_json(value)
    except InvalidAuditEvent:
        # Only lone surrogates (hypothesis text can hold them) may be refused.
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in json.dumps(value, ensure_ascii=False)), value
        return
    assert json.loads(out) == value
    assert canonical_json(json.loads(out)) == out
    out.decode("utf-8")


# --------------------------------------------------------------------------- events


def test_genesis_and_chain_hash() -> None:
    assert GENESIS_HASH == bytes(32) and GENESIS_HEX == "0" * 64
    assert chain_hash(GENESIS_HASH, b"body") == hashlib.sha256(bytes(32) + b"body").digest()
    with pytest.raises(ValueError):
        chain_hash(b"short", b"body")


def test_event_body_and_hash_golden() -> None:
    ev = make_event(
        None,
        id=1,
        at="2026-11-29T12:00:00.000000Z",
        type="request.created",
        actor="alice",
        request_id="r1",
        data={"b": 1, "a": "é"},
    )
    body = (
        '{"actor":"alice","at":"2026-11-29T12:00:00.000000Z","data":{"a":"é","b":1},"id":1,'
        '"request_id":"r1","type":"request.created"}'
    ).encode()
    assert ev.body() == body
    assert ev.prev_hash == GENESIS_HEX
    assert ev.hash == hashlib.sha256(GENESIS_HASH + body).hexdigest()
    # Pinned: a change to the body format would silently break every stored chain.
    assert ev.hash == "cc34afaba563b608dbe2a0e59cebcb32217f46f1bf454b62cbbfcf72e787ec24"
    nxt = make_event(
        ev, id=2, at=at(1), type="request.approved", actor="bob", request_id="r1", data={}
    )
    assert nxt.prev_hash == ev.hash
    assert nxt.hash == chain_hash(bytes.fromhex(ev.hash), nxt.body()).hex()


def test_make_event_ids_must_be_consecutive() -> None:
    with pytest.raises(InvalidAuditEvent, match="first event has id 1") as e:
        make_event(None, id=2, at=at(0), type="x", actor=None, request_id=None, data={})
    assert e.value.field == "id"
    ev = make_event(None, id=1, at=at(0), type="x", actor=None, request_id=None, data={})
    for bad in (1, 3, 0, True):
        with pytest.raises(InvalidAuditEvent) as e:
            make_event(ev, id=bad, at=at(0), type="x", actor=None, request_id=None, data={})
        assert e.value.field == "id"


@pytest.mark.parametrize(
    "field,value",
    [
        ("at", "2026-11-29 12:00:00"),
        ("at", "2026-11-29T12:00:00Z"),  # the one spelling has microseconds
        ("at", "2026-11-29T12:00:00.000000+00:00"),
        ("at", "2026-13-29T12:00:00.000000Z"),
        ("at", T0),
        ("type", "Request Created"),
        ("type", ""),
        ("type", "x" * 65),
        ("actor", 5),
        ("actor", ""),
        ("actor", "a\nb"),
        ("request_id", "x" * 257),
        ("data", [1]),
        ("data", {"f": 0.1}),
        ("data", {"big": "x" * MAX_BODY_BYTES}),
    ],
)
def test_make_event_validates_and_names_the_field(field: str, value: Any) -> None:
    kw: dict[str, Any] = dict(
        id=1, at=at(0), type="request.created", actor="alice", request_id="r1", data={}
    )
    kw[field] = value
    with pytest.raises(InvalidAuditEvent) as e:
        make_event(None, **kw)
    assert e.value.field is not None and e.value.field.startswith(
        field
    )  # "data.f": the path inside data
    assert isinstance(e.value, JitSshError) and e.value.code == "invalid_audit_event"


def test_make_event_keeps_its_own_copy_of_data() -> None:
    data: dict[str, Any] = {"list": [1]}
    ev = make_event(None, id=1, at=at(0), type="x", actor=None, request_id=None, data=data)
    data["list"].append(2)
    assert ev.data == {"list": [1]}
    assert hashlib.sha256(GENESIS_HASH + ev.body()).hexdigest() == ev.hash


def test_format_at() -> None:
    assert format_at(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == "2026-01-02T03:04:05.000006Z"
    cet = timezone(timedelta(hours=1))
    assert format_at(datetime(2026, 1, 2, 4, 4, 5, tzinfo=cet)) == "2026-01-02T03:04:05.000000Z"
    with pytest.raises(InvalidAuditEvent):
        format_at(datetime(2026, 1, 2))


# --------------------------------------------------------------------------- checkpoints and keys


def test_checkpoint_sign_and_verify() -> None:
    events, _ = build(3, every=0, head=False)
    cp = sign_checkpoint(KEY, events[-1], at(9))
    assert (cp.event_id, cp.head_hash, cp.at) == (3, events[-1].hash, at(9))
    assert cp.key_fingerprint == audit_key_fingerprint(PUB) and cp.key_fingerprint.startswith(
        "SHA256:"
    )
    assert verify_checkpoint(cp, PUB)
    assert not verify_checkpoint(cp, OTHER_KEY.public_key())
    for change in (
        {"event_id": 2},
        {"head_hash": events[0].hash},
        {"at": at(10)},
        {"signature": "AAAA"},
        {"signature": "not base64!"},
        {"key_fingerprint": audit_key_fingerprint(OTHER_KEY)},
    ):
        assert not verify_checkpoint(dataclasses.replace(cp, **change), PUB), change
    # The domain tag is inside what is signed.
    payload = checkpoint_payload(3, events[-1].hash, at(9))
    assert json.loads(payload)["domain"] == CHECKPOINT_DOMAIN
    PUB.verify(__import__("base64").b64decode(cp.signature), payload)


def test_sign_checkpoint_refuses_a_non_ed25519_key() -> None:
    events, _ = build(1, every=0, head=False)
    with pytest.raises(AuditKeyError):
        sign_checkpoint(
            rsa.generate_private_key(public_exponent=65537, key_size=2048), events[0], at(1)
        )  # type: ignore[arg-type]


def test_audit_key_save_and_load(tmp_path: Path) -> None:
    key = generate_audit_key()
    path = tmp_path / "audit_ed25519"
    pub = save_audit_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "audit_ed25519.pub").stat().st_mode) == 0o644
    assert pub == audit_public_key_text(key, "jit-ssh audit key")
    assert (tmp_path / "audit_ed25519.pub").read_text() == pub + "\n"
    loaded = load_audit_key(path)
    assert audit_key_fingerprint(loaded) == audit_key_fingerprint(key)
    keys = load_audit_public_keys("# audit keys\n\n" + pub + "\n")
    assert [audit_key_fingerprint(k) for k in keys] == [audit_key_fingerprint(key)]
    with pytest.raises(FileExistsError):
        save_audit_key(path, generate_audit_key())


def test_audit_key_refuses_group_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "audit"
    save_audit_key(path, generate_audit_key())
    os.chmod(path, 0o640)
    with pytest.raises(InsecureKeyFile, match="chmod 600") as e:
        load_audit_key(path)
    assert e.value.field == "audit_key"


def test_audit_key_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "audit"
    save_audit_key(path, generate_audit_key(), passphrase=b"s3cret")
    with pytest.raises(PassphraseRequired):
        load_audit_key(path)
    with pytest.raises(BadPassphrase):
        load_audit_key(path, passphrase=b"wrong")
    assert isinstance(load_audit_key(path, passphrase=b"s3cret"), ed25519.Ed25519PrivateKey)


def test_audit_key_must_be_ed25519(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "rsa"
    path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    os.chmod(path, 0o600)
    with pytest.raises(AuditKeyError, match="Ed25519"):
        load_audit_key(path)
    line = rsa_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    with pytest.raises(AuditKeyError, match="line 1"):
        load_audit_public_keys(line.decode())
    with pytest.raises(AuditKeyError):
        save_audit_key(tmp_path / "x", rsa_key)  # type: ignore[arg-type]


def test_audit_key_files_are_openssh_format(tmp_path: Path) -> None:
    ssh_keygen = require_tool("ssh-keygen")
    key = generate_audit_key()
    path = tmp_path / "audit"
    save_audit_key(path, key)
    out = subprocess.run(
        [ssh_keygen, "-l", "-f", str(path) + ".pub"], capture_output=True, text=True, check=True
    )
    assert audit_key_fingerprint(key) in out.stdout
    out = subprocess.run(
        [ssh_keygen, "-y", "-f", str(path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[:2] == audit_public_key_text(key).split()[:2]


# --------------------------------------------------------------------------- export format


def test_export_round_trip() -> None:
    events, cps = build(25, every=10)
    lines = list(export_lines(events, cps))
    assert all(line.endswith("\n") for line in lines)
    assert len(lines) == 25 + 3
    # Each checkpoint right after the event it signs.
    kinds = [json.loads(line)["kind"] for line in lines]
    assert kinds[10] == "checkpoint" and kinds[21] == "checkpoint" and kinds[-1] == "checkpoint"
    got_events, got_cps = parse_export(lines)
    assert got_events == events and got_cps == cps
    # bytes lines and no trailing newlines parse the same.
    assert parse_export(line.rstrip("\n").encode() for line in lines) == (events, cps)


def test_event_line_holds_the_body_verbatim() -> None:
    events, _ = build(2, every=0, head=False)
    line = event_line(events[1])
    assert line.startswith(
        '{"kind":"event","prev_hash":"' + events[1].prev_hash + '","hash":"' + events[1].hash + '",'
    )
    assert ("{" + line.split('"hash":"')[1][66:]).encode() == events[1].body()
    obj = json.loads(line)
    assert obj.pop("kind") == "event"
    assert obj == dataclasses.asdict(events[1])


def test_checkpoint_line_format() -> None:
    events, cps = build(1, every=1)
    line = checkpoint_line(cps[0])
    assert line.startswith('{"kind":"checkpoint","at":')
    obj = json.loads(line)
    assert obj == {"kind": "checkpoint", **dataclasses.asdict(cps[0])}


def test_export_places_checkpoints_around_the_events() -> None:
    events, cps = build(5, every=0, head=False)
    early = sign_checkpoint(KEY, events[0], at(1))
    late = dataclasses.replace(early, event_id=9)
    lines = list(export_lines(events[1:], [late, early]))
    assert json.loads(lines[0])["event_id"] == 1 and json.loads(lines[-1])["event_id"] == 9


@pytest.mark.parametrize(
    "line,match",
    [
        ("not json", "line 2: not valid JSON"),
        ("[1, 2]", "line 2: expected a JSON object"),
        ('{"kind": "header"}', 'line 2: "kind" must be'),
        ('{"kind": "checkpoint", "event_id": 1}', "line 2: checkpoint: missing at"),
        (
            '{"kind":"checkpoint","at":"x","event_id":"1","head_hash":"h","key_fingerprint":"f","signature":"s"}',
            "line 2: checkpoint: event_id must be int, got str",
        ),
        (
            '{"kind":"checkpoint","at":"x","event_id":true,"head_hash":"h","key_fingerprint":"f","signature":"s"}',
            "event_id must be int, got bool",
        ),
        (
            '{"kind":"checkpoint","at":"x","event_id":1,"head_hash":"h","key_fingerprint":"f","signature":"s","x":1}',
            "unknown x",
        ),
        ("\xff", "line 2"),
    ],
)
def test_parse_export_names_the_bad_line(line: str, match: str) -> None:
    events, _ = build(1, every=0, head=False)
    good = event_line(events[0])
    with pytest.raises(InvalidAuditExport, match=match) as e:
        parse_export([good, line])
    assert e.value.line == 2 and e.value.code == "invalid_audit_export"
    # The streaming verifier reports the same line.
    with pytest.raises(InvalidAuditExport, match="line 2"):
        verify_export_lines(
            [good.encode(), line.encode("utf-8", "surrogateescape") if line != "\xff" else b"\xff"],
            None,
        )


def test_parse_export_event_field_types() -> None:
    events, _ = build(1, every=0, head=False)
    obj = json.loads(event_line(events[0]))
    for name, bad in [("actor", 5), ("data", []), ("id", "1"), ("hash", None), ("request_id", 1.0)]:
        with pytest.raises(InvalidAuditExport, match=f"line 1: event: {name} must be") as e:
            parse_export([json.dumps({**obj, name: bad})])
        assert e.value.field == name


def test_parse_export_skips_blank_lines() -> None:
    events, cps = build(3, every=0)
    lines = ["\n", *export_lines(events, cps), "  \n"]
    assert parse_export(lines) == (events, cps)
    assert verify_export_lines(lines, [PUB]).ok


def test_overlong_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "export"
    path.write_bytes(b'{"kind":"event",' + b" " * MAX_LINE_BYTES + b"}\n")
    with pytest.raises(InvalidAuditExport, match="line 1: longer than"):
        verify_export_file(path, [PUB])


# --------------------------------------------------------------------------- verify: untouched chains


@pytest.mark.parametrize("verify", VERIFIERS)
def test_untouched_chain_verifies(verify: Callable[..., VerifyResult]) -> None:
    events, cps = build(50, every=10)
    r = verify(events, cps, expect_first_id=1)
    assert r.ok and r.problem is None, r.problem
    assert (r.events_checked, r.checkpoints_checked) == (50, 5)
    assert (r.head_id, r.head_hash, r.first_id, r.signed_through) == (50, events[-1].hash, 1, 50)


def test_verify_export_file_from_a_path(tmp_path: Path) -> None:
    events, cps = build(30, every=7)
    path = tmp_path / "audit.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(export_lines(events, cps))
    r = verify_export_file(path, [PUB])
    assert r.ok and r.events_checked == 30 and r.checkpoints_checked == 5


def test_empty_export_verifies() -> None:
    r = verify_chain([], [], [PUB])
    assert r.ok and r.events_checked == 0 and r.head_id is None


@pytest.mark.parametrize("verify", VERIFIERS)
def test_since_export_starts_mid_chain(verify: Callable[..., VerifyResult]) -> None:
    events, cps = build(40, every=10)
    tail = events[14:]
    tail_cps = [c for c in cps if c.event_id >= 15]
    r = verify(tail, tail_cps)
    assert r.ok and r.first_id == 15 and r.events_checked == 26
    # Anchored on the head of an earlier export ...
    assert verify(tail, tail_cps, start_hash=bytes.fromhex(events[13].hash)).ok
    # ... or on a checkpoint of the event just before it.
    r = verify(tail, [sign_checkpoint(KEY, events[13], at(99)), *tail_cps])
    assert r.ok and r.checkpoints_checked == len(tail_cps) + 1
    # A wrong start: the history before the export is not the one we knew.
    expect(verify(tail, tail_cps, start_hash=bytes.fromhex(events[12].hash)), "rewritten", 15)
    bad_anchor = sign_checkpoint(KEY, dataclasses.replace(events[13], hash=events[12].hash), at(99))
    expect(verify(tail, [bad_anchor, *tail_cps]), "rewritten", 15)
    # Checkpoints of events further back cannot be checked here, and are not held against it.
    assert verify(tail, [cps[0], *tail_cps]).ok
    # A full export must start at 1.
    expect(verify(tail, tail_cps, expect_first_id=1), "deleted", 1)
    with pytest.raises(ValueError):
        verify(tail, tail_cps, start_hash=b"short")


# --------------------------------------------------------------------------- verify: each tampering


@pytest.mark.parametrize("verify", VERIFIERS)
def test_edited_event_is_named(verify: Callable[..., VerifyResult]) -> None:
    events, cps = build(30)
    events[16] = dataclasses.replace(events[16], data={**events[16].data, "n": 999})
    r = verify(events, cps)
    expect(r, "edited", 17)
    assert r.head_id == 16 and r.events_checked == 16


@pytest.mark.parametrize("verify", VERIFIERS)
@pytest.mark.parametrize(
    "field,value",
    [
        ("actor", "mallory"),
        ("at", at(1000)),
        ("type", "request.denied"),
        ("request_id", None),
        ("id", 17),
    ],
)
def test_every_body_field_is_covered(
    verify: Callable[..., VerifyResult], field: str, value: Any
) -> None:
    events, cps = build(30)
    events[17] = dataclasses.replace(events[17], **{field: value})  # event 18
    r = verify(events, cps)
    assert not r.ok
    assert r.problem is not None and r.problem.event_id in (17, 18)


@pytest.mark.parametrize("verify", VERIFIERS)
def test_edited_event_with_its_hash_recomputed_is_named(
    verify: Callable[..., VerifyResult],
) -> None:
    events, cps = build(30)
    events[11] = rehash_one(events[11], data={"n": -1})
    expect(verify(events, cps), "edited", 12)


@pytest.mark.parametrize("verify", VERIFIERS)
def test_last_event_edited_and_rehashed_is_caught_by_the_head_checkpoint(
    verify: Callable[..., VerifyResult],
) -> None:
    events, cps = build(25)  # checkpoints at 10, 20 and the head, 25
    events[-1] = rehash_one(events[-1], data={"n": -1})
    r = verify(events, cps)
    expect(r, "rewritten", 21)
    assert r.problem is not None and r.problem.until_id == 25


@pytest.mark.parametrize("verify", VERIFIERS)
def test_deleted_event_is_named(verify: Callable[..., VerifyResult]) -> None:
    events, cps = build(30)
    del events[8]  # event 9
    r = verify(events, cps)
    expect(r, "deleted", 9)
    del events[8:12]  # events 10..13 too
    r = verify(events, cps)
    expect(r, "deleted", 9)
    assert r.problem is not None and r.problem.until_id == 13


@pytest.mark.parametrize("verify", VERIFIERS)
def test_deleted_and_renumbered_is_caught(verify: Callable[..., VerifyResult]) -> None:
    events, cps = build(30)
    events = events[:8] + [dataclasses.replace(ev, id=ev.id - 1) for ev in events[9:]]
    expect(verify(events, cps), "edited", 9)


@pytest.mark.parametrize("verify", VERIFIERS)
def test_deleted_tail_is_caught_by_the_checkpoint_past_the_end(
    verify: Callable[..., VerifyResult],
) -> None:
    events, cps = build(30)
    r = verify(events[:27], cps)
    expect(r, "deleted", 28)
    assert r.problem is not None and r.problem.until_id == 30
    # Truncated together with its checkpoints, the shorter chain is all there is ...
    assert verify(events[:20], cps[:2]).ok
    # ... unless a checkpoint kept from an earlier export says otherwise.
    kept = cps[-1]
    expect(verify_chain(events[:20], [*cps[:2], kept], [PUB]), "deleted", 21)
    data = "".join(export_lines(events[:20], cps[:2])).encode()
    expect(verify_export_lines(io.BytesIO(data), [PUB], extra_checkpoints=[kept]), "deleted", 21)


@pytest.mark.parametrize("verify", VERIFIERS)
def test_deleted_first_event(verify: Callable[..., VerifyResult]) -> None:
    events, cps = build(30)
    r = verify(events[1:], cps)
    assert r.ok and r.first_id == 2  # looks exactly like an export --since 2 ...
    expect(verify(events[1:], cps, expect_first_id=1), "deleted", 1)  # ... so say what you expect


@pytest.mark.parametrize("verify", VERIFIERS)
def test_inserted_duplicate_is_named(verify: Callable[..., VerifyResult]) -> None:
    events, cps = build(30)
    fake = make_event(
        events[5],
        id=7,
        at=at(7),
        type="request.approved",
        actor="mallory",
        request_id="r7",
        data={},
    )
    expect(verify(events[:6] + [fake] + events[6:], cps), "inserted", 7)  # before the real 7
    expect(verify(events[:7] + [fake] + events[7:], cps), "inserted", 7)  # after it
    expect(
        verify(events[:3] + [events[20]] + events[3:], cps), "inserted", 21
    )  # a copy of a later event


@pytest.mark.parametrize("verify", VERIFIERS)
def test_inserted_and_renumbered_is_named(verify: Callable[..., VerifyResult]) -> None:
    events, cps = build(30)
    fake = make_event(
        events[5],
        id=7,
        at=at(7),
        type="request.approved",
        actor="mallory",
        request_id="r7",
        data={},
    )
    tampered = events[:6] + [fake] + [dataclasses.replace(ev, id=ev.id + 1) for ev in events[6:]]
    expect(verify(tampered, cps), "inserted", 7)


@pytest.mark.parametrize("verify", VERIFIERS)
def test_reordered_events_are_named(verify: Callable[..., VerifyResult]) -> None:
    events, cps = build(30)
    swapped = list(events)
    swapped[11], swapped[12] = swapped[12], swapped[11]  # events 12 and 13
    r = verify(swapped, cps)
    expect(r, "reordered", 12)
    swapped = list(events)
    swapped[4], swapped[19] = swapped[19], swapped[4]  # events 5 and 20
    expect(verify(swapped, cps), "reordered", 5)
    moved = events[:2] + events[3:15] + [events[2]] + events[15:]  # event 3 moved later
    expect(verify(moved, cps), "reordered", 3)


@pytest.mark.parametrize("verify", VERIFIERS)
@pytest.mark.parametrize("k", [1, 9, 10, 11, 17, 30])
def test_rewritten_chain_is_caught_by_a_checkpoint(
    verify: Callable[..., VerifyResult], k: int
) -> None:
    events, cps = build(30)  # checkpoints at 10, 20, 30
    tampered = rehash_from(events, k, {"n": "rewritten"})
    # Link by link the rewritten chain is perfect ...
    assert verify(tampered, [], None).ok
    # ... but the first checkpoint at or after k signed the old head.
    r = verify(tampered, cps)
    assert r.problem is not None, r
    assert r.problem.kind == "rewritten"
    first_cp = next(c.event_id for c in cps if c.event_id >= k)
    last_good = max([c.event_id for c in cps if c.event_id < k], default=0)
    assert (r.problem.event_id, r.problem.until_id) == (last_good + 1, first_cp)
    assert r.problem.event_id <= k <= r.problem.until_id


@pytest.mark.parametrize("verify", VERIFIERS)
def test_rewritten_chain_re_signed_with_another_key(verify: Callable[..., VerifyResult]) -> None:
    events, cps = build(30)
    tampered = rehash_from(events, 12, {"n": "rewritten"})
    forged = [
        c if c.event_id < 12 else sign_checkpoint(OTHER_KEY, tampered[c.event_id - 1], c.at)
        for c in cps
    ]
    r = verify(tampered, forged)
    expect(r, "bad_checkpoint", 20)
    assert r.problem is not None and "unknown key" in r.problem.message
    assert verify(
        tampered, forged, keys=[PUB, OTHER_KEY.public_key()]
    ).ok  # if you trust that key, it is fine


@pytest.mark.parametrize("verify", VERIFIERS)
def test_forged_checkpoint_signature(verify: Callable[..., VerifyResult]) -> None:
    events, cps = build(30)
    tampered = rehash_from(events, 12, {"n": "rewritten"})
    # Same key fingerprint, heads updated to the rewritten chain, signatures cannot be.
    forged = [
        c if c.event_id < 12 else dataclasses.replace(c, head_hash=tampered[c.event_id - 1].hash)
        for c in cps
    ]
    r = verify(tampered, forged)
    expect(r, "bad_checkpoint", 20)
    assert r.problem is not None and "does not verify" in r.problem.message
    sig = bytearray(__import__("base64").b64decode(cps[0].signature))
    sig[0] ^= 1
    flipped = dataclasses.replace(
        cps[0], signature=__import__("base64").b64encode(bytes(sig)).decode()
    )
    expect(verify(events, [flipped, *cps[1:]]), "bad_checkpoint", 10)
    garbage = dataclasses.replace(cps[0], signature="%%%")
    expect(verify(events, [garbage, *cps[1:]]), "bad_checkpoint", 10)


@pytest.mark.parametrize("verify", VERIFIERS)
def test_forged_checkpoint_past_the_end_is_a_bad_checkpoint(
    verify: Callable[..., VerifyResult],
) -> None:
    events, cps = build(20)
    fake = dataclasses.replace(cps[-1], event_id=25, head_hash="ab" * 32)
    expect(verify(events, [*cps, fake]), "bad_checkpoint", 25)


@pytest.mark.parametrize("verify", VERIFIERS)
def test_unsigned_tail(verify: Callable[..., VerifyResult]) -> None:
    events, cps = build(25, head=False)  # checkpoints at 10 and 20 only
    r = verify(events, cps)
    expect(r, "unsigned_tail", 21)
    assert r.problem is not None and r.problem.until_id == 25 and r.signed_through == 20
    r = verify(events, cps, allow_unsigned_tail=True)
    assert r.ok and r.signed_through == 20 and r.head_id == 25
    # An event appended by someone else is exactly such a tail.
    events, cps = build(20)
    extra = make_event(
        events[-1],
        id=21,
        at=at(21),
        type="request.approved",
        actor="mallory",
        request_id="r",
        data={},
    )
    expect(verify([*events, extra], cps), "unsigned_tail", 21)
    expect(verify(events, []), "unsigned_tail", 1)


def test_without_keys_only_integrity_is_checked() -> None:
    events, cps = build(30)
    r = verify_chain(events, cps, None)
    assert r.ok and r.checkpoints_checked == 3 and r.signed_through is None
    # Careless edits and stale checkpoint heads are still caught ...
    tampered = rehash_from(events, 12, {"n": 0})
    expect(verify_chain(tampered, cps, None), "rewritten", 11)
    # ... but not an attacker who also rewrites the heads: only a signature stops that.
    heads = [dataclasses.replace(c, head_hash=tampered[c.event_id - 1].hash) for c in cps]
    assert verify_chain(tampered, heads, None).ok
    expect(verify_chain(tampered, heads, [PUB]), "bad_checkpoint", 20)


def test_checkpoint_lines_may_stand_anywhere() -> None:
    events, cps = build(30)
    event_lines = [event_line(e) + "\n" for e in events]
    cp_lines = [checkpoint_line(c) + "\n" for c in cps]
    for lines in (
        event_lines + cp_lines,
        cp_lines + event_lines,
        cp_lines[::-1] + event_lines,
        event_lines[:15] + cp_lines + event_lines[15:],
    ):
        r = verify_export_lines(lines, [PUB], expect_first_id=1)
        assert r.ok and r.checkpoints_checked == 3, r.problem
    # Checked late, a stale checkpoint still catches the rewrite, and names the same range.
    tampered = rehash_from(events, 14, {"n": 0})
    lines = [event_line(e) + "\n" for e in tampered] + cp_lines
    r = verify_export_lines(lines, [PUB])
    expect(r, "rewritten", 11)
    assert r.problem is not None and r.problem.until_id == 20 and r.problem.line == 32
    # In another order the range may be wider (the head's checkpoint, read first, is checked
    # before the others vouch for 1..10), but it still holds the rewritten event.
    r = verify_export_lines([event_line(e) + "\n" for e in tampered] + cp_lines[::-1], [PUB])
    assert r.problem is not None and r.problem.kind == "rewritten"
    assert r.problem.event_id <= 14 <= (r.problem.until_id or 0)
    r = verify_export_lines(
        [event_line(e) + "\n" for e in tampered] + [cp_lines[1], cp_lines[0], cp_lines[2]], [PUB]
    )
    expect(r, "rewritten", 11)  # earlier events' checkpoints are checked in id order


def _respell(line: str, how: str) -> str:
    """``line`` (one canonical export line) written another way that parses to the same event."""
    body = line.rstrip("\n")
    if how == "duplicate key":
        # The parser keeps the last "actor"; a reader (or grep) sees "mallory".
        return body.replace('"actor":', '"actor":"mallory","actor":', 1) + "\n"
    if how == "duplicate kind":
        return body.replace('{"kind":"event",', '{"kind":"event","kind":"event",', 1) + "\n"
    if how == "reordered keys":
        obj = json.loads(body)
        return (
            json.dumps(dict(reversed(list(obj.items()))), ensure_ascii=False, separators=(",", ":"))
            + "\n"
        )
    if how == "extra whitespace":
        return body.replace('":', '": ', 1) + "\n"
    if how == "trailing space":
        return body + " \n"
    if how == "ascii escapes":
        return json.dumps(json.loads(body), ensure_ascii=True, separators=(",", ":")) + "\n"
    if how == "escaped slash":
        return body.replace("/", "\\/", 1) + "\n"
    if how == "jq":
        return json.dumps(json.loads(body), ensure_ascii=True) + "\r\n"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "duplicate key",
        "duplicate kind",
        "reordered keys",
        "extra whitespace",
        "trailing space",
        "ascii escapes",
        "escaped slash",
        "jq",
    ],
)
@pytest.mark.parametrize("keys", [[PUB], None])
def test_a_line_not_in_canonical_form_is_refused_naming_its_line(how: str, keys: Any) -> None:
    events, cps = build(
        9, every=3, data=lambda i: {"note": "zürich ✓ a/b", "n": i, "nested": {"id": i * 100}}
    )
    lines = list(export_lines(events, cps))
    assert verify_export_lines(lines, keys, expect_first_id=1).ok
    n = next(i for i, line in enumerate(lines) if '"id":5,' in line) + 1  # a 1-based line number
    bad = list(lines)
    bad[n - 1] = _respell(lines[n - 1], how)
    assert bad[n - 1] != lines[n - 1]
    # It still parses to the very same event: a lenient verifier accepts it.
    assert parse_export([lines[n - 1]])[0] == [json_event(bad[n - 1])]
    with pytest.raises(InvalidAuditExport, match=f"^line {n}: ") as e:
        verify_export_lines(bad, keys, expect_first_id=1)
    assert e.value.line == n
    if how.startswith("duplicate"):
        assert "duplicate key" in str(e.value)
    else:
        assert "canonical form" in str(e.value)
    with pytest.raises(InvalidAuditExport, match=f"^line {n}: "):
        verify_export_file(io.BytesIO("".join(bad).encode("utf-8")), keys, expect_first_id=1)
    with pytest.raises(InvalidAuditExport, match=f"^line {n}: "):
        parse_export(bad)


def json_event(line: str) -> AuditEvent:
    obj = json.loads(line)
    return AuditEvent(
        id=obj["id"],
        at=obj["at"],
        type=obj["type"],
        actor=obj["actor"],
        request_id=obj["request_id"],
        data=obj["data"],
        prev_hash=obj["prev_hash"],
        hash=obj["hash"],
    )


@pytest.mark.parametrize("how", ["reordered keys", "extra whitespace", "duplicate key"])
def test_a_checkpoint_line_not_in_canonical_form_is_refused(how: str) -> None:
    events, cps = build(6, every=3)
    lines = list(export_lines(events, cps))
    n = next(i for i, line in enumerate(lines) if line.startswith('{"kind":"checkpoint"')) + 1
    body = lines[n - 1].rstrip("\n")
    if how == "reordered keys":
        obj = json.loads(body)
        bad = json.dumps(
            {
                "kind": "checkpoint",
                **dict(reversed([(k, v) for k, v in obj.items() if k != "kind"])),
            },
            separators=(",", ":"),
        )
    elif how == "extra whitespace":
        bad = body.replace(",", ", ")
    else:
        bad = body.replace('"at":', '"at":"1999-01-01T00:00:00.000000Z","at":', 1)
    lines[n - 1] = bad + "\n"
    with pytest.raises(InvalidAuditExport, match=f"^line {n}: "):
        verify_export_lines(lines, [PUB])


def test_an_edit_in_a_canonical_line_is_still_named() -> None:
    events, cps = build(15, every=5)
    lines = list(export_lines(events, cps))
    obj = json.loads(lines[7])
    obj["data"] = {"n": 0}
    # Written exactly as the server writes lines, so it is read as an edit, not refused as malformed.
    lines[7] = '{{"kind":"event","prev_hash":"{}","hash":"{}",{}\n'.format(
        obj["prev_hash"],
        obj["hash"],
        canonical_json(
            {k: obj[k] for k in ("id", "at", "type", "actor", "request_id", "data")}
        ).decode()[1:],
    )
    expect(verify_export_lines(lines, [PUB]), "edited", obj["id"])


def test_nested_id_keys_do_not_confuse_the_fast_path() -> None:
    events, cps = build(
        12, every=4, data=lambda i: {"id": 10**6 - i, "list": [{"id": 5}], "zz": {"id": 7}}
    )
    assert via_file(events, cps).ok
    swapped = list(events)
    swapped[2], swapped[3] = swapped[3], swapped[2]
    expect(via_file(swapped, cps), "reordered", 3)


def test_a_tampered_row_that_is_not_canonical_json_exports_and_fails() -> None:
    # Someone with SQL access puts a float (or NaN) in the data column: export
    # must not crash, verify must name the row.
    events, cps = build(10, every=5)
    for bad in (1.5, float("nan")):
        tampered = list(events)
        tampered[3] = dataclasses.replace(events[3], data={"n": bad})
        expect(via_file(tampered, cps), "edited", 4)
        expect(via_objects(tampered, cps), "edited", 4)
    tampered = list(events)
    tampered[3] = dataclasses.replace(events[3], hash="XYZ")
    expect(via_file(tampered, cps), "edited", 4)
    tampered[3] = dataclasses.replace(events[3], prev_hash="not hex")
    expect(via_file(tampered, cps), "edited", 4)


def test_first_event_must_link_to_genesis() -> None:
    events, cps = build(5, every=0)
    bad = rehash_one(events[0], prev_hash="11" * 32)
    r = verify_chain([bad, *events[1:]], cps, [PUB])
    expect(r, "edited", 1)


def test_verify_export_file_streams_str_and_bytes_alike() -> None:
    events, cps = build(12, every=4)
    text = list(export_lines(events, cps))
    a = verify_export_lines(text, [PUB])
    b = verify_export_lines([t.encode() for t in text], [PUB])
    assert a == b and a.ok


def test_iter_export_is_lazy() -> None:
    events, cps = build(3, every=0)
    lines = iter([*export_lines(events, cps), "garbage\n"])
    it = iter_export(lines)
    assert next(it) == events[0]
    with pytest.raises(InvalidAuditExport, match="line 5"):
        list(it)


# --------------------------------------------------------------------------- properties

TAMPERINGS = [
    "edit",
    "edit_rehash",
    "delete",
    "delete_renumber",
    "insert_dup",
    "insert_renumber",
    "swap",
    "rewrite",
    "truncate",
    "forge_sig",
    "forge_head",
    "drop_checkpoints",
    "append",
    "other_key",
]


def tamper(
    events: list[AuditEvent], cps: list[Checkpoint], how: str, draw: Any
) -> tuple[list[AuditEvent], list[Checkpoint]]:
    n = len(events)
    ev = list(events)
    k = draw(st.integers(1, n))
    if how == "edit":
        ev[k - 1] = dataclasses.replace(ev[k - 1], data={**ev[k - 1].data, "tampered": True})
    elif how == "edit_rehash":
        ev[k - 1] = rehash_one(ev[k - 1], data={**ev[k - 1].data, "tampered": True})
    elif how == "delete":
        del ev[k - 1]
    elif how == "delete_renumber":
        ev = ev[: k - 1] + [dataclasses.replace(e, id=e.id - 1) for e in ev[k:]]
    elif how == "insert_dup":
        prev = ev[k - 2] if k > 1 else None
        fake = make_event(
            prev, id=k, at=at(k), type="request.approved", actor="mallory", request_id=None, data={}
        )
        ev.insert(draw(st.sampled_from([k - 1, k])), fake)
    elif how == "insert_renumber":
        prev = ev[k - 2] if k > 1 else None
        fake = make_event(
            prev, id=k, at=at(k), type="request.approved", actor="mallory", request_id=None, data={}
        )
        ev = ev[: k - 1] + [fake] + [dataclasses.replace(e, id=e.id + 1) for e in ev[k - 1 :]]
    elif how == "swap":
        assume(n >= 2)
        j = draw(st.integers(1, n).filter(lambda j: j != k))
        ev[k - 1], ev[j - 1] = ev[j - 1], ev[k - 1]
    elif how == "rewrite":
        ev = rehash_from(ev, k, {"tampered": True})
    elif how == "truncate":
        ev = ev[: k - 1]
    elif how == "forge_sig":
        i = draw(st.integers(0, len(cps) - 1))
        cps = list(cps)
        cps[i] = dataclasses.replace(
            cps[i],
            signature=sign_checkpoint(OTHER_KEY, events[cps[i].event_id - 1], cps[i].at).signature,
        )
    elif how == "forge_head":
        # Rewrite from k and point every later checkpoint at the new heads (the signatures cannot follow).
        ev = rehash_from(ev, k, {"tampered": True})
        cps = [
            c if c.event_id < k else dataclasses.replace(c, head_hash=ev[c.event_id - 1].hash)
            for c in cps
        ]
    elif how == "drop_checkpoints":
        cps = []
    elif how == "append":
        ev.append(
            make_event(
                ev[-1],
                id=n + 1,
                at=at(n + 1),
                type="request.approved",
                actor="mallory",
                request_id=None,
                data={},
            )
        )
    elif how == "other_key":
        ev = rehash_from(ev, k, {"tampered": True})
        cps = [
            c if c.event_id < k else sign_checkpoint(OTHER_KEY, ev[c.event_id - 1], c.at)
            for c in cps
        ]
    return ev, cps


@st.composite
def chains(draw: Any) -> tuple[list[AuditEvent], list[Checkpoint]]:
    n = draw(st.integers(1, 25))
    payloads = draw(
        st.lists(
            st.dictionaries(st.sampled_from(["a", "id", "n", "é"]), json_values, max_size=3),
            min_size=n,
            max_size=n,
        )
    )
    events: list[AuditEvent] = []
    prev = None
    for i in range(1, n + 1):
        try:
            prev = make_event(
                prev,
                id=i,
                at=at(i),
                type="request.created",
                actor=None,
                request_id=f"r{i}",
                data=payloads[i - 1],
            )
        except InvalidAuditEvent:  # a lone surrogate drawn
            prev = make_event(
                prev,
                id=i,
                at=at(i),
                type="request.created",
                actor=None,
                request_id=f"r{i}",
                data={},
            )
        events.append(prev)
    marks = sorted(
        set(draw(st.lists(st.integers(1, n), max_size=4))) | {n}
    )  # the head is always signed
    cps = [sign_checkpoint(KEY, events[m - 1], at(m)) for m in marks]
    return events, cps


@given(chains())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_property_untouched_chain_always_verifies(
    chain: tuple[list[AuditEvent], list[Checkpoint]],
) -> None:
    events, cps = chain
    for verify in (via_objects, via_file):
        r = verify(events, cps, expect_first_id=1)
        assert r.ok, r.problem
        assert r.events_checked == len(events) and r.head_hash == events[-1].hash


@given(chains(), st.sampled_from(TAMPERINGS), st.data())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_property_a_tampered_chain_never_verifies(
    chain: tuple[list[AuditEvent], list[Checkpoint]], how: str, data: st.DataObject
) -> None:
    events, cps = chain
    ev, cp = tamper(events, cps, how, data.draw)
    assume((ev, cp) != (events, cps))
    a = via_objects(ev, cp, expect_first_id=1)
    b = via_file(ev, cp, expect_first_id=1)
    assert not a.ok, (how, a)
    assert not b.ok, (how, b)
    # Both entry points tell the same story.
    assert a.problem is not None and b.problem is not None
    assert (a.problem.kind, a.problem.event_id) == (b.problem.kind, b.problem.event_id), (
        how,
        a.problem,
        b.problem,
    )
    if how in ("edit",):
        assert a.problem.kind == ProblemKind.EDITED


@given(chains(), st.integers(1, 25), st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_property_single_edit_names_exactly_that_event(
    chain: tuple[list[AuditEvent], list[Checkpoint]], k: int, data: st.DataObject
) -> None:
    events, cps = chain
    assume(k <= len(events))
    ev = list(events)
    ev[k - 1] = dataclasses.replace(ev[k - 1], data={**ev[k - 1].data, "tampered": True})
    for verify in (via_objects, via_file):
        expect(verify(ev, cps), "edited", k)
    ev = list(events)
    del ev[k - 1]
    if k == len(events):
        expect(via_objects(ev, cps), "deleted", k)
    elif k > 1:
        expect(via_objects(ev, cps), "deleted", k)


@given(st.lists(st.text(max_size=40) | st.binary(max_size=40), max_size=6))
@settings(max_examples=200, deadline=None)
def test_property_garbage_never_crashes_the_verifier(lines: list[Any]) -> None:
    try:
        r = verify_export_lines(lines, [PUB])
    except InvalidAuditExport:
        return
    assert isinstance(r, VerifyResult)


def test_verify_export_file_accepts_a_text_stream() -> None:
    events, cps = build(12, every=4)
    r = verify_export_file(io.StringIO("".join(export_lines(events, cps))), [PUB])
    assert r.ok and r.events_checked == 12


def test_absurd_ids_do_not_crash_the_fast_path() -> None:
    events, cps = build(3, every=0)
    lines = list(export_lines(events, cps))
    lines[1] = lines[1].replace('"id":2,', '"id":' + "9" * 30 + ",")
    expect(verify_export_lines(lines, [PUB]), "edited", 2)
    lines[1] = lines[1].replace('"id":' + "9" * 30 + ",", '"id":' + "9" * 5000 + ",")
    with pytest.raises(InvalidAuditExport, match="line 2"):
        verify_export_lines(lines, [PUB])


# --------------------------------------------------------------------------- a pure library


def test_ca_audit_imports_neither_flask_nor_sqlalchemy_nor_click() -> None:
    # A fresh interpreter: this test process has long imported the server.
    code = (
        "import sys, ca.audit, ca.audit.chain, ca.audit.keys, ca.audit.export, ca.audit.verify\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(out.split())
    assert "ca" in loaded
    assert not loaded & {"flask", "sqlalchemy", "click", "server", "client", "werkzeug"}, loaded


def test_the_package_exports_what_it_names() -> None:
    import ca.audit

    assert sorted(ca.audit.__all__) == sorted(set(ca.audit.__all__))
    for name in ca.audit.__all__:
        assert hasattr(ca.audit, name), name


def test_format_at_pads_early_years_so_the_time_is_accepted() -> None:
    # strftime("%Y") writes year 999 as "999": the time would fail every reader's check.
    t = datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert format_at(t) == "0999-01-02T03:04:05.000000Z"
    make_event(None, id=1, at=format_at(t), type="x", actor=None, request_id=None, data={})


# --------------------------------------------------------------------------- properties: the line format

names = st.none() | st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=30
)
event_types = st.from_regex(r"[a-z][a-z0-9_.\-]{0,20}", fullmatch=True)
times = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)
data_values = st.dictionaries(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=8),
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.text(st.characters(blacklist_categories=("Cs",)), max_size=8),
                children,
                max_size=4,
            )
        ),
        max_leaves=15,
    ),
    max_size=4,
)


@st.composite
def any_events(draw: Any) -> list[AuditEvent]:
    """A chain of events with drawn fields: any names, types, times and data."""
    events: list[AuditEvent] = []
    prev = None
    for i in range(1, draw(st.integers(1, 6)) + 1):
        prev = make_event(
            prev,
            id=i,
            at=format_at(draw(times)),
            type=draw(event_types),
            actor=draw(names),
            request_id=draw(names),
            data=draw(data_values),
        )
        events.append(prev)
    return events


@given(times)
@settings(max_examples=200, deadline=None)
def test_property_format_at_is_fixed_width_and_round_trips(t: datetime) -> None:
    text = format_at(t)
    assert len(text) == len("2026-11-29T12:00:00.000000Z") and text.endswith("Z")
    assert datetime.fromisoformat(text.replace("Z", "+00:00")) == t
    make_event(None, id=1, at=text, type="x", actor=None, request_id=None, data={})


@given(any_events())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_property_event_line_round_trips_byte_for_byte(events: list[AuditEvent]) -> None:
    for ev in events:
        line = event_line(ev)
        (parsed,) = list(iter_export([line]))
        assert parsed == ev
        assert event_line(parsed) == line
        # The hashed body is a literal slice of the line.
        assert ("{" + line.split('"hash":"', 1)[1][66:]).encode() == ev.body()
        assert hashlib.sha256(bytes.fromhex(ev.prev_hash) + ev.body()).hexdigest() == ev.hash


@given(any_events(), st.lists(times, min_size=1, max_size=3), st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_property_export_round_trips_and_verifies(
    events: list[AuditEvent], cp_times: list[datetime], data: st.DataObject
) -> None:
    cps = [sign_checkpoint(KEY, data.draw(st.sampled_from(events)), format_at(t)) for t in cp_times]
    cps.append(sign_checkpoint(KEY, events[-1], format_at(cp_times[0])))
    text = "".join(export_lines(events, cps))
    # Lines end at "\n" only: str.splitlines would also cut at U+0085 or U+2028 inside a string.
    got_events, got_cps = parse_export(io.StringIO(text, newline="\n"))
    assert got_events == events
    assert sorted(got_cps, key=lambda c: c.event_id) == sorted(cps, key=lambda c: c.event_id)
    assert "".join(export_lines(got_events, got_cps)) == text
    # As bytes and as str, with and without the key, the export verifies.
    for keys in ([PUB], None):
        r = verify_export_lines(text.encode("utf-8").splitlines(keepends=True), keys)
        assert r.ok, r.problem
        assert (r.events_checked, r.head_hash) == (len(events), events[-1].hash)
    assert verify_chain(got_events, got_cps, [PUB], expect_first_id=1).ok


@given(any_events(), st.sampled_from(["indent", "ascii", "spaces", "sorted"]))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_property_a_reformatted_line_is_identical_or_refused(
    events: list[AuditEvent], how: str
) -> None:
    for ev in events:
        line = event_line(ev)
        obj = json.loads(line)
        other = {
            "indent": lambda: json.dumps(obj, ensure_ascii=False, indent=1),
            "ascii": lambda: json.dumps(obj, separators=(",", ":")),
            "spaces": lambda: json.dumps(obj, ensure_ascii=False),
            "sorted": lambda: json.dumps(
                obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True
            ),
        }[how]().replace("\n", "")
        if other == line:
            continue
        # The lines mean the same, but evidence has one spelling.
        with pytest.raises(InvalidAuditExport, match="line 1: event is not in canonical form"):
            list(iter_export([other]))
        with pytest.raises(InvalidAuditExport, match="line 1"):
            verify_export_lines([other], None)


def test_offline_audit_verify_loads_no_server(tmp_path: Path) -> None:
    # `jit-ssh audit verify FILE --pubkey PUB` runs where only the CLI is installed.
    events, cps = build(12, every=5)
    good = tmp_path / "audit.jsonl"
    good.write_text("".join(export_lines(events, cps)), encoding="utf-8")
    bad = tmp_path / "edited.jsonl"
    edited = [*events[:4], dataclasses.replace(events[4], actor="mallory"), *events[5:]]
    bad.write_text("".join(export_lines(edited, cps)), encoding="utf-8")
    pub = tmp_path / "audit_ed25519.pub"
    pub.write_text(audit_public_key_text(KEY) + "\n")
    code = (
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from client.cli import cli\n"
        "out = []\n"
        "for f in sys.argv[1:3]:\n"
        "    r = CliRunner().invoke(cli, ['audit', 'verify', f, '--pubkey', sys.argv[3]])\n"
        "    out.append([r.exit_code, r.output])\n"
        "out.append(sorted({m.split('.')[0] for m in sys.modules}))\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(good), str(bad), str(pub)],
        capture_output=True,
        text=True,
        check=True,
    )
    (ok_code, ok_out), (bad_code, bad_out), loaded = json.loads(run.stdout)
    assert ok_code == 0 and "audit log OK: 12 events, 3 checkpoints, head 12" in ok_out
    assert bad_code == 1 and "audit log FAILED at event 5: edited" in bad_out
    assert not set(loaded) & {"flask", "sqlalchemy", "server"}, loaded
