"""Unit and property tests for ca.krl: build, parse, validate, compact."""

from __future__ import annotations

import hashlib
import random
import struct
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from ca.errors import (
    CertificateAsKey,
    InvalidKeyError,
    InvalidKeyId,
    InvalidKRL,
    InvalidSerial,
    JitSshError,
    UnsupportedKeyType,
)
from ca.krl import KRL, MAX_KRL_SIZE, KRLCertSection, build_krl, empty_krl, parse_krl

try:
    import krl_helpers as h
except ImportError:  # pragma: no cover - when tests/ is imported as a package
    from tests import krl_helpers as h

NOW = datetime(2024, 5, 1, 12, 30, 45, tzinfo=UTC)
U64_MAX = 2**64 - 1
MAGIC = b"SSHKRL\n\0"

# One fixed set of keys for the whole module keeps hypothesis fast.
POOL = h.public_key_pool()
CA_A, CA_B = POOL[0], POOL[2]
CA_POOL = (b"", CA_A, CA_B, POOL[5])


# --- helpers ---------------------------------------------------------------


def sections_of(data: bytes) -> list[tuple[int, bytes]]:
    """Top-level (type, body) pairs of a KRL we trust to be well formed."""
    pos = len(MAGIC) + 4 + 8 + 8 + 8
    for _ in range(2):  # reserved, comment
        (n,) = struct.unpack_from(">I", data, pos)
        pos += 4 + n
    out = []
    while pos < len(data):
        kind = data[pos]
        (n,) = struct.unpack_from(">I", data, pos + 1)
        out.append((kind, data[pos + 5 : pos + 5 + n]))
        pos += 5 + n
    return out


def subsections_of(cert_body: bytes) -> list[tuple[int, bytes]]:
    pos = 0
    for _ in range(2):  # CA key, reserved
        (n,) = struct.unpack_from(">I", cert_body, pos)
        pos += 4 + n
    out = []
    while pos < len(cert_body):
        kind = cert_body[pos]
        (n,) = struct.unpack_from(">I", cert_body, pos + 1)
        out.append((kind, cert_body[pos + 5 : pos + 5 + n]))
        pos += 5 + n
    return out


def serial_subsection_kinds(data: bytes) -> list[int]:
    """Serial subsection types of the first certificate section, in order."""
    body = next(body for kind, body in sections_of(data) if kind == 1)
    return [k for k, _ in subsections_of(body) if k != 0x23]


def reference_ranges(items: list[int | tuple[int, int]]) -> list[tuple[int, int]]:
    """Independent, obviously-correct merge of serials into disjoint runs."""
    spans = sorted((i, i) if isinstance(i, int) else i for i in items)
    out: list[list[int]] = []
    for lo, hi in spans:
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def header(version: int = 1, date: int = 0, flags: int = 0, comment: bytes = b"") -> bytes:
    return (
        MAGIC
        + struct.pack(">IQQQ", 1, version, date, flags)
        + h.ssh_string(b"")
        + h.ssh_string(comment)
    )


def section(kind: int, body: bytes) -> bytes:
    return struct.pack(">BI", kind, len(body)) + body


def cert_section(ca: bytes, *subs: bytes) -> bytes:
    return section(1, h.ssh_string(ca) + h.ssh_string(b"") + b"".join(subs))


def bitmap_sub(lo: int, bits: bytes) -> bytes:
    return section(0x22, struct.pack(">Q", lo) + h.ssh_string(bits))


# --- strategies ------------------------------------------------------------

serial_st = st.one_of(
    st.integers(1, 2000),  # dense: produces runs and merges
    st.integers(1, U64_MAX),
    st.sampled_from([1, 2, U64_MAX - 1, U64_MAX]),
)


@st.composite
def range_st(draw: st.DrawFn) -> tuple[int, int]:
    lo = draw(serial_st)
    width = draw(st.one_of(st.integers(0, 5), st.integers(0, 2**40)))
    return lo, min(lo + width, U64_MAX)


serial_items_st = st.lists(st.one_of(serial_st, range_st()), max_size=40)
key_id_st = st.text(
    alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=20,
)


