"""Proof the hub cannot read who a patient is: after real traffic with a unique person, nothing it keeps names them.

``hubctl up`` runs the whole hub on a fresh data folder. A referral with a synthetic,
unique person goes through ``hubctl refer``, is accepted and shown by the recipient (which
must read the person: the details did travel), and the audit log is exported in both
formats into the data folder. Then the operator's and the auditor's keys read every
message of every stream they may, the non-party clinic reads all its inbox, and after
the hub stops every file in the data folder is searched, byte for byte, for the name, the
birth date and the phone number, plain, JSON-escaped and inside base64.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
import sys
from datetime import date
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js import JetStreamContext

from referral_hub.client import ClinicClient
from referral_hub.contracts.patient import PatientDetails
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.credentials import CREDS_DIR_ENV, NatsCredentials
from referral_hub.runtime.jetstream import streams

from .helpers import interrupt
from .patient_leaks import files_under, leaks
from .test_up import launch_up, read_until

pytestmark = pytest.mark.slow

PERSON = PatientDetails(
    given="Quenby",
    family=f"Zarkovitch{secrets.token_hex(3)}",
    birth_date=date(1931, 7, 19),
    phones=(f"+1 555 01{secrets.randbelow(100):02d} {secrets.randbelow(10000):04d}",),
)


class Run:
    """What the run left: the data folder, what each reader saw, and the recipient's view."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.read: dict[str, list[tuple[str, bytes]]] = {}
        self.shown = ""
        self.sealed_seen = 0


def cli(data_dir: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and CLI
        [sys.executable, "-m", "referral_hub.cli", *args, "--nats-url", url, "--creds-dir", str(data_dir / "auth")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def read_streams(
    url: str, identity: NatsCredentials, prefix: str, candidates: tuple[str, ...] = ()
) -> list[tuple[str, bytes]]:
    """Every message of every stream ``identity`` may name (or is known to exist) and read, one get at a time."""
    connection = await nats.connect(url, **identity.connect_options())
    read: list[tuple[str, bytes]] = []
    try:
        names = set(candidates)
        with contextlib.suppress(nats.errors.Error):
            reply = await connection.request(f"{prefix}.STREAM.NAMES", b"{}", timeout=2)
            names |= set(json.loads(reply.data).get("streams") or [])
        js = connection.jetstream(prefix=prefix, timeout=2)
        for name in sorted(names):
            try:
                info = await js.stream_info(name)
            except (nats.js.errors.Error, nats.errors.Error):
                continue
            read += await _every_message(js, name, info.state.first_seq, info.state.last_seq)
    finally:
        await connection.close()
    return read


async def _every_message(js: JetStreamContext, name: str, first: int, last: int) -> list[tuple[str, bytes]]:
    read: list[tuple[str, bytes]] = []
    for direct in (True, False):
        for sequence in range(first, last + 1):
            try:
                message = await js.get_msg(name, sequence, direct=direct)
            except nats.js.errors.NotFoundError:
                continue
            except (nats.js.errors.Error, nats.errors.Error):
                break
            read.append((f"{name}#{sequence}", (message.subject or "").encode() + b" " + (message.data or b"")))
        if read:
            return read
    return read


async def read_inbox(url: str, clinic: str) -> list[tuple[str, bytes]]:
    client = await ClinicClient.connect(url, clinic)
    try:
        page = await client.read_page(0, 1000)
        return [(f"{clinic} inbox #{stored.sequence}", bytes(stored.message)) for stored in page.messages]
    finally:
        await client.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    data_dir = tmp_path_factory.mktemp("patient-proof") / "hub-data"
    up = launch_up(data_dir, "--no-demo")
    result = Run(data_dir)
    try:
        read_until(up.process, "Ctrl-C stops everything", 90)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(CREDS_DIR_ENV, str(data_dir / "auth"))
            referred = cli(
                data_dir,
                up.url,
                *("refer", "--clinic", "kneadwell-massage", "--to", "harbor-pt", "--patient", "pt-proof-0001"),
                *("--modality", "physical_therapy", "--reason", "Knee rehabilitation"),
                *("--given", PERSON.given, "--family", PERSON.family, "--birth-date", PERSON.birth_date.isoformat()),
                *("--phone", PERSON.phones[0], "--email", f"{PERSON.family.lower()}@example.org"),
            )
            assert referred.returncode == 0, referred.stderr
            referral_id = referred.stdout.split()[1]
            accepted = cli(data_dir, up.url, "referral", "accept", referral_id[:8], "--clinic", "harbor-pt")
            assert accepted.returncode == 0, accepted.stderr
            result.shown = cli(data_dir, up.url, "referral", "show", referral_id[:8], "--clinic", "harbor-pt").stdout
            exports = data_dir / "exports"
            exports.mkdir()
            for kind in ("fhir", "jsonl"):
                exported = cli(data_dir, up.url, "audit", "export", "--format", kind)
                (exports / f"audit.{kind}").write_text(exported.stdout)
            fhir = cli(data_dir, up.url, "referral", "show", referral_id[:8], "--fhir")
            (exports / "referral.fhir.json").write_text(fhir.stdout)
            result.read["operator"] = asyncio.run(
                read_streams(up.url, credentials.for_hub_user(permissions.ADMIN), permissions.JS_API)
            )
            auditor = credentials.for_hub_user(permissions.AUDITOR)
            result.read["auditor"] = asyncio.run(
                read_streams(up.url, auditor, permissions.JS_API, streams.AUDIT_STREAMS)
            )
            result.read["auditor (hub)"] = asyncio.run(
                read_streams(up.url, auditor, permissions.HUB_API_PREFIX, (streams.CLINIC_IN, streams.CLINIC_OUT))
            )
            result.read["lotus-acu"] = asyncio.run(read_inbox(up.url, "lotus-acu"))
    finally:
        stopped, ending = interrupt(up.process, 60)
    assert stopped == 0, ending
    return result


def test_the_recipient_reads_the_person_so_the_details_did_travel(run: Run) -> None:
    assert f"patient {PERSON.given} {PERSON.family}, born 1931-07-19" in run.shown
    assert f"phone {PERSON.phones[0]}" in run.shown


def test_the_whole_data_folder_holds_no_name_birth_date_or_phone(run: Run) -> None:
    files = list(files_under(run.data_dir))
    kinds = {name.split("/", 1)[0] for name, _ in files}
    assert {"jetstream", "logs", "exports"} <= kinds
    assert leaks(files, PERSON) == []


def test_the_operator_reading_every_stream_finds_only_the_sealed_form(run: Run) -> None:
    assert any(b'"patient_details":{' in data for _, data in run.read["operator"])
    assert leaks(run.read["operator"], PERSON) == []


def test_the_auditor_reading_everything_it_may_finds_no_name(run: Run) -> None:
    audited = run.read["auditor"] + run.read["auditor (hub)"]
    assert any(b'"message_type":"referral.request"' in data for _, data in audited)
    assert leaks(audited, PERSON) == []


def test_a_clinic_outside_the_referral_finds_nothing_in_all_it_may_read(run: Run) -> None:
    assert leaks(run.read["lotus-acu"], PERSON) == []
