"""KRL versions: microsecond times, from the server's database and from `jit-ssh krl build`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from ca.errors import InvalidKRL
from ca.keyring import next_krl_version
from ca.krl import DEFAULT_MAX_CLOCK_SKEW, krl_version_at, krl_version_plausible, krl_version_time

NOW = datetime(2026, 11, 29, 10, 45, 0, 123456, tzinfo=UTC)


def test_a_version_is_a_moment_in_microseconds() -> None:
    version = krl_version_at(NOW)
    assert version == 1_795_949_100_123_456
    assert krl_version_time(version) == NOW
    # Any time zone, same moment, same version.
    assert krl_version_at(NOW.astimezone(timezone(timedelta(hours=-7)))) == version
    assert krl_version_at(NOW + timedelta(microseconds=1)) == version + 1


def test_old_scheme_versions_are_moments_in_january_1970() -> None:
    # Revocation ids and Unix seconds read as microseconds: far older than any
    # version written now, so hosts with an old KRL take the new ones.
    for old in (0, 1, 10**6, int(NOW.timestamp())):
        moment = krl_version_time(old)
        assert moment is not None and moment < datetime(1970, 2, 1, tzinfo=UTC)
        assert old < krl_version_at(datetime(2000, 1, 1, tzinfo=UTC))


def test_versions_past_the_year_9999_have_no_time() -> None:
    assert krl_version_time(2**64 - 1) is None


@pytest.mark.parametrize("moment", [datetime(2026, 1, 1), datetime(1969, 12, 31, tzinfo=UTC), 5])
def test_krl_version_at_refuses_naive_early_or_non_times(moment: object) -> None:
    with pytest.raises(InvalidKRL) as info:
        krl_version_at(moment)  # type: ignore[arg-type]
    assert info.value.field == "version"


def test_a_version_is_plausible_up_to_the_clock_plus_the_skew() -> None:
    edge = krl_version_at(NOW + DEFAULT_MAX_CLOCK_SKEW)
    assert krl_version_plausible(edge, now=NOW)
    assert not krl_version_plausible(edge + 1, now=NOW)
    assert krl_version_plausible(0, now=NOW) and krl_version_plausible(42, now=NOW)
    assert not krl_version_plausible(2**64 - 1, now=NOW)
    assert krl_version_plausible(edge + 1, now=NOW, max_clock_skew=DEFAULT_MAX_CLOCK_SKEW * 2)


def test_next_krl_version_is_the_build_time_and_rises(tmp_path: Path) -> None:
    versions = [next_krl_version(tmp_path, now=NOW) for _ in range(5)]
    # Five builds within one microsecond still rise, one by one.
    assert versions == [krl_version_at(NOW) + i for i in range(5)]
    later = next_krl_version(tmp_path, now=NOW + timedelta(days=1))
    assert later == krl_version_at(NOW + timedelta(days=1))
    # A small step back (an NTP correction): still past the last one.
    assert next_krl_version(tmp_path, now=NOW + timedelta(days=1, seconds=-2)) == later + 1
    assert (tmp_path / "krl_version").read_text().strip() == str(later + 1)


def test_next_krl_version_does_not_follow_a_last_version_from_the_future(tmp_path: Path) -> None:
    # Written by a clock a year fast (or by a bug): following it would give
    # KRLs every host refuses as implausible, so the clock wins.
    (tmp_path / "krl_version").write_text(f"{krl_version_at(NOW + timedelta(days=365))}\n")
    assert next_krl_version(tmp_path, now=NOW) == krl_version_at(NOW)
    (tmp_path / "krl_version").write_text(f"{2**64 - 2}\n")
    assert next_krl_version(tmp_path, now=NOW) == krl_version_at(NOW)
    # Within the skew a host allows, it is still followed.
    near = krl_version_at(NOW + DEFAULT_MAX_CLOCK_SKEW) - 1
    (tmp_path / "krl_version").write_text(f"{near}\n")
    assert next_krl_version(tmp_path, now=NOW) == near + 1


def test_next_krl_version_passes_an_old_scheme_version(tmp_path: Path) -> None:
    # The previous scheme stored Unix seconds.
    (tmp_path / "krl_version").write_text(f"{int(NOW.timestamp()) + 50}\n")
    assert next_krl_version(tmp_path, now=NOW) == krl_version_at(NOW)


def test_next_krl_version_recovers_from_garbage(tmp_path: Path) -> None:
    (tmp_path / "krl_version").write_text("not a number\n")
    assert next_krl_version(tmp_path, now=NOW) == krl_version_at(NOW)


def test_krl_build_writes_a_krl_a_host_accepts_with_a_time_version(
    tmp_path: Path, data_dir: Path
) -> None:
    from click.testing import CliRunner

    from ca.keyring import load_keyring
    from ca.krl import accept_krl
    from client.cli import cli

    runner = CliRunner()
    assert runner.invoke(cli, ["ca", "init"], catch_exceptions=False).exit_code == 0
    out = tmp_path / "revoked.krl"
    before = datetime.now(UTC)
    r = runner.invoke(
        cli,
        [
            "krl",
            "build",
            "--serial",
            "42",
            "--key-id",
            "jit-ssh:breakglass:alice",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    after = datetime.now(UTC)
    trusted = [k.public.blob for k in load_keyring(data_dir, private=False).keys]
    krl = accept_krl(out.read_bytes(), trusted_ca_keys=trusted, now=after)
    assert krl_version_at(before) <= krl.version <= krl_version_at(after)
    # What `host setup` writes before the first sync passes too.
    setup = runner.invoke(
        cli,
        [
            "host",
            "setup",
            "--ca-keys",
            str(_trusted_file(tmp_path, data_dir)),
            "--sshd-dir",
            str(tmp_path / "ssh"),
            "--target",
            "t",
            "--login-user",
            "root",
            "--principal",
            "root@t",
        ],
    )
    assert setup.exit_code == 0, setup.output
    accept_krl(
        (tmp_path / "ssh" / "jit-ssh" / "revoked_keys.krl").read_bytes(),
        trusted_ca_keys=trusted,
        now=after,
    )


def _trusted_file(tmp_path: Path, data_dir: Path) -> Path:
    from ca.keyring import load_keyring

    path = tmp_path / "trusted_user_ca_keys"
    path.write_text(load_keyring(data_dir, private=False).trusted_user_ca_keys())
    return path
