"""The single sign-on docs agree with the code.

* docs/server-config.md documents exactly the keys of the ``[sso]`` table
  (``server.sso.settings.SsoSettings``), as ``### `sso.KEY` `` sections in the page's one format
  (tests/test_docs_config.py parses it): each default written as a TOML value loads as the
  loader's own default, each example is accepted, and the page's complete ``[sso]`` table loads
  with every key;
* every error code docs/sso.md's troubleshooting table names is one the server raises, and every
  single sign-on error code the server has is in that table;
* the README's SSO try-out is consistent: its TOML block loads (with the secret file it makes),
  and the provider it starts has the issuer, secret file and redirect URI that block names.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from ca.errors import JitSshError
from server.config import ServerConfig, resolve_config
from tests.test_docs_config import ROOT, Entry, parse_page

PAGE = ROOT / "docs" / "server-config.md"
SSO_PAGE = ROOT / "docs" / "sso.md"
README = ROOT / "README.md"
#: The README's server address (serve's default); the redirect URI is this plus /sso/callback.
README_SERVER = "http://127.0.0.1:8022"

_CODE = re.compile(r"`([^`]+)`")
_TOML_BLOCK = re.compile(r"```toml\n(.*?)```", re.S)
#: Error codes that belong to single sign-on without the ``sso_`` prefix.
_SSO_CODES_UNPREFIXED = frozenset({"enrolment_expired", "password_login_disabled", "key_revoked"})


def sso_fields() -> set[str]:
    from server.sso.settings import SsoSettings

    return {f.name for f in fields(SsoSettings)}


@pytest.fixture(scope="module")
def sso_entries() -> dict[str, Entry]:
    return {
        k.removeprefix("sso."): e
        for k, e in parse_page(PAGE.read_text("utf-8")).items()
        if k.startswith("sso.")
    }


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "client-secret"
    path.write_text("a-test-secret-made-at-run-time\n", "utf-8")
    path.chmod(0o600)
    return path


def _load(tmp_path: Path, toml: str, env: dict[str, str] | None = None) -> ServerConfig:
    path = tmp_path / "server.toml"
    path.write_text(toml, "utf-8")
    return resolve_config(path, env={"HOME": str(tmp_path), **(env or {})})


def _table(secret: Path, *lines: str, without: str = "") -> str:
    """An ``[sso]`` table with the required keys (but ``without``) and ``lines``."""
    required = {
        "issuer": '"http://127.0.0.1:9010"',
        "client_id": '"jit-ssh"',
        "client_secret_file": f'"{secret}"',
    }
    given = {line.split("=", 1)[0].strip() for line in lines}
    base = [f"{k} = {v}" for k, v in required.items() if k != without and k not in given]
    return "[sso]\n" + "\n".join([*base, *lines]) + "\n"


def _plain(value: object) -> object:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}  # type: ignore[attr-defined]
    return value


def _in_table(key: str, example: str) -> str:
    """``sso.KEY = VALUE`` (the page's example) as the line ``KEY = VALUE`` of the table."""
    data = tomllib.loads(example)
    assert list(data) == ["sso"] and list(data["sso"]) == [key], f"`sso.{key}`: {example}"
    return example.strip().removeprefix("sso.")


# --------------------------------------------------------------------------- the page's keys


def test_every_sso_setting_is_documented(sso_entries: dict[str, Entry]) -> None:
    missing = sso_fields() - set(sso_entries)
    assert not missing, f"docs/server-config.md lacks sso.{sorted(missing)}"


def test_the_page_names_no_sso_key_the_loader_lacks(sso_entries: dict[str, Entry]) -> None:
    unknown = set(sso_entries) - sso_fields()
    assert not unknown, f"docs/server-config.md documents unknown keys sso.{sorted(unknown)}"


def test_the_server_config_holds_the_sso_table() -> None:
    """`sso` is the table's name in ServerConfig too (its keys are the ones checked here)."""
    assert "sso" in {f.name for f in fields(ServerConfig)}


def test_each_sso_example_is_accepted_with_its_value(
    sso_entries: dict[str, Entry], tmp_path: Path, secret: Path
) -> None:
    for key, entry in sso_entries.items():
        code = _CODE.findall(entry.example)
        assert len(code) == 1, f"`sso.{key}`: one example in backticks: {entry.example}"
        line = _in_table(key, code[0])
        written = tomllib.loads(code[0])["sso"][key]
        cfg = _load(tmp_path, _table(secret, line))
        assert cfg.sso is not None, f"`sso.{key}`: {code[0]} loads no [sso] table"
        loaded = _plain(getattr(cfg.sso, key))
        if isinstance(loaded, (str, int, bool, list, dict)) and not (
            isinstance(written, str) and not isinstance(loaded, str)
        ):
            assert loaded == written, f"`sso.{key}`: {code[0]} loads as {loaded!r}"


def test_each_sso_default_is_the_loaders(
    sso_entries: dict[str, Entry], tmp_path: Path, secret: Path
) -> None:
    """A default written as a TOML value loads exactly as leaving the key out does. One in words
    is either `required` (the table is refused without the key) or stands for an unset key."""
    for key, entry in sso_entries.items():
        literal = re.match(r"`([^`]+)`", entry.default)
        if literal is None:
            if entry.default.startswith("required"):
                with pytest.raises(JitSshError):
                    _load(tmp_path, _table(secret, without=key))
            else:
                cfg = _load(tmp_path, _table(secret, without=key)).sso
                assert getattr(cfg, key) in (None, "", ()), (
                    f"`sso.{key}`: the page says {entry.default!r}, the loader "
                    f"{getattr(cfg, key)!r}"
                )
            continue
        omitted = _load(tmp_path, _table(secret)).sso
        stated = _load(tmp_path, _table(secret, f"{key} = {literal.group(1)}")).sso
        assert getattr(stated, key) == getattr(omitted, key), (
            f"`sso.{key}`: the page says {literal.group(1)}, the loader {getattr(omitted, key)!r}"
        )


def test_the_secret_file_variable_stands_for_the_key(
    sso_entries: dict[str, Entry], tmp_path: Path, secret: Path
) -> None:
    """The page names a variable for client_secret_file only, and it works as the key does."""
    for key, entry in sso_entries.items():
        want = ["JIT_SSH_SSO_CLIENT_SECRET_FILE"] if key == "client_secret_file" else []
        named = _CODE.findall(entry.environment)
        assert named == want or (not want and entry.environment == "none"), (
            f"`sso.{key}`: {entry.environment}"
        )
    toml = _table(secret, without="client_secret_file")
    cfg = _load(tmp_path, toml, {"JIT_SSH_SSO_CLIENT_SECRET_FILE": str(secret)})
    assert cfg.sso is not None and Path(cfg.sso.client_secret_file) == secret


def test_the_pages_complete_sso_table_loads_every_key(tmp_path: Path, secret: Path) -> None:
    text = PAGE.read_text("utf-8")
    section = text.split("## The `[sso]` table", 1)[1]
    block = _TOML_BLOCK.search(section)
    assert block is not None, "the [sso] section shows a complete table"
    data = tomllib.loads(block.group(1))["sso"]
    assert set(data) == sso_fields(), "the complete table sets every key"
    toml = re.sub(
        r'(?m)^client_secret_file = ".*"$', f'client_secret_file = "{secret}"', block.group(1)
    )
    cfg = _load(tmp_path, toml)
    assert cfg.sso is not None
    assert cfg.sso.issuer == data["issuer"] and cfg.sso.client_id == data["client_id"]
    assert cfg.sso.password_login is False and tuple(cfg.sso.break_glass_admins) == ("root-admin",)


# --------------------------------------------------------------------------- error codes


def _server_codes() -> dict[str, str]:
    """Every error code the server defines: code -> module, from server.errors and server.sso."""
    importlib.import_module("server.errors")
    sso = importlib.import_module("server.sso")
    for info in pkgutil.walk_packages(sso.__path__, "server.sso."):
        importlib.import_module(info.name)
    codes: dict[str, str] = {}
    todo = [JitSshError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        code = cls.__dict__.get("code")
        if isinstance(code, str) and cls.__module__.startswith(("server.", "ca.", "policies.")):
            codes[code] = cls.__module__
    return codes


def _troubleshooting_codes() -> list[str]:
    text = SSO_PAGE.read_text("utf-8")
    section = text.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    codes = []
    for line in section.splitlines():
        if line.startswith("| `"):
            m = _CODE.match(line[2:])
            assert m is not None, line
            codes.append(m.group(1))
    assert codes, "docs/sso.md's troubleshooting table lists error codes"
    return codes


def test_every_code_the_sso_page_names_exists() -> None:
    known = _server_codes()
    named = set(_troubleshooting_codes())
    # Anywhere else on the page, a code-like word must be a real code too.
    for word in _CODE.findall(SSO_PAGE.read_text("utf-8")):
        if re.fullmatch(r"sso_[a-z_]+", word) or word in _SSO_CODES_UNPREFIXED:
            named.add(word)
    unknown = named - set(known)
    assert not unknown, f"docs/sso.md names error codes the server lacks: {sorted(unknown)}"


def test_every_sso_error_code_is_in_the_troubleshooting_table() -> None:
    sso_codes = {
        code
        for code, module in _server_codes().items()
        if code.startswith("sso_")
        or code in _SSO_CODES_UNPREFIXED
        or module.startswith("server.sso")
    }
    missing = sso_codes - set(_troubleshooting_codes())
    assert not missing, f"docs/sso.md's troubleshooting table lacks {sorted(missing)}"


# --------------------------------------------------------------------------- the README


def _readme_sso() -> str:
    text = README.read_text("utf-8")
    assert "\n## Single sign-on\n" in text
    return text.split("\n## Single sign-on\n", 1)[1].split("\n## ", 1)[0]


def test_the_readmes_sso_table_loads(tmp_path: Path, secret: Path) -> None:
    section = _readme_sso()
    blocks = [b for b in _TOML_BLOCK.findall(section) if "[sso]" in b]
    assert len(blocks) == 1, "the README's SSO section shows one [sso] table"
    data = tomllib.loads(blocks[0])
    assert set(data) == {"sso"}, "the try-out's server file holds the [sso] table only"
    written = data["sso"]
    assert {"issuer", "client_id", "client_secret_file", "display_name", "groups_claim"} <= set(
        written
    )
    assert "enrolment_lifetime" in written
    toml = blocks[0].replace(
        f'client_secret_file = "{written["client_secret_file"]}"',
        f'client_secret_file = "{secret}"',
    )
    assert toml != blocks[0]
    cfg = _load(tmp_path, toml)
    assert cfg.sso is not None
    assert cfg.sso.issuer == written["issuer"] and cfg.sso.client_id == "jit-ssh"
    assert cfg.sso.display_name == written["display_name"]
    # The button the README tells bob to choose is the one this name makes.
    assert f"**Sign in with {written['display_name']}**" in section


def test_the_readmes_provider_matches_its_table() -> None:
    """The provider the README starts is the issuer its table names, with the same secret file
    and the one redirect URI the README's server has."""
    section = _readme_sso()
    written = tomllib.loads(next(b for b in _TOML_BLOCK.findall(section) if "[sso]" in b))["sso"]
    start = re.search(r"^node tests/oidc/provider\.mjs (.*)$", section, re.M)
    assert start is not None, "the README starts the test provider"
    args = start.group(1).split()
    option = {args[i]: args[i + 1] for i in range(0, len(args) - 1, 2)}
    assert written["issuer"] == f"http://127.0.0.1:{option['--port']}"
    assert option["--client-secret-file"] == written["client_secret_file"]
    assert option["--redirect-uri"] == f"{README_SERVER}/sso/callback"
    assert f"> {written['client_secret_file']})" in section, "the README makes the secret file"
    assert "jit-ssh serve --config sso-demo.toml" in section
    assert "jit-ssh sso check --config sso-demo.toml" in section
