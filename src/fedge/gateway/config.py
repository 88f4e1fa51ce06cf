"""``gateway.toml``: what one site's gateway needs to run (validated by pydantic).

Relative paths are resolved against the config file's directory. Example: ``examples/gateway.toml``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from fedge.errors import ConfigError
from fedge.telemetry.tracing import TelemetrySection
from fedge.transport.ops import OpsSection

__all__ = ["GatewayConfig", "PkiFiles", "load_gateway_config", "read_toml"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PkiFiles(_Section):
    """This holder's TLS files: the fleet CA, its certificate and key, and the fleet's CRL."""

    ca: Path  # fleet CA certificate (the only trust anchor)
    cert: Path  # this holder's certificate
    key: Path  # this holder's private key (0600)
    crl: Path | None = None  # revocation list, honoured on every request (servers need it)
    release_pub: Path | None = None  # release public key (pki/release.pub): verify models with it

    def resolved(self, base: Path) -> PkiFiles:
        """The same files with relative paths taken from ``base``."""
        return PkiFiles(
            ca=base / self.ca,
            cert=base / self.cert,
            key=base / self.key,
            crl=None if self.crl is None else base / self.crl,
            release_pub=None if self.release_pub is None else base / self.release_pub,
        )


class GatewayConfig(_Section):
    """A site's gateway: who it is, where it listens, its coordinator, its files and intervals."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # its certificate's subject
    site: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # devices of this site only
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(8443, ge=0, le=65535)  # 0: any free port (printed at start)
    coordinator_url: str  # e.g. "https://127.0.0.1:8440"
    pki: PkiFiles
    state_dir: Path  # outbox.sqlite and models/ live here
    checkin_interval_s: float = Field(5.0, gt=0)  # how often to ask the coordinator for rounds
    send_interval_s: float = Field(1.0, gt=0)  # how often to try delivering the outbox
    device_retry_s: float = Field(5.0, gt=0)  # the Wait a device gets when there is no task
    long_poll_s: float = Field(30.0, ge=0, le=600)  # hold a device's check-in this long
    max_held_checkins: int = Field(10_000, ge=0)  # held at once; more are answered at once
    request_timeout_s: float = Field(30.0, gt=0)  # per request to the coordinator
    ops: OpsSection = OpsSection()  # the operators' listener: /metrics, /healthz
    telemetry: TelemetrySection = TelemetrySection()  # where spans go (fedge.telemetry.tracing)

    def resolved(self, base: Path) -> GatewayConfig:
        """Relative paths taken from ``base`` (the config file's directory)."""
        ops = self.ops.model_copy(update={"token_file": self.ops.token_path(base)})
        return self.model_copy(
            update={
                "pki": self.pki.resolved(base),
                "state_dir": base / self.state_dir,
                "ops": ops,
                "telemetry": self.telemetry.resolved(base),
            }
        )


def read_toml(path: str | Path, model: type[Any]) -> Any:
    """Read and validate a TOML file into ``model``; errors name the file and each bad setting."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        lines = [f"invalid configuration in {path}:"]
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"  {where}: {msg}")
        raise ConfigError("\n".join(lines)) from None


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read ``gateway.toml``; relative paths are taken from the file's directory."""
    config: GatewayConfig = read_toml(path, GatewayConfig)
    return config.resolved(Path(path).resolve().parent)
