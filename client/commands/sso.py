"""``jit-ssh sso``: sign in with the server's identity provider, which enrols this machine's key.

``jit-ssh sso login`` opens the provider's page in the browser and catches the
answer on a loopback port (as ``tsh login`` does); ``--headless``, or no display,
signs in with a code typed on another device (RFC 8628). ``jit-ssh login`` runs
the same sign-in first when the key is not enrolled or its enrolment ended
(:func:`sign_in`). The flows themselves: :mod:`client.sso`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ca.errors import JitSshError
from client.errors import EXIT_INTERRUPTED, Failure, failure_for

from ._connect import connection_options, explained

if TYPE_CHECKING:
    from client.settings import ClientSettings
    from client.signing import Signer
    from client.sso import SignedIn, SignInKey
    from client.verify import SsoEnrolment, SsoInfo

__all__ = ["sso", "sign_in", "sign_in_if_needed"]


@click.group()
def sso() -> None:
    """Sign in with the server's identity provider (single sign-on): enrol this machine's key."""


def _say(line: str) -> None:
    click.echo(line, err=True)
    sys.stderr.flush()


class Interrupted(Failure):
    """Ctrl-C during a sign-in: exit 130."""

    exit_code = EXIT_INTERRUPTED


#: Refusals a sign-in mends: the server does not know the key, or its enrolment ended.
_SIGN_IN_MENDS = frozenset({"unknown_key", "enrolment_expired"})


def _missing_enrolment(server: str | None, user: str | None, identity: str | None) -> str | None:
    """Why no signed call can be made from here yet (no user, no key), or None."""
    from client.settings import load_settings

    try:
        settings = load_settings(server=server, user=user, identity=identity)
    except JitSshError:
        return None
    if not settings.server:
        return None
    chosen = settings.identity
    if chosen is None:
        if settings.use_agent and os.environ.get("SSH_AUTH_SOCK"):
            # The agent's key may be the enrolled one: the server will say.
            return None if settings.user else "no user configured"
        return "no enrolled key"
    if not chosen.startswith("SHA256:") and not os.path.exists(chosen):
        return "no enrolled key"
    return None if settings.user else "no user configured"


def sign_in_if_needed(
    server: str | None,
    user: str | None,
    identity: str | None,
    *,
    refused: JitSshError | None = None,
    say: Callable[[str], None] = _say,
) -> tuple[str, str] | None:
    """For ``jit-ssh login``: when this machine has no usable enrolment (no key or user here,
    or the server ``refused`` the key: unknown, or its enrolment ended) and the server signs
    people in, sign in now and return the user and identity to go on with; else None (the
    caller goes on as it would have, or raises ``refused``)."""
    from client import sso as flows
    from client.errors import enrolment_end
    from client.settings import load_settings

    from ._common import open_api

    if refused is None:
        why = _missing_enrolment(server, user, identity)
    elif refused.code == "unknown_key":
        why = "the server does not know this key"
    elif refused.code == "enrolment_expired":
        end = enrolment_end(refused)
        why = f"your single sign-on enrolment ended{f' at {end}' if end else ''}"
    else:
        why = None
    if why is None:
        return None
    try:
        settings = load_settings(server=server, user=user, identity=identity)
        url = settings.need("server")
        with open_api(url, ca_bundle=settings.ca_bundle, timeout=settings.timeout) as plain:
            info = flows.sso_info(plain)
    except JitSshError:
        if refused is not None:
            raise refused from None
        return None
    if not info.enabled:
        return None
    again = "again" if refused is not None and refused.code == "enrolment_expired" else "first"
    say(f"{why}; signing in with {info.display_name} {again}")
    done, summary = sign_in(server, user, identity, info=info, say=say)
    say(summary)
    return done.enrolment.user, done.key.identity


def sign_in(
    server: str | None,
    user: str | None,
    identity: str | None,
    *,
    headless: bool = False,
    no_browser: bool = False,
    info: SsoInfo | None = None,
    say: Callable[[str], None] = _say,
) -> tuple[SignedIn, str]:
    """Run the sign-in; return the :class:`client.sso.SignedIn` and its one-line summary.

    ``user`` and ``identity`` are the flags; the settings (environment, config file)
    fill in the rest. Raises :class:`client.errors.Failure` with a clear line for a
    server without single sign-on, and exits 130 on Ctrl-C.
    """
    from client import sso as flows
    from client.settings import load_settings

    from ._common import open_api
    from ._connect import make_signer

    settings = load_settings(server=server, user=user, identity=identity)
    url = settings.need("server")
    chosen = settings.identity
    if (
        chosen is not None
        and identity is None
        and not os.environ.get("JIT_SSH_IDENTITY")
        and not chosen.startswith("SHA256:")
        and not os.path.exists(chosen)
    ):
        # The config file names a key that is not there (config init's default, say): the
        # sign-in makes jit-ssh's own key instead, and the config is pointed at it.
        say(f"note: the configured identity {chosen} does not exist; using jit-ssh's own key")
        chosen = None

    def ask() -> bytes | None:
        if not sys.stdin.isatty():
            return None
        text: str = click.prompt(
            "Passphrase for your key", hide_input=True, default="", show_default=False
        )
        return text.encode() or None

    if info is None:
        with open_api(url, ca_bundle=settings.ca_bundle, timeout=settings.timeout) as plain:
            info = flows.sso_info(plain)
    if not info.enabled:
        raise Failure(
            f"{url} does not offer single sign-on; ask an admin to enrol your key:\n"
            "  jit-ssh admin user add USER --group engineers --ssh-key KEY.pub"
        )

    def signer_for(ident: str) -> Signer:
        return make_signer(ident, settings.use_agent, ask)

    key = flows.sign_in_key(chosen, signer_for=signer_for)
    if key.created:
        say(f"Made a new key for this machine: {key.identity} ({key.fingerprint})")
    device = headless or (not no_browser and not flows.has_display())
    if device and not info.device_flow:
        if headless:
            raise Failure(
                f"{info.display_name} sign-in here offers no code (device flow): run "
                "jit-ssh sso login on a machine with a browser, or --no-browser to open the "
                "address yourself"
            )
        say("note: no display here and the server offers no device flow: open the address yourself")
        device, no_browser = False, True
    renewed = False
    while True:
        try:
            enrolment = _run_flow(url, settings, key, info, device, no_browser, say)
            break
        except KeyboardInterrupt:
            raise Interrupted("sign-in interrupted; this key was not enrolled") from None
        except JitSshError as e:
            if e.code == "key_revoked":
                if renewed or not flows.is_own_key(key):
                    raise _revoked(key) from None
                # jit-ssh's own key: moved aside (never deleted), a new one in its place,
                # and the sign-in starts again, once.
                old = key.fingerprint
                moved = flows.retire_key(Path(key.identity))
                key = flows.sign_in_key(None, signer_for=signer_for)
                say(
                    f"this machine's key {old} was revoked on the server; made a new one: "
                    f"{key.identity} ({key.fingerprint}); the old one is now {moved}"
                )
                renewed = True
                continue
            if not e.code.startswith("sso_") and e.code != "sign_in_timed_out":
                raise
            # The server's refusals of a sign-in, each with what to do about it.
            raise failure_for(e) from None
    try:
        done = flows.save_sign_in(enrolment, key, configured_user=settings.user, server=url)
    except JitSshError as e:
        raise failure_for(e) from None
    groups = ", ".join(enrolment.groups) or "none"
    if enrolment.expires_at is None:
        # The server had this key from an admin for this user already: it stays so.
        until = "this key was enrolled by an admin and does not expire."
    else:
        until = f"this key is enrolled until {flows.until_text(enrolment.expires_at)}."
    summary = (
        f"Signed in as {enrolment.user} (groups: {groups}) through {info.display_name}; {until}"
    )
    if done.written:
        names = list(done.written)
        shown = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        say(f"Wrote {shown} to {done.config}.")
    elif settings.identity and settings.identity != key.identity:
        say(
            f"note: your settings name another key ({settings.identity}): give --identity {key.identity}"
        )
    return done, summary


def _revoked(key: SignInKey) -> Failure:
    """The server refused a key of the user's own (``key_revoked``): it is left alone."""
    from client.settings import config_path

    failure = Failure(
        f"the server revoked the key {key.identity} ({key.fingerprint}): an admin removed it, "
        "or revoked its single sign-on enrolment, and it cannot be enrolled again [key_revoked]"
        "\n  fix: configure another key (--identity, $JIT_SSH_IDENTITY or `identity` in "
        f"{config_path()}), or remove `identity` from that file to let jit-ssh make one"
    )
    failure.code = "key_revoked"  # type: ignore[attr-defined]
    return failure