# --- round trips -----------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    items=serial_items_st,
    key_ids=st.lists(key_id_st, max_size=6),
    cas=st.lists(st.sampled_from(CA_POOL), min_size=1, max_size=4),
    keys=st.lists(st.sampled_from(POOL), max_size=5),
    digests=st.lists(st.binary(min_size=32, max_size=32), max_size=3),
    version=st.integers(0, U64_MAX),
    comment=st.text(
        alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=30
    ),
)
def test_build_then_parse_gives_back_the_same_sets(
    items, key_ids, cas, keys, digests, version, comment
):
    data = build_krl(
        ca_keys=cas,
        serials=items,
        key_ids=key_ids,
        public_keys=keys,
        sha256_fingerprints=digests,
        version=version,
        now=NOW,
        comment=comment,
    )
    krl = parse_krl(data)
    assert krl.version == version
    assert krl.comment == comment
    assert krl.generated_at == NOW.replace(microsecond=0)
    expected = tuple(reference_ranges(items))
    if items or key_ids:
        assert [s.ca_key for s in krl.cert_sections] == sorted(set(cas))
        for sec in krl.cert_sections:
            assert sec.serial_ranges == expected
            assert set(sec.key_ids) == set(key_ids)
            assert len(sec.key_ids) == len(set(key_ids))
    else:
        assert krl.cert_sections == ()
    assert krl.revoked_keys == tuple(sorted(set(keys)))
    assert krl.revoked_sha256 == tuple(sorted(set(digests)))
    assert krl.revoked_sha1 == ()
    # We never write bitmap subsections (OpenSSH 9.2 cannot read long ones).
    for kind, body in sections_of(data):
        if kind == 1:
            assert {k for k, _ in subsections_of(body)} <= {0x20, 0x21, 0x23}


@settings(max_examples=100, deadline=None)
@given(items=serial_items_st, key_ids=st.lists(key_id_st, max_size=4), seed=st.integers())
def test_output_is_deterministic_whatever_the_input_order(items, key_ids, seed):
    shuffled_items, shuffled_ids = list(items), list(key_ids) * 2
    random.Random(seed).shuffle(shuffled_items)
    random.Random(seed).shuffle(shuffled_ids)
    a = build_krl(ca_keys=[CA_B, CA_A], serials=items, key_ids=key_ids, version=3, now=NOW)
    b = build_krl(
        ca_keys=[CA_A, CA_B, CA_A], serials=shuffled_items, key_ids=shuffled_ids, version=3, now=NOW
    )
    assert a == b


@settings(max_examples=200, deadline=None)
@given(items=serial_items_st, key_ids=st.lists(key_id_st, max_size=4), data=st.data())
def test_is_revoked_agrees_with_set_membership(items, key_ids, data):
    krl = parse_krl(build_krl(ca_keys=[CA_A], serials=items, key_ids=key_ids, version=1, now=NOW))
    spans = reference_ranges(items)
    near = [v for lo, hi in spans for v in (lo - 1, lo, hi, hi + 1)]
    probes = data.draw(st.lists(st.one_of(serial_st, st.sampled_from(near or [1])), max_size=20))
    for probe in probes:
        if not 0 <= probe <= U64_MAX:
            continue
        expected = probe != 0 and any(lo <= probe <= hi for lo, hi in spans)
        assert krl.is_revoked(probe, "not-revoked-id", CA_A) is expected
        # Another CA's certificates are untouched by this CA's section.
        assert krl.is_revoked(probe, "not-revoked-id", CA_B) is False
    for key_id in key_ids:
        assert krl.is_revoked(0, key_id, CA_A) is True
        assert krl.is_revoked(0, key_id, CA_B) is False


def test_is_revoked_by_key_and_fingerprint_and_wildcard() -> None:
    user, other, ca_key = POOL[1], POOL[3], POOL[4]
    krl = parse_krl(
        build_krl(
            ca_keys=[b""],
            serials=[77],
            public_keys=[user, ca_key],
            sha256_fingerprints=[hashlib.sha256(other).digest()],
            version=1,
            now=NOW,
        )
    )
    assert krl.is_revoked(5, "x", CA_A, user)  # the certified key itself
    assert krl.is_revoked(5, "x", CA_A, other)  # by SHA256 fingerprint
    assert krl.is_revoked(5, "x", ca_key, POOL[6])  # the CA key is revoked
    assert krl.is_revoked(77, "x", CA_B)  # wildcard section, any CA
    assert not krl.is_revoked(78, "x", CA_B, POOL[6])
    assert not krl.is_revoked(0, "x", CA_B)  # serial 0 is never revoked by serial


