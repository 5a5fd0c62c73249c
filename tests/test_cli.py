"""``hubctl`` as a user runs it: a subprocess, one-line errors, useful output."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from referral_hub.audit.checkpoints import load_key, new_key_seed
from referral_hub.cli.servicelogs import EXPECTED, quiet_expected_timeouts
from referral_hub.runtime.broker.embedded import EmbeddedNats, free_port

from .helpers import Result, RunningHub, hubctl, referral_request, wait_idle


async def refer(hub: RunningHub, *args: str) -> Result:
    return await hubctl("refer", "--nats-url", hub.url, "--clinic", "harbor-pt", *args)


def assert_one_line_error(result: Result, fragment: str) -> None:
    assert result.status == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("hubctl: error: ")
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.usefixtures("provisioned")
async def test_clinics_json_lists_every_modality_with_members(nats_server: EmbeddedNats) -> None:
    result = await hubctl("clinics", "--json", "--nats-url", nats_server.url)

    assert result.status == 0
    clinics = json.loads(result.stdout)["clinics"]
    assert {m for clinic in clinics for m in clinic["modalities"]} == {
        "massage",
        "physical_therapy",
        "chiropractic",
        "acupuncture",
    }
    assert all(len(clinic["members"]) >= 2 for clinic in clinics)
    assert {"id", "name", "modalities", "members"} <= set(clinics[0])


async def test_unreachable_nats_is_one_clear_line() -> None:
    result = await hubctl("inbox", "--clinic", "lotus-acu", "--nats-url", f"nats://127.0.0.1:{free_port()}")

    assert_one_line_error(result, "cannot reach NATS")


async def test_a_gateway_client_ceiling_naming_no_offered_scope_is_one_clear_line() -> None:
    result = await hubctl(
        *("gateway", "client", "add", "--clinic", "harbor-pt", "--generate", "/nonexistent/key.json"),
        *("--scope", "patient/*.read", "--nats-url", "nats://127.0.0.1:1"),
    )

    assert_one_line_error(result, "is a scope the gateway offers")


async def test_missing_clinic_is_one_clear_line() -> None:
    result = await hubctl("inbox", "--nats-url", "nats://127.0.0.1:1")

    assert_one_line_error(result, "needs --clinic")


async def test_refer_then_inbox_shows_it_to_the_recipient(hub: RunningHub) -> None:
    sent = await refer(
        hub,
        "--to",
        "lotus-acu",
        "--patient",
        "pt-cli-1",
        "--modality",
        "acupuncture",
        "--reason",
        "Tension headache",
    )
    listed = await hubctl("inbox", "--nats-url", hub.url, "--clinic", "lotus-acu", "--json")

    assert sent.status == 0, sent.stderr
    assert "requested: harbor-pt -> lotus-acu" in sent.stdout
    [line] = listed.stdout.splitlines()
    delivered = json.loads(line)
    assert delivered["subject"] == "clinic.lotus-acu.in.referral.requested"
    assert delivered["message"]["patient_ref"] == "pt-cli-1"


async def test_refer_to_an_unknown_clinic_reports_the_rejection(hub: RunningHub) -> None:
    result = await refer(
        hub,
        "--to",
        "nowhere-clinic",
        "--patient",
        "pt-cli-2",
        "--modality",
        "massage",
        "--reason",
        "x",
    )

    assert_one_line_error(result, "rejected (unknown_clinic)")


async def test_audit_verify_and_log_after_traffic(hub: RunningHub) -> None:
    await refer(
        hub,
        "--to",
        "lotus-acu",
        "--patient",
        "pt-cli-3",
        "--modality",
        "acupuncture",
        "--reason",
        "x",
    )
    await wait_idle(hub.connection)

    any_pin = str(load_key(new_key_seed()).current.verifier)  # this hub signs no checkpoint: any key will do
    verified = await hubctl("audit", "verify", "--verifier-key", any_pin, "--nats-url", hub.url)
    logged = await hubctl("audit", "log", "--nats-url", hub.url)

    assert verified.status == 0
    assert verified.stdout.startswith("audit chain OK: 5 entries verified")
    actions = sorted(line.split()[2] for line in logged.stdout.splitlines())
    assert actions == ["deliver", "deliver", "event", "event", "submit"]


async def test_provision_is_idempotent_from_the_cli(nats_server: EmbeddedNats) -> None:
    first = await hubctl("provision", "--nats-url", nats_server.url, "--demo-registry")
    second = await hubctl("provision", "--nats-url", nats_server.url, "--demo-registry")

    assert first.status == second.status == 0
    assert second.stdout == first.stdout
    assert "loaded 5 clinics" in second.stdout


async def test_referral_show_and_fhir_and_listing(hub: RunningHub) -> None:
    sent = await refer(hub, "--to", "lotus-acu", "--patient", "pt-cli-4", "--modality", "acupuncture", "--reason", "x")
    referral_id = sent.stdout.split()[1]

    shown = await hubctl("referral", "show", referral_id, "--nats-url", hub.url)
    bundle = json.loads((await hubctl("referral", "show", referral_id, "--fhir", "--nats-url", hub.url)).stdout)
    listed = await hubctl("referrals", "--clinic", "lotus-acu", "--nats-url", hub.url)

    assert "state requested (BSeR 2.0 Created; FHIR Task requested)" in shown.stdout
    assert "request" in shown.stdout
    resources = {entry["resource"]["resourceType"]: entry["resource"] for entry in bundle["entry"]}
    assert set(resources) == {"ServiceRequest", "Task"}
    assert resources["Task"]["businessStatus"]["coding"][0]["code"] == "2.0"
    assert resources["Task"]["status"] == "requested"
    assert {i["type"]["coding"][0]["code"] for i in resources["Task"]["identifier"]} == {"PLAC", "FILL"}
    assert resources["ServiceRequest"]["subject"]["identifier"]["value"] == "pt-cli-4"
    assert listed.stdout.startswith(referral_id)
    assert "received" in listed.stdout


async def test_careteam_show_for_an_unknown_patient_is_one_line(hub: RunningHub) -> None:
    result = await hubctl("careteam", "show", "pt-nobody", "--nats-url", hub.url)

    assert_one_line_error(result, "pt-nobody has no care team")


async def test_operator_commands_fail_fast_when_no_hub_answers() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    any_pin = str(load_key(new_key_seed()).current.verifier)
    started = time.monotonic()

    results = await asyncio.gather(
        hubctl("clinics", "--nats-url", url),
        hubctl("pages", "--nats-url", url),
        hubctl("audit", "verify", "--verifier-key", any_pin, "--nats-url", url),
        hubctl("status", "--nats-url", url, "--metrics-port", str(free_port())),
    )
    elapsed = time.monotonic() - started

    for result in results:
        assert_one_line_error(result, "cannot reach NATS")
    assert elapsed < 40, f"took {elapsed:.0f}s; nats-py's own default retries for two minutes"


async def test_inbox_into_a_reader_that_stops_early_ends_quietly(hub: RunningHub) -> None:
    client = await hub.clinic("harbor-pt")
    for number in range(3):
        await client.send_and_confirm(referral_request(patient_ref=f"pt-pipe-{number}"))
    command = f"{sys.executable} -m referral_hub.cli inbox --clinic lotus-acu --nats-url {hub.url} | head -2"
    started = time.monotonic()

    process = await asyncio.create_subprocess_shell(
        command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    elapsed = time.monotonic() - started

    assert len(stdout.decode().splitlines()) == 2
    assert stderr.decode() == ""
    assert elapsed < 25, f"took {elapsed:.0f}s"


async def test_contracts_export_says_nothing_about_signing_keys(tmp_path: Path) -> None:
    result = await hubctl("contracts", "export", "--out", str(tmp_path))

    assert result.status == 0, result.stderr
    assert result.stderr == ""
    assert (tmp_path / "contracts.schema.json").exists()


async def test_refer_explains_modality_and_urgency() -> None:
    result = await hubctl("refer", "--help")

    flat = " ".join(result.stdout.split())
    assert "--modality {massage,physical_therapy,chiropractic,acupuncture} the kind of care:" in flat
    assert "--urgency {routine,urgent} how fast the recipient must answer" in flat


async def test_the_example_roster_is_accepted_and_override_times_are_the_clinics_own(hub: RunningHub) -> None:
    roster = Path(__file__).parent.parent / "docs" / "examples" / "roster.json"

    stored = await hubctl("roster", "set", "--clinic", "harbor-pt", "--file", str(roster), "--nats-url", hub.url)
    override = await hubctl(
        *("oncall", "override", "--clinic", "harbor-pt", "--member", "cara.lind"),
        *("--from", "2030-01-07T09:00", "--until", "2030-01-07T18:00", "--nats-url", hub.url),
    )
    clinics = json.loads((await hubctl("clinics", "--json", "--nats-url", hub.url)).stdout)["clinics"]

    assert stored.status == 0, stored.stderr
    assert "roster of harbor-pt: 4 members, rotation set" in stored.stdout
    assert override.status == 0, override.stderr
    assert "from 2030-01-07T09:00-05:00 until 2030-01-07T18:00-05:00 (America/New_York)" in override.stdout
    [harbor] = [clinic for clinic in clinics if clinic["id"] == "harbor-pt"]
    assert "cara.lind" in [member["id"] for member in harbor["members"]]
    [kept] = harbor["oncall_overrides"]
    assert (kept["starts_at"], kept["ends_at"]) == ("2030-01-07T14:00:00Z", "2030-01-07T23:00:00Z")


def test_a_fetch_timeout_in_a_service_log_is_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    quiet_expected_timeouts("referrals")
    logger = logging.getLogger("referral_hub.faststream.referrals")

    with caplog.at_level(logging.INFO, logger="referral_hub.faststream.referrals"):
        # What faststream's supervisor logs when nats-py's fetch raised asyncio's TimeoutError, and a real fault.
        logger.error(
            "Task-24 raised an exception, retrying...\nIf this behavior causes issues", exc_info=TimeoutError()
        )
        logger.error("Task-25 raised an exception, retrying...", exc_info=ValueError("a real fault"))

    expected, fault = caplog.records
    assert (expected.levelname, expected.exc_info) == ("WARNING", None)
    assert expected.getMessage() == f"Task-24: {EXPECTED}"
    assert "\n" not in expected.getMessage()
    assert fault.levelname == "ERROR"
    assert fault.exc_info is not None


async def test_audit_verify_shows_a_progress_bar_on_a_terminal_and_plain_lines_in_a_pipe(hub: RunningHub) -> None:
    await (await hub.clinic("harbor-pt")).send_and_confirm(referral_request(patient_ref="pt-bar"))
    await wait_idle(hub.connection)
    pin = str(load_key(new_key_seed()).current.verifier)
    arguments = ["audit", "verify", "--verifier-key", pin, "--nats-url", hub.url]
    command = [sys.executable, "-m", "referral_hub.cli", *arguments]

    on_terminal = await asyncio.to_thread(run_on_terminal, command)
    piped = await hubctl(*arguments)

    assert "verifying the audit log" in on_terminal
    assert "audit chain OK" in on_terminal
    assert piped.stdout.startswith("audit chain OK")
    assert piped.stderr == ""
    assert "\x1b[" not in piped.stdout


def run_on_terminal(command: list[str]) -> str:
    """Everything ``command`` writes to stdout and stderr when both are a terminal."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(command, stdout=terminal, stderr=terminal, stdin=subprocess.DEVNULL)  # noqa: S603 - our own CLI
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process has ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(60)
    os.close(controller)
    return b"".join(chunks).decode(errors="replace")
