"""``coordinator.toml``: where the coordinator listens, its PKI files, database and artifacts.

Example (``examples/coordinator.toml``)::

    host = "127.0.0.1"
    port = 8443
    database_url = "sqlite:///coordinator.db"   # or postgresql+psycopg://user:pw@host/db
    artifacts_dir = "artifacts"
    tick_interval_s = 1.0

    [pki]
    dir = "pki"            # the fleet PKI directory (fedge pki init); or give the paths below
    name = "coordinator"   # issued/<name>.crt and .key
    # cert = "…"  key = "…"  ca = "…"  crl = "…"

    [ops]                  # the operators' listener: /metrics, /healthz, the dashboard
    enabled = true
    host = "127.0.0.1"
    port = 0               # 0: any free port (printed at start)
    token_file = "ops.token"   # created (0600) at first start; Authorization: Bearer <token>

    [canary]               # optional staged rollout of each new production version
    fraction = 0.25        # share of the gateways seen recently that get it first (at least 1)
    min_healthy = 2        # passed device health reports needed to widen to every gateway
    max_failures = 0       # more failed reports than this halt it (the version is rolled back)
    hold_s = 600           # not widened by then: halted

Relative paths (and a relative SQLite path) are resolved against the config file's directory.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from fedge.coordinator.canary import CanaryPolicy
from fedge.coordinator.settings import CoordinatorSettings
from fedge.errors import ConfigError
from fedge.identity import PkiPaths
from fedge.telemetry.tracing import TelemetrySection
from fedge.transport.ops import OpsSection
from fedge.transport.server import ServerTls

__all__ = ["CoordinatorConfig", "PkiFiles", "load_coordinator_config"]


class PkiFiles(BaseModel):
    """The certificate files: a PKI directory and a holder name, or explicit paths."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dir: Path | None = None
    name: str = "coordinator"
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    crl: Path | None = None

    def resolve(self, base: Path) -> ServerTls:
        """Absolute paths of CA, certificate, key and CRL."""
        pki = PkiPaths(base / self.dir) if self.dir is not None else None

        def pick(explicit: Path | None, default: Path | None, what: str) -> Path:
            path = base / explicit if explicit is not None else default
            if path is None:
                raise ConfigError(f"[pki] needs dir (a fleet PKI directory) or {what}")
            return path

        return ServerTls(
            ca_cert=pick(self.ca, pki.ca_cert if pki else None, "ca"),
            cert=pick(self.cert, pki.cert_for(self.name) if pki else None, "cert"),
            key=pick(self.key, pki.key_for(self.name) if pki else None, "key"),
            crl=pick(self.crl, pki.crl if pki else None, "crl"),
        )


class CoordinatorConfig(BaseModel):
    """Everything ``fedge coordinator`` needs to run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8443, ge=0, le=65535)  # 0: any free port (printed at start)
    pki: PkiFiles = PkiFiles()
    database_url: str = "sqlite:///coordinator.db"
    artifacts_dir: Path = Path("artifacts")
    release_key: Path | None = None  # Ed25519 release key (pki/release.key): signs every version
    tick_interval_s: float = Field(1.0, gt=0)
    gateway_ttl_s: float = Field(60.0, gt=0)
    device_ttl_s: float = Field(300.0, gt=0)
    poll_interval_s: float = Field(2.0, gt=0)
    max_consecutive_abandoned: int = Field(10, ge=1)
    long_poll_s: float = Field(30.0, ge=0, le=600)  # hold a direct device's check-in this long
    max_held_checkins: int = Field(10_000, ge=0)  # held at once; more are answered at once
    release_margin: float | None = Field(0.0, ge=0)  # release gate (None: promote by hand only)
    canary: CanaryPolicy | None = None  # [canary]: staged rollout (None: all gateways at once)
    ops: OpsSection = OpsSection()  # the operators' listener (fedge.transport.ops)
    telemetry: TelemetrySection = TelemetrySection()  # where spans go (fedge.telemetry.tracing)
    base_dir: Path = Path()  # where relative paths start (the config file's directory)

    def settings(self) -> CoordinatorSettings:
        """The service tunables."""
        return CoordinatorSettings(
            gateway_ttl_s=self.gateway_ttl_s,
            device_ttl_s=self.device_ttl_s,
            poll_interval_s=self.poll_interval_s,
            max_consecutive_abandoned=self.max_consecutive_abandoned,
            long_poll_s=self.long_poll_s,
            max_held_checkins=self.max_held_checkins,
            release_margin=self.release_margin,
            canary=self.canary,
        )

    def resolved_database_url(self) -> str:
        """The database URL with a relative SQLite path made absolute."""
        prefix = "sqlite:///"
        url = self.database_url
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix:
            rest = url[len(prefix) :]
            if rest != ":memory:":
                return prefix + str((self.base_dir / rest).resolve())
        return url

    def tls(self) -> ServerTls:
        """The server's TLS files."""
        return self.pki.resolve(self.base_dir)

    def release_key_path(self) -> Path | None:
        """The release key file, absolute (None: model versions go out unsigned)."""
        return None if self.release_key is None else (self.base_dir / self.release_key).resolve()

    def ops_token_path(self) -> Path:
        """The ops token file, absolute."""
        return self.ops.token_path(self.base_dir)

    def telemetry_section(self) -> TelemetrySection:
        """``[telemetry]`` with a relative traces file taken from the config's directory."""
        return self.telemetry.resolved(self.base_dir)

    def artifacts_path(self) -> Path:
        """The artifact directory, absolute."""
        return (self.base_dir / self.artifacts_dir).resolve()


def load_coordinator_config(path: str | Path | None, **overrides: Any) -> CoordinatorConfig:
    """Read ``coordinator.toml`` (if given) and apply ``overrides``; ConfigError lists problems."""
    data: dict[str, Any] = {}
    base = Path()
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read {p}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p} is not valid TOML: {exc}") from None
        base = p.resolve().parent
    data.update({k: v for k, v in overrides.items() if v is not None})
    data.setdefault("base_dir", base)
    try:
        return CoordinatorConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"coordinator config: {problems}") from None