def test_is_revoked_checks_sha1_from_foreign_krls() -> None:
    blob = POOL[7]
    data = header() + section(3, h.ssh_string(hashlib.sha1(blob).digest()))
    krl = parse_krl(data)
    assert krl.revoked_sha1 == (hashlib.sha1(blob).digest(),)
    assert krl.is_revoked(1, "x", CA_A, blob)
    assert not krl.is_revoked(1, "x", CA_A, POOL[8])


@pytest.mark.parametrize("serial", [-1, 2**64, True, "5", 1.0])
def test_is_revoked_refuses_bad_serial(serial) -> None:
    krl = parse_krl(empty_krl(version=1, now=NOW))
    with pytest.raises(InvalidSerial):
        krl.is_revoked(serial, "x", CA_A)


# --- compaction ------------------------------------------------------------


def test_consecutive_serials_become_one_range() -> None:
    data = build_krl(ca_keys=[CA_A], serials=range(1000, 101_000), version=1, now=NOW)
    assert serial_subsection_kinds(data) == [0x21]
    assert len(data) < 200
    assert parse_krl(data).cert_sections[0].serial_ranges == ((1000, 100_999),)


def test_scattered_serials_share_one_list() -> None:
    data = build_krl(ca_keys=[CA_A], serials=[9, 3, 1, 7, 5, 5], version=1, now=NOW)
    [(kind, body)] = [s for s in subsections_of(sections_of(data)[0][1])]
    assert kind == 0x20
    assert struct.unpack(f">{len(body) // 8}Q", body) == (1, 3, 5, 7, 9)


@pytest.mark.parametrize(
    ("serials", "kinds"),
    [
        ([5, 6], [0x20]),  # a pair: 16 bytes listed < 21 as a range
        ([5, 6, 7], [0x21]),  # alone, a run of 3 is smaller as a range
        ([1, 10, 11, 12, 20], [0x20]),  # between singles it stays listed (24 < 21 + 5)
        ([1, 10, 11, 12, 13, 20], [0x20, 0x21, 0x20]),  # a run of 4 leaves the list
        ([(1, 2**63)], [0x21]),
        ([1, (3, 2**40), 2**41], [0x20, 0x21, 0x20]),
    ],
)
def test_list_or_range_choice_is_the_smaller(serials, kinds) -> None:
    assert (
        serial_subsection_kinds(build_krl(ca_keys=[CA_A], serials=serials, version=1, now=NOW))
        == kinds
    )


@settings(max_examples=150, deadline=None)
@given(items=serial_items_st)
def test_compaction_is_no_larger_than_all_lists_or_all_ranges(items):
    assume(items)
    data = build_krl(ca_keys=[CA_A], serials=items, version=1, now=NOW)
    runs = reference_ranges(items)
    serial_bytes = sum(len(body) + 5 for kind, body in subsections_of(sections_of(data)[0][1]))
    all_ranges = 21 * len(runs)
    total = sum(hi - lo + 1 for lo, hi in runs)
    all_list = 5 + 8 * total
    assert serial_bytes <= min(all_ranges, all_list)


def test_merges_overlapping_and_adjacent_input() -> None:
    krl = parse_krl(
        build_krl(
            ca_keys=[CA_A], serials=[(10, 20), (15, 30), 31, (40, 41), 39, 5], version=1, now=NOW
        )
    )
    assert krl.cert_sections[0].serial_ranges == ((5, 5), (10, 31), (39, 41))


# --- the builder refuses bad input ----------------------------------------


@pytest.mark.parametrize(
    "bad", [0, -1, 2**64, True, 1.5, "7", (0, 5), (5, 4), (1, 2**64), (1,), [1, 2]]
)
def test_build_refuses_bad_serials(bad) -> None:
    with pytest.raises(InvalidSerial) as err:
        build_krl(ca_keys=[CA_A], serials=[bad], version=1, now=NOW)
    assert err.value.field == "serials"
    assert err.value.code == "invalid_serial"


