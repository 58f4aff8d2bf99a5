"""The checks of values that arrive from outside (the API's JSON, the web forms)
before the service acts on them: free text, target names, request ids, serials.

Each check names the field it refused and says why (an :class:`InvalidInput`,
or :class:`NotFound` for an id that cannot name anything).
"""

from __future__ import annotations

import re
import unicodedata

from server.errors import InvalidInput, NotFound

__all__ = [
    "MAX_REASON",
    "MAX_COMMENT",
    "check_text",
    "check_target",
    "check_request_id",
    "check_serial",
    "has_control",
]

MAX_REASON = 1000
MAX_COMMENT = 1000

# Request ids are secrets.token_hex(8); anything else cannot name a request, and
# must not reach the database either (PostgreSQL refuses a NUL in a text parameter).
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
# A serial as the API spells it: decimal ASCII digits, nothing int() would also take
# (a sign, '_', spaces, other scripts' digits).
_SERIAL = re.compile(r"[0-9]{1,20}")


# Characters that are not visible text: controls (C0 and C1), format characters
# (Cf: bidi overrides and isolates U+202A-U+202E and U+2066-U+2069, zero-width
# U+200B-U+200F, U+2060, U+FEFF, tag characters...), line and paragraph
# separators, and lone surrogates. Shown to an approver, a bidi override
# reorders what follows it ("INC-1234 \u202eevom" reads "INC-1234 move") and a
# zero-width character hides a second text inside the first.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Cn", "Co"})
# Characters of visible categories that show nothing: Hangul fillers, the
# Braille blank, the combining grapheme joiner, Khmer inherent vowels,
# Mongolian variation selectors and the supplementary variation selectors
# (U+E0100-U+E01EF, which can carry a whole hidden text). The emoji variation
# selector U+FE0F stays allowed: emoji use it.
_BLANK_CHARACTERS = frozenset(
    {
        "\u034f",
        "\u115f",
        "\u1160",
        "\u17b4",
        "\u17b5",
        "\u180b",
        "\u180c",
        "\u180d",
        "\u180f",
        "\u2800",
        "\u3164",
        "\uffa0",
    }
) | frozenset(chr(c) for c in range(0xE0100, 0xE01F0))


def _invisible(value: str, allowed: str = "") -> str | None:
    """The first character of ``value`` that is not visible text (but those ``allowed``), or None."""
    if value.isascii():
        # The common case, without a lookup per character.
        for c in value:
            if (c < " " or c == "\x7f") and c not in allowed:
                return c
        return None
    for c in value:
        if (
            unicodedata.category(c) in _INVISIBLE_CATEGORIES or c in _BLANK_CHARACTERS
        ) and c not in allowed:
            return c
    return None


def has_control(value: str, allowed: str = "") -> bool:
    """Whether ``value`` holds a control or invisible format character (but those
    ``allowed``), or a lone surrogate, which is not text at all: neither the database
    driver nor the audit log's canonical JSON can encode it."""
    return _invisible(value, allowed) is not None


def check_text(value: object, name: str, limit: int, *, required: bool = False) -> str:
    """THE check of free text people type (reasons and comments), for the API and the
    web pages alike: a string, at most ``limit`` characters, visible text only (tabs
    and newlines allowed; accents, CJK and emoji are text)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", field=name)
    if len(value) > limit:
        raise InvalidInput(f"{name} is longer than {limit} characters", field=name)
    bad = _invisible(value, "\t\n")
    if bad is not None:
        if unicodedata.category(bad) in ("Cc", "Cs"):
            raise InvalidInput(f"{name} holds control characters", field=name)
        raise InvalidInput(
            f"{name} holds invisible formatting characters (U+{ord(bad):04X}), which can disguise the text "
            "shown to approvers; remove them",
            field=name,
        )
    if required and not value.strip():
        raise InvalidInput(f"{name} is required", field=name)
    return value


def check_target(target: object) -> str:
    """A target name as the policy spells one: a non-empty one-line string."""
    if not isinstance(target, str) or not target or len(target) > 128 or has_control(target):
        raise InvalidInput("target must be a target name", field="target")
    return target


def check_request_id(request_id: object) -> str:
    """``request_id`` if it can name a request at all (else :class:`NotFound`)."""
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        raise NotFound("no such request", field="id")
    return request_id


def check_serial(serial: object) -> int:
    """A certificate serial as the API spells it (decimal digits, or a JSON integer)."""
    if isinstance(serial, int) and not isinstance(serial, bool):
        serial = str(serial)
    if not isinstance(serial, str) or not _SERIAL.fullmatch(serial):
        raise NotFound("no such certificate", field="serial")
    serial_no = int(serial)
    if not 0 < serial_no < 2**63:
        raise NotFound("no such certificate", field="serial")
    return serial_no
