"""Durations as people write them: ``90s``, ``15m``, ``1h30m``, ``2h``, ``1d``.

A bare number is refused: ``--for 30`` is more likely thirty minutes meant than
thirty seconds. Policy files, where the documentation has always said a bare
number means seconds, ask for that reading explicitly (``bare_seconds=True``).
Units must appear in descending order and at
most once each, so ``30m1h`` and ``1h1h`` are refused rather than guessed at.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

from .errors import InvalidDuration

__all__ = ["parse_duration", "format_duration"]

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# ASCII digits only: str.isdigit() and \d also match other scripts' digits
# ("١٢", "²"), which int() reads inconsistently or not at all.
_PART = re.compile(r"([0-9]{1,9})([dhms])", re.ASCII)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
#: The longest duration a timedelta holds; beyond it timedelta() overflows.
_MAX_SECONDS = timedelta.max.days * 86400 + timedelta.max.seconds
# Bounds the input so a hostile string cannot make the parser work hard.
_MAX_TEXT = 64


def parse_duration(text: str, *, field: str = "duration", bare_seconds: bool = False) -> timedelta:
    """Parse ``text`` into a positive :class:`timedelta` with whole seconds.

    A bare number (``"30"``) is refused unless ``bare_seconds`` says it means
    seconds. Raises :class:`InvalidDuration` naming ``field`` for anything else.
    """
    if not isinstance(text, str):
        raise InvalidDuration(f"{field} must be a string like '15m' or '1h30m'", field=field)
    s = text.strip().lower()
    if not s or len(s) > _MAX_TEXT:
        raise InvalidDuration(
            f"{field} must be a duration like '90s', '15m' or '1h30m'", field=field
        )
    if _DIGITS.fullmatch(s):
        if not bare_seconds:
            n = int(s[:9])
            raise InvalidDuration(
                f"{field} {text.strip()!r}: give a unit, e.g. {n if 0 < n < 1000 else 30}m, 1h or 90s "
                "(d, h, m, s, largest first: 1h30m)",
                field=field,
            )
        seconds = int(s)
    else:
        seconds = 0
        pos = 0
        seen: list[str] = []
        for m in _PART.finditer(s):
            if m.start() != pos:
                break
            unit = m.group(2)
            if seen and list(_UNITS).index(unit) <= list(_UNITS).index(seen[-1]):
                raise InvalidDuration(
                    f"{field} {text!r}: units must go from largest to smallest, each once",
                    field=field,
                )
            seen.append(unit)
            seconds += int(m.group(1)) * _UNITS[unit]
            pos = m.end()
        if pos != len(s) or not seen:
            raise InvalidDuration(
                f"{field} {text!r} is not a duration like '90s', '15m', '1h30m' or '2h'",
                field=field,
            )
    if seconds <= 0:
        raise InvalidDuration(f"{field} must be longer than 0 seconds, got {text!r}", field=field)
    if seconds > _MAX_SECONDS:
        raise InvalidDuration(f"{field} {text!r} is too long", field=field)
    return timedelta(seconds=seconds)


# Pure and called for every policy decision's reasons: the few durations a
# policy uses are formatted once.
@lru_cache(maxsize=4096)
def format_duration(value: timedelta | int) -> str:
    """The shortest canonical text for a duration: ``timedelta(seconds=5400)`` -> ``'1h30m'``."""
    seconds = int(value.total_seconds()) if isinstance(value, timedelta) else int(value)
    if seconds <= 0:
        return "0s"
    out = []
    for unit, size in _UNITS.items():
        n, seconds = divmod(seconds, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
