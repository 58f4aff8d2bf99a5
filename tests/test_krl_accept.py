"""ca.krl.accept_krl: a host installs only KRLs jit-ssh itself would write.

Each refused shape below is one a real sshd would load and act on: a KRL
revoking a plain key locked a non-jit key out of sshd (see
tests/integration/test_krl_sync_sshd.py), one revoking the CA key refuses every
certificate, a wildcard section revokes certificates of any CA, and a version
from the far future made a host refuse every later KRL as "older".
"""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.errors import InvalidKRL, UnacceptableKRL
from ca.krl import (
    DEFAULT_MAX_CLOCK_SKEW,
    accept_krl,
    build_krl,
    empty_krl,
    krl_version_at,
    parse_krl,
)

try:
    import krl_helpers as h
except ImportError:  # pragma: no cover - when tests/ is imported as a package
    from tests import krl_helpers as h

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
POOL = h.public_key_pool()
CA, CA2, UNTRUSTED, PLAIN = POOL[0], POOL[2], POOL[3], POOL[1]
TRUSTED = (CA, CA2)
VERSION = krl_version_at(NOW - timedelta(minutes=1))


def accept(data: bytes, *, now: datetime = NOW, trusted: tuple[bytes, ...] = TRUSTED, **kw: object):
    return accept_krl(data, trusted_ca_keys=trusted, now=now, **kw)  # type: ignore[arg-type]


def refused(data: bytes, **kw: object) -> UnacceptableKRL:
    with pytest.raises(UnacceptableKRL) as info:
        accept(data, **kw)
    assert info.value.code == "unacceptable_krl"
    return info.value


# --- what jit-ssh writes passes ------------------------------------------------


def test_what_the_server_writes_is_accepted() -> None:
    # The server's shape: one certificate section per trusted CA key, serials only.
    data = build_krl(
        ca_keys=list(TRUSTED), serials=[5, 6, 7, 100, (1000, 5000)], version=VERSION, now=NOW
    )
    krl = accept(data)
    assert krl == parse_krl(data)
    assert krl.is_revoked(6, "x", CA) and krl.is_revoked(4000, "x", CA2)


def test_what_krl_build_writes_is_accepted() -> None:
    data = build_krl(
        ca_keys=[CA], serials=[42], key_ids=["jit-ssh:breakglass:alice"], version=VERSION, now=NOW
    )
    assert accept(data).is_revoked(1, "jit-ssh:breakglass:alice", CA)


def test_host_setups_empty_placeholder_is_accepted() -> None:
    krl = accept(empty_krl(version=0, now=NOW))
    assert krl.version == 0 and not krl.cert_sections


def test_versions_of_the_old_schemes_are_accepted() -> None:
    # Revocation ids and Unix seconds: small numbers, moments in January 1970.
    for version in (1, 12345, int(NOW.timestamp())):
        assert (
            accept(build_krl(ca_keys=[CA], serials=[5], version=version, now=NOW)).version
            == version
        )


def test_a_section_for_a_ca_key_this_host_does_not_trust_is_harmless_beside_a_trusted_one() -> None:
    # During a CA rotation the server's KRL names a key the host may not trust yet:
    # sshd refuses that CA's certificates anyway, and the trusted key's revocations
    # must keep arriving.
    data = build_krl(ca_keys=[CA, UNTRUSTED], serials=[9], version=VERSION, now=NOW)
    assert accept(data, trusted=(CA,)).is_revoked(9, "", CA)


@settings(max_examples=60, deadline=None)
@given(
    serials=st.lists(
        st.integers(1, 2**64 - 1) | st.tuples(st.integers(1, 1000), st.integers(1000, 3000)),
        max_size=20,
    ),
    key_ids=st.lists(
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1),
        max_size=5,
    ),
    cas=st.lists(st.sampled_from(TRUSTED), min_size=1, max_size=2, unique=True),
    age=st.integers(0, 10**12),
)
def test_anything_built_with_serials_and_key_ids_for_trusted_keys_is_accepted(
    serials, key_ids, cas, age
) -> None:
    version = krl_version_at(NOW) - age
    data = build_krl(
        ca_keys=cas, serials=serials, key_ids=key_ids, version=max(version, 0), now=NOW
    )
    assert accept(data) == parse_krl(data)


# --- what jit-ssh never writes is refused ----------------------------------------


def test_explicit_plain_keys_are_refused() -> None:
    data = build_krl(ca_keys=[CA], serials=[5], public_keys=[PLAIN], version=VERSION, now=NOW)
    err = refused(data)
    assert (
        "explicit keys section" in str(err)
        and "plain key" in str(err)
        and "never issued" in str(err)
    )


def test_revoking_a_trusted_ca_key_itself_is_refused_and_named() -> None:
    data = build_krl(ca_keys=[CA], public_keys=[CA2], version=VERSION, now=NOW)
    err = refused(data)
    assert "trusted CA key SHA256:" in str(err) and "itself" in str(err)


def test_sha256_fingerprints_are_refused() -> None:
    data = build_krl(
        ca_keys=[CA], sha256_fingerprints=[hashlib.sha256(PLAIN).digest()], version=VERSION, now=NOW
    )
    err = refused(data)
    assert "SHA256 fingerprints section" in str(err) and "SHA-256 fingerprint" in str(err)


