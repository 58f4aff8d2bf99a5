"""Whether sshd really uses what ``host setup`` wrote: ``sshd -T``, read and explained.

Writing a drop-in proves nothing. sshd reads ``sshd_config.d/*.conf`` only when its
``sshd_config`` says ``Include`` for that directory (Debian's names
``/etc/ssh/sshd_config.d`` by absolute path, so a drop-in written under another
``--sshd-dir`` is never read), and for each keyword sshd keeps the FIRST value it
obtains: a ``TrustedUserCAKeys`` line above the Include, or in a drop-in that sorts
before ``60-jit-ssh.conf``, wins over ours. A ``Match`` block can override either for
some connections. So the only evidence is ``sshd -T`` (extended test mode: the
settings sshd would run with, one ``keyword value`` per line), with ``-C`` for the
connections a Match block may single out.

Outcomes: :func:`verify` returns the settings it checked, raises :class:`NotInEffect`
(exit 1) naming each wrong setting, what sshd reports, the likely cause and the fix,
or :class:`CouldNotVerify` (exit 4) when ``sshd -T`` itself could not answer.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

from client.errors import EXIT_FAILED, EXIT_UNREACHABLE, Failure

__all__ = [
    "CHECK_ADDRESS",
    "CouldNotVerify",
    "Expected",
    "NotInEffect",
    "check_connection_spec",
    "find_sshd",
    "missing_users",
    "run_sshd_test",
    "trouble_fix",
    "verify",
]

#: sshd resolves a relative Include against its own configuration directory (SSHDIR,
#: /etc/ssh on every packaged OpenSSH), not against the including file's directory.
_SSHDIR = "/etc/ssh"
#: The client address for the per-login-user checks (RFC 5737 TEST-NET-1): one no
#: ``Match Address`` of a real site names, so the check shows what most clients get.
#: With UseDNS off (the default) sshd matches ``Match Host`` against the address too.
CHECK_ADDRESS = "192.0.2.1"
_MAX_DEPTH = 16  # OpenSSH's own Include depth limit (SERVCONF_MAX_DEPTH)
_SPEC = re.compile(r"^[a-z]+=[^,\s=-][^,\s=]*(,[a-z]+=[^,\s=-][^,\s=]*)*$")
_LINE = re.compile(r"^([A-Za-z]+)(?:\s*=\s*|\s+)(.*)$")


class NotInEffect(Failure):
    """sshd would not use what host setup wrote: exit 1, with the cause and the fix."""

    exit_code = EXIT_FAILED


class CouldNotVerify(Failure):
    """``sshd -T`` (or ``sshd -t``) could not answer, so nothing is known: exit 4, as for
    any local tool that cannot be run."""

    exit_code = EXIT_UNREACHABLE


@dataclass(frozen=True)
class Expected:
    """What the jit-ssh drop-in sets, as ``sshd -T`` prints it (lower-case keywords)."""

    dropin: Path
    trusted_user_ca_keys: str
    revoked_keys: str
    authorized_principals_file: str
    #: The signature algorithms the trusted CA keys sign with (``ssh-ed25519``,
    #: ``rsa-sha2-512``...): sshd's ``CASignatureAlgorithms`` must allow each.
    ca_signature_algorithms: tuple[str, ...] = ()
    #: The certificate types jit-ssh clients present (each access key is Ed25519):
    #: sshd's ``PubkeyAcceptedAlgorithms`` must allow them.
    certificate_types: tuple[str, ...] = ("ssh-ed25519-cert-v01@openssh.com",)

    def values(self) -> dict[str, str]:
        return {
            "trustedusercakeys": self.trusted_user_ca_keys,
            "revokedkeys": self.revoked_keys,
            "authorizedprincipalsfile": self.authorized_principals_file,
            # Not in the drop-in (the default is yes), but without it no certificate works.
            "pubkeyauthentication": "yes",
        }

    def allowed(self) -> dict[str, tuple[str, ...]]:
        """List-valued settings that must CONTAIN these values."""
        wanted = {
            "casignaturealgorithms": self.ca_signature_algorithms,
            "pubkeyacceptedalgorithms": self.certificate_types,
        }
        return {k: v for k, v in wanted.items() if v}


#: How each CA key type signs certificates (an RSA CA always signs with rsa-sha2-512).
_SIGNATURE_ALGORITHM = {
    "ssh-ed25519": "ssh-ed25519",
    "ssh-rsa": "rsa-sha2-512",
    "ecdsa-sha2-nistp256": "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384": "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521": "ecdsa-sha2-nistp521",
}


def ca_signature_algorithms(trusted_user_ca_keys: str) -> tuple[str, ...]:
    """The signature algorithms of the keys in a TrustedUserCAKeys file (unknown types and
    unreadable files give nothing to check)."""
    try:
        text = Path(trusted_user_ca_keys).read_text("utf-8", "replace")
    except OSError:
        return ()
    found = (
        _SIGNATURE_ALGORITHM.get(line.split()[0]) for line in text.splitlines() if line.split()
    )
    return tuple(dict.fromkeys(a for a in found if a))


def find_sshd() -> str | None:
    return shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if Path(p).exists()), None
    )


def check_connection_spec(spec: str) -> str:
    """A ``-C`` connection spec (``user=root,host=h,addr=10.0.0.5``), or ValueError."""
    if not _SPEC.match(spec):
        raise ValueError(
            f"{spec!r} is not a connection spec like user=root,host=10.0.0.5,addr=10.0.0.5"
        )
    return spec


def missing_users(users: Sequence[str]) -> list[str]:
    """The login users that have no account on this host (``getpwnam``)."""
    missing = []
    for user in dict.fromkeys(users):
        try:
            pwd.getpwnam(user)
        except KeyError:
            missing.append(user)
    return missing


# --------------------------------------------------------------------------- running sshd


def trouble_fix(stderr: str) -> str:
    """When an ``sshd -t``/``-T`` failure is about running sshd (host keys, the privilege
    separation directory), not about the configuration: how to fix it; else ""."""
    m = re.search(r"Missing privilege separation directory: (\S+)", stderr)
    if m:
        # Debian's systemd unit makes it (RuntimeDirectory=sshd) when ssh.service starts.
        return f"create it (mkdir -m 0755 {m.group(1)}; the ssh service makes it when it starts), then run again"
    if "host key" in stderr.lower() or "no hostkeys" in stderr:
        if os.geteuid() != 0:
            return (
                "run as root (sshd reads the host keys to check its configuration), e.g. with sudo"
            )
        return "check the HostKey lines of the sshd_config: sshd loads a host key to check its configuration"
    return ""


def run_sshd_test(sshd: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``sshd -t``/``-T`` on ``config``; CouldNotVerify when it cannot even be started."""
    try:
        return subprocess.run(
            [sshd, *args, "-f", str(config)], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CouldNotVerify(
            f"could not verify the settings sshd uses: {sshd} {' '.join(args)} could not run ({e})"
        ) from None


def _effective(sshd: str, config: Path, spec: str | None) -> dict[str, str]:
    args = ("-T", "-C", spec) if spec else ("-T",)
    result = run_sshd_test(sshd, config, *args)
    if result.returncode != 0:
        said = result.stderr.strip() or f"exit status {result.returncode}, nothing on stderr"
        fix = trouble_fix(result.stderr)
        raise CouldNotVerify(
            f"could not verify the settings sshd uses: sshd {' '.join(args)} -f {config} failed:\n"
            + "\n".join(f"  {line}" for line in said.splitlines())
            + (f"\n  fix: {fix}" if fix else "")
        )
    settings: dict[str, str] = {}
    for line in result.stdout.splitlines():
        keyword, _, value = line.partition(" ")
        # Multi-valued keywords (hostkey, listenaddress) repeat; ours appear once.
        settings.setdefault(keyword.lower(), value.strip())
    return settings


# --------------------------------------------------------------------------- reading the config


@dataclass(frozen=True)
class _Line:
    file: Path
    number: int
    keyword: str
    text: str
    match: str | None  # the Match line this setting sits under, None when global

    @property
    def value(self) -> str:
        m = _LINE.match(self.text)
        return m.group(2).strip().strip("\"'") if m else ""

    def where(self) -> str:
        return f"{self.file} line {self.number}"


@dataclass
class _Config:
    """The sshd_config and every file its Include lines pull in, in the order sshd reads them."""

    lines: list[_Line] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def includes(self, path: Path) -> bool:
        want = path.resolve()
        return any(f.resolve() == want for f in self.files)

    def first(self, keyword: str, *, before: Path | None = None) -> _Line | None:
        """The first global setting of ``keyword``; with ``before``, only one read
        before that file."""
        for line in self.lines:
            if before is not None and line.file.resolve() == before.resolve():
                return None
            if line.keyword == keyword and line.match is None:
                return line
        return None

    def in_match(self, keyword: str) -> list[_Line]:
        return [line for line in self.lines if line.keyword == keyword and line.match]


def _read_config(main: Path) -> _Config:
    config = _Config()

    def read(path: Path, depth: int, match: str | None) -> None:
        try:
            text = path.read_text("utf-8", "replace")
        except OSError:
            return
        config.files.append(path)
        current = match
        for number, raw in enumerate(text.splitlines(), 1):
            stripped = raw.strip()
            m = _LINE.match(stripped)
            if not stripped or stripped.startswith("#") or not m:
                continue
            keyword = m.group(1).lower()
            if keyword == "match":
                current = stripped
            config.lines.append(_Line(path, number, keyword, stripped, current))
            if keyword == "include" and depth < _MAX_DEPTH:
                for pattern in m.group(2).split():
                    pattern = os.path.expanduser(pattern.strip("\"'"))
                    if not pattern.startswith("/"):
                        pattern = f"{_SSHDIR}/{pattern}"
                    for name in sorted(glob.glob(pattern)):
                        # A Match in an included file ends with that file (OpenSSH >= 8.2).
                        read(Path(name), depth + 1, current)

    read(main, 0, None)
    return config


# --------------------------------------------------------------------------- the check


@dataclass(frozen=True)
class _Problem:
    keyword: str
    got: str
    want: str
    cause: str
    fix: str
    who: str  # "" for the global settings, else "for connections as root (...)"


def _diagnose(
    keyword: str, got: str, want: str, config: _Config, main: Path, expected: Expected, who: str
) -> _Problem:
    dropin_dir = expected.dropin.parent
    if who:
        overrides = config.in_match(keyword)
        if overrides:
            # The Match block that set what sshd reports, if the value tells which.
            o = next((line for line in overrides if line.value == got), overrides[0])
            return _Problem(
                keyword,
                got,
                want,
                f"a Match block overrides it: {o.where()}, under '{o.match}': {o.text}",
                f"remove '{o.text}' from that Match block ({o.where()}), or set it to {want} there",
                who,
            )
    if keyword == "pubkeyauthentication":
        line = config.first(keyword)
        if line is not None:
            return _Problem(
                keyword,
                got,
                want,
                f"{line.where()} sets it: {line.text}",
                f"set 'PubkeyAuthentication yes' at {line.where()}",
                who,
            )
    elif not config.includes(expected.dropin):
        found = [line for line in config.lines if line.keyword == "include"]
        said = (
            "; ".join(f"{line.where()}: {line.text}" for line in found)
            if found
            else "it has no Include line"
        )
        fix = (
            f"add this line at the top of {main}, before any other setting:\n"
            f"    Include {dropin_dir}/*.conf"
        )
        # Debian's `Include /etc/ssh/sshd_config.d/*.conf`: the other way out is to write
        # the drop-in where that Include already reads.
        for line in found:
            for pattern in line.text.split()[1:]:
                if pattern.endswith("/sshd_config.d/*.conf") and pattern.startswith("/"):
                    other = str(Path(pattern).parent.parent)
                    if Path(other) != dropin_dir.parent:
                        fix += f"\n    (or run host setup with --sshd-dir {other}, which {line.where()} includes)"
        return _Problem(
            keyword,
            got,
            want,
            f"the drop-in {expected.dropin} is not read: {main} does not include {dropin_dir} ({said})",
            fix,
            who,
        )
    else:
        earlier = config.first(keyword, before=expected.dropin)
        if earlier is not None:
            return _Problem(
                keyword,
                got,
                want,
                f"an earlier setting wins (sshd keeps the first value it reads): {earlier.where()}: {earlier.text}",
                f"remove '{earlier.text}' at {earlier.where()}: sshd reads it before {expected.dropin}",
                who,
            )
    return _Problem(
        keyword,
        got,
        want,
        f"sshd takes it from somewhere else than {expected.dropin}",
        f"find where with: grep -ri {keyword} {main} {dropin_dir}",
        who,
    )


def _refused(
    keyword: str, reported: str, lacking: list[str], config: _Config, who: str
) -> _Problem:
    """A list setting (CASignatureAlgorithms, PubkeyAcceptedAlgorithms) that leaves out what
    jit-ssh certificates need: sshd would refuse every one of them."""
    name = {"casignaturealgorithms": "CASignatureAlgorithms"}.get(
        keyword, "PubkeyAcceptedAlgorithms"
    )
    line = config.first(keyword)
    overrides = config.in_match(keyword) if who else []
    source = overrides[0] if overrides else line
    cause = (
        f"{source.where()} sets it: {source.text}"
        + (f" (under '{source.match}')" if source.match else "")
        if source is not None
        else "sshd's built-in default leaves it out"
    )
    return _Problem(
        keyword,
        reported,
        f"a list with {', '.join(lacking)}",
        cause,
        f"add {','.join(lacking)} to {name}"
        + (f" at {source.where()}" if source is not None else "")
        + " (or remove that line): without it sshd refuses every jit-ssh certificate",
        who,
    )


def _warn_match_overrides(config: _Config, keywords: Sequence[str]) -> None:
    """The checks passed for the connections checked; a Match block that sets one of these
    settings may still change them for others (a client network, a port): say which."""
    for keyword in dict.fromkeys(keywords):
        for line in config.in_match(keyword):
            click.echo(
                f"warning: {line.where()} sets {line.keyword} under '{line.match}': {line.text}; "
                "connections that block matches may not use the jit-ssh settings. Check them "
                "with --connection user=USER,host=HOST,addr=ADDR",
                err=True,
            )


def verify(
    sshd: str,
    main: Path,
    expected: Expected,
    *,
    login_users: Sequence[str] = (),
    connections: Sequence[str] = (),
    again: str = "",
) -> list[str]:
    """Check, with ``sshd -T -f main``, that sshd uses the drop-in's settings: for the
    global settings (no Match applies), for a connection as each login user from
    :data:`CHECK_ADDRESS`, and for each ``connections`` spec. Returns what was checked;
    raises :class:`NotInEffect` or :class:`CouldNotVerify`."""
    want = expected.values()
    specs: list[tuple[str | None, str]] = [(None, "")]
    specs += [
        (f"user={u},host={CHECK_ADDRESS},addr={CHECK_ADDRESS}", f"for connections as {u}")
        for u in dict.fromkeys(login_users)
    ]
    specs += [(s, f"for connections {s}") for s in dict.fromkeys(connections)]
    config = _read_config(main)
    problems: list[_Problem] = []
    wrong_globally: set[str] = set()
    for spec, who in specs:
        got = _effective(sshd, main, spec)
        for keyword, value in want.items():
            actual = got.get(keyword, "(not reported)")
            if actual == value or keyword in wrong_globally:
                continue
            if spec is None:
                wrong_globally.add(keyword)
            problems.append(_diagnose(keyword, actual, value, config, main, expected, who))
        for keyword, needed in expected.allowed().items():
            reported = got.get(keyword)
            if reported is None or keyword in wrong_globally:
                continue  # an sshd that does not report it has no such restriction
            lacking = [a for a in needed if a not in reported.split(",")]
            if not lacking:
                continue
            if spec is None:
                wrong_globally.add(keyword)
            problems.append(_refused(keyword, reported, lacking, config, who))
    if problems:
        lines = [f"sshd does not use what host setup wrote (sshd -T -f {main}):"]
        for i, p in enumerate(problems):
            lines.append(
                f"  {p.keyword}{' ' + p.who if p.who else ''}: sshd uses {p.got}, not {p.want}"
            )
            # One cause line for a run of settings that share it (a drop-in not read).
            if i + 1 == len(problems) or problems[i + 1].cause != p.cause:
                lines.append(f"    cause: {p.cause}")
        for fix in dict.fromkeys(p.fix for p in problems):
            lines.append(f"  fix: {fix}")
        if again:
            lines.append(f"  then check again: {again}")
        raise NotInEffect("\n".join(lines))
    _warn_match_overrides(config, [*want, *expected.allowed()])
    checked = ["the global settings"]
    users = [u for u in dict.fromkeys(login_users)]
    if users:
        checked.append(f"connections as {', '.join(users)}")
    checked += [f"connections {c}" for c in dict.fromkeys(connections)]
    return checked
