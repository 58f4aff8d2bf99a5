"""Shared fixtures (a fixed clock, a temporary data directory, a CLI runner, cheap password
hashing) and the hooks that draw the line between the inner loop and the integration set:
``pytest -m "not integration"`` runs what needs no sshd, PostgreSQL or browser, on every core;
plain ``pytest`` runs every test; under CI=true nothing may skip."""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

# tests/support.py holds shared assertions: let pytest explain their failures too.
pytest.register_assert_rewrite("tests.support")

IN_CI = os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}

#: The skips CI accepts: the platform lacks the feature itself, no component is missing.
_CI_MAY_SKIP = ("this ssh-keygen no longer makes DSA keys",)


def require_tool(name: str) -> str:
    """The tool's path; skip when it is missing, but fail under CI=true (never a silent skip there)."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None
    )
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is required under CI=true but is not installed")
        pytest.skip(f"{name} is not installed")
    return path


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """The inner loop (``-m "not integration"``) runs on every core with pytest-xdist.

    Only when xdist is installed (the test extra brings it), no ``-n`` was given (``-n 0``
    runs serially), and neither a debugger nor ``--collect-only`` is in use. The whole
    suite (plain ``pytest``) stays serial: its sshd, servers and browser are shared per
    session and module. Runs before xdist's own hook, which turns ``-n`` into workers."""
    opt = config.option
    if (
        config.pluginmanager.hasplugin("xdist")
        and not hasattr(config, "workerinput")
        and getattr(opt, "numprocesses", 0) is None
        and "notintegration" in (opt.markexpr or "").replace(" ", "")
        and not opt.usepdb
        and not opt.collectonly
    ):
        opt.numprocesses = "auto"


#: Folders whose every test needs a real sshd, PostgreSQL, a browser, or runs for long:
#: the integration set (``pytest -m integration``), left out of the inner loop.
_INTEGRATION_DIRS = ("integration", "reliability")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration and tests/reliability, and every test that
    runs ssh-keygen, as ``integration``: ``pytest -m "not integration"`` is the fast inner
    loop, and plain ``pytest`` still runs every test."""
    root = Path(__file__).parent
    for item in items:
        try:
            rel = item.path.relative_to(root)
        except ValueError:
            continue
        in_folder = bool(rel.parts) and rel.parts[0] in _INTEGRATION_DIRS
        # A test that takes the ssh_keygen fixture runs OpenSSH's binary: the marker's own
        # definition puts it in the integration set, wherever it lives.
        if in_folder or "ssh_keygen" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Under CI=true a skip is a failure: a missing component (sshd, PostgreSQL, Chromium,
    the installed command) must fail CI, never pass it silently, whichever helper skipped."""
    report = yield
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(allowed in reason for allowed in _CI_MAY_SKIP):
            report.outcome = "failed"
            report.longrepr = f"skipped under CI=true, where every test must run: {reason}"
    return report


@pytest.fixture(scope="session")
def ssh_keygen() -> str:
    """Path of ssh-keygen; skipped when missing, except under CI=true where it must exist.
    (tests/integration and test_krl_interop have their own.)"""
    path = shutil.which("ssh-keygen")
    if path is None:
        if IN_CI:
            pytest.fail("ssh-keygen is required when CI=true (install Debian's openssh-client)")
        pytest.skip("ssh-keygen (OpenSSH) is not installed; interop checks need it")
    return path


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    """argon2id at a test cost (8 KiB, one pass) for the in-process tests.

    The server hashes with ``argon2.PasswordHasher()``'s defaults (RFC 9106's low-memory
    profile: 64 MiB, three passes), close to a second per hash on a loaded test machine,
    and every web fixture sets passwords and logs in. Only the defaults change, for this
    test process: the production code and its parameters are untouched, and servers the
    integration tests start in a subprocess hash at the real cost."""
    import argon2

    init = argon2.PasswordHasher.__init__
    production = init.__defaults__
    names = list(inspect.signature(init).parameters)[1:]
    cheap = dict(zip(names, production or (), strict=True))
    cheap.update(time_cost=1, memory_cost=8, parallelism=1)
    init.__defaults__ = tuple(cheap.values())
    try:
        yield
    finally:
        init.__defaults__ = production


@pytest.fixture
def now() -> datetime:
    return datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "data"
    monkeypatch.setenv("JIT_SSH_DATA_DIR", str(d))
    monkeypatch.delenv("JIT_SSH_CA_PASSPHRASE", raising=False)
    return d


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()
