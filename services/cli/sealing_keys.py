"""``hubctl sealing-key add`` and the patient-details options of ``hubctl refer`` and ``hubctl referral show``.

A clinic's sealing key pair is made where the clinic's agent runs: for the hosted portal,
gateway and ``hubctl``, in the key store beside the NATS credentials (``.hub-data/sealing-keys``,
files 0600). The operator registers its public half in the registry with the ``admin`` key;
running ``add`` again for a clinic rotates: new seals use the new key, and the old one stays
in the key store (and in the registry, to verify old signatures), so old details still open.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec

from referral_hub.cli.commands import UsageError, connect, fetch_registry, out
from referral_hub.client import InboxItem
from referral_hub.contracts.patient import DetailsError, PatientDetails, SealedDetails, SealingKey, details_from_fields
from referral_hub.contracts.referrals import ReferralCommand, ReferralForward, ReferralRequest, ReferralRequested
from referral_hub.contracts.registry import Clinic
from referral_hub.runtime.jetstream.registry_cache import store_clinic
from referral_hub.sealing import parties
from referral_hub.sealing.core import SealingError
from referral_hub.sealing.keystore import KeyStore

DETAIL_OPTIONS = (
    ("--given", "given", "patient's given name(s); sealed to the two clinics, never readable by the hub"),
    ("--family", "family", "patient's family name"),
    ("--birth-date", "birth_date", "patient's birth date, YYYY-MM-DD"),
    ("--gender", "gender", "female, male, other or unknown"),
    ("--phone", "phone", "patient's phone number(s), comma separated"),
    ("--email", "email", "patient's e-mail address"),
    ("--record-number", "record_number", "your clinic's record number for the patient"),
)


def key_store() -> KeyStore:
    """The key store the environment names; :class:`UsageError` when none is."""
    store = KeyStore.from_environment()
    if store is None:
        msg = "no sealing key store: set HUB_SEALING_KEYS_DIR (or HUB_NATS_CREDS_DIR, beside which it lives)"
        raise UsageError(msg)
    return store


def add_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:  # noqa: ANN401 - argparse's subparsers action has no public type
    """``hubctl sealing-key add``, and the patient-details options of ``hubctl refer``."""
    add_detail_options(sub.choices["refer"])
    keys = sub.add_parser("sealing-key", help="clinics' keys that patient details are sealed to")
    keys_sub = keys.add_subparsers(dest="sealing_command", required=True, metavar="SEALING_COMMAND")
    add = keys_sub.add_parser("add", help="register (or rotate) a clinic's sealing key")
    common(add)
    add.add_argument(
        "--public-key", type=Path, help="the clinic's own public key (JSON); default: make a pair in the key store"
    )
    add.set_defaults(run=add_key)


def with_key(clinic: Clinic, key: SealingKey) -> Clinic:
    """``clinic`` with ``key`` as its current sealing key (older ones kept, to verify older seals)."""
    kept = tuple(old for old in clinic.sealing_keys if old.key_id != key.key_id)
    return msgspec.structs.replace(clinic, sealing_keys=(*kept, key))


def ensure_key(clinic: Clinic, store: KeyStore | None) -> Clinic:
    """For ``hubctl up``: a hosted clinic with no registered key gets one made in ``store`` and registered."""
    if store is None:
        return clinic
    if store.holds(clinic.id):
        current = store.current(clinic.id).public
        return clinic if clinic.sealing_key == current else with_key(clinic, current)
    return with_key(clinic, store.generate(clinic.id).public)


async def add_key(args: argparse.Namespace) -> int:
    """Register a clinic's public sealing key with the operator's key (making the pair here unless given)."""
    if not args.clinic:
        msg = "'hubctl sealing-key add' needs --clinic (or HUB_CLINIC)"
        raise UsageError(msg)
    connection = await connect(args.nats_url)
    try:
        registry = {clinic.id: clinic for clinic in await fetch_registry(connection)}
        if args.clinic not in registry:
            msg = f"clinic {args.clinic!r} is not registered"
            raise UsageError(msg)
        if args.public_key is not None:
            key = msgspec.json.decode(args.public_key.read_bytes(), type=SealingKey)
        else:
            key = key_store().generate(args.clinic).public
        await store_clinic(connection.jetstream(), with_key(registry[args.clinic], key))
    finally:
        await connection.drain()
    out(f"sealing key {key.key_id} is now current for {args.clinic}; new patient details are sealed to it")
    return 0


def add_detail_options(parser: argparse.ArgumentParser) -> None:
    """``--given --family --birth-date --gender --phone --email --record-number`` on ``hubctl refer``."""
    for flag, dest, words in DETAIL_OPTIONS:
        parser.add_argument(flag, dest=f"patient_{dest}", default="", help=words)


def details_from_args(args: argparse.Namespace) -> PatientDetails | None:
    """The patient details given on the command line, or ``None`` when none are; :class:`UsageError` names problems."""
    fields = {dest: getattr(args, f"patient_{dest}", "") for _, dest, _ in DETAIL_OPTIONS}
    if not any(fields.values()):
        return None
    try:
        return details_from_fields(fields, datetime.now(UTC).date())
    except DetailsError as exc:
        raise UsageError("patient details: " + "; ".join(exc.problems.values())) from exc


async def _registry(nats_url: str) -> dict[str, Clinic]:
    connection = await connect(nats_url)
    try:
        return {clinic.id: clinic for clinic in await fetch_registry(connection)}
    finally:
        await connection.drain()


async def sealed_request(nats_url: str, request: ReferralRequest, details: PatientDetails | None) -> ReferralRequest:
    """``request`` carrying ``details`` sealed by its sender to itself and its recipient."""
    if details is None:
        return request
    try:
        sealed = parties.seal_to(
            key_store(),
            await _registry(nats_url),
            details,
            referral_id=request.referral_id,
            message_id=request.message_id,
            sealer=request.sender_clinic,
            holders=(request.sender_clinic, request.recipient_clinic),
        )
    except SealingError as exc:
        raise UsageError(str(exc)) from exc
    return msgspec.structs.replace(request, patient_details=sealed)


def latest_seal(items: Sequence[InboxItem], command: ReferralCommand, clinic: str) -> SealedDetails | None:
    """The newest sealed details of ``command``'s referral in ``items`` with a copy for ``clinic``."""
    seals = [
        item.message.patient_details
        for item in items
        if isinstance(item.message, ReferralRequested) and item.message.referral_id == command.referral_id
    ]
    return next((seal for seal in reversed(seals) if seal is not None and clinic in seal.holders), None)