def _run_flow(
    url: str,
    settings: ClientSettings,
    key: SignInKey,
    info: SsoInfo,
    device: bool,
    no_browser: bool,
    say: Callable[[str], None],
) -> SsoEnrolment:
    """The browser or the device flow, with calls signed by ``key`` as user ``-``."""
    from client import sso as flows

    from ._common import open_api

    with open_api(
        url,
        user=flows.UNSIGNED_USER,
        signer=key.signer,
        ca_bundle=settings.ca_bundle,
        timeout=settings.timeout,
    ) as api:
        if device:
            return flows.device_sign_in(api, key, say=say)
        return flows.loopback_sign_in(
            api,
            key,
            open_browser=not no_browser,
            say=say,
            fall_back=(lambda: flows.device_sign_in(api, key, say=say))
            if info.device_flow
            else None,
        )


@sso.command("login")
@click.option(
    "--headless",
    is_flag=True,
    help="Sign in with a code entered on another device (device flow); no browser here.",
)
@click.option(
    "--no-browser", is_flag=True, help="Print the sign-in address; do not open a browser."
)
@connection_options
@explained
def login(
    headless: bool,
    no_browser: bool,
    server: str | None,
    user: str | None,
    identity: str | None,
) -> None:
    """Sign in with the identity provider; the server then enrols this machine's key.

    The key is your configured identity, else a new Ed25519 key jit-ssh makes in its
    config directory (sso_ed25519; the private key never leaves this machine). The
    provider's page opens in your browser and the answer comes back to a port on
    127.0.0.1; with --headless, or without a display, you get a code to enter on
    another device instead. Afterwards the config file names your user and the key.

    Exit codes: 0 signed in; 1 refused, expired or not offered; 4 server unreachable;
    130 Ctrl-C.
    """
    _, summary = sign_in(server, user, identity, headless=headless, no_browser=no_browser)
    click.echo(summary)