def test_build_refuses_a_bare_int_as_serials() -> None:
    with pytest.raises(InvalidSerial):
        build_krl(ca_keys=[CA_A], serials=5, version=1, now=NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "a\0b", "\ud800", 5])
def test_build_refuses_bad_key_ids(bad) -> None:
    with pytest.raises(InvalidKeyId) as err:
        build_krl(ca_keys=[CA_A], key_ids=[bad], version=1, now=NOW)
    assert err.value.field == "key_ids"


def test_build_refuses_a_bare_string_as_key_ids() -> None:
    with pytest.raises(InvalidKeyId):
        build_krl(ca_keys=[CA_A], key_ids="foo", version=1, now=NOW)


def test_build_refuses_bad_keys() -> None:
    cert_blob = h.ssh_string(b"ssh-ed25519-cert-v01@openssh.com") + b"\0" * 40
    with pytest.raises(CertificateAsKey):
        build_krl(ca_keys=[], public_keys=[cert_blob], version=1, now=NOW)
    with pytest.raises(UnsupportedKeyType):
        build_krl(
            ca_keys=[],
            public_keys=[h.ssh_string(b"ssh-foo") + h.ssh_string(b"x")],
            version=1,
            now=NOW,
        )
    with pytest.raises(InvalidKeyError) as err:
        build_krl(ca_keys=[b"garbage"], serials=[1], version=1, now=NOW)
    assert err.value.field == "ca_keys"
    with pytest.raises(InvalidKeyError):
        build_krl(ca_keys=CA_A, serials=[1], version=1, now=NOW)  # bytes, not a list of them
    short_ed25519 = h.ssh_string(b"ssh-ed25519") + h.ssh_string(b"x" * 31)
    with pytest.raises(InvalidKeyError):
        build_krl(ca_keys=[], public_keys=[short_ed25519], version=1, now=NOW)
    off_curve = b"".join(
        h.ssh_string(f) for f in (b"ecdsa-sha2-nistp256", b"nistp256", b"\x04" + b"\1" * 64)
    )
    with pytest.raises(InvalidKeyError):
        build_krl(ca_keys=[], public_keys=[off_curve], version=1, now=NOW)
    with pytest.raises(InvalidKeyError):
        build_krl(ca_keys=[], sha256_fingerprints=[b"\0" * 31], version=1, now=NOW)


def test_build_needs_a_ca_key_for_certificate_revocations() -> None:
    with pytest.raises(InvalidKRL) as err:
        build_krl(ca_keys=[], serials=[5], version=1, now=NOW)
    assert err.value.field == "ca_keys"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"version": -1}, "version"),
        ({"version": 2**64}, "version"),
        ({"version": True}, "version"),
        ({"now": datetime(2024, 1, 1)}, "now"),  # naive
        ({"now": datetime(1969, 12, 31, tzinfo=UTC)}, "now"),
        ({"comment": "a\0b"}, "comment"),
    ],
)
def test_build_refuses_bad_header_values(kwargs, field) -> None:
    args = {"ca_keys": [], "version": 1, "now": NOW, **kwargs}
    with pytest.raises(InvalidKRL) as err:
        build_krl(**args)
    assert err.value.field == field


def test_generated_date_uses_now_in_any_timezone() -> None:
    tz = timezone(timedelta(hours=-7))
    krl = parse_krl(empty_krl(version=9, now=NOW.astimezone(tz)))
    assert krl.generated_at == NOW
    assert krl.generated_at.tzinfo == UTC


# --- empty KRL, text -------------------------------------------------------


def test_empty_krl() -> None:
    data = empty_krl(version=42, now=NOW)
    assert data.startswith(MAGIC)
    krl = parse_krl(data)
    assert krl == KRL(version=42, generated_at=NOW, comment="")
    assert not krl.is_revoked(1, "anything", CA_A, POOL[1])


