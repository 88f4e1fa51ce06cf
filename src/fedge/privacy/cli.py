"""``fedge privacy``: calibrate a noise multiplier, or compute ε for given settings.

Mounted by the main CLI with ``cli.add_command(privacy_group)``. Errors from the privacy layer are
shown as one-line usage errors (exit code 2), never as tracebacks.
"""

from __future__ import annotations

import json
import logging

import click

from fedge.errors import FedgeError
from fedge.privacy.accountant import PrivacyAccountant
from fedge.privacy.calibration import calibrate_noise_multiplier, default_delta

__all__ = ["privacy_group"]

_ACCOUNTANT = click.Choice(["rdp", "pld"])
_SAMPLING = click.Choice(["poisson", "fixed_size"])


def _quiet_dp_accounting() -> None:
    # dp_accounting logs (via absl) each RDP order it drops as non-convergent; that is expected
    # and the result is still a valid bound, so keep it off the user's terminal.
    logging.getLogger("absl").setLevel(logging.ERROR)


@click.group("privacy")
def privacy_group() -> None:
    """Differential privacy: calibrate noise and compute ε (RDP or PLD accounting)."""
    _quiet_dp_accounting()


@privacy_group.command("calibrate")
@click.option("--target-epsilon", type=float, required=True, help="ε the job may reach at the end.")
@click.option("--delta", type=float, default=None, help="δ; default 1/N^1.1 for N = fleet size.")
@click.option("--rounds", type=int, required=True, help="Number of training rounds.")
@click.option("--devices-per-round", type=int, required=True, help="K: devices selected per round.")
@click.option("--fleet-size", type=int, required=True, help="N: devices in the fleet.")
@click.option("--accountant", type=_ACCOUNTANT, default="rdp", show_default=True)
@click.option(
    "--sampling",
    type=_SAMPLING,
    default="poisson",
    show_default=True,
    help="How devices are selected: Poisson (q = K/N) or exactly K of N (replace-one DP).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def calibrate(
    target_epsilon: float,
    delta: float | None,
    rounds: int,
    devices_per_round: int,
    fleet_size: int,
    accountant: str,
    sampling: str,
    as_json: bool,
) -> None:
    """Noise multiplier z that keeps ε ≤ TARGET after ROUNDS rounds of K of N devices."""
    try:
        d = delta if delta is not None else default_delta(fleet_size)
        z = calibrate_noise_multiplier(
            target_epsilon,
            d,
            rounds,
            devices_per_round,
            fleet_size,
            "pld" if accountant == "pld" else "rdp",
            sampling="fixed_size" if sampling == "fixed_size" else "poisson",
        )
        acc = PrivacyAccountant(
            z,
            devices_per_round / fleet_size,
            d,
            "pld" if accountant == "pld" else "rdp",
            sampling="fixed_size" if sampling == "fixed_size" else "poisson",
            fleet_size=fleet_size,
        )
        eps = acc.epsilon_after(rounds)
    except FedgeError as exc:
        raise click.UsageError(str(exc)) from exc
    if as_json:
        out = {
            "noise_multiplier": z,
            "epsilon": eps,
            "delta": d,
            "rounds": rounds,
            "sampling_rate": devices_per_round / fleet_size,
            "accountant": accountant,
            "sampling": sampling,
        }
        click.echo(json.dumps(out))
    else:
        click.echo(
            f"noise multiplier {z:.4f}: ε = {eps:.4f} at δ = {d:.3g} after {rounds} rounds "
            f"({devices_per_round} of {fleet_size} devices per round, {sampling}, {accountant})"
        )


@privacy_group.command("epsilon")
@click.option("--noise-multiplier", type=float, required=True, help="z: noise std / clip norm.")
@click.option("--sampling-rate", type=float, required=True, help="q: K/N, devices per round.")
@click.option("--rounds", type=int, required=True, help="Number of rounds.")
@click.option("--delta", type=float, required=True, help="δ of the (ε, δ) guarantee.")
@click.option("--accountant", type=_ACCOUNTANT, default="rdp", show_default=True)
@click.option(
    "--fleet-size",
    type=int,
    default=None,
    help="N; when given, account fixed-size selection of round(q·N) devices (RDP only).",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"epsilon": ...} as JSON.')
def epsilon(
    noise_multiplier: float,
    sampling_rate: float,
    rounds: int,
    delta: float,
    accountant: str,
    fleet_size: int | None,
    as_json: bool,
) -> None:
    """ε after ROUNDS rounds of the sampled Gaussian mechanism (device-level DP)."""
    try:
        if rounds < 0:
            raise click.UsageError(f"--rounds must be >= 0, got {rounds}")
        acc = PrivacyAccountant(
            noise_multiplier,
            sampling_rate,
            delta,
            "pld" if accountant == "pld" else "rdp",
            sampling="poisson" if fleet_size is None else "fixed_size",
            fleet_size=fleet_size,
        )
        eps = acc.epsilon_after(rounds)
    except FedgeError as exc:
        raise click.UsageError(str(exc)) from exc
    if as_json:
        out = {
            "epsilon": eps,
            "delta": delta,
            "noise_multiplier": noise_multiplier,
            "sampling_rate": sampling_rate,
            "rounds": rounds,
            "accountant": accountant,
            "sampling": acc.sampling,
        }
        click.echo(json.dumps(out))
    else:
        click.echo(f"ε = {eps:.4f} at δ = {delta:.3g} after {rounds} rounds ({accountant})")
