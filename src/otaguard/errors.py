"""One hierarchy for every error otaguard raises on purpose.

Errors are grouped by who is at fault, because that decides what the caller
must do and which exit code the CLI returns:

* :class:`RejectedError` -- hostile or broken input refused by a security
  check (bad signature, digest mismatch, rollback, malformed bytes). The input
  must not be used. Exit code 1.
* :class:`KeyLoadError`, :class:`UsageError`, :class:`StorageError` -- the
  operator's configuration, arguments or local files are wrong or unreadable.
  Nothing was decided about the input's trustworthiness. Exit code 2.
* :class:`TransportError` -- the network did not deliver (no connection, an
  HTTP error status, a broken response). Nothing was decided about the
  content; a later try or another mirror may succeed. Exit code 2. A server
  that sends what no honest server sends (more bytes than the cap, too slowly,
  an encoding we refuse) is refused instead (:class:`TransferRefusedError`,
  exit 1); such errors may be both, so test for :class:`RejectedError` first.

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


class RequestSignatureError(RejectedError):
    """A device request is not signed by the key enrolled for the device it names."""

    check = "request-signature"


class StaleRequestError(RejectedError):
    """A device request signed too far from the server's clock (an old capture, or a bad clock)."""

    check = "request-time"


class ReplayedRequestError(RejectedError):
    """A device request whose nonce was already used: a replay."""

    check = "request-replay"


class TransportError(OtaguardError):
    """The network did not deliver: no connection, an HTTP error status, a broken response."""


class TransferRefusedError(RejectedError):
    """A download cut off by a cap: longer than allowed, too slow, an encoding refused."""

    check = "transfer"


class AuditError(RejectedError):
    """The audit log or one of its checkpoints was refused.

    ``index`` names the first bad entry when the check can localise it (the
    position in the log, counting from 0), else None.
    """

    check = "audit"

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class AuditCheckpointError(AuditError):
    """A checkpoint or signed note breaks its format (C2SP tlog-checkpoint, signed-note)."""

    check = "audit-checkpoint"


class AuditSignatureError(AuditError):
    """A checkpoint is not signed by a trusted audit key, or a trusted key's signature fails."""

    check = "audit-signature"


class AuditEntryError(AuditError):
    """An entry does not parse, or its index is not its position (reordered, inserted, deleted)."""

    check = "audit-entry"


class AuditTreeError(AuditError):
    """Entries, stored hash tiles, proofs and the signed root hash do not agree (edited entry)."""

    check = "audit-tree"


class AuditConsistencyError(AuditError):
    """Two checkpoints are not consistent: the history was rewritten (a fork)."""

    check = "audit-consistency"


class AuditTruncatedError(AuditError):
    """The log holds fewer entries than a checkpoint says it has (entries deleted at the end)."""

    check = "audit-truncated"


class RolloutPolicyError(UsageError):
    """A rollout policy (TOML) is malformed or out of range; the message names the key."""


class CampaignStateError(UsageError):
    """A campaign event that its current state does not allow (start a draft, resume a halt)."""


class TwoPersonRuleError(RejectedError):
    """The creator of a campaign tried to approve it: two people must agree to a rollout."""

    check = "two-person"