def test_summary_and_text() -> None:
    krl = parse_krl(
        build_krl(
            ca_keys=[CA_A, b""],
            serials=[5, (10, 20)],
            key_ids=["jit-ssh:req=1:user=alice", "bad\nid"],
            public_keys=[POOL[1]],
            sha256_fingerprints=[b"\1" * 32],
            version=7,
            now=NOW,
            comment="rotation\ttest",
        )
    )
    summary = krl.summary()
    assert "version 7" in summary and "2024-05-01T12:30:45Z" in summary
    assert "2 CA section(s)" in summary and "24 serial(s)" in summary
    text = krl.to_text()
    assert "# KRL version 7" in text
    assert "# Comment: rotation\\ttest" in text
    assert "# Any CA (wildcard)" in text
    assert "# CA key ssh-ed25519 SHA256:" in text
    assert "serial: 5\n" in text and "serial: 10-20\n" in text
    assert "id: jit-ssh:req=1:user=alice\n" in text
    assert "id: bad\\nid\n" in text  # one entry, one line
    assert "key: ssh-ed25519 AAAA" in text
    assert "hash: SHA256:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE\n" in text


def test_reprs_stay_short() -> None:
    krl = parse_krl(build_krl(ca_keys=[CA_A], serials=range(1, 200_000, 2), version=1, now=NOW))
    assert len(repr(krl)) < 300
    assert len(repr(krl.cert_sections[0])) < 200
    assert "SHA256:" in repr(krl.cert_sections[0])


def test_section_helpers() -> None:
    sec = KRLCertSection(ca_key=CA_A, serial_ranges=((1, 1), (5, 9)), key_ids=("a",))
    assert sec.serial_count == 6
    assert [s for s in range(12) if sec.revokes_serial(s)] == [1, 5, 6, 7, 8, 9]
    assert sec.revokes(0, "a") and not sec.revokes(0, "b")


# --- the reader: what OpenSSH writes and accepts ---------------------------


def test_parses_bitmaps_lists_and_ranges_in_any_order() -> None:
    data = (
        header(version=3, date=1_700_000_000, comment=b"hand made")
        + cert_section(
            CA_A,
            section(0x20, struct.pack(">3Q", 99, 15, 3)),
            bitmap_sub(5, bytes([0x03, 0xFF, 0xE1])),  # 5, 10..20 as ssh-keygen writes it
            section(0x21, struct.pack(">QQ", 18, 25)),
            section(0x20, struct.pack(">Q", 15)),  # duplicates are fine
            section(0x23, h.ssh_string(b"foo") + h.ssh_string(b"bar")),
        )
        + cert_section(CA_A, section(0x23, h.ssh_string(b"baz")))
    )  # same CA again: merged
    krl = parse_krl(data)
    assert krl.version == 3
    assert krl.generated_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert krl.comment == "hand made"
    [sec] = krl.cert_sections
    assert sec.serial_ranges == ((3, 3), (5, 5), (10, 25), (99, 99))
    assert sec.key_ids == ("bar", "baz", "foo")


def test_parses_a_full_16384_bit_bitmap() -> None:
    bits = b"\x00\x80" + b"\0" * 2046 + b"\x01"  # sign byte + 2048 bytes: the limit
    [sec] = parse_krl(header() + cert_section(CA_A, bitmap_sub(1, bits))).cert_sections
    assert sec.serial_ranges == ((1, 1), (16384, 16384))


def test_ignores_flags_and_reserved_strings_like_openssh() -> None:
    data = MAGIC + struct.pack(">IQQQ", 1, 1, 0, 0xFF) + h.ssh_string(b"future") + h.ssh_string(b"")
    serial_list = section(0x20, struct.pack(">Q", 4))
    data += section(1, h.ssh_string(CA_A) + h.ssh_string(b"also reserved") + serial_list)
    assert parse_krl(data).cert_sections[0].serial_ranges == ((4, 4),)


def test_empty_certificate_sections_leave_no_trace() -> None:
    data = (
        header() + cert_section(CA_A) + cert_section(CA_B, section(0x20, b""), section(0x23, b""))
    )
    assert parse_krl(data) == parse_krl(header())


def test_parses_every_key_type_openssh_knows() -> None:
    data = header() + section(2, b"".join(h.ssh_string(b) for b in POOL))
    assert set(parse_krl(data).revoked_keys) == set(POOL)


def test_accepts_bytearray_and_memoryview() -> None:
    data = build_krl(ca_keys=[CA_A], serials=[1], version=1, now=NOW)
    assert parse_krl(bytearray(data)) == parse_krl(memoryview(data)) == parse_krl(data)


