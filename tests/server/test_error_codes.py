"""Every error's code matches its class name, and every code the server can answer
with is in the status table and in the tree drawn in server/errors.py."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest

import ca
import client
import policies
import server
from ca.errors import JitSshError
from server import errors
from server.errors import HTTP_STATUS, http_status

#: Classes whose code is not their own: the server's code, carried by the client.
_CARRIES_ANOTHER_CODE = {"client.http.ApiError"}


def _all_errors() -> list[type[JitSshError]]:
    for package in (ca, policies, server, client):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if ".migrations" not in info.name:
                importlib.import_module(info.name)
    found: list[type[JitSshError]] = []
    todo = [JitSshError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [
        c for c in found if c.__module__.split(".")[0] in ("ca", "policies", "server", "client")
    ]


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _public(cls: type) -> bool:
    return not cls.__name__.startswith("_") and f"{cls.__module__}.{cls.__name__}" not in (
        _CARRIES_ANOTHER_CODE
    )


def _server_reachable(cls: type) -> bool:
    return cls.__module__.split(".")[0] in ("ca", "policies", "server")


ERRORS = _all_errors()


def test_snake_case() -> None:
    assert _snake("InvalidKeyError") == "invalid_key_error"
    assert _snake("CAKeyError") == "ca_key_error"
    assert _snake("UntrustedCA") == "untrusted_ca"
    assert _snake("InvalidKRL") == "invalid_krl"


@pytest.mark.parametrize("cls", [c for c in ERRORS if _public(c)], ids=lambda c: c.__name__)
def test_the_code_is_the_class_name(cls: type[JitSshError]) -> None:
    snake = _snake(cls.__name__)
    assert "code" in cls.__dict__, f"{cls.__module__}.{cls.__name__} has no code of its own"
    assert cls.code in (snake, snake.removesuffix("_error")), (cls.__module__, cls.code)


def test_codes_are_unique_among_server_errors() -> None:
    codes = [c.code for c in ERRORS if _public(c) and _server_reachable(c)]
    assert len(codes) == len(set(codes)), sorted(c for c in codes if codes.count(c) > 1)


@pytest.mark.parametrize(
    "cls", [c for c in ERRORS if _public(c) and _server_reachable(c)], ids=lambda c: c.__name__
)
def test_every_server_code_is_drawn_in_the_tree(cls: type[JitSshError]) -> None:
    doc = errors.__doc__ or ""
    assert re.search(rf"\b{cls.__name__}\s+{cls.code}\s+\d{{3}}\b", doc), cls.__name__


def test_the_table_names_only_codes_that_exist() -> None:
    codes = {c.code for c in ERRORS if _server_reachable(c)}
    assert set(HTTP_STATUS) <= codes, set(HTTP_STATUS) - codes


@pytest.mark.parametrize(
    "cls", [c for c in ERRORS if _public(c) and _server_reachable(c)], ids=lambda c: c.__name__
)
def test_the_tree_shows_the_status_the_table_gives(cls: type[JitSshError]) -> None:
    doc = errors.__doc__ or ""
    m = re.search(rf"\b{cls.__name__}\s+{cls.code}\s+(\d{{3}})\b", doc)
    assert m is not None
    err = cls.__new__(cls)
    assert http_status(err) == int(m.group(1)), cls.__name__


def test_ca_and_policies_carry_no_http_status() -> None:
    for cls in ERRORS:
        if cls.__module__.split(".")[0] in ("ca", "policies"):
            assert not hasattr(cls, "http_status"), cls.__name__
