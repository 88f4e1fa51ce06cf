"""What secure aggregation is set up with: a job's :class:`SecureSettings` (its
``secure_aggregation`` table) and the coordinator's :class:`SecAggAuthority` (its PKI files).

:class:`~fedge.coordinator.secure.SecureRound` runs each round's session with both.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from fedge.errors import (
    AuthorizationError,
    ConfigError,
    FedgeError,
    IdentityError,
    SecAggConfigError,
    ValidationError,
)
from fedge.identity import Identity, RevocationSource, Role, load_certificate
from fedge.identity.binding import binding_message, sign_key_binding, verify_key_binding
from fedge.secagg import SecAggConfig
from fedge.transport import messages as m

__all__ = ["SecAggAuthority", "SecureSettings", "check_secagg_settings"]

_CONFIG_KEYS = {
    "bits", "levels", "neighbours", "threshold", "dropout_rate", "corrupt_fraction",
    "security_bits", "correctness_bits",
}  # fmt: skip
_OWN_KEYS = {"clip_lo", "clip_hi", "weighting", "max_examples", "phase_timeout_s"}


@dataclass(frozen=True)
class SecureSettings:
    """A job's ``secure_aggregation`` table: SecAgg+ parameters plus the network's own."""

    config: SecAggConfig
    weighting: str = "examples"  # "examples": FedAvg weights; "uniform": every device weighs 1
    max_examples: int = 1000  # weight cap for "examples": w = min(examples, cap) / cap
    phase_timeout_s: float = 10.0  # each protocol phase closes at the latest after this

    @classmethod
    def parse(cls, raw: Mapping[str, float | int | str | bool]) -> SecureSettings:
        """Validate a job spec's ``secure_aggregation`` dict; ConfigError says what is wrong."""
        unknown = set(raw) - _CONFIG_KEYS - _OWN_KEYS
        if unknown:
            allowed = ", ".join(sorted(_CONFIG_KEYS | _OWN_KEYS))
            raise ConfigError(f"unknown secure_aggregation keys {sorted(unknown)}; use {allowed}")
        kwargs = {k: v for k, v in raw.items() if k in _CONFIG_KEYS}
        lo, hi = float(raw.get("clip_lo", -1.0)), float(raw.get("clip_hi", 1.0))
        weighting = str(raw.get("weighting", "examples"))
        if weighting not in ("examples", "uniform"):
            raise ConfigError(f"weighting must be 'examples' or 'uniform', not {weighting!r}")
        if weighting == "examples" and not (lo <= 0.0 and hi >= 1.0):
            raise ConfigError(
                f"weighting = 'examples' sends the weight (in (0, 1]) as one more coordinate: "
                f"the clip range [{lo:g}, {hi:g}] must contain [0, 1]"
            )
        max_examples = raw.get("max_examples", 1000)
        timeout = float(raw.get("phase_timeout_s", 10.0))
        if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
            raise ConfigError(f"max_examples must be a positive integer, not {max_examples!r}")
        if not (math.isfinite(timeout) and 0.1 <= timeout <= 3600):
            raise ConfigError(f"phase_timeout_s must be in [0.1, 3600], not {timeout}")
        try:
            config = SecAggConfig(clip_range=(lo, hi), **kwargs)  # type: ignore[arg-type]
        except (SecAggConfigError, TypeError) as exc:
            raise ConfigError(f"secure_aggregation: {exc}") from None
        return cls(config, weighting, int(max_examples), timeout)

    @property
    def extra(self) -> int:
        """Coordinates appended to the flattened update (the weight under "examples")."""
        return 1 if self.weighting == "examples" else 0

    def plan(self, job_id: str, round_number: int) -> m.SecAggPlan:
        """What a device needs to know before the session starts."""
        return m.SecAggPlan(
            session=f"{job_id}/{round_number}",
            params={
                "weighting": self.weighting,
                "max_examples": self.max_examples,
                "phase_timeout_s": self.phase_timeout_s,
            },
        )


@dataclass(frozen=True)
class SecAggAuthority:
    """What the coordinator needs to run secure aggregation: the fleet CA (and CRL) to check
    devices' key bindings, and its own certificate and key to bind its round keys."""

    name: str
    ca: x509.Certificate
    revocation: RevocationSource | None
    certificate_pem: bytes
    key_pem: bytes

    @classmethod
    def from_files(
        cls, ca: str | Path, cert: str | Path, key: str | Path, revocation: RevocationSource | None
    ) -> SecAggAuthority:
        """Load the coordinator's PKI files."""
        from fedge.identity import identity_from_certificate

        cert_pem = Path(cert).read_bytes()
        name = identity_from_certificate(cert_pem).name
        return cls(name, load_certificate(ca), revocation, cert_pem, Path(key).read_bytes())

    def binding(self, job_id: str, round_number: int, public: bytes) -> m.KeyBinding:
        """Bind this round's Ed25519 key to the coordinator's certificate."""
        message = binding_message(Role.COORDINATOR, self.name, job_id, round_number, public)
        proof = sign_key_binding(self.key_pem, message)
        return m.KeyBinding(
            role="coordinator",
            name=self.name,
            identity_key=base64.b64encode(public).decode(),
            certificate=self.certificate_pem.decode(),
            proof=base64.b64encode(proof).decode(),
        )

    def verify_join(self, gateway: Identity, join: m.SecAggJoin) -> bytes:
        """The device's round key, once its binding is checked against the fleet CA (and CRL)
        and its site against the relaying gateway's (AuthorizationError otherwise)."""
        b = join.binding
        if b.role != "device" or b.name != join.device_id:
            raise ValidationError("a join must carry the device's own key binding")
        key = base64.b64decode(b.identity_key)
        try:
            who = verify_key_binding(
                b.certificate.encode(),
                base64.b64decode(b.proof),
                role=Role.DEVICE,
                name=join.device_id,
                job_id=join.job_id,
                round_number=join.round,
                key=key,
                ca=self.ca,
                revocation=self.revocation,
            )
        except (IdentityError, ValueError) as exc:
            raise AuthorizationError(f"join of {join.device_id!r} refused: {exc}") from None
        if who.site != gateway.site:
            raise AuthorizationError(
                f"device {join.device_id!r} belongs to site {who.site!r}; gateway "
                f"{gateway.name!r} relays only for site {gateway.site!r}"
            )
        return key


def check_secagg_settings(raw: Mapping[str, float | int | str | bool]) -> SecureSettings:
    """Parse a job's table or raise :class:`~fedge.errors.ValidationError` (for job creation)."""
    try:
        return SecureSettings.parse(raw)
    except (ConfigError, FedgeError, ValueError) as exc:
        raise ValidationError(f"secure_aggregation: {exc}") from None
