"""What hubctl reads of a clinic's own registry entry: its time zone, for times typed without an offset.

A clinic's key may not read the registry, so the entry is read only where the operator's key
is at hand; elsewhere the zone comes from ``--timezone`` or ``$HUB_TIMEZONE``, or the time
must carry its offset. Never this machine's zone: the portal reads times in the clinic's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from datetime import UTC, datetime
from typing import Final
from zoneinfo import ZoneInfo

import nats.errors

from referral_hub.cli.commands import REGISTRY_READ_SECONDS, UsageError, connect, fetch_registry
from referral_hub.contracts.registry import Clinic
from referral_hub.errors import HubError
from referral_hub.runtime.broker import credentials, permissions

TIMEZONE_ENV: Final = "HUB_TIMEZONE"


async def registered_clinic(args: argparse.Namespace, clinic_id: str) -> Clinic | None:
    """The clinic's registry entry, where this machine may read the registry; else ``None``.

    A clinic's key may not read the registry; the operator's key may (the machine running the
    hub, or a hub without authorization). Elsewhere nothing is looked up, at once.
    """
    operator = credentials.for_hub_user(permissions.ADMIN)
    if operator.nkey_file is not None and not operator.nkey_file.is_file():
        return None
    with contextlib.suppress(HubError, nats.errors.Error, OSError, TimeoutError):
        connection = await connect(args.nats_url, "hubctl-registry")
        try:
            registered = await asyncio.wait_for(fetch_registry(connection), REGISTRY_READ_SECONDS)
        finally:
            await connection.close()
        return next((clinic for clinic in registered if clinic.id == clinic_id), None)
    return None


async def zone_of(args: argparse.Namespace, clinic_id: str) -> str | None:
    """The zone a time without an offset is read in: ``--timezone``, ``$HUB_TIMEZONE``, else the clinic's own.

    The clinic's zone comes from the registry, as the portal reads it; where the registry
    cannot be read there is no zone, and a time must carry its offset.
    """
    chosen: str | None = getattr(args, "timezone", None) or os.environ.get(TIMEZONE_ENV)
    if chosen:
        return chosen
    clinic = await registered_clinic(args, clinic_id)
    return clinic.timezone if clinic is not None else None


def parse_when(text: str, zone: str | None) -> datetime:
    """An ISO 8601 time, in UTC; one without an offset is a wall-clock time in ``zone``.

    Never this machine's zone: a clinic's staff give times as the clinic lives them, and the
    portal reads them the same way. Without a zone a time must carry its offset.
    """
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"not an ISO 8601 time: {text!r} (for example 2026-12-01T10:30 or 2026-12-01T10:30-05:00)"
        raise UsageError(msg) from exc
    if parsed.tzinfo is not None:
        return parsed.astimezone(UTC)
    if zone is None:
        msg = (
            f"{text!r} has no UTC offset and the clinic's time zone cannot be read here; "
            f"give the offset (like {text}-05:00) or the zone with --timezone (or {TIMEZONE_ENV})"
        )
        raise UsageError(msg)
    try:
        return parsed.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    except (LookupError, ValueError, OSError) as exc:
        msg = f"cannot read {text!r} in time zone {zone!r}: {exc}"
        raise UsageError(msg) from exc
