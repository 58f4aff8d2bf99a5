"""Property tests for ca.wire: what is written reads back, and what is cut or stretched is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ca import wire
from ca.wire import Problem, Reader, WireError

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

# Names as RFC 4251 allows them in a name-list: printable US-ASCII, no comma.
name_chars = st.sampled_from([chr(c) for c in range(0x21, 0x7F) if c != 0x2C])
names = st.text(name_chars, min_size=1, max_size=12)

# One strategy per wire type: (type name, value), written by the writer of
# that name and read back by the reader method of that name.
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "byte": st.integers(0, 255),
    "boolean": st.booleans(),
    "uint32": st.integers(0, U32_MAX),
    "uint64": st.integers(0, U64_MAX),
    "string": st.binary(max_size=40),
    "mpint": st.one_of(st.integers(0, 2**70), st.integers(0, 2**4096)),
    "name_list": st.lists(names, max_size=5).map(tuple),
}
fields = st.one_of(*(v.map(lambda x, k=k: (k, x)) for k, v in FIELDS.items()))


def write(kind: str, value: Any) -> bytes:
    writer: Callable[[Any], bytes] = getattr(wire, kind)
    return writer(value)


def read(r: Reader, kind: str, name: str) -> Any:
    reader: Callable[[str], Any] = getattr(r, kind)
    return reader(name)


# --- round trips --------------------------------------------------------------


@given(fields)
def test_every_type_round_trips(field: tuple[str, Any]) -> None:
    kind, value = field
    data = write(kind, value)
    r = Reader(data)
    assert read(r, kind, "x") == value
    r.done()
    assert r.pos == len(data)


@given(st.lists(fields, max_size=12))
def test_a_message_of_fields_round_trips(message: list[tuple[str, Any]]) -> None:
    data = b"".join(write(kind, value) for kind, value in message)
    r = Reader(data, context="message")
    assert [read(r, kind, f"field {i}") for i, (kind, _) in enumerate(message)] == [
        value for _, value in message
    ]
    r.done()


@given(st.lists(st.integers(0, U64_MAX), max_size=50))
def test_uint64s_round_trip(values: list[int]) -> None:
    data = wire.uint64s(values)
    assert data == b"".join(wire.uint64(v) for v in values)
    r = Reader(data)
    assert r.uint64s(len(values), "serials") == tuple(values)
    r.done()


@given(st.text(max_size=30).filter(lambda t: "\0" not in t))
def test_text_round_trips(text: str) -> None:
    r = Reader(wire.string(text.encode("utf-8")))
    assert r.text("comment") == text
    r.done()


@given(st.binary(max_size=8), st.lists(fields, max_size=5), st.binary(max_size=8))
def test_a_nested_buffer_reads_with_absolute_offsets(
    before: bytes, inner: list[tuple[str, Any]], after: bytes
) -> None:
    body = b"".join(write(kind, value) for kind, value in inner)
    data = before + wire.string(body) + after
    r = Reader(data, start=len(before), end=len(data) - len(after), context="outer")
    sub = r.sub("body", context="inner")
    assert (sub.pos, sub.end, sub.context) == (
        len(before) + 4,
        len(before) + 4 + len(body),
        "inner",
    )
    assert [read(sub, kind, "f") for kind, _ in inner] == [value for _, value in inner]
    sub.done()
    r.done()


def test_a_nested_buffer_names_its_parent_unless_told_otherwise() -> None:
    r = Reader(wire.string(b"\0"), context="section #1")
    sub = r.sub("body")
    assert sub.context == "section #1"
    with pytest.raises(WireError) as err:
        sub.uint32("length")
    assert (err.value.context, err.value.offset) == ("section #1", 4)


def test_mpint_encoding_is_the_rfc_4251_examples() -> None:
    # RFC 4251 section 5 lists these (the non-negative ones).
    assert wire.mpint(0) == b"\0\0\0\0"
    assert wire.mpint(0x9A378F9B2E332A7) == bytes.fromhex("0000000809a378f9b2e332a7")
    assert wire.mpint(0x80) == bytes.fromhex("000000020080")


def test_name_list_example() -> None:
    assert wire.name_list(["zlib", "none"]) == b"\0\0\0\x09zlib,none"
    assert wire.name_list([]) == b"\0\0\0\0"
    assert Reader(b"\0\0\0\x09zlib,none").name_list("compression") == ("zlib", "none")


@given(st.integers(1, 255))
def test_any_non_zero_boolean_is_true(value: int) -> None:
    # RFC 4251: "All non-zero values MUST be interpreted as TRUE".
    assert Reader(bytes([value])).boolean("flag") is True
    assert Reader(b"\0").boolean("flag") is False


# --- truncation -----------------------------------------------------------------


@given(st.lists(fields, min_size=1, max_size=8), st.data())
def test_every_truncation_is_refused_naming_the_field_and_its_offset(
    message: list[tuple[str, Any]], data: st.DataObject
) -> None:
    parts = [write(kind, value) for kind, value in message]
    whole = b"".join(parts)
    cut = data.draw(st.integers(0, len(whole) - 1))
    # The field the cut falls in, and where it starts.
    ends = [sum(len(p) for p in parts[: i + 1]) for i in range(len(parts))]
    index = next(i for i, end in enumerate(ends) if cut < end)
    start = ends[index] - len(parts[index])
    r = Reader(whole[:cut], context="message")
    with pytest.raises(WireError) as err:
        for i, (kind, _) in enumerate(message):
            read(r, kind, f"field {i}")
    e = err.value
    assert isinstance(e, ValueError)
    assert e.problem is Problem.TRUNCATED
    assert (e.field, e.offset, e.context) == (f"field {index}", start, "message")
    assert e.reason.startswith(("truncated: ", f"field {index} claims "))
    assert str(e) == f"message at byte {start}: {e.reason}"


def test_truncation_messages() -> None:
    with pytest.raises(WireError) as err:
        Reader(b"\0\0", context="header").uint32("format version")
    assert err.value.reason == "truncated: format version needs 4 bytes, only 2 left"
    with pytest.raises(WireError) as err:
        Reader(b"xx\0\0\0", start=2).string("comment")
    assert err.value.reason == "truncated: comment length needs 4 bytes, only 3 left"
    assert (err.value.field, err.value.offset) == ("comment", 2)
    with pytest.raises(WireError) as err:
        Reader(b"\0\0\0\x09abc").string("body")
    assert err.value.reason == "body claims 9 bytes, but only 3 are left"
    with pytest.raises(WireError) as err:
        Reader(b"abc").take(6, "magic")
    assert err.value.reason == "truncated: magic needs 6 bytes, only 3 left"


@given(st.binary(max_size=20), st.integers(0, U32_MAX))
def test_a_length_past_the_window_is_refused_even_when_the_bytes_are_there(
    body: bytes, claimed: int
) -> None:
    # The window ends before the data does: the reader must not read past it.
    data = wire.uint32(claimed) + body
    r = Reader(data + b"x" * 64, end=len(data))
    if claimed <= len(body):
        assert r.string("s") == body[:claimed]
        return
    with pytest.raises(WireError) as err:
        r.string("s")
    assert err.value.problem is Problem.TRUNCATED and err.value.offset == 0
    assert r.pos == 0  # a refused string leaves the reader where the string starts


# --- trailing bytes and limits ----------------------------------------------------


@given(st.lists(fields, max_size=5), st.binary(min_size=1, max_size=10))
def test_trailing_bytes_are_refused(message: list[tuple[str, Any]], extra: bytes) -> None:
    data = b"".join(write(kind, value) for kind, value in message)
    r = Reader(data + extra, context="signature")
    for kind, _ in message:
        read(r, kind, "f")
    with pytest.raises(WireError) as err:
        r.done()
    e = err.value
    assert e.problem is Problem.TRAILING
    assert (e.field, e.offset) == ("signature", len(data))
    assert e.reason == f"signature has {len(extra)} trailing byte(s)"


@given(st.binary(max_size=64), st.integers(0, 64))
def test_a_buffer_over_max_size_is_refused_before_reading(data: bytes, limit: int) -> None:
    if len(data) <= limit:
        assert Reader(data, max_size=limit).remaining() == len(data)
        return
    with pytest.raises(WireError) as err:
        Reader(data, context="signature", max_size=limit)
    e = err.value
    assert (e.problem, e.field, e.offset) == (Problem.TOO_LONG, "signature", 0)
    assert e.reason == f"signature is {len(data)} bytes, over the limit of {limit}"


@given(st.binary(max_size=64), st.integers(0, 64), st.booleans())
def test_a_string_over_max_length_is_refused(body: bytes, limit: int, truncated: bool) -> None:
    data = wire.string(body)
    if truncated:
        data = data[:-1] if body else data
    r = Reader(data)
    if len(body) <= limit and not (truncated and body):
        assert r.string("comment", max_length=limit) == body
        return
    with pytest.raises(WireError) as err:
        r.string("comment", max_length=limit)
    e = err.value
    # The limit is checked before the length is compared with what is left.
    expected = Problem.TOO_LONG if len(body) > limit else Problem.TRUNCATED
    assert (e.problem, e.field, e.offset) == (expected, "comment", 0)


@given(st.integers(1, 64).map(lambda n: n * 8), st.integers(0, 2**600))
def test_mpints_over_max_bits_are_refused(max_bits: int, value: int) -> None:
    r = Reader(wire.mpint(value))
    if value.bit_length() <= max_bits:
        assert r.mpint("bits", max_bits=max_bits) == value
        return
    with pytest.raises(WireError) as err:
        r.mpint("bits", max_bits=max_bits)
    assert err.value.problem is Problem.TOO_LONG
    assert err.value.reason.endswith(f"over OpenSSH's {max_bits:,}-bit mpint limit")


# --- malformed values ---------------------------------------------------------------


@given(st.binary(min_size=1, max_size=20).filter(lambda b: b[0] & 0x80))
def test_negative_mpints_are_refused(raw: bytes) -> None:
    for canonical in (True, False):
        with pytest.raises(WireError) as err:
            Reader(wire.string(raw)).mpint("r", canonical=canonical)
        assert err.value.problem is Problem.NEGATIVE
        assert err.value.reason == "r is a negative mpint"


@given(st.integers(0, 2**300), st.integers(1, 3))
def test_superfluous_leading_zeros_are_refused_unless_tolerated(value: int, zeros: int) -> None:
    raw = wire.mpint(value)[4:]
    padded = wire.string(b"\0" * zeros + raw)
    with pytest.raises(WireError) as err:
        Reader(padded).mpint("s")
    assert err.value.problem is Problem.NOT_MINIMAL
    # OpenSSH's sshbuf strips them; a reader that must accept what it does can too.
    assert Reader(padded).mpint("s", canonical=False) == value


@given(st.binary(max_size=20))
def test_text_refuses_nul_and_non_utf8(raw: bytes) -> None:
    r = Reader(wire.string(raw))
    try:
        expected = raw.decode("utf-8")
    except UnicodeDecodeError:
        expected = None
    if expected is not None and "\0" not in expected:
        assert r.text("key id") == expected
        return
    with pytest.raises(WireError) as err:
        r.text("key id")
    e = err.value
    if b"\0" in raw:
        assert (e.problem, e.reason) == (Problem.NUL, "key id contains a NUL byte")
        if expected is not None:
            assert Reader(wire.string(raw)).text("key id", allow_nul=True) == expected
    else:
        assert (e.problem, e.reason) == (Problem.NOT_UTF8, "key id is not valid UTF-8")


@pytest.mark.parametrize(
    "raw", [b",", b"a,", b",a", b"a,,b", b"a b", b"a\x7f", b"\xc3\xa9", b"a\0"]
)
def test_bad_name_lists_are_refused(raw: bytes) -> None:
    with pytest.raises(WireError) as err:
        Reader(wire.string(raw)).name_list("algorithms")
    assert err.value.problem is Problem.BAD_NAME


@pytest.mark.parametrize(
    ("writer", "value"),
    [
        (wire.byte, 256),
        (wire.byte, -1),
        (wire.byte, True),
        (wire.uint32, 2**32),
        (wire.uint32, -1),
        (wire.uint64, 2**64),
        (wire.uint64, -1),
        (wire.uint64s, [1, 2**64]),
        (wire.uint64s, [-1]),
        (wire.mpint, -1),
        (wire.name_list, ["a,b"]),
        (wire.name_list, [""]),
        (wire.name_list, ["é"]),
        (wire.name_list, ["a b"]),
    ],
)
def test_the_writer_refuses_what_the_type_cannot_hold(
    writer: Callable[[Any], bytes], value: Any
) -> None:
    with pytest.raises(ValueError):
        writer(value)


def test_a_window_outside_the_data_is_a_caller_mistake() -> None:
    with pytest.raises(ValueError):
        Reader(b"abc", start=2, end=5)
    with pytest.raises(ValueError):
        Reader(b"abc", start=3, end=2)
