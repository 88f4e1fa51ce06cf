"""One exception tree for fedge.

Every error fedge raises on purpose derives from :class:`FedgeError`, so callers can catch one
type. Third-party exceptions (safetensors, tomllib, torch) are mapped to these at the boundary.
Messages say what happened and what to do about it::

    FedgeError
    ├── ConfigError              a setting is missing, unknown, or out of range
    │   └── UnknownNameError     a task/strategy/partitioner name that is not registered
    ├── DataError                a data set or partition cannot be built as asked
    │   └── PartitionError       impossible partition (more devices than samples, alpha <= 0, ...)
    ├── ValidationError          input from outside (network, files) failed validation
    │   ├── WireFormatError      truncated, oversized, wrongly typed or versioned payload
    │   │   └── PayloadTooLarge  a request body over the route's size limit (HTTP 413)
    │   ├── ShapeMismatchError   tensor names/shapes/dtypes do not match the model
    │   ├── NonFiniteError       NaN or Inf where finite numbers are required
    │   └── HealthCheckError     a model version failed the device's health check (kept the last good)
    ├── AggregationError         a round cannot be aggregated (e.g. no valid updates)
    ├── PrivacyError             a differential-privacy guarantee cannot be given as asked
    │   ├── CalibrationError     no noise multiplier reaches the target (ε, δ) in the rounds asked
    │   └── PrivacyBudgetExceeded  the next round or task would spend more ε than allowed
    ├── ProtocolError            a message arrived in the wrong phase or from the wrong peer
    ├── UnavailableError         a peer could not be reached, timed out or failed (5xx): retry later
    ├── SecAggError              secure aggregation (fedge.secagg) failed or was refused
    │   ├── SecAggConfigError    unsafe parameters: overflow, threshold <= k/2, too few devices
    │   ├── SecAggProtocolError  out of phase, duplicated, replayed or wrong-round message
    │   │   └── UnmaskRefusedError  an unmask request would reveal both shares of one peer
    │   ├── SecAggIntegrityError bad signature, tag, commitment or malformed secagg message
    │   └── RoundAbandonedError  too few survivors or a neighbourhood fell below threshold
    └── IdentityError            fleet identity: PKI, certificates, authorization, signatures
        ├── PkiError             the PKI directory is missing/incomplete, or an operation on it is impossible
        ├── CertificateError     a certificate is malformed, not from our CA, or lacks role/site
        │   ├── ExpiredCertificateError  outside its validity window (expired or not yet valid)
        │   └── RevokedError     listed on the fleet's certificate revocation list
        ├── AuthorizationError   a valid identity whose role/site/name may not do this
        └── SignatureError       a release signature is missing, wrong, or made by another key
            └── DowngradeError   a release manifest older than one already accepted (replay)
"""

from __future__ import annotations

__all__ = [
    "AggregationError",
    "AuthorizationError",
    "CalibrationError",
    "CertificateError",
    "ConfigError",
    "DataError",
    "DowngradeError",
    "ExpiredCertificateError",
    "FedgeError",
    "HealthCheckError",
    "IdentityError",
    "NonFiniteError",
    "PartitionError",
    "PayloadTooLarge",
    "PkiError",
    "PrivacyBudgetExceeded",
    "PrivacyError",
    "ProtocolError",
    "RevokedError",
    "RoundAbandonedError",
    "SecAggConfigError",
    "SecAggError",
    "SecAggIntegrityError",
    "SecAggProtocolError",
    "ShapeMismatchError",
    "SignatureError",
    "UnavailableError",
    "UnknownNameError",
    "UnmaskRefusedError",
    "ValidationError",
    "WireFormatError",
]


class FedgeError(Exception):
    """Base class of every error fedge raises on purpose."""


class ConfigError(FedgeError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class UnknownNameError(ConfigError, KeyError):
    """A name looked up in a registry (task, strategy, partitioner...) is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message; keep it readable.
        return str(self.args[0]) if self.args else ""


class DataError(FedgeError, ValueError):
    """A data set or partition cannot be built as requested."""


class PartitionError(DataError):
    """A partition is impossible with the given data and settings."""


class ValidationError(FedgeError, ValueError):
    """Input from outside the process failed validation."""


class WireFormatError(ValidationError):
    """A serialized payload is truncated, oversized, of an unknown version or malformed."""


class PayloadTooLarge(WireFormatError):  # noqa: N818 -- reads as an event, like StopIteration
    """A request body is larger than the limit of the route it was sent to."""


class ShapeMismatchError(ValidationError):
    """Tensor names, shapes or dtypes do not match what the model expects."""


class NonFiniteError(ValidationError):
    """An array holds NaN or Inf where only finite values are allowed."""


class HealthCheckError(ValidationError):
    """A model version failed to load, to predict, or to reach the accuracy floor on the holdout.

    ``check`` names the check that failed: "load", "smoke" or "accuracy" ("" when unknown).
    """

    def __init__(self, message: str, *, check: str = "") -> None:
        super().__init__(message)
        self.check = check


class AggregationError(FedgeError):
    """A round cannot be aggregated, for example because every update was rejected."""


class PrivacyError(FedgeError):
    """A differential-privacy guarantee cannot be given or kept with the settings asked for."""


class CalibrationError(PrivacyError, ValueError):
    """No noise multiplier reaches the target (ε, δ); the message says which setting to change."""


class PrivacyBudgetExceeded(PrivacyError):  # noqa: N818 -- reads as an event, like StopIteration
    """Running the next round (or accepting a task) would spend more ε than the budget allows."""


class ProtocolError(FedgeError):
    """A protocol message arrived out of phase, twice, or from a peer not allowed to send it."""


class UnavailableError(FedgeError):
    """A peer could not be reached, timed out, or failed on its side (HTTP 5xx); worth retrying."""


class IdentityError(FedgeError):
    """Fleet identity failed: PKI files, certificates, authorization or release signatures."""


class PkiError(IdentityError):
    """The PKI directory is missing or incomplete, or the requested operation on it is impossible."""


class CertificateError(IdentityError):
    """A certificate is malformed, not issued by the fleet CA, or lacks a valid role/site."""


class ExpiredCertificateError(CertificateError):
    """A certificate is outside its validity window (expired, or not valid yet)."""


class RevokedError(CertificateError):
    """A certificate is listed on the fleet's certificate revocation list."""


class AuthorizationError(IdentityError):
    """A verified identity is not allowed to do this (wrong role, wrong site or wrong name)."""


class SignatureError(IdentityError):
    """A release signature is missing, malformed, wrong, or made by a key we do not trust."""


class DowngradeError(SignatureError):
    """A release manifest with a lower sequence than one already accepted: a downgrade or replay."""


class SecAggError(FedgeError):
    """Secure aggregation (:mod:`fedge.secagg`) failed, was refused, or was abandoned."""


class SecAggConfigError(SecAggError, ConfigError):
    """Secure-aggregation parameters are unsafe or impossible; the message says what to change."""


class SecAggProtocolError(SecAggError, ProtocolError):
    """A secagg message is out of phase, duplicated, replayed, for another round or peer."""


class UnmaskRefusedError(SecAggProtocolError):
    """An unmask request would reveal both the self-mask and the key share of the same peer."""


class SecAggIntegrityError(SecAggError, ValidationError):
    """A signature, authentication tag, commitment or secagg message failed verification."""


class RoundAbandonedError(SecAggError, AggregationError):
    """Too few devices survived (or a neighbourhood fell below threshold): nothing is revealed."""
