"""ca.durations: parse_duration / format_duration."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.durations import format_duration, parse_duration
from ca.errors import InvalidDuration, JitSshError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("1s", 1),
        ("15m", 15 * 60),
        ("1h30m", 5400),
        ("2h", 7200),
        ("1d", 86400),
        ("1d2h3m4s", 86400 + 7200 + 180 + 4),
        ("1h0m", 3600),
        ("0h30m", 1800),
        ("  15m  ", 900),
        ("\t2h\n", 7200),
        ("1H30M", 5400),
        ("90S", 90),
        ("1D", 86400),
    ],
)
def test_parse_accepts(text: str, seconds: int) -> None:
    value = parse_duration(text)
    assert value == timedelta(seconds=seconds)
    assert isinstance(value, timedelta)


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "0s",
        "0h0m",
        "00",
        "-5",
        "-5m",
        "",
        "   ",
        "abc",
        "m",
        "h30",
        "1h1h",
        "30m1h",
        "1s1m",
        "1m1d",
        "1.5h",
        "1,5h",
        "1h 30m",
        "1 h",
        "+5m",
        "5 m",
        "1w",
        "1y",
        "5mm",
        "1h30",
        "1" * 65,  # longer than the parser will look at
    ],
)
def test_parse_refuses(text: str) -> None:
    with pytest.raises(InvalidDuration) as exc:
        parse_duration(text, field="--for")
    assert exc.value.code == "invalid_duration"
    assert exc.value.field == "--for"
    assert "--for" in str(exc.value)


@pytest.mark.parametrize(
    "text",
    [
        # Non-ASCII digits: str.isdigit() and int() accept some of them ("١٢"
        # is 12) and choke on others ("²" is a digit to isdigit() but not to
        # int()); neither belongs in a duration.
        "²",
        "١٢",
        "١h",
        "１５m",
        # Too long to be a timedelta at all.
        "9" * 20,
        "999999999d999999999h",
        "86400000000000",  # 10**9 days: one day more than timedelta holds
    ],
)
def test_parse_refuses_non_ascii_and_huge(text: str) -> None:
    with pytest.raises(InvalidDuration) as exc:
        parse_duration(text)
    assert exc.value.field == "duration"
    assert "duration" in str(exc.value)


@pytest.mark.parametrize("value", [None, 90, 1.5, b"15m", ["15m"], timedelta(minutes=15)])
def test_parse_refuses_non_strings(value: object) -> None:
    with pytest.raises(InvalidDuration) as exc:
        parse_duration(value)  # type: ignore[arg-type]
    assert exc.value.field == "duration"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1, "1s"),
        (59, "59s"),
        (60, "1m"),
        (90, "1m30s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (86400, "1d"),
        (90061, "1d1h1m1s"),
    ],
)
def test_format(seconds: int, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text
    assert format_duration(seconds) == text


def test_format_zero() -> None:
    assert format_duration(0) == "0s"


@given(st.integers(min_value=1, max_value=10**7))
@settings(max_examples=300)
def test_round_trip(seconds: int) -> None:
    text = format_duration(timedelta(seconds=seconds))
    assert parse_duration(text) == timedelta(seconds=seconds)
    # The same text, shouted and padded, means the same.
    assert parse_duration(f"  {text.upper()} ") == timedelta(seconds=seconds)


@given(st.integers(min_value=1, max_value=10**9))
def test_bare_seconds(seconds: int) -> None:
    # Only where the caller says a bare number means seconds (policy files).
    assert parse_duration(str(seconds), bare_seconds=True) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "example"), [("30", "30m"), ("90", "90m"), (" 1 ", "1m"), ("0", "30m")]
)
def test_bare_number_needs_a_unit(text: str, example: str) -> None:
    # "--for 30" filed a 30-second request (issue 12, point 3): a person gets
    # told which forms work instead.
    with pytest.raises(InvalidDuration) as exc:
        parse_duration(text, field="--for")
    assert exc.value.field == "--for"
    assert str(exc.value).startswith(
        f"--for {text.strip()!r}: give a unit, e.g. {example}, 1h or 90s"
    )


@given(st.text(max_size=80))
@settings(max_examples=500)
def test_arbitrary_text_only_raises_invalid_duration(text: str) -> None:
    try:
        value = parse_duration(text)
    except InvalidDuration:
        return
    assert isinstance(value, timedelta)
    assert value > timedelta(0)
    assert value.microseconds == 0


@given(st.text(alphabet="0123456789dhmsDHMS .-+", max_size=30))
@settings(max_examples=500)
def test_duration_like_text_only_raises_invalid_duration(text: str) -> None:
    try:
        value = parse_duration(text)
    except JitSshError as e:
        assert isinstance(e, InvalidDuration)
        return
    assert value > timedelta(0)
    # Whatever was accepted prints back to the same value.
    assert parse_duration(format_duration(value)) == value
