"""What went wrong, sorted into the failure classes the retry policy knows (``config.Failure``).

The agent meets three kinds of trouble and treats them apart:

* a *verification refusal* (any :class:`~otaguard.errors.RejectedError`: a TUF
  or director check, a hash mismatch, the device's own image checks) -- the
  offer is refused, reported, and never retried;
* a *transient failure* (:class:`TransientError`: the network, the server, a
  slow source, a response that breaks the protocol, a power cut) -- retried
  with backoff, per class;
* a *configuration* problem (:class:`ServerRefusedError`, usage and storage
  errors) -- the device cannot take part until someone acts (exit 2).
"""

from __future__ import annotations

import httpx

from otaguard.agent.config import Failure
from otaguard.errors import OtaguardError, RejectedError
from otaguard.repo.fetcher import FetchError, LengthExceededError, SlowRetrievalError


class TransientError(OtaguardError):
    """A step failed for a reason that may go away: retried with backoff (exit 2 if it lasts)."""

    def __init__(self, failure: Failure, message: str) -> None:
        if not failure.transient:
            raise ValueError("a refusal is not transient")
        super().__init__(message)
        self.failure = failure


class ServerRefusedError(OtaguardError):
    """The fleet server refuses this device (403: unknown CA, revoked; 409: another key)."""


def classify(exc: BaseException) -> Failure | None:
    """The failure class of ``exc``, or None when it is neither transient nor a refusal."""
    if isinstance(exc, TransientError):
        return exc.failure
    # Transfers cut off by a cap come first: they may also be RejectedError (a hardened
    # fetcher); nothing was accepted, and another try (or mirror) may do better.
    if isinstance(exc, SlowRetrievalError):
        return Failure.SLOW
    if isinstance(exc, LengthExceededError):
        return Failure.BAD_RESPONSE
    if isinstance(exc, FetchError):
        status = exc.status_code
        if status is None:
            return Failure.NETWORK
        return Failure.SERVER
    if isinstance(exc, RejectedError):
        return Failure.REFUSED
    if isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError):
        return Failure.NETWORK
    if isinstance(exc, httpx.HTTPError):
        return Failure.BAD_RESPONSE
    return None


def describe(exc: BaseException) -> str:
    """One line for logs and events."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:400]
