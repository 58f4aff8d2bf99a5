"""The client's error tree: codes match names, one module holds the exit codes and the handler."""

from __future__ import annotations

import importlib
import pkgutil
import re

import click
import pytest

import client
from ca.errors import JitSshError
from client import errors


def _snake(name: str) -> str:
    # "InsecureServerURL" -> "insecure_server_url", "KeyFileError" -> "key_file_error"
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _client_error_classes() -> list[type[JitSshError]]:
    found: dict[str, type[JitSshError]] = {}
    for info in pkgutil.walk_packages(client.__path__, "client."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, JitSshError)
                and value.__module__.startswith("client.")
            ):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


def test_every_client_error_code_is_its_class_name_in_snake_case() -> None:
    classes = _client_error_classes()
    assert len(classes) >= 15, [c.__name__ for c in classes]
    for cls in classes:
        snake = _snake(cls.__name__)
        assert cls.code in (snake, snake.removesuffix("_error")), (cls, cls.code)


def test_the_signers_passphrase_errors_are_also_the_ca_ones() -> None:
    from ca import errors as ca_errors
    from client.signing import BadPassphrase, KeyFileError, PassphraseRequired

    assert issubclass(PassphraseRequired, ca_errors.PassphraseRequired)
    assert issubclass(PassphraseRequired, KeyFileError)
    assert issubclass(BadPassphrase, ca_errors.BadPassphrase)
    assert (PassphraseRequired.code, BadPassphrase.code) == (
        "passphrase_required",
        "bad_passphrase",
    )


def test_the_http_module_and_the_cli_reexport_the_one_definitions() -> None:
    from client import cli, http

    for name in ("ApiError", "BadServerAnswer", "RedirectRefused", "ServerUnreachable"):
        assert getattr(http, name) is getattr(errors, name)
    for name in ("EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_NOT_FOUND", "EXIT_UNREACHABLE"):
        assert getattr(cli, name) == getattr(errors, name)


@pytest.mark.parametrize(
    "code, exit_code",
    [
        ("server_unreachable", errors.EXIT_UNREACHABLE),
        ("database_unavailable", errors.EXIT_UNREACHABLE),
        ("not_found", errors.EXIT_NOT_FOUND),
        ("policy_denied", errors.EXIT_FAILED),
    ],
)
def test_exit_code_for_error_codes(code: str, exit_code: int) -> None:
    error = errors.ApiError(400, code, "x")
    assert errors.exit_code_for(error) == exit_code


@pytest.mark.parametrize(
    "error, line, exit_code",
    [
        (errors.Failure("no"), "error: no\n", errors.EXIT_FAILED),
        (errors.NothingFound("nothing"), "error: nothing\n", errors.EXIT_NOT_FOUND),
        (errors.ToolMissing("no ssh"), "error: no ssh\n", errors.EXIT_UNREACHABLE),
        (errors.ServerUnreachable("down"), "error: down [server_unreachable]\n", 4),
        (click.exceptions.Abort(), "Aborted.\n", errors.EXIT_INTERRUPTED),
    ],
)
def test_run_prints_one_line_and_exits_with_the_code(
    error: BaseException, line: str, exit_code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail() -> None:
        raise error

    with pytest.raises(SystemExit) as info:
        errors.run(fail)
    assert info.value.code == exit_code
    assert capsys.readouterr().err == line
