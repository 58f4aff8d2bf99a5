"""The ``[slack]`` table: what it accepts, what it refuses (naming the key), and that neither
secret is ever in the file, the settings' repr or an error message."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import InvalidConfig, resolve_config
from server.slack.settings import DEFAULT_API_URL, SlackSettings, parse_slack_settings


def _load(tmp_path: Path, body: str, env: dict[str, str] | None = None) -> object:
    path = tmp_path / "server.toml"
    path.write_text(body, "utf-8")
    return resolve_config(path, env={"HOME": str(tmp_path), **(env or {})}).slack


def test_files_or_variables_give_the_secrets(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("xoxb-made-at-run-time\n")
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-made-at-run-time\n")
    s = _load(
        tmp_path,
        f'[slack]\nbot_token_file = "{token}"\nsigning_secret_file = "{secret}"\n',
    )
    assert isinstance(s, SlackSettings)
    assert s.bot_token() == "xoxb-made-at-run-time"
    assert s.signing_secret() == "s3cr3t-made-at-run-time"
    assert s.api_url == DEFAULT_API_URL and s.match_email is True and s.channel is None
    assert "xoxb-made" not in repr(s) and "s3cr3t" not in repr(s)
    # A rotated token is read on the next use.
    token.write_text("xoxb-rotated\n")
    assert s.bot_token() == "xoxb-rotated"

    env = {
        "JIT_SSH_SLACK_BOT_TOKEN": "xoxb-from-env",
        "JIT_SSH_SLACK_SIGNING_SECRET": "secret-from-env",
    }
    s = _load(tmp_path, '[slack]\nchannel = "C0123ABCD"\n', env)
    assert isinstance(s, SlackSettings)
    assert s.bot_token() == "xoxb-from-env" and s.signing_secret() == "secret-from-env"
    assert "xoxb-from-env" not in repr(s)


@pytest.mark.parametrize(
    "line, field",
    [
        ('bot_token = "xoxb-123"', "slack.bot_token"),
        ('signing_secret = "abc"', "slack.signing_secret"),
        ('chanel = "#x"', "slack.chanel"),
        ('channel = "general"', "slack.channel"),
        ('channel = "#General Chat"', "slack.channel"),
        ('api_url = "http://slack.example.com/api/"', "slack.api_url"),
        ('api_url = "ftp://127.0.0.1/"', "slack.api_url"),
        ('api_url = "https://u:p@slack.com/api/"', "slack.api_url"),
        ('users = { "alice" = "alice" }', "slack.users"),
        ('users = { "U0123ABCD" = "not a name" }', "slack.users"),
        ('users = { "U0123ABCD" = "a", "U0123ABCE" = "a" }', "slack.users"),
        ('users = ["U0123ABCD"]', "slack.users"),
        ('match_email = "yes"', "slack.match_email"),
        ("http_timeout = 0", "slack.http_timeout"),
        ("http_timeout = true", "slack.http_timeout"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path: Path, line: str, field: str) -> None:
    body = '[slack]\nbot_token_file = "/run/t"\nsigning_secret_file = "/run/s"\n' + line + "\n"
    with pytest.raises(InvalidConfig) as e:
        _load(tmp_path, body)
    assert e.value.field == field
    assert "xoxb-123" not in str(e.value)


def test_a_token_and_a_secret_are_required(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig) as e:
        _load(tmp_path, '[slack]\nsigning_secret_file = "/run/s"\n')
    assert e.value.field == "slack.bot_token_file"
    with pytest.raises(InvalidConfig) as e:
        _load(tmp_path, '[slack]\nbot_token_file = "/run/t"\n')
    assert e.value.field == "slack.signing_secret_file"
    with pytest.raises(InvalidConfig):
        parse_slack_settings("not a table", env={})


def test_loopback_http_is_allowed_and_a_slash_is_added(tmp_path: Path) -> None:
    for url in ("http://127.0.0.1:9999/api", "http://localhost/api/", "http://[::1]:80/api/"):
        s = SlackSettings(bot_token_file=Path("/t"), signing_secret_file=Path("/s"), api_url=url)
        assert s.api_url.endswith("/api/")


def test_an_unreadable_or_empty_secret_file_names_the_file_not_a_secret(tmp_path: Path) -> None:
    s = SlackSettings(bot_token_file=tmp_path / "missing", signing_secret_file=tmp_path / "empty")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InvalidConfig, match="cannot be read"):
        s.bot_token()
    with pytest.raises(InvalidConfig, match="one line"):
        s.signing_secret()
    s = SlackSettings(env={})
    with pytest.raises(InvalidConfig, match="JIT_SSH_SLACK_BOT_TOKEN"):
        s.bot_token()


def test_the_reverse_mapping_finds_the_slack_id() -> None:
    s = SlackSettings(users={"U0AAA1": "alice", "W0BBB2": "bob"}, env={})
    assert s.slack_user_for("bob") == "W0BBB2" and s.slack_user_for("carol") is None
