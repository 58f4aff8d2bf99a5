"""ca.keyring: the CA keys in a data directory, rotation, and KRL versions."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ca.certs import issue_certificate, verify_certificate
from ca.errors import CAKeyError, InsecureKeyFile, PassphraseRequired
from ca.keyring import (
    STATE_FILE,
    InvalidRotation,
    Keyring,
    KeyState,
    ca_dir,
    init_keyring,
    load_keyring,
    local_states,
    promote,
    read_states,
    retire,
    write_states,
)
from ca.keys import CAKey, load_public_keys, parse_public_key

NOW = datetime(2026, 11, 29, 10, 45, 0, tzinfo=UTC)


def private_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in ca_dir(data_dir).iterdir() if not p.name.endswith(".pub"))


def test_init_then_load(tmp_path: Path) -> None:
    key = init_keyring(tmp_path, now=NOW)
    directory = ca_dir(tmp_path)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert key.path is not None and key.path.parent == directory
    assert key.path.name == "ca-20261129T104500Z-ed25519"
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert key.public.key_type == "ssh-ed25519"
    assert key.public.comment == f"jit-ssh-{key.path.name}"

    ring = load_keyring(tmp_path)
    assert isinstance(ring, Keyring)
    assert ring.keys == (key,)
    assert ring.signing_key.public == key.public
    assert ring.signing_key.private is not None
    assert ring.trusted_user_ca_keys() == key.public.openssh + "\n"


@pytest.mark.parametrize(
    ("kind", "key_type"), [("ecdsa", "ecdsa-sha2-nistp256"), ("ecdsa-p384", "ecdsa-sha2-nistp384")]
)
def test_init_types(tmp_path: Path, kind: str, key_type: str) -> None:
    key = init_keyring(tmp_path, now=NOW, key_type=kind)
    assert key.public.key_type == key_type
    assert load_keyring(tmp_path).signing_key.public == key.public


def test_init_refuses_weak_rsa(tmp_path: Path) -> None:
    from ca.errors import WeakKey

    with pytest.raises(WeakKey):
        init_keyring(tmp_path, now=NOW, key_type="rsa", bits=2048)
    assert private_files(tmp_path) == []


def _promote(data_dir: Path, key: CAKey) -> None:
    write_states(data_dir, promote(local_states(data_dir), key.fingerprint))


def test_an_added_key_is_trusted_but_signs_only_once_promoted(tmp_path: Path) -> None:
    # Was test_rotation_trusts_both_and_newest_signs: a second key no longer
    # signs at once (hosts would refuse its certificates); promote is explicit.
    old = init_keyring(tmp_path, now=NOW)
    new = init_keyring(tmp_path, now=NOW + timedelta(days=30), key_type="ecdsa")
    ring = load_keyring(tmp_path)
    assert [k.public for k in ring.keys] == [old.public, new.public]
    assert ring.signing_key.public == old.public
    assert read_states(tmp_path) == {
        old.fingerprint: KeyState.SIGNING,
        new.fingerprint: KeyState.STAGED,
    }
    text = ring.trusted_user_ca_keys()
    assert text == old.public.openssh + "\n" + new.public.openssh + "\n"
    assert load_public_keys(text) == (old.public, new.public)
    # Only the signing key's private half is loaded.
    assert ring.keys[1].private is None
    assert ring.signing_key.private is not None

    _promote(tmp_path, new)
    ring = load_keyring(tmp_path)
    assert ring.signing_key.public == new.public
    assert [k.public for k in ring.keys] == [old.public, new.public]
    # A certificate from the new key verifies against the whole ring, and one
    # from the old key (still in the field) does too.
    user = parse_public_key(old.public.openssh)  # any valid key will do as the user key
    cert = issue_certificate(
        ring.signing_key,
        user,
        principals=["root"],
        duration=timedelta(minutes=5),
        key_id="k",
        now=NOW,
    )
    assert cert.ca_public_key == new.public
    assert verify_certificate(cert, ring.keys).serial == cert.serial
    from_old = issue_certificate(
        old, user, principals=["root"], duration=timedelta(minutes=5), key_id="k", now=NOW
    )
    verify_certificate(from_old, ring.keys)

    with pytest.raises(InvalidRotation, match="signing key"):
        retire(local_states(tmp_path), new.fingerprint)
    write_states(tmp_path, retire(local_states(tmp_path), old.fingerprint))
    ring = load_keyring(tmp_path)
    assert [k.public for k in ring.keys] == [new.public]
    assert ring.trusted_user_ca_keys() == new.public.openssh + "\n"
    with pytest.raises(InvalidRotation, match="retired"):
        promote(local_states(tmp_path), old.fingerprint)


def test_rotation_steps_refuse_what_would_break_trust() -> None:
    states = {
        "SHA256:a": KeyState.SIGNING,
        "SHA256:b": KeyState.STAGED,
        "SHA256:c": KeyState.RETIRED,
    }
    for step, fp, match in [
        (promote, "SHA256:a", "already signs"),
        (promote, "SHA256:c", "retired"),
        (promote, "SHA256:zz", "no CA key"),
        (retire, "SHA256:a", "signing key"),
        (retire, "SHA256:c", "already retired"),
        (retire, "SHA256:zz", "no CA key"),
    ]:
        with pytest.raises(InvalidRotation, match=match) as e:
            step(states, fp)
        assert e.value.code == "invalid_rotation" and e.value.field == "fingerprint"
    assert promote(states, "SHA256:b") == {
        "SHA256:a": KeyState.STAGED,
        "SHA256:b": KeyState.SIGNING,
        "SHA256:c": KeyState.RETIRED,
    }


@pytest.mark.parametrize(
    "types",
    [
        ["ed25519", "ecdsa"],  # "ecdsa-p256" sorts before "ed25519" by name
        ["ecdsa-p384", "ecdsa", "ed25519"],
        ["ed25519", "ed25519", "ecdsa", "ed25519", "ecdsa-p384"],
        ["ed25519"] * 11,  # "-10" and "-11" must sort after "-9", not after "-1"
    ],
)
def test_rotation_within_one_second(tmp_path: Path, types: list[str]) -> None:
    made = [init_keyring(tmp_path, now=NOW, key_type=t) for t in types]
    assert len({k.path for k in made}) == len(types)
    # File times are no order: they are coarse, and copies and restores
    # rewrite them. Make them all equal, or even reversed.
    for i, key in enumerate(made):
        assert key.path is not None
        t = 1_700_000_000 - i
        os.utime(key.path, (t, t))
    ring = load_keyring(tmp_path)
    assert [k.public for k in ring.keys] == [k.public for k in made]
    assert ring.signing_key.public == made[0].public  # the first signs until one is promoted
    # A data directory from before staged rotation (no keyring.json): the newest signs, as it did.
    (ca_dir(tmp_path) / STATE_FILE).unlink()
    ring = load_keyring(tmp_path)
    assert [k.public for k in ring.keys] == [k.public for k in made]
    assert ring.signing_key.public == made[-1].public


def test_rotation_with_same_mtime(tmp_path: Path) -> None:
    a = init_keyring(tmp_path, now=NOW)
    b = init_keyring(tmp_path, now=NOW, key_type="ecdsa")
    for key in (a, b):
        assert key.path is not None
        os.utime(key.path, ns=(1, 1))
    (ca_dir(tmp_path) / STATE_FILE).unlink()  # the legacy rule: the newest signs
    assert load_keyring(tmp_path, private=False).signing_key.public == b.public


def test_rotation_with_passphrase_needs_only_the_signer(tmp_path: Path) -> None:
    old = init_keyring(tmp_path, now=NOW, passphrase=b"old pass")
    new = init_keyring(tmp_path, now=NOW + timedelta(hours=1), passphrase=b"new pass")
    assert load_keyring(tmp_path, passphrase=b"old pass").signing_key.public == old.public
    _promote(tmp_path, new)
    ring = load_keyring(tmp_path, passphrase=b"new pass")
    assert ring.signing_key.public == new.public
    assert ring.keys[0].public == old.public


def test_a_key_file_keyring_json_does_not_name_is_not_trusted(tmp_path: Path) -> None:
    mine = init_keyring(tmp_path, now=NOW)
    stranger = init_keyring(tmp_path / "other", now=NOW + timedelta(seconds=5))
    assert stranger.path is not None
    for suffix in ("", ".pub"):
        src = stranger.path.with_name(stranger.path.name + suffix)
        (ca_dir(tmp_path) / src.name).write_bytes(src.read_bytes())
        os.chmod(ca_dir(tmp_path) / src.name, 0o600)
    ring = load_keyring(tmp_path)
    assert [k.public for k in ring.keys] == [mine.public]
    assert ring.signing_key.public == mine.public


def test_load_public_only_needs_no_passphrase(tmp_path: Path) -> None:
    key = init_keyring(tmp_path, now=NOW, passphrase=b"secret")
    with pytest.raises(PassphraseRequired):
        load_keyring(tmp_path)
    ring = load_keyring(tmp_path, private=False)
    assert ring.signing_key.public == key.public
    assert ring.signing_key.private is None
    assert all(k.private is None for k in ring.keys)
    assert ring.trusted_user_ca_keys() == key.public.openssh + "\n"
    assert load_keyring(tmp_path, passphrase=b"secret").signing_key.private is not None


def test_load_public_only_ignores_private_file_mode(tmp_path: Path) -> None:
    key = init_keyring(tmp_path, now=NOW)
    assert key.path is not None
    os.chmod(key.path, 0o644)
    assert load_keyring(tmp_path, private=False).signing_key.public == key.public
    with pytest.raises(InsecureKeyFile):
        load_keyring(tmp_path)


@pytest.mark.parametrize("make_dir", [False, True])
def test_no_keys_hints_ca_init(tmp_path: Path, make_dir: bool) -> None:
    if make_dir:
        ca_dir(tmp_path).mkdir()
        (ca_dir(tmp_path) / "README").write_text("not a key")
    for private in (True, False):
        with pytest.raises(CAKeyError) as info:
            load_keyring(tmp_path, private=private)
        assert type(info.value) is CAKeyError
        assert info.value.code == "ca_key_error"
        assert info.value.field == "data_dir"
        assert "jit-ssh ca init" in str(info.value)


def test_missing_public_half_of_an_old_key(tmp_path: Path) -> None:
    old = init_keyring(tmp_path, now=NOW)
    init_keyring(tmp_path, now=NOW + timedelta(days=1))
    assert old.path is not None
    old.path.with_name(old.path.name + ".pub").unlink()
    with pytest.raises(CAKeyError) as info:
        load_keyring(tmp_path)
    assert ".pub" in str(info.value)


def test_keys_are_ca_keys(tmp_path: Path) -> None:
    init_keyring(tmp_path, now=NOW)
    ring = load_keyring(tmp_path)
    assert all(isinstance(k, CAKey) for k in ring.keys)


@pytest.mark.parametrize("kind", [None, "dsa", 3])
def test_init_refuses_unknown_type(tmp_path: Path, kind: object) -> None:
    with pytest.raises(CAKeyError) as info:
        init_keyring(tmp_path, now=NOW, key_type=kind)  # type: ignore[arg-type]
    assert info.value.field == "type"