# --- the reader refuses corruption ----------------------------------------


def small_krl() -> bytes:
    return build_krl(
        ca_keys=[CA_A],
        serials=[3, (10, 20), 40],
        key_ids=["k"],
        public_keys=[POOL[3]],
        sha256_fingerprints=[b"\2" * 32],
        version=5,
        now=NOW,
        comment="c",
    )


def section_boundaries(data: bytes) -> list[int]:
    """Offsets where a section starts (or the data ends)."""
    first = len(header(comment=b"c"))
    ends = [first]
    for _, body in sections_of(data):
        ends.append(ends[-1] + 5 + len(body))
    assert ends[-1] == len(data)
    return ends


def test_truncation_at_every_offset_is_refused_except_at_section_boundaries() -> None:
    # The format has no overall length and no end marker, so a KRL cut exactly
    # where a section starts is a valid, smaller KRL, for OpenSSH as for us:
    # whoever transports a KRL must check its length or digest (see
    # parse_krl's docstring). Every other cut must be refused.
    data = small_krl()
    full = parse_krl(data)
    boundaries = section_boundaries(data)
    assert len(boundaries) == 4  # header | certificates | keys | sha256
    for cut in range(len(data)):
        if cut in boundaries:
            part = parse_krl(data[:cut])
            assert set(part.cert_sections) <= set(full.cert_sections)
            assert set(part.revoked_keys) <= set(full.revoked_keys)
            continue
        with pytest.raises(InvalidKRL):
            parse_krl(data[:cut])


def test_empty_krl_truncated_anywhere_is_refused() -> None:
    data = empty_krl(version=1, now=NOW)
    for cut in range(len(data)):
        with pytest.raises(InvalidKRL):
            parse_krl(data[:cut])


def test_error_messages_say_where() -> None:
    data = small_krl()
    with pytest.raises(InvalidKRL) as err:
        parse_krl(data[:-3])
    assert "byte" in str(err.value) and "section" in str(err.value)
    assert err.value.code == "invalid_krl"
    assert err.value.field == "krl"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "bad magic"),
        (b"SSHKRL\n\1" + header()[8:], "bad magic"),
        (b"ssh-ed25519 AAAA", "bad magic"),
        (MAGIC + struct.pack(">I", 2) + header()[12:], "format version 2"),
        (header() + b"\x01", "truncated"),  # trailing garbage: a lone byte
        (header() + b"\x01\x00\x00\x00\x09abc", "claims 9 bytes"),  # section length too long
        (header() + b"\x07" + h.ssh_string(b""), "unknown section type 7"),
        (header() + b"\x00" + h.ssh_string(b""), "unknown section type 0"),
        (header() + b"\x04" + h.ssh_string(CA_A) + h.ssh_string(b"sig"), "signature"),
        (
            header() + b"\xff" + h.ssh_string(h.ssh_string(b"x@y") + b"\0" + h.ssh_string(b"")),
            "extension",
        ),
        (header(comment=b"a\0b"), "NUL"),
        (header(comment=b"\xff"), "UTF-8"),
        (header(date=2**63), "year 9999"),
        (header() + cert_section(CA_A, section(0x21, struct.pack(">QQ", 20, 10))), "lo > hi"),
        (header() + cert_section(CA_A, section(0x21, struct.pack(">QQ", 0, 10))), "starts at 0"),
        (
            header() + cert_section(CA_A, section(0x21, struct.pack(">QQQ", 1, 2, 3))),
            "must be 16 bytes",
        ),
        (header() + cert_section(CA_A, section(0x20, struct.pack(">QQ", 4, 0))), "serial 0"),
        (header() + cert_section(CA_A, section(0x20, b"\0" * 12)), "multiple of 8"),
        (
            header() + cert_section(CA_A, section(0x24, b"")),
            "unknown certificate subsection type 0x24",
        ),
        (header() + cert_section(CA_A, section(0x39, b"")), "extension"),
        (header() + cert_section(CA_A, bitmap_sub(1, b"\x01" + b"\0" * 2048)), "16,384-bit"),
        (header() + cert_section(CA_A, bitmap_sub(1, b"\x80")), "negative"),
        (header() + cert_section(CA_A, bitmap_sub(0, b"\x01")), "serial 0"),
        (header() + cert_section(CA_A, bitmap_sub(U64_MAX, b"\x02")), "wraps"),
        (header() + cert_section(CA_A, bitmap_sub(1, b"\x01") + b""), None),  # valid control
        (
            header()
            + cert_section(CA_A, section(0x22, struct.pack(">Q", 1) + h.ssh_string(b"\1") + b"x")),
            "unexpected bytes",
        ),
        (header() + cert_section(CA_A, section(0x23, h.ssh_string(b"a\0b"))), "NUL"),
        (header() + cert_section(CA_A, section(0x23, h.ssh_string(b"\xc3"))), "UTF-8"),
        (header() + cert_section(b"garbage"), "CA key"),
        (
            header() + cert_section(h.ssh_string(b"ssh-ed25519") + h.ssh_string(b"x" * 31)),
            "expected 32",
        ),
        (header() + cert_section(CA_A, b"\x20"), "truncated"),
        (header() + section(1, h.ssh_string(CA_A)), "reserved"),
        (header() + section(2, h.ssh_string(b"")), "empty key blob"),
        (header() + section(2, h.ssh_string(h.ssh_string(b"ssh-foo"))), "unknown key type"),
        (header() + section(2, h.ssh_string(CA_A + b"\0")), "trailing"),
        (header() + section(5, h.ssh_string(b"\0" * 31)), "must be 32 bytes"),
        (header() + section(3, h.ssh_string(b"\0" * 32)), "must be 20 bytes"),
    ],
)
def test_corruptions_are_refused(data, message) -> None:
    if message is None:
        parse_krl(data)
        return
    with pytest.raises(InvalidKRL) as err:
        parse_krl(data)
    assert message in str(err.value)