def test_the_ca_keys_sha256_fingerprint_is_refused_and_named() -> None:
    data = build_krl(
        ca_keys=[CA], sha256_fingerprints=[hashlib.sha256(CA).digest()], version=VERSION, now=NOW
    )
    assert "itself" in str(refused(data))


@pytest.mark.parametrize("blob", [PLAIN, CA], ids=["plain key", "CA key"])
def test_sha1_fingerprints_are_refused(blob: bytes) -> None:
    data = h.raw_krl(h.raw_section(3, h.ssh_string(hashlib.sha1(blob).digest())), version=VERSION)
    parse_krl(data)  # OpenSSH and our parser load it ...
    err = refused(data)  # ... but no host installs it
    assert "SHA1 fingerprints section" in str(err)
    assert ("itself" in str(err)) == (blob == CA)


def test_a_wildcard_ca_section_is_refused() -> None:
    data = build_krl(ca_keys=[b""], serials=[5], version=VERSION, now=NOW)
    err = refused(data)
    assert "ANY CA" in str(err)


def test_a_serial_bitmap_is_refused() -> None:
    bitmap = h.raw_section(0x22, struct.pack(">Q", 100) + h.ssh_string(b"\x05"))
    data = h.raw_krl(h.raw_cert_section(CA, bitmap), version=VERSION)
    assert parse_krl(data).cert_sections[0].serial_ranges == ((100, 100), (102, 102))
    assert "bitmap" in str(refused(data))


def test_an_empty_key_id_is_refused() -> None:
    data = h.raw_krl(
        h.raw_cert_section(CA, h.raw_section(0x23, h.ssh_string(b""))), version=VERSION
    )
    assert "empty key id" in str(refused(data))


@pytest.mark.parametrize(
    "data",
    [
        h.raw_krl(version=VERSION, flags=1),
        h.raw_krl(version=VERSION, reserved=b"x"),
        h.raw_krl(
            h.raw_cert_section(CA, h.raw_section(0x20, struct.pack(">Q", 5)), reserved=b"x"),
            version=VERSION,
        ),
    ],
    ids=["header flags", "header reserved", "section reserved"],
)
def test_fields_jit_ssh_leaves_empty_must_be_empty(data: bytes) -> None:
    parse_krl(data)
    refused(data)


def test_a_krl_for_untrusted_ca_keys_only_is_refused() -> None:
    data = build_krl(ca_keys=[UNTRUSTED], serials=[5], version=VERSION, now=NOW)
    err = refused(data)
    assert "none of its CA keys" in str(err) and "host setup" in str(err)


def test_refusals_name_the_byte() -> None:
    data = build_krl(ca_keys=[CA], serials=[5], public_keys=[PLAIN], version=VERSION, now=NOW)
    # The explicit-key section comes after the header and the certificate section.
    offset = data.index(b"\x02" + struct.pack(">I", 4 + len(PLAIN)) + h.ssh_string(PLAIN))
    assert f"refused KRL at byte {offset} " in str(refused(data))


def test_structural_flaws_stay_invalid_krl_not_unacceptable() -> None:
    data = build_krl(ca_keys=[CA], serials=[5], version=VERSION, now=NOW)[:-3]
    with pytest.raises(InvalidKRL) as info:
        accept(data)
    assert type(info.value) is InvalidKRL


# --- versions --------------------------------------------------------------------


def test_a_version_up_to_the_allowed_skew_ahead_is_accepted() -> None:
    edge = krl_version_at(NOW + DEFAULT_MAX_CLOCK_SKEW)
    assert accept(empty_krl(version=edge, now=NOW)).version == edge


@pytest.mark.parametrize(
    "version",
    [
        krl_version_at(NOW + DEFAULT_MAX_CLOCK_SKEW) + 1,
        krl_version_at(NOW + timedelta(days=365)),
        2**63,
        2**64 - 1,
    ],
    ids=["one microsecond past the skew", "a year ahead", "2**63", "2**64-1"],
)
def test_a_version_from_the_future_is_refused(version: int) -> None:
    err = refused(empty_krl(version=version, now=NOW))
    assert err.field == "version"
    assert "later than this host's clock" in str(err) and "NTP" in str(err)


def test_the_skew_is_the_callers() -> None:
    data = empty_krl(version=krl_version_at(NOW + timedelta(minutes=30)), now=NOW)
    refused(data)
    assert accept(data, max_clock_skew=timedelta(hours=1)).version == krl_version_at(
        NOW + timedelta(minutes=30)
    )
    refused(empty_krl(version=krl_version_at(NOW) + 1, now=NOW), max_clock_skew=timedelta(0))


# --- arguments -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"trusted_ca_keys": ()}, "trusted_ca_keys"),
        ({"trusted_ca_keys": CA}, "trusted_ca_keys"),
        ({"trusted_ca_keys": [b"not a key"]}, "trusted_ca_keys"),
        ({"now": datetime(2026, 1, 1)}, "now"),
        ({"max_clock_skew": timedelta(seconds=-1)}, "max_clock_skew"),
        ({"max_clock_skew": 300}, "max_clock_skew"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"trusted_ca_keys": TRUSTED, "now": NOW, **kwargs}
    with pytest.raises(Exception) as info:
        accept_krl(empty_krl(version=0, now=NOW), **args)  # type: ignore[arg-type]
    assert getattr(info.value, "field", None) == field
