"""docs/server-config.md documents exactly the keys the server's configuration loader knows.

Each key's section (``### `key```) has a meaning and one table row: type, default, environment
variable, example. The test fails when the loader knows a key the page lacks, or the page names
one it does not; when a key's environment variable differs from the loader's; when a default
written as a TOML value differs from the loader's; and when an example (or the page's complete
file) is not a configuration the loader accepts with that value.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from ipaddress import ip_network
from pathlib import Path

import pytest

from ca.durations import parse_duration
from server.config import _ENV, InvalidConfig, ServerConfig, resolve_config

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "server-config.md"

_HEADING = re.compile(r"^### `([^`]+)`\s*$")
_ROW = re.compile(r"^\|(.+)\|\s*$")
_CODE = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Entry:
    key: str
    line: int
    meaning: str
    type: str
    default: str
    environment: str
    example: str


def loader_keys() -> set[str]:
    """The top-level keys a TOML file may set: the loader refuses every other one."""
    return {f.name for f in fields(ServerConfig)} - {"extra"}


def parse_page(text: str) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    lines = text.split("\n")
    starts = [(n, m.group(1)) for n, line in enumerate(lines) if (m := _HEADING.match(line))]
    for i, (start, key) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(lines)
        section = lines[start + 1 : end]
        # The section ends at the next heading of any level.
        for j, line in enumerate(section):
            if line.startswith("#"):
                section = section[:j]
                break
        rows = [m.group(1) for line in section if (m := _ROW.match(line))]
        where = f"docs/server-config.md:{start + 1}: `{key}`"
        assert key not in entries, f"{where} is documented twice"
        assert len(rows) == 3, f"{where}: one table (header, rule, one row) expected, got {rows}"
        header = [c.strip() for c in rows[0].split("|")]
        assert header == ["type", "default", "environment", "example"], f"{where}: {header}"
        cells = [c.strip() for c in rows[2].split("|")]
        assert len(cells) == 4 and all(cells), f"{where}: every cell filled: {cells}"
        meaning = " ".join(
            line.strip() for line in section if line.strip() and not line.startswith("|")
        )
        assert meaning, f"{where} says nothing of what it means"
        entries[key] = Entry(key, start + 1, meaning, *cells)
    return entries


@pytest.fixture(scope="module")
def entries() -> dict[str, Entry]:
    """The top-level keys' entries; the keys inside a table (``sso.issuer``: a ``### `sso.KEY` ``
    section each) are tests/test_docs_sso.py's."""
    return {k: e for k, e in parse_page(PAGE.read_text("utf-8")).items() if "." not in k}


def _resolve(tmp_path: Path, toml: str) -> ServerConfig:
    path = tmp_path / "server.toml"
    path.write_text(toml, "utf-8")
    return resolve_config(path, env={"HOME": str(tmp_path)})