# Each message in full: the byte offset and the section it names are what an
# admin reads to find the flaw, and hosts log them (CA_A is an Ed25519 key:
# its blob is 51 bytes, so the first subsection starts at byte 108).
_SECTION_1 = "certificates section #1 at byte 44"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            MAGIC + b"\0\0",
            "invalid KRL at byte 8 (header): truncated: format version needs 4 bytes, only 2 left",
        ),
        (header(comment=b"a\0b"), "invalid KRL at byte 40 (header): comment contains a NUL byte"),
        (header(comment=b"\xff"), "invalid KRL at byte 40 (header): comment is not valid UTF-8"),
        (
            header() + b"\x01",
            f"invalid KRL at byte 45 ({_SECTION_1}): truncated: section body length needs 4 bytes, "
            "only 0 left",
        ),
        (
            header() + b"\x01\x00\x00\x00\x09abc",
            f"invalid KRL at byte 45 ({_SECTION_1}): section body claims 9 bytes, but only 3 are left",
        ),
        (
            header() + section(2, h.ssh_string(CA_A)[:-1]),
            "invalid KRL at byte 49 (explicit keys section #1 at byte 44): public key claims 51 "
            "bytes, but only 50 are left",
        ),
        (
            header() + cert_section(CA_A, b"\x20"),
            f"invalid KRL at byte 109 ({_SECTION_1}, subsection #1): truncated: subsection body "
            "length needs 4 bytes, only 0 left",
        ),
        (
            header() + cert_section(CA_A, section(0x20, b"\0" * 12)),
            f"invalid KRL at byte 108 ({_SECTION_1}, serial list subsection at byte 108): serial "
            "list length 12 is not a multiple of 8",
        ),
        (
            header() + cert_section(CA_A, section(0x22, b"\0" * 5)),
            f"invalid KRL at byte 113 ({_SECTION_1}, serial bitmap subsection at byte 108): "
            "truncated: bitmap start serial needs 8 bytes, only 5 left",
        ),
        (
            header() + cert_section(CA_A, bitmap_sub(1, b"\x80")),
            f"invalid KRL at byte 121 ({_SECTION_1}, serial bitmap subsection at byte 108): bitmap "
            "is a negative mpint; OpenSSH rejects the whole KRL",
        ),
        (
            header() + cert_section(CA_A, bitmap_sub(1, b"\x01" + b"\0" * 2048)),
            f"invalid KRL at byte 121 ({_SECTION_1}, serial bitmap subsection at byte 108): bitmap "
            "of 2049 bytes is over OpenSSH's 16,384-bit mpint limit; OpenSSH rejects the whole KRL",
        ),
        (
            # Negative and followed by junk: the junk is reported.
            header()
            + cert_section(
                CA_A, section(0x22, struct.pack(">Q", 1) + h.ssh_string(b"\x80") + b"x")
            ),
            f"invalid KRL at byte 126 ({_SECTION_1}, serial bitmap subsection at byte 108): 1 "
            "unexpected bytes after the bitmap",
        ),
        (
            header() + cert_section(CA_A, section(0x23, h.ssh_string(b"a\0b"))),
            f"invalid KRL at byte 113 ({_SECTION_1}, key id subsection at byte 108): key id "
            "contains a NUL byte",
        ),
    ],
)
def test_error_messages_in_full(data: bytes, message: str) -> None:
    assert len(CA_A) == 51
    with pytest.raises(InvalidKRL) as err:
        parse_krl(data)
    assert str(err.value) == message
    assert (err.value.code, err.value.field) == ("invalid_krl", "krl")


