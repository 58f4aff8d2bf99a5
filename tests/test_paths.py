"""ca.paths: one resolver of jit-ssh's directories, a pure function of the environment it is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from ca import paths


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"HOME": "/h/alice"}, "/h/alice/.local/share/jit-ssh"),
        ({"HOME": "/h/alice", "XDG_DATA_HOME": "/xdg"}, "/xdg/jit-ssh"),
        ({"HOME": "/h/alice", "XDG_DATA_HOME": "~/d"}, "/h/alice/d/jit-ssh"),
        ({"HOME": "/h/alice", "XDG_DATA_HOME": "/xdg", "JIT_SSH_DATA_DIR": "/srv/jit"}, "/srv/jit"),
        ({"HOME": "/h/alice", "JIT_SSH_DATA_DIR": "~/jit"}, "/h/alice/jit"),
    ],
)
def test_data_dir(env: dict[str, str], expected: str) -> None:
    assert paths.data_dir(env) == Path(expected)


def test_config_dir() -> None:
    assert paths.config_dir({"HOME": "/h/bob"}) == Path("/h/bob/.config/jit-ssh")
    assert paths.config_dir({"HOME": "/h/bob", "XDG_CONFIG_HOME": "/c"}) == Path("/c/jit-ssh")


def test_reads_only_the_environment_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIT_SSH_DATA_DIR", "/from/the/process")
    monkeypatch.setenv("HOME", "/process/home")
    assert paths.data_dir({"HOME": "/given"}) == Path("/given/.local/share/jit-ssh")


def test_server_and_client_share_the_resolver() -> None:
    from client.config import resolve_data_dir
    from client.settings import config_path
    from server.config import default_data_dir

    env = {"HOME": "/h/carol", "XDG_DATA_HOME": "/data", "XDG_CONFIG_HOME": "/conf"}
    assert default_data_dir(env) == resolve_data_dir(None, env) == paths.data_dir(env)
    assert config_path(env) == paths.config_dir(env) / "config.toml"
    assert resolve_data_dir("~/x", env) == Path("/h/carol/x")


def test_tilde_user_is_that_accounts_home() -> None:
    import pwd

    root = pwd.getpwuid(0).pw_dir
    assert paths.data_dir({"XDG_DATA_HOME": "~root/x", "HOME": "/elsewhere"}) == Path(
        root, "x", "jit-ssh"
    )
    assert paths.data_dir({"JIT_SSH_DATA_DIR": "~root/d", "HOME": "/elsewhere"}) == Path(root, "d")


def test_a_relative_xdg_directory_is_ignored() -> None:
    # The XDG spec: relative paths there are invalid; never fall into the working directory.
    assert paths.data_dir({"XDG_DATA_HOME": "rel/x", "HOME": "/h"}) == Path(
        "/h/.local/share/jit-ssh"
    )
    assert paths.config_dir({"XDG_CONFIG_HOME": "~nosuchuser_xyz/c", "HOME": "/h"}) == Path(
        "/h/.config/jit-ssh"
    )
