"""The README's walkthrough, run as written, so the docs cannot drift from the code.

The README marks its runnable blocks with an HTML comment before the fence:

* ``<!-- walkthrough: PERSON -->``: run each command of the next ``sh`` block as PERSON
  (``admin``, ``alice``, ``bob``), with bash, in the shared working directory, with that
  person's own HOME and the installed ``jit-ssh`` on PATH; the admin's HOME is the one
  ``jit-ssh serve`` runs with, so the admin commands find its data directory;
* ``<!-- walkthrough: PERSON, waits -->``: the block's command waits for someone else
  (``login`` for an approval): it runs in the background, the next blocks run meanwhile,
  and it must have ended well before PERSON's next block (or the walkthrough's end);
* ``<!-- walkthrough-output -->``: a ``text`` block of lines the previous block's last
  command prints, in order, ``...`` standing for any text;
* ``<!-- walkthrough-skip: WHY -->``: a block that cannot run here (a real host).

Every ``sh`` block between the first and the last marker must carry one, so a command added to
the walkthrough without a marker fails here. ``<request-id>`` stands for the request id the
commands printed. A command exits 0 unless it ends with the comment ``# exits N``. The server
is the README's own ``jit-ssh serve``, on a free port instead of 8022 (the test replaces the
README's ``http://127.0.0.1:8022``, serve's default address, with it); nothing else is changed.
A failure names the README line of the command.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import answers_healthz, free_port, wait_ready

from .conftest import skip_or_fail
from .e2e_helpers import end_process, jit_ssh_command

README = Path(__file__).resolve().parents[2] / "README.md"
#: The server URL the README's walkthrough uses: `jit-ssh serve`'s default address.
README_SERVER = "http://127.0.0.1:8022"
#: Seconds one command may take, and the whole walkthrough (the conftest's 60 s is too short
#: for a dozen commands, two argon2 hashes at the server's real cost, and a server start).
COMMAND_TIMEOUT = 60
WALKTHROUGH_TIMEOUT = 300
REQUEST_ID = re.compile(r"\b[0-9a-f]{16}\b")

_MARKER = re.compile(r"<!--\s*(walkthrough(?:-skip|-output)?|completion)\s*(?::\s*(.*?))?\s*-->")
_FENCE = re.compile(r"^```(\w*)\s*$")
_EXITS = re.compile(r"#\s*exits\s+(\d+)\s*$")
_PLACEHOLDER = re.compile(r"<([a-z][a-z-]*)>")


@dataclass(frozen=True)
class Command:
    line: int  # 1-based line of README.md where the command starts
    text: str
    expect: int = 0


@dataclass
class Block:
    kind: str  # walkthrough, walkthrough-skip, completion
    line: int  # the marker's line
    person: str = ""
    waits: bool = False
    commands: list[Command] = field(default_factory=list)
    #: Lines the last command prints (from a walkthrough-output block).
    output: list[str] = field(default_factory=list)


def _commands(lines: list[str], first: int) -> list[Command]:
    """The commands of a fence's body (``first``: the README line of its first line): blank and
    comment-only lines dropped, backslash continuations joined."""
    out: list[Command] = []
    pending: list[str] = []
    start = 0
    for n, raw in enumerate(lines, start=first):
        if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if not pending:
            start = n
        pending.append(raw)
        if raw.endswith("\\"):
            continue
        text = "\n".join(pending)
        m = _EXITS.search(text)
        out.append(Command(start, text, int(m.group(1)) if m else 0))
        pending = []
    assert not pending, f"README.md:{start}: a command ends in a backslash continuation"
    return out


def parse_readme(text: str) -> list[Block]:
    """The marked blocks of ``text``, in order. Fails on a marker without a fence after it,
    an output block with no command before it, or an unmarked ``sh`` block amid the markers."""
    lines = text.split("\n")
    blocks: list[Block] = []
    marked: set[int] = set()  # lines of fences that a marker claims
    i = 0
    while i < len(lines):
        m = _MARKER.fullmatch(lines[i].strip())
        if not m:
            i += 1
            continue
        kind, arg = m.group(1), (m.group(2) or "")
        marker_line = i + 1
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        assert j < len(lines) and _FENCE.match(lines[j]), (
            f"README.md:{marker_line}: the {kind} marker is not followed by a fenced block"
        )
        end = j + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        body = lines[j + 1 : end]
        marked.add(j)
        if kind == "walkthrough-output":
            assert blocks and blocks[-1].kind == "walkthrough", (
                f"README.md:{marker_line}: an output block must follow a walkthrough block"
            )
            blocks[-1].output = [b for b in body if b.strip()]
        else:
            block = Block(kind=kind, line=marker_line)
            if kind == "walkthrough":
                person, _, flag = (p.strip() for p in arg.partition(","))
                assert person, f"README.md:{marker_line}: name the person who runs the block"
                assert flag in ("", "waits"), f"README.md:{marker_line}: unknown flag {flag!r}"
                block.person, block.waits = person, flag == "waits"
            block.commands = _commands(body, j + 2)
            if kind == "walkthrough" and block.waits:
                assert len(block.commands) == 1, (
                    f"README.md:{marker_line}: a block that waits holds exactly one command"
                )
            blocks.append(block)
        i = end + 1
    steps = [b for b in blocks if b.kind.startswith("walkthrough")]
    if steps:
        first, last = steps[0].line, steps[-1].line
        for n, line in enumerate(lines):
            if first <= n + 1 <= last and line.strip() == "```sh" and n not in marked:
                pytest.fail(
                    f"README.md:{n + 1}: an sh block in the walkthrough without a marker "
                    "(<!-- walkthrough: PERSON --> or <!-- walkthrough-skip: WHY -->)",
                    pytrace=False,
                )
    return blocks


def matches(expected: list[str], output: str) -> str | None:
    """None when each expected line matches a line of ``output``, in order (``...``: any text);
    else the first expected line that does not."""
    got = output.splitlines()
    at = 0
    for want in expected:
        pattern = re.compile(".*".join(re.escape(p.strip()) for p in want.split("...")))
        while at < len(got) and not pattern.fullmatch(got[at].strip()):
            at += 1
        if at == len(got):
            return want
        at += 1
    return None


# --------------------------------------------------------------------------- the people


@dataclass
class Running:
    command: Command
    person: str
    proc: subprocess.Popen[bytes]
    log: Path


class Walkthrough:
    """The README's people, each with a HOME, in one shared working directory."""

    def __init__(self, root: Path, jit_ssh: str) -> None:
        self.root = root
        self.jit_ssh = jit_ssh
        self.workdir = root / "work"
        self.workdir.mkdir()
        self.homes: dict[str, Path] = {}
        self.server_url = ""
        self.server: subprocess.Popen[bytes] | None = None
        self.values: dict[str, str] = {}
        self.background: dict[str, Running] = {}

    def home(self, person: str) -> Path:
        if person not in self.homes:
            self.homes[person] = self.root / f"home-{person}"
            self.homes[person].mkdir(mode=0o700)
        return self.homes[person]

    def env(self, person: str) -> dict[str, str]:
        """A clean environment: no jit-ssh settings, agent or XDG directories from the caller;
        the installed jit-ssh first on PATH, as `source .venv/bin/activate` puts it."""
        keep = ("LANG", "LC_ALL", "TZ")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        bin_dir = str(Path(self.jit_ssh).parent)
        env["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "/usr/bin:/bin")])
        env["HOME"] = str(self.home(person))
        return env

    # ------------------------------------------------------------------ the server

    def serve(self) -> None:
        """`jit-ssh serve` as the README's set-up runs it, as the admin, on a free port."""
        log = self.root / "serve.log"
        for _attempt in range(3):
            port = free_port()
            self.server_url = f"http://127.0.0.1:{port}"
            with open(log, "ab") as out:
                self.server = subprocess.Popen(
                    [self.jit_ssh, "serve", "--bind", f"127.0.0.1:{port}"],
                    env=self.env("admin"),
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    # Its own process group: gunicorn's master and workers end together.
                    start_new_session=True,
                )
            if wait_ready(self.server, lambda: answers_healthz(self.server_url), 60):
                return
            end_process(self.server, group=True)
            if "Address already in use" not in log.read_text(errors="replace"):
                break
        pytest.fail(f"jit-ssh serve did not start:\n{log.read_text()[-3000:]}", pytrace=False)

    def stop(self) -> None:
        for running in self.background.values():
            end_process(running.proc)
        end_process(self.server, group=True)

    # ------------------------------------------------------------------ commands

    def shell_text(self, command: Command) -> str:
        text = command.text.replace(README_SERVER, self.server_url)

        def fill(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in self.values:
                pytest.fail(
                    f"README.md:{command.line}: no value for <{name}> yet: {command.text}",
                    pytrace=False,
                )
            return self.values[name]

        return _PLACEHOLDER.sub(fill, text)

    def _argv(self, command: Command) -> list[str]:
        return ["bash", "-e", "-o", "pipefail", "-c", self.shell_text(command)]

    def _learn(self, command: Command, output: str) -> None:
        """``<request-id>``: the first request id that a command about requests printed."""
        if not re.search(r"\bjit-ssh (login|pending|requests|status)\b", command.text):
            return
        ids = REQUEST_ID.findall(output)
        if ids and "request-id" not in self.values:
            self.values["request-id"] = ids[0]

    def run(self, person: str, command: Command) -> str:
        try:
            result = subprocess.run(
                self._argv(command),
                env=self.env(person),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=COMMAND_TIMEOUT,
            )
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace")
            pytest.fail(
                f"README.md:{command.line}: {command.text!r} ({person}) took longer than "
                f"{COMMAND_TIMEOUT} s; output:\n{out}",
                pytrace=False,
            )
        output = result.stdout.decode(errors="replace")
        _check_exit(person, command, result.returncode, output)
        self._learn(command, output)
        return output

    def start(self, person: str, command: Command) -> None:
        """Run a command that waits for someone else; return once it has printed a request id."""
        log = self.root / f"{person}-{command.line}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                self._argv(command),
                env=self.env(person),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.background[person] = Running(command, person, proc, log)
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while not REQUEST_ID.search(log.read_text(errors="replace")):
            if proc.poll() is not None or time.monotonic() > deadline:
                output = log.read_text(errors="replace")
                pytest.fail(
                    f"README.md:{command.line}: {command.text!r} ({person}) printed no request id "
                    f"(exit {proc.poll()}); output:\n{output}",
                    pytrace=False,
                )
            time.sleep(0.1)
        self._learn(command, log.read_text(errors="replace"))

    def join(self, person: str) -> Running | None:
        """Wait for PERSON's command in the background, if any, and check how it ended."""
        running = self.background.pop(person, None)
        if running is None:
            return None
        try:
            rc = running.proc.wait(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            end_process(running.proc)
            pytest.fail(
                f"README.md:{running.command.line}: {running.command.text!r} ({person}) was still "
                f"waiting when the README's next step for {person} came; output:\n"
                f"{running.log.read_text(errors='replace')}",
                pytrace=False,
            )
        output = running.log.read_text(errors="replace")
        _check_exit(person, running.command, rc, output)
        return running


def _check_exit(person: str, command: Command, rc: int, output: str) -> None:
    if rc != command.expect:
        pytest.fail(
            f"README.md:{command.line}: {command.text!r} ({person}) exited {rc}, expected "
            f"{command.expect}; output:\n{output}",
            pytrace=False,
        )


def _check_output(block: Block, output: str) -> None:
    missing = matches(block.output, output)
    if missing is not None:
        last = block.commands[-1]
        pytest.fail(
            f"README.md:{last.line}: {last.text!r} did not print the README's line {missing!r}; "
            f"it printed:\n{output}",
            pytrace=False,
        )


# --------------------------------------------------------------------------- checks


def _certificate(ssh_keygen: str, home: Path, keep: Path) -> str:
    """``ssh-keygen -L`` of the one certificate under HOME/.ssh/jit-ssh/, copied to KEEP
    (``done`` removes it; the copy is checked against the server's KRL afterwards)."""
    certs = sorted((home / ".ssh" / "jit-ssh").glob("*-cert.pub"))
    assert len(certs) == 1, f"expected one certificate in ~/.ssh/jit-ssh, found {certs}"
    shutil.copyfile(certs[0], keep)
    result = subprocess.run(
        [ssh_keygen, "-L", "-f", str(keep)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _revoked(ssh_keygen: str, server_url: str, cert: Path) -> str:
    """``ssh-keygen -Q``'s verdict on CERT under the server's KRL now (OpenSSH reads the KRL)."""
    krl = cert.with_name("revoked_keys.krl")
    krl.write_bytes(httpx.get(f"{server_url}/v1/krl", timeout=30).raise_for_status().content)
    result = subprocess.run(
        [ssh_keygen, "-Q", "-f", str(krl), str(cert)], capture_output=True, text=True, timeout=30
    )
    return result.stdout + result.stderr


def _web_page(url: str, user: str, password: str, path: str) -> str:
    """Log in to the web pages with a password, as a browser would; the page at PATH."""
    with httpx.Client(base_url=url, timeout=30, follow_redirects=True) as web:
        form = web.get("/login").text
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form)
        if token is None:
            token = re.search(r'id="csrf_token" name="csrf_token" [^>]*value="([^"]+)"', form)
        assert token is not None, f"no CSRF token in the login form:\n{form}"
        answer = web.post(
            "/login",
            data={
                "csrf_token": token.group(1),
                "username": user,
                "password": password,
                "next": path,
            },
        )
        assert answer.status_code == 200 and answer.url.path == path, (
            f"{user}'s web login with the README's password failed ({answer.status_code}, "
            f"{answer.url}):\n{answer.text[:2000]}"
        )
        return answer.text


def _web_password(blocks: list[Block], user: str) -> str:
    """The web password the README's walkthrough gives USER (``echo '...' | jit-ssh admin user ...``)."""
    pattern = re.compile(
        rf"echo '([^']+)' \| jit-ssh admin user (?:add|set-password) {re.escape(user)}\b"
    )
    for block in blocks:
        for command in block.commands:
            m = pattern.search(command.text)
            if m and block.kind == "walkthrough":
                return m.group(1)
    pytest.fail(f"the README's walkthrough gives {user} no web password", pytrace=False)


# --------------------------------------------------------------------------- the tests


@pytest.fixture(autouse=True)
def _per_test_timeout() -> Iterator[None]:
    """The conftest's backstop, with room for the whole walkthrough."""

    def on_alarm(signum: int, frame: Any) -> None:
        pytest.fail(f"the walkthrough took longer than {WALKTHROUGH_TIMEOUT} s", pytrace=False)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, WALKTHROUGH_TIMEOUT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def tools() -> tuple[str, str]:
    found = []
    for name in ("bash", "ssh-keygen"):
        path = shutil.which(name)
        if path is None:
            skip_or_fail(f"{name} is not installed (Debian: bash, openssh-client)")
        found.append(path)
    return found[0], found[1]


def test_the_readme_serves_where_the_walkthrough_points() -> None:
    """The README's set-up runs `jit-ssh serve` without --bind: its default address is the one
    the walkthrough's commands name."""
    from client.commands.service import serve

    text = README.read_text("utf-8")
    assert ".venv/bin/jit-ssh serve\n" in text
    bind = next(p for p in serve.params if p.name == "bind")
    assert f"http://{bind.default}" == README_SERVER
    blocks = [b for b in parse_readme(text) if b.kind == "walkthrough"]
    assert any(README_SERVER in c.text for b in blocks for c in b.commands)


def test_parse_readme_names_the_line_of_each_command() -> None:
    text = (
        "intro\n"
        "<!-- walkthrough: alice -->\n"
        "```sh\n"
        "# a comment\n"
        "jit-ssh status\n"
        "jit-ssh login demo \\\n"
        "    --for 30m   # exits 1\n"
        "```\n"
        "<!-- walkthrough-output -->\n"
        "```text\n"
        "Request ... pending\n"
        "```\n"
        "<!-- walkthrough: bob, waits -->\n"
        "```sh\n"
        "jit-ssh login demo\n"
        "```\n"
    )
    blocks = parse_readme(text)
    assert [(b.person, b.waits) for b in blocks] == [("alice", False), ("bob", True)]
    assert blocks[0].commands == [
        Command(5, "jit-ssh status"),
        Command(6, "jit-ssh login demo \\\n    --for 30m   # exits 1", 1),
    ]
    assert blocks[0].output == ["Request ... pending"]
    assert matches(blocks[0].output, "x\nRequest 0123 for demo: pending\n") is None
    assert matches(blocks[0].output, "Request 0123 for demo: approved\n") == "Request ... pending"


def test_an_unmarked_command_block_in_the_walkthrough_fails() -> None:
    text = (
        "<!-- walkthrough: alice -->\n```sh\njit-ssh status\n```\n"
        "```sh\njit-ssh done\n```\n"
        "<!-- walkthrough: alice -->\n```sh\njit-ssh status\n```\n"
    )
    with pytest.raises(pytest.fail.Exception, match=r"README.md:5: an sh block"):
        parse_readme(text)


def test_readme_walkthrough_runs_as_written(tmp_path: Path, tools: tuple[str, str]) -> None:
    _, ssh_keygen = tools
    blocks = parse_readme(README.read_text("utf-8"))
    steps = [b for b in blocks if b.kind == "walkthrough"]
    people = {b.person for b in steps}
    assert {"admin", "alice", "bob"} <= people, f"the walkthrough's people: {sorted(people)}"
    assert any("login" in c.text for b in steps for c in b.commands)

    walk = Walkthrough(tmp_path, jit_ssh_command())
    walk.serve()

    kept = tmp_path / "certificate-cert.pub"
    certificate = ""

    def joined(person: str) -> None:
        nonlocal certificate
        running = walk.join(person)
        if running is not None and re.search(r"\bjit-ssh login\b", running.command.text):
            # The certificate login wrote, read by OpenSSH itself.
            certificate = _certificate(ssh_keygen, walk.home(person), kept)
            assert "jit-demo@demo" in certificate, certificate
            assert f"req={walk.values['request-id']}:user={person}:by=bob" in certificate
            assert "REVOKED" not in _revoked(ssh_keygen, walk.server_url, kept)

    try:
        for block in steps:
            joined(block.person)
            if block.waits:
                walk.start(block.person, block.commands[0])
                continue
            output = ""
            for command in block.commands:
                output = walk.run(block.person, command)
                if re.search(r"\bjit-ssh status\b", command.text) and certificate:
                    assert walk.values["request-id"] in output, (
                        f"README.md:{command.line}: status does not list the access:\n{output}"
                    )
                if re.search(r"\bjit-ssh done\b", command.text):
                    # done removes the key and certificate, and the server revoked it.
                    left = list((walk.home(block.person) / ".ssh" / "jit-ssh").glob("*-cert.pub"))
                    assert not left, f"README.md:{command.line}: `done` left {left}"
                    verdict = _revoked(ssh_keygen, walk.server_url, kept)
                    assert "REVOKED" in verdict, f"README.md:{command.line}: {verdict}"
                    certificate = ""
            if block.output:
                _check_output(block, output)
        for person in list(walk.background):
            joined(person)
        assert kept.exists(), "the walkthrough's login got no certificate"

        # Alice's web password from the README opens My requests, which lists her request.
        password = _web_password(blocks, "alice")
        mine = _web_page(walk.server_url, "alice", password, "/mine")
        assert walk.values["request-id"] in mine, mine[:3000]
    finally:
        walk.stop()


def test_readme_shell_completion_works(tmp_path: Path, tools: tuple[str, str]) -> None:
    """The README's completion lines print a script for the installed `jit-ssh`; bash's, loaded
    as the README says, completes a command."""
    bash, _ = tools
    blocks = [b for b in parse_readme(README.read_text("utf-8")) if b.kind == "completion"]
    assert len(blocks) == 1, "the README has one <!-- completion --> block"
    lines = {c.text.split("=", 1)[1].split("_source")[0]: c for c in blocks[0].commands}
    assert set(lines) == {"bash", "zsh", "fish"}, lines
    jit_ssh = jit_ssh_command()
    env = {
        "PATH": os.pathsep.join([str(Path(jit_ssh).parent), os.environ.get("PATH", "")]),
        "HOME": str(tmp_path),
    }
    bash_line = lines["bash"].text.split("#")[0].strip()
    script = (
        f"{bash_line}\n"
        "complete -p jit-ssh\n"
        "COMP_WORDS=(jit-ssh pen); COMP_CWORD=1; _jit_ssh_completion jit-ssh\n"
        'echo "offered: ${COMPREPLY[*]}"\n'
        "COMP_WORDS=(jit-ssh admin user set-p); COMP_CWORD=3; COMPREPLY=()\n"
        "_jit_ssh_completion jit-ssh\n"
        'echo "offered: ${COMPREPLY[*]}"\n'
    )
    result = subprocess.run(
        [bash, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "complete -o nosort -F _jit_ssh_completion jit-ssh" in result.stdout
    assert "offered: pending\n" in result.stdout
    assert "offered: set-password\n" in result.stdout
    # zsh and fish need not be installed: the script each line loads, from the same command.
    for shell, first in (("zsh", "#compdef jit-ssh"), ("fish", "function _jit_ssh_completion")):
        source = lines[shell].text.split("#")[0].split("|")[0].strip()
        assert source.startswith("eval") or shell == "fish"
        command = source.removeprefix('eval "$(').removesuffix(')"')
        out = subprocess.run(
            [bash, "-c", command], env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0 and out.stdout.startswith(first), (shell, out)