def _plain(value: object) -> object:
    """A loaded value as TOML holds it (a tuple is a list, a path its string)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _same(key: str, loaded: object, written: object) -> bool:
    """The loaded value is what the TOML wrote (a proxy address is read as its network; each
    key of the [sso] and [slack] tables is its settings' attribute, a duration its timedelta)."""
    if key in ("sso", "slack") and isinstance(written, dict):
        return loaded is not None and all(
            parse_duration(v) == getattr(loaded, k)
            if k == "enrolment_lifetime"
            else _plain(getattr(loaded, k)) == v
            for k, v in written.items()
        )
    if key == "webhooks" and isinstance(loaded, tuple) and isinstance(written, list):
        return len(loaded) == len(written) and all(
            _plain(getattr(w, k)) == v
            for w, table in zip(loaded, written, strict=True)
            for k, v in table.items()
        )
    if key == "notifications" and isinstance(written, dict):
        return all(
            parse_duration(v) == getattr(loaded, k)
            if isinstance(v, str)
            else getattr(loaded, k) == v
            for k, v in written.items()
        )
    if key == "trusted_proxies" and isinstance(loaded, tuple) and isinstance(written, list):
        return [ip_network(v) for v in loaded] == [ip_network(str(v)) for v in written]
    return _plain(loaded) == written


def test_every_loader_key_is_documented(entries: dict[str, Entry]) -> None:
    missing = loader_keys() - set(entries)
    assert not missing, f"docs/server-config.md lacks {sorted(missing)}"


def test_the_page_names_no_key_the_loader_refuses(entries: dict[str, Entry]) -> None:
    unknown = set(entries) - loader_keys()
    assert not unknown, f"docs/server-config.md documents unknown keys {sorted(unknown)}"


def test_each_key_names_its_environment_variable(entries: dict[str, Entry]) -> None:
    by_key = {name: var for var, name in _ENV.items()}
    for key, entry in entries.items():
        named = _CODE.findall(entry.environment)
        want = by_key.get(key)
        if want is None:
            assert entry.environment == "none", f"`{key}` has no variable: {entry.environment}"
        else:
            assert named[:1] == [want], f"`{key}`'s variable is {want}, the page: {named}"


def test_each_default_is_the_loaders(entries: dict[str, Entry]) -> None:
    """A default written as a TOML value (`300`, `true`, `[]`) is the loader's default; one in
    words stands for a default the loader computes (its field is empty or required)."""
    defaults = {f.name: f.default for f in fields(ServerConfig)}
    for key, entry in entries.items():
        if key not in defaults:
            continue  # test_the_page_names_no_key_the_loader_refuses says so
        literal = re.match(r"`([^`]+)`", entry.default)
        parsed: object = None
        if literal:
            try:
                parsed = tomllib.loads(f"v = {literal.group(1)}")["v"]
            except tomllib.TOMLDecodeError:
                literal = None
        if literal:
            assert parsed == _plain(defaults[key]), (
                f"`{key}`: the page says {literal.group(1)}, the loader {defaults[key]!r}"
            )
        else:
            assert defaults[key] in (MISSING, None, "", ()), (
                f"`{key}`: the loader's default {defaults[key]!r} is no TOML value on the page"
            )


def test_each_example_is_accepted_with_its_value(entries: dict[str, Entry], tmp_path: Path) -> None:
    for key, entry in entries.items():
        code = _CODE.findall(entry.example)
        assert len(code) == 1, f"`{key}`: one example in backticks: {entry.example}"
        data = tomllib.loads(code[0])
        assert list(data) == [key], f"`{key}`'s example sets {list(data)}"
        cfg = _resolve(tmp_path, code[0])
        assert _same(key, getattr(cfg, key), data[key]), f"`{key}`: {code[0]} loads otherwise"


def test_the_complete_file_is_accepted_and_sets_every_key(tmp_path: Path) -> None:
    text = PAGE.read_text("utf-8")
    block = re.search(r"```toml\n(.*?)```", text, re.S)
    assert block is not None, "docs/server-config.md shows a complete file"
    data = tomllib.loads(block.group(1))
    assert set(data) == loader_keys()
    cfg = _resolve(tmp_path, block.group(1))
    for key, value in data.items():
        assert _same(key, getattr(cfg, key), value), key


def test_the_loader_refuses_a_key_the_page_lacks(tmp_path: Path) -> None:
    """What the page's completeness rests on: a key outside the loader's set is an error."""
    with pytest.raises(InvalidConfig, match="unknown setting 'max_clock_skw'"):
        _resolve(tmp_path, "max_clock_skw = 300\n")


def test_parse_page_catches_a_section_without_its_table() -> None:
    with pytest.raises(AssertionError, match=r"server-config.md:1: `bootstrap`: one table"):
        parse_page("### `bootstrap`\n\nWhether to create.\n")


def test_the_readme_links_the_page() -> None:
    assert "(docs/server-config.md)" in (ROOT / "README.md").read_text("utf-8")