@sso.command("status")
@connection_options
def status(server: str | None, user: str | None, identity: str | None) -> None:
    """Whether the server offers single sign-on, and this key's enrolment."""
    from client import sso as flows
    from client.settings import load_settings

    from ._common import open_api
    from ._connect import connect

    settings = load_settings(server=server, user=user, identity=identity)
    url = settings.need("server")
    with open_api(url, ca_bundle=settings.ca_bundle, timeout=settings.timeout) as plain:
        info = flows.sso_info(plain)
    if not info.enabled:
        click.echo(f"{url} does not offer single sign-on.")
        return
    how = "in the browser, or with a code: --headless" if info.device_flow else "in the browser"
    click.echo(f"Single sign-on: {info.display_name} ({how}).")
    if not settings.user:
        click.echo("Not signed in on this machine: jit-ssh sso login")
        return
    try:
        api_client, _ = connect(server, user, identity)
        with api_client:
            me = api_client.get("/v1/whoami")
    except JitSshError as e:
        if e.code in ("unknown_key", "enrolment_expired", "key_file_error"):
            from client.errors import describe

            click.echo(f"This key is not enrolled: {describe(e)}")
            click.echo("  fix: jit-ssh sso login")
            raise click.exceptions.Exit(1) from None
        raise
    click.echo(_enrolment_line(me))


def _enrolment_line(me: object) -> str:
    from client.verify import check_whoami

    who = check_whoami(me)
    if who.enrolment_expires_at is None:
        return f"Signed in as {who.user} with a key an admin enrolled (no expiry)."
    from client.sso import until_text

    return (
        f"Signed in as {who.user} (groups: {', '.join(who.groups) or 'none'}, from "
        f"{'the provider' if who.groups_source == 'sso' else 'jit-ssh'}); "
        f"this key is enrolled until {until_text(who.enrolment_expires_at)}."
    )


def _attach_check() -> None:
    """``jit-ssh sso check`` (the server side: is the provider configured right?), when that
    module is there."""
    try:
        module = importlib.import_module("client.commands.sso_check")
    except ModuleNotFoundError as e:
        if e.name != "client.commands.sso_check":
            raise
        return
    sso.add_command(module.check)


_attach_check()
