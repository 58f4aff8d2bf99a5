"""Errors raised by the CA core.

Every error carries a stable machine ``code`` (used by the API's problem+json
responses and by the CLI) and, where one input was at fault, the ``field`` it
names. The tree is small on purpose::

    JitSshError
    ├── InvalidKeyError                  code "invalid_key"       malformed, truncated, non-base64
    │   ├── UnsupportedKeyType      "unsupported_key_type"   DSA, unknown types, sk-* keys
    │   ├── WeakKey                 "weak_key"               RSA below the minimum size
    │   ├── CertificateAsKey   "certificate_as_key"     a *-cert-v01 blob where a key belongs
    │   └── KeyTooLarge             "key_too_large"          over 16 KiB
    ├── InvalidPrincipal            "invalid_principal"
    ├── InvalidName                 "invalid_name"           a login user, target or host name (ca.names)
    ├── InvalidDuration             "invalid_duration"
    ├── InvalidKeyId                "invalid_key_id"
    ├── InvalidSerial               "invalid_serial"
    ├── InvalidExtension            "invalid_extension"
    ├── InvalidCriticalOption       "invalid_critical_option"
    │   └── InvalidSourceAddress    "invalid_source_address"
    ├── InvalidCertificate          "invalid_certificate"
    │   └── UntrustedCA    "untrusted_ca"           signed by a key we do not trust
    ├── InvalidKRL                  "invalid_krl"
    │   └── UnacceptableKRL         "unacceptable_krl"       well formed, but not what jit-ssh emits
    └── CAKeyError                  "ca_key_error"
        ├── InsecureKeyFile         "insecure_key_file"      group/other may read the private key
        ├── PassphraseRequired      "passphrase_required"
        └── BadPassphrase           "bad_passphrase"
"""

from __future__ import annotations

__all__ = [
    "JitSshError",
    "InvalidKeyError",
    "UnsupportedKeyType",
    "WeakKey",
    "CertificateAsKey",
    "KeyTooLarge",
    "InvalidPrincipal",
    "InvalidName",
    "InvalidDuration",
    "InvalidKeyId",
    "InvalidSerial",
    "InvalidExtension",
    "InvalidCriticalOption",
    "InvalidSourceAddress",
    "InvalidCertificate",
    "UntrustedCA",
    "InvalidKRL",
    "UnacceptableKRL",
    "CAKeyError",
    "InsecureKeyFile",
    "PassphraseRequired",
    "BadPassphrase",
]


class JitSshError(Exception):
    """Base of every error jit-ssh raises on purpose.

    ``code`` is stable and machine-readable; ``field`` names the input at fault
    (or is ``None``); ``str(err)`` is one human-readable line.
    """

    code: str = "jit_ssh_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class InvalidKeyError(JitSshError):
    code = "invalid_key"


class UnsupportedKeyType(InvalidKeyError):
    code = "unsupported_key_type"


class WeakKey(InvalidKeyError):
    code = "weak_key"


class CertificateAsKey(InvalidKeyError):
    code = "certificate_as_key"


class KeyTooLarge(InvalidKeyError):
    code = "key_too_large"


class InvalidPrincipal(JitSshError):
    code = "invalid_principal"


class InvalidName(JitSshError):
    """A login user, target or host name that OpenSSH could read as something else."""

    code = "invalid_name"


class InvalidDuration(JitSshError):
    code = "invalid_duration"


class InvalidKeyId(JitSshError):
    code = "invalid_key_id"


class InvalidSerial(JitSshError):
    code = "invalid_serial"


class InvalidExtension(JitSshError):
    code = "invalid_extension"


class InvalidCriticalOption(JitSshError):
    code = "invalid_critical_option"


class InvalidSourceAddress(InvalidCriticalOption):
    code = "invalid_source_address"


class InvalidCertificate(JitSshError):
    code = "invalid_certificate"


class UntrustedCA(InvalidCertificate):
    code = "untrusted_ca"


class InvalidKRL(JitSshError):
    code = "invalid_krl"


class UnacceptableKRL(InvalidKRL):
    """A KRL OpenSSH would load, that a host must still not install (see ``ca.krl.accept_krl``)."""

    code = "unacceptable_krl"


class CAKeyError(JitSshError):
    code = "ca_key_error"


class InsecureKeyFile(CAKeyError):
    code = "insecure_key_file"


class PassphraseRequired(CAKeyError):
    code = "passphrase_required"


class BadPassphrase(CAKeyError):
    code = "bad_passphrase"
