"""jit-ssh's CA core: a pure library (standard library and cryptography only).

Keys (:mod:`ca.keys`), certificates (:mod:`ca.certs`), revocation lists
(:mod:`ca.krl`), SSHSIG signatures (:mod:`ca.sshsig`), strict name checks
(:mod:`ca.names`), durations and the error tree (:mod:`ca.errors`). All of them
read and write SSH wire bytes through :mod:`ca.wire`. Nothing here reads the
clock, the environment or a database: ``now`` is always an argument.
"""

from .certs import (
    DEFAULT_EXTENSIONS,
    KNOWN_CRITICAL_OPTIONS,
    KNOWN_EXTENSIONS,
    MAX_DURATION,
    IssuedCertificate,
    issue_certificate,
    make_key_id,
    new_serial,
    parse_certificate,
    validate_key_id,
    validate_principals,
    validate_source_address,
    verify_certificate,
)
from .durations import format_duration, parse_duration
from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all
from .keyring import Keyring, init_keyring, load_keyring
from .keys import (
    CAKey,
    CAKeyType,
    PublicKey,
    fingerprint_of_blob,
    generate_ca_key,
    keys_for_trust,
    load_ca_key,
    load_public_keys,
    parse_public_key,
    public_key_from_crypto,
    save_ca_key,
)
from .names import check_hostname, check_key_id, check_login_user, check_principal, check_target

__all__ = [
    *_errors_all,
    "DEFAULT_EXTENSIONS",
    "KNOWN_CRITICAL_OPTIONS",
    "KNOWN_EXTENSIONS",
    "MAX_DURATION",
    "IssuedCertificate",
    "issue_certificate",
    "make_key_id",
    "new_serial",
    "parse_certificate",
    "validate_key_id",
    "validate_principals",
    "validate_source_address",
    "verify_certificate",
    "check_hostname",
    "check_key_id",
    "check_login_user",
    "check_principal",
    "check_target",
    "format_duration",
    "parse_duration",
    "Keyring",
    "init_keyring",
    "load_keyring",
    "CAKey",
    "CAKeyType",
    "PublicKey",
    "fingerprint_of_blob",
    "generate_ca_key",
    "keys_for_trust",
    "load_ca_key",
    "load_public_keys",
    "parse_public_key",
    "public_key_from_crypto",
    "save_ca_key",
]
