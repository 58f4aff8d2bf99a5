"""SSH wire encoding (RFC 4251 section 5): jit-ssh's one reader and writer of it.

Public keys (:mod:`ca.keys`), certificates (:mod:`ca.certs`), KRLs
(:mod:`ca.krl`) and SSHSIG signatures (:mod:`ca.sshsig`) are all built from
the same few types::

    byte       one byte
    boolean    one byte: 0 is false, any other value true; written as 0 or 1
    uint32     4 bytes, big-endian
    uint64     8 bytes, big-endian
    string     uint32 length, then that many bytes (binary data or UTF-8 text)
    mpint      a string holding a big-endian two's complement integer, shortest form
    name-list  a string holding comma-separated names, e.g. "ssh-ed25519,rsa-sha2-512"
    buffer     a string whose bytes are wire fields again: a key blob inside a
               signature, a KRL section body, a certificate's signature
               (PROTOCOL.certkeys: "string algorithm, string signature"),
               read with :meth:`Reader.sub`

Writing: :func:`byte`, :func:`boolean`, :func:`uint32`, :func:`uint64`,
:func:`uint64s`, :func:`string`, :func:`mpint` and :func:`name_list` each
return the encoding of one value, and a message is their concatenation (a
buffer is ``string(a + b)``). A value the type cannot hold raises
``ValueError``: that is the caller's mistake, never the peer's.

Reading: a :class:`Reader` walks a window of one ``bytes`` object and keeps
offsets absolute, so a flaw in a KRL's third section names its byte in the
file, not in the section. Every refusal is a :class:`WireError`, a
``ValueError`` carrying what went wrong (:class:`Problem`), the field, the
byte offset where the field starts, and the buffer being read (``context``).
Callers turn it into their own error (``InvalidKRL``, ``InvalidSignatureError``,
``InvalidKeyError``); its ``reason`` is written to read well inside theirs.

What the reader refuses, and why:

- truncation: a field, or the bytes a length prefix claims, running past the
  window. OpenSSH's sshbuf refuses those too (``SSH_ERR_MESSAGE_INCOMPLETE``);
- trailing bytes, where the format says a buffer ends (:meth:`Reader.done`):
  a PROTOCOL.sshsig blob, the signature inside it and an ECDSA signature's
  two mpints end exactly there. A KRL has no end marker (PROTOCOL.krl: one
  cut at a section boundary is a valid, shorter KRL), so its reader stops
  when nothing is left, and a cut inside a field is truncation;
- lengths over a limit: a whole buffer (``max_size``) or one string
  (``max_length``), refused before anything else is read;
- mpints that OpenSSH's ``sshbuf_get_bignum2_bytes_direct()`` refuses:
  negative ones (OpenSSH keys and signatures never hold one, so this module
  writes none either), and, when ``max_bits`` is given, ones longer than that
  (plus the one leading zero byte a positive number may need);
  ``canonical=True`` also refuses a superfluous leading zero byte, which
  OpenSSH strips silently: a second encoding of one value is malleability;
- text with a NUL byte, unless allowed: OpenSSH reads text fields with
  ``sshbuf_get_cstring()``, which refuses embedded NULs;
- name-lists with an empty name or a character RFC 4251 leaves out (only
  printable US-ASCII, no comma, no space).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Sequence

__all__ = [
    "Problem",
    "WireError",
    "Reader",
    "byte",
    "boolean",
    "uint32",
    "uint64",
    "uint64s",
    "string",
    "mpint",
    "name_list",
]

_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1


class Problem(enum.Enum):
    """What a :class:`WireError` found wrong."""

    #: The window ends inside a field or inside the bytes a length claims.
    TRUNCATED = "truncated"
    #: Bytes are left where the format says the buffer ends.
    TRAILING = "trailing"
    #: A buffer or string is longer than the caller's limit.
    TOO_LONG = "too_long"
    #: A negative mpint.
    NEGATIVE = "negative"
    #: An mpint with a superfluous leading zero byte (``canonical=True``).
    NOT_MINIMAL = "not_minimal"
    #: Text that is not UTF-8.
    NOT_UTF8 = "not_utf8"
    #: Text holding a NUL byte.
    NUL = "nul"
    #: A name-list holding an empty name or a character names may not hold.
    BAD_NAME = "bad_name"


class WireError(ValueError):
    """Bytes that are not the SSH wire encoding the reader was asked for.

    ``field`` names the field being read (for :data:`Problem.TRAILING` and a
    whole buffer's :data:`Problem.TOO_LONG`, the buffer), ``offset`` is the
    absolute byte offset where that field starts (or where the trailing bytes
    start), ``context`` names the buffer the reader walks, and ``reason``
    says what is wrong, starting with the field's name.
    """

    def __init__(
        self, problem: Problem, reason: str, *, field: str, offset: int, context: str
    ) -> None:
        super().__init__(f"{context} at byte {offset}: {reason}")
        self.problem = problem
        self.reason = reason
        self.field = field
        self.offset = offset
        self.context = context


# --- writing ----------------------------------------------------------------


def byte(value: int) -> bytes:
    """One byte, ``0 <= value <= 255``."""
    if isinstance(value, bool) or not 0 <= value <= 0xFF:
        raise ValueError(f"a byte must be an integer in 0..255, got {value!r}")
    return bytes((value,))


def boolean(value: bool) -> bytes:
    """RFC 4251: stored as 1 for true, 0 for false, and nothing else."""
    return b"\x01" if value else b"\x00"


def uint32(value: int) -> bytes:
    """Four bytes, big-endian."""
    if isinstance(value, bool) or not 0 <= value <= _U32_MAX:
        raise ValueError(f"a uint32 must be an integer in 0..2**32-1, got {value!r}")
    return value.to_bytes(4, "big")


def uint64(value: int) -> bytes:
    """Eight bytes, big-endian."""
    if isinstance(value, bool) or not 0 <= value <= _U64_MAX:
        raise ValueError(f"a uint64 must be an integer in 0..2**64-1, got {value!r}")
    return value.to_bytes(8, "big")


def uint64s(values: Sequence[int]) -> bytes:
    """Consecutive uint64s, in one call: a KRL serial list holds up to millions of them."""
    try:
        return struct.pack(f">{len(values)}Q", *values)
    except struct.error:
        bad = next(v for v in values if not isinstance(v, int) or not 0 <= v <= _U64_MAX)
        raise ValueError(f"a uint64 must be an integer in 0..2**64-1, got {bad!r}") from None


def string(data: bytes) -> bytes:
    """A uint32 length, then ``data``. Also how a nested buffer is written: ``string(a + b)``."""
    if len(data) > _U32_MAX:
        raise ValueError(f"a string holds at most 2**32-1 bytes, got {len(data)}")
    return len(data).to_bytes(4, "big") + data


def mpint(value: int) -> bytes:
    """A non-negative integer as an mpint: zero is the empty string; a leading
    zero byte is added exactly when the top bit would otherwise be set."""
    if isinstance(value, bool) or value < 0:
        # RFC 4251 allows negative mpints; no OpenSSH key, signature or KRL
        # holds one and sshbuf refuses them, so writing one is a bug here.
        raise ValueError(f"an mpint here must be a non-negative integer, got {value!r}")
    return string(value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b"")


def name_list(names: Iterable[str]) -> bytes:
    """Names joined by commas, in a string; each name non-empty printable US-ASCII
    without comma or space (RFC 4251 section 5, RFC 4250 section 4.6.1)."""
    items = list(names)
    for name in items:
        if not (isinstance(name, str) and name.isascii() and _is_name(name.encode("ascii"))):
            raise ValueError(
                f"a name-list name must be non-empty printable US-ASCII without ',', got {name!r}"
            )
    return string(",".join(items).encode("ascii"))


def _is_name(raw: bytes) -> bool:
    # Printable US-ASCII from '!' to '~': no space, no control characters, no
    # DEL, and no comma, which separates the names.
    return bool(raw) and all(0x21 <= c <= 0x7E and c != 0x2C for c in raw)


# --- reading ----------------------------------------------------------------


class Reader:
    """Reads wire fields from ``data[start:end]``, refusing anything malformed.

    ``pos`` is the absolute offset of the next field and may be set back to
    read a field again; ``context`` names the buffer in every
    :class:`WireError` and may be changed as the reader moves from part to
    part. ``max_size`` refuses a window longer than that, before anything is
    read.
    """

    __slots__ = ("data", "pos", "end", "context")

    def __init__(
        self,
        data: bytes,
        *,
        start: int = 0,
        end: int | None = None,
        context: str = "data",
        max_size: int | None = None,
    ) -> None:
        stop = len(data) if end is None else end
        if not 0 <= start <= stop <= len(data):
            raise ValueError(f"the window {start}..{stop} is not inside {len(data)} bytes")
        self.data = data
        self.pos = start
        self.end = stop
        self.context = context
        if max_size is not None and stop - start > max_size:
            raise self._error(
                Problem.TOO_LONG,
                f"{context} is {stop - start} bytes, over the limit of {max_size}",
                field=context,
                at=start,
            )

    def _error(self, problem: Problem, reason: str, *, field: str, at: int) -> WireError:
        return WireError(problem, reason, field=field, offset=at, context=self.context)

    def remaining(self) -> int:
        """How many bytes are left in the window."""
        return self.end - self.pos

    def done(self) -> None:
        """Refuse trailing bytes: the format says the buffer ends here."""
        extra = self.end - self.pos
        if extra:
            raise self._error(
                Problem.TRAILING,
                f"{self.context} has {extra} trailing byte(s)",
                field=self.context,
                at=self.pos,
            )

    def _advance(self, n: int, field: str, label: str | None = None) -> int:
        left = self.end - self.pos
        if left < n:
            # The message keeps the "1 bytes" of the KRL errors jit-ssh has
            # always written: hosts and tests match on it.
            raise self._error(
                Problem.TRUNCATED,
                f"truncated: {label or field} needs {n} bytes, only {left} left",
                field=field,
                at=self.pos,
            )
        start = self.pos
        self.pos += n
        return start

    def take(self, n: int, field: str) -> bytes:
        """``n`` raw bytes (a fixed-size field such as a magic string)."""
        start = self._advance(n, field)
        return self.data[start : start + n]

    def byte(self, field: str) -> int:
        return self.data[self._advance(1, field)]

    def boolean(self, field: str) -> bool:
        # RFC 4251: "All non-zero values MUST be interpreted as TRUE".
        return self.byte(field) != 0

    def uint32(self, field: str) -> int:
        return self._uint32(field)

    def _uint32(self, field: str, label: str | None = None) -> int:
        start = self._advance(4, field, label)
        return int.from_bytes(self.data[start : start + 4], "big")

    def uint64(self, field: str) -> int:
        start = self._advance(8, field)
        return int.from_bytes(self.data[start : start + 8], "big")

    def uint64s(self, count: int, field: str) -> tuple[int, ...]:
        """``count`` consecutive uint64s, in one call (a KRL serial list)."""
        start = self._advance(8 * count, field)
        return struct.unpack_from(f">{count}Q", self.data, start)

    def _bounds(self, field: str, max_length: int | None) -> tuple[int, int]:
        at = self.pos
        length = self._uint32(field, f"{field} length")
        if max_length is not None and length > max_length:
            self.pos = at
            raise self._error(
                Problem.TOO_LONG,
                f"{field} claims {length} bytes, over the limit of {max_length}",
                field=field,
                at=at,
            )
        left = self.end - self.pos
        if length > left:
            self.pos = at
            raise self._error(
                Problem.TRUNCATED,
                f"{field} claims {length} bytes, but only {left} are left",
                field=field,
                at=at,
            )
        start = self.pos
        self.pos += length
        return start, self.pos

    def string(self, field: str, *, max_length: int | None = None) -> bytes:
        start, end = self._bounds(field, max_length)
        return self.data[start:end]

    def text(self, field: str, *, allow_nul: bool = False, max_length: int | None = None) -> str:
        """A string decoded as UTF-8; a NUL byte is refused unless ``allow_nul``."""
        at = self.pos
        raw = self.string(field, max_length=max_length)
        # sshbuf_get_cstring() refuses embedded NULs: OpenSSH would refuse
        # the whole message, and a C reader would see a shorter string.
        if not allow_nul and b"\0" in raw:
            raise self._error(Problem.NUL, f"{field} contains a NUL byte", field=field, at=at)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._error(
                Problem.NOT_UTF8, f"{field} is not valid UTF-8", field=field, at=at
            ) from None

    def mpint(self, field: str, *, canonical: bool = True, max_bits: int | None = None) -> int:
        """A non-negative mpint (see the module docstring for what is refused)."""
        at = self.pos
        raw = self.string(field)
        if raw[:1] and raw[0] & 0x80:
            raise self._error(Problem.NEGATIVE, f"{field} is a negative mpint", field=field, at=at)
        if canonical and raw[:1] == b"\x00" and (len(raw) == 1 or not raw[1] & 0x80):
            raise self._error(
                Problem.NOT_MINIMAL,
                f"{field} has a superfluous leading zero byte",
                field=field,
                at=at,
            )
        if max_bits is not None:
            # sshbuf's rule: at most max_bits / 8 bytes, plus one leading zero
            # byte (the sign byte of a number whose top bit is set).
            limit = max_bits // 8
            if len(raw) > limit + 1 or (len(raw) == limit + 1 and raw[0] != 0):
                raise self._error(
                    Problem.TOO_LONG,
                    f"{field} of {len(raw)} bytes is over OpenSSH's {max_bits:,}-bit mpint limit",
                    field=field,
                    at=at,
                )
        return int.from_bytes(raw, "big")

    def name_list(self, field: str) -> tuple[str, ...]:
        """The names of a name-list, in order; ``()`` for the empty list."""
        at = self.pos
        raw = self.string(field)
        if not raw:
            return ()
        names = raw.split(b",")
        if not all(_is_name(name) for name in names):
            raise self._error(
                Problem.BAD_NAME,
                f"{field} holds an empty name or one that is not printable US-ASCII",
                field=field,
                at=at,
            )
        return tuple(name.decode("ascii") for name in names)

    def sub(self, field: str, *, context: str | None = None) -> Reader:
        """A reader over the bytes of the next string (a nested buffer), offsets
        still absolute; its errors name ``context`` (by default this reader's)."""
        start, end = self._bounds(field, None)
        return Reader(self.data, start=start, end=end, context=context or self.context)
