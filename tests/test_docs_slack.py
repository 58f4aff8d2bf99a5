"""The Slack docs agree with the code.

* docs/server-config.md documents exactly the keys of the ``[slack]`` table
  (``server.slack.settings.SlackSettings``) as ``### `slack.KEY` `` sections: each example is
  accepted with its value, each default written as a TOML value is the loader's, and the page's
  complete ``[slack]`` table loads with every key;
* the README's app manifest (its Notifications section) parses as YAML, asks for exactly the bot scopes the Web API
  methods jit-ssh calls need, and points interactivity at ``/slack/interactions``; every error
  code the page names is one the server has.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from server.config import ServerConfig, resolve_config
from tests.test_docs_config import ROOT, Entry, parse_page

PAGE = ROOT / "docs" / "server-config.md"
SLACK_PAGE = ROOT / "README.md"
#: Where the refusals are explained: the Slack section of docs/notifications.md.
REFUSALS_PAGE = ROOT / "docs" / "notifications.md"
_CODE = re.compile(r"`([^`]+)`")
_TOML_BLOCK = re.compile(r"```toml\n(.*?)```", re.S)
_YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)

#: The Web API methods server/slack calls, and the bot scope each needs (Slack's method pages).
METHOD_SCOPES = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.delete": "chat:write",
    "chat.postEphemeral": "chat:write",
    "conversations.open": "im:write",
    "users.info": "users:read",
    "users.lookupByEmail": "users:read.email",
    "views.open": None,  # needs only a trigger id
}


def slack_fields() -> set[str]:
    from server.slack.settings import SlackSettings

    return {f.name for f in fields(SlackSettings)} - {"env"}


@pytest.fixture(scope="module")
def entries() -> dict[str, Entry]:
    return {
        k.removeprefix("slack."): e
        for k, e in parse_page(PAGE.read_text("utf-8")).items()
        if k.startswith("slack.")
    }


def _load(tmp_path: Path, body: str) -> ServerConfig:
    path = tmp_path / "server.toml"
    path.write_text(body, "utf-8")
    return resolve_config(path, env={"HOME": str(tmp_path)})


_REQUIRED = ('bot_token_file = "/run/slack-token"', 'signing_secret_file = "/run/slack-secret"')


def _table(*lines: str) -> str:
    given = {line.split("=", 1)[0].strip() for line in lines}
    base = [r for r in _REQUIRED if r.split("=", 1)[0].strip() not in given]
    return "[slack]\n" + "\n".join([*base, *lines]) + "\n"


def _plain(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "items"):
        return dict(value.items())  # type: ignore[attr-defined]
    return value


def test_every_slack_setting_is_documented_and_no_other(entries: dict[str, Entry]) -> None:
    assert set(entries) == slack_fields()
    assert "slack" in {f.name for f in fields(ServerConfig)}


def test_each_slack_example_is_accepted_with_its_value(
    entries: dict[str, Entry], tmp_path: Path
) -> None:
    for key, entry in entries.items():
        [code] = _CODE.findall(entry.example)
        data = tomllib.loads(code)
        assert list(data) == ["slack"] and list(data["slack"]) == [key], code
        cfg = _load(tmp_path, _table(code.removeprefix("slack.")))
        assert cfg.slack is not None
        assert _plain(getattr(cfg.slack, key)) == data["slack"][key], key


def test_each_slack_default_is_the_loaders(entries: dict[str, Entry], tmp_path: Path) -> None:
    omitted = _load(tmp_path, _table()).slack
    for key, entry in entries.items():
        literal = re.match(r"`([^`]+)`", entry.default)
        if literal is None:
            if key.endswith("_file"):
                continue  # the default is the environment variable
            assert getattr(omitted, key) in (None, "", ()), key
            continue
        stated = _load(tmp_path, _table(f"{key} = {literal.group(1)}")).slack
        assert getattr(stated, key) == getattr(omitted, key), key


def test_the_pages_complete_slack_table_loads_every_key(tmp_path: Path) -> None:
    section = PAGE.read_text("utf-8").split("## The `[slack]` table", 1)[1]
    block = _TOML_BLOCK.search(section)
    assert block is not None
    data = tomllib.loads(block.group(1))["slack"]
    assert set(data) == slack_fields()
    cfg = _load(tmp_path, block.group(1))
    assert cfg.slack is not None and cfg.slack.channel == data["channel"]


def test_the_manifest_asks_for_the_scopes_the_code_uses() -> None:
    text = SLACK_PAGE.read_text("utf-8").split("\n## Notifications\n", 1)[1].split("\n## ", 1)[0]
    block = _YAML_BLOCK.search(text)
    assert block is not None, "the README's Notifications section shows the app manifest"
    manifest = yaml.safe_load(block.group(1))
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert scopes == {s for s in METHOD_SCOPES.values() if s}
    interactivity = manifest["settings"]["interactivity"]
    assert interactivity["is_enabled"] is True
    assert interactivity["request_url"].endswith("/slack/interactions")


def test_the_methods_listed_are_the_methods_the_code_calls() -> None:
    """Each ``client.<method>(`` in server/slack is in METHOD_SCOPES, and each listed one is
    called: a new call cannot slip in without its scope in the manifest."""
    source = "".join(p.read_text("utf-8") for p in (ROOT / "server" / "slack").glob("*.py"))
    called = set(re.findall(r"\.(chat_\w+|conversations_\w+|users_\w+|views_\w+)\(", source))
    named = {m.replace(".", "_") for m in METHOD_SCOPES}
    assert called == named


def test_the_error_codes_on_the_page_exist() -> None:
    from ca.errors import JitSshError

    codes: set[str] = set()
    todo: list[type] = [JitSshError]
    import server.errors  # noqa: F401 - defines the classes

    while todo:
        cls = todo.pop()
        codes.add(cls.__dict__.get("code", ""))
        todo.extend(cls.__subclasses__())
    # The page names each code in parentheses, after what it refuses: "(`self_approval`)".
    slack_section = REFUSALS_PAGE.read_text("utf-8").split("\n## Slack\n", 1)[1]
    groups = re.findall(r"\(([^()]*)\)", slack_section)
    named = {c for g in groups for c in re.findall(r"`([a-z]+_[a-z_]+)`", g)}
    assert named, "the page names the refusals"
    assert named <= codes, named - codes
