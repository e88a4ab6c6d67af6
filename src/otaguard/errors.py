"""One hierarchy for every error otaguard raises on purpose.

Errors are grouped by who is at fault, because that decides what the caller
must do and which exit code the CLI returns:

* :class:`RejectedError` -- hostile or broken input refused by a security
  check (bad signature, digest mismatch, rollback, malformed bytes). The input
  must not be used. Exit code 1.
* :class:`KeyLoadError`, :class:`UsageError`, :class:`StorageError` -- the
  operator's configuration, arguments or local files are wrong or unreadable.
  Nothing was decided about the input's trustworthiness. Exit code 2.

Caller bugs (calling an API in the wrong order, passing the wrong type) are
plain ``ValueError``/``RuntimeError`` and are never caught as one of these.
"""

from __future__ import annotations


class OtaguardError(Exception):
    """Base class; ``exit_code`` is what the CLI returns for it."""

    exit_code = 2


class RejectedError(OtaguardError):
    """A security check refused the input. ``check`` names the check."""

    exit_code = 1
    check = "rejected"


class MalformedError(RejectedError):
    """The bytes do not follow the format (bad magic, bad length, leftovers)."""

    check = "malformed"


class TruncatedError(MalformedError):
    """The input ended before a structure it announced was complete."""

    check = "truncated"


class SignatureError(RejectedError):
    """A signature did not verify with the key it names."""

    check = "signature"


class DigestMismatchError(RejectedError):
    """The payload's digest differs from the signed one."""

    check = "digest"


class UnknownKeyError(RejectedError):
    """No signature was made by any trusted key."""

    check = "unknown-key"


class ThresholdError(RejectedError):
    """Fewer distinct trusted keys signed than the threshold demands."""

    check = "threshold"


class PolicyError(RejectedError):
    """The image is authentic but the verifier's policy refuses it."""

    check = "policy"


class HardwareIdError(PolicyError):
    """The image was not built for this hardware."""

    check = "hardware-id"


class SecurityCounterError(PolicyError):
    """The image's security counter is below the minimum (rollback)."""

    check = "security-counter"


class VersionError(PolicyError):
    """The image's version is older than the verifier's minimum."""

    check = "version"


class KeyLoadError(OtaguardError):
    """A key file could not be read as a supported key."""


class UsageError(OtaguardError):
    """The request itself is invalid (bad option combination or value)."""


class StorageError(OtaguardError):
    """A local file could not be read or written."""


class CertificateError(RejectedError):
    """A certificate chain failed path validation (issue on PKI)."""

    check = "certificate"


class ChainError(CertificateError):
    """No valid path from the signer's certificate to a trusted root."""

    check = "chain"


class CertificateValidityError(CertificateError):
    """A certificate was expired or not yet valid at the relevant time."""

    check = "validity"


class KeyUsageError(CertificateError):
    """A certificate is used for something its key usage does not allow."""

    check = "key-usage"


class PathLengthError(CertificateError):
    """A CA issued below the depth its path length constraint allows."""

    check = "path-length"


class ConstraintError(CertificateError):
    """The image is outside what the signing chain may sign (region, hardware id)."""

    check = "constraint"


class RevokedError(CertificateError):
    """A certificate in the chain has been revoked."""

    check = "revoked"


class AnchorRotationError(RejectedError):
    """A trust-anchor rotation message was refused (bad signer, replayed epoch)."""

    check = "anchor-rotation"


class StaleCrlError(RejectedError):
    """A revocation list not newer than the one already stored (replay)."""

    check = "crl-rollback"


class FuseBudgetError(PolicyError):
    """The image's security counter is beyond what the device's fuses can ever record."""

    check = "fuse-budget"


class SlotSizeError(RejectedError):
    """The image does not fit the device's slot."""

    check = "slot-size"


class RecoveryError(RejectedError):
    """No slot holds an image that verifies: the device stays in recovery."""

    check = "recovery"


class DirectorError(RejectedError):
    """The director's instructions are not acceptable (Uptane-style checks)."""

    check = "director"


class FreezeError(DirectorError):
    """Metadata has expired: someone may be freezing the device on old instructions."""

    check = "freeze"


class ReplayError(DirectorError):
    """The director's metadata does not echo this check-in's nonce (or this device)."""

    check = "replay"


class MetadataRollbackError(DirectorError):
    """Metadata older than what the device already trusted."""

    check = "rollback"


class DirectorOnlyError(DirectorError):
    """The director names an image the image repository does not vouch for."""

    check = "director-only"


class MismatchError(DirectorError):
    """Director and image repository disagree on an image (hash, length, counter)."""

    check = "mismatch"


class PartialBundleError(DirectorError):
    """An update set would be installed without one of its components."""

    check = "partial-bundle"


class UnknownEcuError(DirectorError):
    """An instruction for an ECU this vehicle does not have."""

    check = "unknown-ecu"


class RepositoryRejectedError(RejectedError):
    """The image repository (TUF) refused to vouch for what was offered."""

    check = "repository"


class RolloutPolicyError(UsageError):
    """A rollout policy (TOML) is malformed or out of range; the message names the key."""


class CampaignStateError(UsageError):
    """A campaign event that its current state does not allow (start a draft, resume a halt)."""


class TwoPersonRuleError(RejectedError):
    """The creator of a campaign tried to approve it: two people must agree to a rollout."""

    check = "two-person"