def test_trailing_garbage_after_a_valid_krl_is_refused() -> None:
    data = small_krl()
    for tail in (b"\0", b"\x01\x00", b"junk", b"\x02\x00\x00\x00\x00" + b"\x00"):
        with pytest.raises(InvalidKRL):
            parse_krl(data + tail)


def test_wrong_section_lengths_are_refused() -> None:
    data = small_krl()
    offset = 0
    for kind, body in sections_of(data):
        offset = data.index(struct.pack(">BI", kind, len(body)) + body)
        for delta in (-1, 1, 2**31):
            bad = bytearray(data)
            struct.pack_into(">I", bad, offset + 1, (len(body) + delta) % 2**32)
            with pytest.raises(InvalidKRL):
                parse_krl(bytes(bad))


def test_refuses_non_bytes_and_oversized_input() -> None:
    with pytest.raises(InvalidKRL):
        parse_krl("SSHKRL")  # type: ignore[arg-type]
    with pytest.raises(InvalidKRL, match="128 MiB"):
        parse_krl(header() + b"\0" * MAX_KRL_SIZE)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from(["set", "insert", "delete"]),
            st.integers(0, 10_000),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    )
)
@example(edits=[("set", 3, 0)])
def test_fuzzed_krls_parse_or_raise_invalid_krl(edits):
    data = bytearray(small_krl())
    for op, pos, value in edits:
        pos %= len(data) + 1
        if op == "set" and pos < len(data):
            data[pos] = value
        elif op == "insert":
            data[pos:pos] = bytes([value])
        elif op == "delete" and pos < len(data):
            del data[pos]
    try:
        krl = parse_krl(bytes(data))
    except InvalidKRL:
        return
    except JitSshError as exc:  # pragma: no cover - a failure, reported clearly
        pytest.fail(f"raised {type(exc).__name__}, not InvalidKRL: {exc}")
    # Whatever parsed must be self-consistent and printable.
    assert isinstance(krl, KRL)
    krl.to_text()
    krl.summary()


@settings(max_examples=300, deadline=None)
@given(tail=st.binary(max_size=200))
def test_random_bytes_after_a_header_parse_or_raise_invalid_krl(tail):
    try:
        parse_krl(header() + tail)
    except InvalidKRL:
        pass


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=300))
def test_random_key_blobs_never_crash(blob):
    try:
        parse_krl(header() + section(2, h.ssh_string(blob)) + cert_section(blob))
    except InvalidKRL:
        pass


# --- performance -----------------------------------------------------------


@pytest.mark.parametrize("shape", ["random", "consecutive"])
def test_100k_serials_round_trip(shape) -> None:
    # Speed is measured by `python -m benchmarks`, not asserted here.
    rnd = random.Random(7)
    if shape == "random":
        serials = [rnd.randrange(1, 2**63) for _ in range(100_000)]
    else:
        serials = list(range(10**9, 10**9 + 100_000))
    data = build_krl(ca_keys=[CA_A], serials=serials, version=1, now=NOW)
    krl = parse_krl(data)
    assert krl.cert_sections[0].serial_count == len(set(serials))
    for serial in serials[::997]:
        assert krl.is_revoked(serial, "any", CA_A)
