"""Find the line of each key in a TOML document.

``tomllib`` reports line numbers for syntax errors only; once a document parses
it hands back plain dicts and lists with no positions. A policy author still
wants "policy.toml:14: rules[1].max_duration: ..." for a semantic mistake, so
this module re-reads the (already valid) source and records, for every key
path, the line where it first appears::

    [[rules]]                      ("rules", 0)                      -> line of the header
    name = "x"                     ("rules", 0, "name")
    targets = ["a",                ("rules", 0, "targets"), (..., 0)
               "b"]                ("rules", 0, "targets", 1)        -> line of "b"
    [rules.auto_approve]           ("rules", 0, "auto_approve")

Paths use the same shape as the parsed data: table keys are strings, indexes
into arrays (and arrays of tables) are ints. The scanner assumes its input is
valid TOML (``tomllib`` has already accepted it); if it meets anything it does
not understand it stops and returns what it found so far, because a missing
line number is better than a crash while reporting another error.
"""

from __future__ import annotations

import tomllib

Path = tuple[str | int, ...]

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class _Stop(Exception):
    pass


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s = text
        self.n = len(text)
        self.i = 0
        self.line = 1
        self.lines: dict[Path, int] = {}
        # Resolved path of each array of tables -> index of its latest element.
        self.aot: dict[Path, int] = {}

    # -- low level -------------------------------------------------------

    def _advance(self, count: int = 1) -> None:
        end = min(self.i + count, self.n)
        self.line += self.s.count("\n", self.i, end)
        self.i = end

    def _skip_ws(self, newlines: bool) -> None:
        while self.i < self.n:
            c = self.s[self.i]
            if c in " \t" or (newlines and c in "\r\n"):
                self._advance()
            elif c == "#":
                end = self.s.find("\n", self.i)
                self._advance((self.n if end < 0 else end) - self.i)
            else:
                return

    def _expect(self, token: str) -> None:
        if not self.s.startswith(token, self.i):
            raise _Stop
        self._advance(len(token))

    def _record(self, path: Path, line: int) -> None:
        self.lines.setdefault(path, line)

    # -- keys ------------------------------------------------------------

    def _simple_key(self) -> str:
        start = self.i
        c = self.s[self.i] if self.i < self.n else ""
        if c in ('"', "'"):
            self._skip_string()
            # Let tomllib undo the escapes: it is the authority on TOML strings.
            return str(tomllib.loads("k = " + self.s[start : self.i])["k"])
        while self.i < self.n and self.s[self.i] in _BARE:
            self.i += 1
        if self.i == start:
            raise _Stop
        return self.s[start : self.i]

    def _key(self) -> list[str]:
        parts = [self._simple_key()]
        while True:
            self._skip_ws(newlines=False)
            if self.i < self.n and self.s[self.i] == ".":
                self._advance()
                self._skip_ws(newlines=False)
                parts.append(self._simple_key())
            else:
                return parts

    def _resolve(self, parts: list[str]) -> Path:
        """A header's key path, with the current index of every array of tables on the way."""
        out: Path = ()
        for part in parts:
            out += (part,)
            if out in self.aot:
                out += (self.aot[out],)
        return out

    # -- values ----------------------------------------------------------

    def _skip_string(self) -> None:
        s = self.s
        for quote in ('"""', "'''"):
            if s.startswith(quote, self.i):
                self._advance(3)
                while self.i < self.n:
                    if quote == '"""' and s[self.i] == "\\":
                        self._advance(2)
                    elif s.startswith(quote, self.i):
                        # A multi-line string may end with up to two extra quotes: """a"""""
                        run = 3
                        while run < 5 and s.startswith(quote[0], self.i + run):
                            run += 1
                        self._advance(run)
                        return
                    else:
                        self._advance()
                raise _Stop
        quote = s[self.i]
        self._advance()
        while self.i < self.n:
            c = s[self.i]
            if c == "\\" and quote == '"':
                self._advance(2)
            elif c == quote:
                self._advance()
                return
            elif c == "\n":
                raise _Stop
            else:
                self._advance()
        raise _Stop

    def _value(self, path: Path) -> None:
        self._record(path, self.line)
        if self.i >= self.n:
            raise _Stop
        c = self.s[self.i]
        if c in ('"', "'"):
            self._skip_string()
        elif c == "[":
            self._advance()
            index = 0
            while True:
                self._skip_ws(newlines=True)
                if self.s.startswith("]", self.i):
                    self._advance()
                    return
                self._value(path + (index,))
                self._skip_ws(newlines=True)
                if self.s.startswith(",", self.i):
                    self._advance()
                    index += 1
                    continue
                self._expect("]")
                return
        elif c == "{":
            self._advance()
            while True:
                self._skip_ws(newlines=False)
                if self.s.startswith("}", self.i):
                    self._advance()
                    return
                line = self.line
                parts = self._key()
                for k in range(1, len(parts) + 1):
                    self._record(path + tuple(parts[:k]), line)
                self._skip_ws(newlines=False)
                self._expect("=")
                self._skip_ws(newlines=False)
                self._value(path + tuple(parts))
                self._skip_ws(newlines=False)
                if self.s.startswith(",", self.i):
                    self._advance()
        else:
            # Numbers, booleans, dates: run to the end of the value. A date-time
            # may hold one space ("1979-05-27 07:32:00"), so stop only at these.
            while self.i < self.n and self.s[self.i] not in ",]}#\r\n":
                self.i += 1

    # -- document --------------------------------------------------------

    def scan(self) -> dict[Path, int]:
        table: Path = ()
        try:
            while True:
                self._skip_ws(newlines=True)
                if self.i >= self.n:
                    break
                line = self.line
                if self.s.startswith("[[", self.i):
                    self._advance(2)
                    self._skip_ws(newlines=False)
                    parts = self._key()
                    self._expect("]]")
                    array = self._resolve(parts[:-1]) + (parts[-1],)
                    self.aot[array] = self.aot.get(array, -1) + 1
                    table = array + (self.aot[array],)
                    for k in range(1, len(table) + 1):
                        self._record(table[:k], line)
                elif self.s.startswith("[", self.i):
                    self._advance()
                    self._skip_ws(newlines=False)
                    parts = self._key()
                    self._expect("]")
                    table = self._resolve(parts)
                    for k in range(1, len(table) + 1):
                        self._record(table[:k], line)
                else:
                    parts = self._key()
                    for k in range(1, len(parts) + 1):
                        self._record(table + tuple(parts[:k]), line)
                    self._skip_ws(newlines=False)
                    self._expect("=")
                    self._skip_ws(newlines=False)
                    self._value(table + tuple(parts))
        except (_Stop, IndexError, tomllib.TOMLDecodeError, KeyError):
            pass
        return self.lines


def key_lines(text: str) -> dict[Path, int]:
    """Map each key path in the TOML ``text`` to the 1-based line where it first appears."""
    return _Scanner(text).scan()


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of ``path``, else of its closest enclosing table or array, else ``None``."""
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None
