"""Gateways and devices: check-ins, sites proven by certificates, labels, revocations."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from fedge.coordinator.schema import DeviceRow, GatewayRow, ParticipantRow
from fedge.coordinator.store_base import StoreBase

__all__ = ["FleetStore"]


class FleetStore(StoreBase):
    """Gateways and devices, and how often each device was counted."""

    # -- fleet --------------------------------------------------------------------------------
    def upsert_gateway(
        self, gateway_id: str, site: str, online: int, eligible: int, now: float
    ) -> GatewayRow:
        """Record a gateway check-in."""
        with self._tx() as s:
            row = s.get(GatewayRow, gateway_id) or GatewayRow(id=gateway_id)
            row.site, row.last_seen = site, now
            row.online_devices, row.eligible_devices = online, eligible
            s.add(row)
        return row

    def list_gateways(self, seen_since: float | None = None) -> list[GatewayRow]:
        """Gateways (seen at or after ``seen_since`` when given), by id."""
        with self._tx() as s:
            q = select(GatewayRow).order_by(GatewayRow.id)
            if seen_since is not None:
                q = q.where(GatewayRow.last_seen >= seen_since)
            return list(s.scalars(q))

    def touch_device(
        self,
        device_id: str,
        site: str | None,
        gateway_id: str | None,
        now: float,
        labels: Mapping[str, str] | None = None,
    ) -> DeviceRow:
        """Record that a device was seen (creating it on first sight)."""
        with self._tx() as s:
            return _touch_device(s, device_id, site, gateway_id, now, labels)

    def get_device(self, device_id: str) -> DeviceRow | None:
        """One device, or None."""
        with self._tx() as s:
            return s.get(DeviceRow, device_id)

    def get_devices(self, device_ids: Sequence[str]) -> dict[str, DeviceRow]:
        """The known devices among ``device_ids``, by id (one query)."""
        with self._tx() as s:
            return _devices(s, device_ids)

    def register_devices(
        self, sites: Mapping[str, str], gateway_id: str, now: float
    ) -> list[DeviceRow]:
        """Record each device's site as its certificate proved it (creating unknown ids)."""
        with self._tx() as s:
            return _bind_devices(s, sites, gateway_id, now)

    def list_devices(self) -> list[DeviceRow]:
        """Every known device, by id."""
        with self._tx() as s:
            return list(s.scalars(select(DeviceRow).order_by(DeviceRow.id)))

    def record_device_labels(
        self,
        gateway_id: str,
        site: str,
        labels: Mapping[str, Mapping[str, str]],
        now: float,
    ) -> list[str]:
        """Store the labels gateway ``gateway_id`` of ``site`` forwarded for its devices (seen
        now; unknown ids are created, their site left for their certificate to prove). Returns
        the devices it may not label, those of another site, which are left alone."""
        foreign: list[str] = []
        with self._tx() as s:
            known = _devices(s, list(labels))
            for device, device_labels in labels.items():
                row = known.get(device)
                if row is None:
                    row = DeviceRow(id=device, revoked=False, labels={})
                    s.add(row)
                elif row.site is not None and row.site != site:
                    foreign.append(device)
                    continue
                row.labels = dict(device_labels)
                row.gateway_id, row.last_seen = gateway_id, now
        return foreign

    def revoked_devices(self, site: str, limit: int) -> list[str]:
        """Revoked devices of ``site``, and revoked ones whose site is not known yet (at most
        ``limit``, by id): those a gateway of ``site`` must refuse."""
        revoked = func.coalesce(DeviceRow.revoked, False).is_(True)
        where_site = or_(DeviceRow.site.is_(None), DeviceRow.site == site)
        with self._tx() as s:
            q = select(DeviceRow.id).where(revoked, where_site).order_by(DeviceRow.id)
            return list(s.scalars(q.limit(limit)))

    def count_eligible_devices(
        self, selector: Mapping[str, str], seen_since: float
    ) -> tuple[dict[str, int], int]:
        """Unrevoked devices seen since ``seen_since`` whose labels hold every ``key = value``
        of ``selector``: per gateway for those behind one (their gateway forwards their labels),
        and the number of directly connected ones. Counted in the database (two aggregate
        queries, no device row)."""
        matches = [DeviceRow.labels[k].as_string() == v for k, v in selector.items()]
        unrevoked = func.coalesce(DeviceRow.revoked, False).is_(False)
        seen = func.coalesce(DeviceRow.last_seen, 0.0) >= seen_since
        with self._tx() as s:
            per_gateway = s.execute(
                select(DeviceRow.gateway_id, func.count())
                .where(unrevoked, seen, DeviceRow.gateway_id.is_not(None), *matches)
                .group_by(DeviceRow.gateway_id)
            ).all()
            direct = s.scalar(
                select(func.count())
                .select_from(DeviceRow)
                .where(unrevoked, seen, DeviceRow.gateway_id.is_(None), *matches)
            )
        counts = {str(g): int(n) for g, n in per_gateway if g is not None}
        return counts, int(direct or 0)

    def set_revoked(self, device_id: str, revoked: bool = True) -> DeviceRow:
        """Mark a device revoked (it is refused from now on); creates unknown ids."""
        with self._tx() as s:
            row = s.get(DeviceRow, device_id) or DeviceRow(id=device_id, labels={})
            row.revoked = revoked
            s.add(row)
        return row

    def participation_counts(self, device_ids: Iterable[str] | None = None) -> dict[str, int]:
        """How many rounds each device was counted in."""
        with self._tx() as s:
            q = select(ParticipantRow.device_id, func.count()).group_by(ParticipantRow.device_id)
            if device_ids is not None:
                q = q.where(ParticipantRow.device_id.in_(list(device_ids)))
            return {d: int(n) for d, n in s.execute(q)}


def _devices(s: Session, device_ids: Sequence[str]) -> dict[str, DeviceRow]:
    out: dict[str, DeviceRow] = {}
    ids = list(dict.fromkeys(device_ids))
    for start in range(0, len(ids), 500):  # bounded IN lists (SQLite's variable limit)
        q = select(DeviceRow).where(DeviceRow.id.in_(ids[start : start + 500]))
        out.update((row.id, row) for row in s.scalars(q))
    return out


def _bind_devices(
    s: Session, sites: Mapping[str, str], gateway_id: str, now: float
) -> list[DeviceRow]:
    """Set each device's site and gateway (creating unknown ids), with one query for all."""
    known = _devices(s, list(sites))
    rows = []
    for device, site in sites.items():
        row = known.get(device)
        if row is None:
            row = DeviceRow(id=device, revoked=False, labels={})
            s.add(row)
        row.site, row.gateway_id, row.last_seen = site, gateway_id, now
        rows.append(row)
    return rows


def _touch_device(
    s: Session,
    device_id: str,
    site: str | None,
    gateway_id: str | None,
    now: float,
    labels: Mapping[str, str] | None = None,
) -> DeviceRow:
    row = s.get(DeviceRow, device_id)
    if row is None:
        row = DeviceRow(id=device_id, revoked=False, labels={})
        s.add(row)
    row.site = site if site is not None else row.site
    row.gateway_id = gateway_id
    row.last_seen = now
    if labels is not None:
        row.labels = dict(labels)
    return row