async def resealed_forward(nats_url: str, items: Sequence[InboxItem], command: ReferralCommand) -> ReferralCommand:
    """A forward carrying the details re-sealed to the clinic it names, when the forwarder has them."""
    if not isinstance(command, ReferralForward):
        return command
    source = latest_seal(items, command, command.sender_clinic)
    if source is None:
        return command
    try:
        sealed = parties.reseal(
            key_store(),
            await _registry(nats_url),
            source,
            reader=command.sender_clinic,
            message_id=command.message_id,
            to_clinic=command.to_clinic,
        )
    except SealingError as exc:
        raise UsageError(str(exc)) from exc
    return msgspec.structs.replace(command, patient_details=sealed)


def detail_lines(details: PatientDetails) -> list[str]:
    """The details as ``hubctl referral show`` prints them."""
    lines = [f"  patient {details.display_name}, born {details.birth_date.isoformat()}, {details.gender}"]
    if details.phones:
        lines.append(f"  phone {', '.join(details.phones)}")
    if details.email:
        lines.append(f"  e-mail {details.email}")
    if details.record_number:
        lines.append(f"  record number {details.record_number}")
    return lines


async def show_details(
    nats_url: str, seals: Sequence[SealedDetails | None], referral_id: UUID, clinic: str
) -> list[str]:
    """What ``hubctl referral show --clinic C`` prints about the patient: C's copy, opened, or why not."""
    seal = next((seal for seal in reversed(seals) if seal is not None and clinic in seal.holders), None)
    if seal is None:
        return ["  patient details: none sealed to " + clinic]
    store = KeyStore.from_environment()
    if store is None:
        return ["  patient details: sealed; no key store here to open them"]
    try:
        return detail_lines(parties.read(store, await _registry(nats_url), seal, referral_id, clinic))
    except SealingError as exc:
        return [f"  patient details: {exc}"]
