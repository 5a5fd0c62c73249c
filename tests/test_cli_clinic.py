"""``hubctl`` acting as a clinic, as a user runs it: every step through the CLI, short ids, plain answers."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from referral_hub.cli.paging_commands import all_pages
from referral_hub.notifications.page_rules import Page
from referral_hub.runtime.broker.embedded import EmbeddedNats

from .helpers import Result, RunningHub, eventually, hubctl, referral_request
from .test_cli import assert_one_line_error

pytestmark = pytest.mark.slow

HARBOR, LOTUS, SUMMIT = "harbor-pt", "lotus-acu", "summit-chiro"


async def as_clinic(hub: RunningHub, clinic: str, *args: str) -> Result:
    return await hubctl(*args, "--clinic", clinic, "--nats-url", hub.url)


def short_id(result: Result) -> str:
    """The short referral id the command printed, the way a person would copy it."""
    found = re.search(r"referral ([0-9a-f]{8})", result.stdout)
    assert found, result.stdout
    return found.group(1)


async def test_a_referral_goes_through_its_whole_lifecycle_by_short_ids(hub: RunningHub) -> None:
    sent = await as_clinic(
        hub,
        HARBOR,
        "refer",
        "--to",
        LOTUS,
        "--patient",
        "pt-life",
        "--modality",
        "acupuncture",
        "--reason",
        "Neck pain",
    )
    referral = short_id(sent)
    accepted = await as_clinic(hub, LOTUS, "referral", "accept", referral)
    scheduled = await as_clinic(hub, LOTUS, "referral", "schedule", referral, "--at", "2030-01-02T10:00+00:00")
    noted = await as_clinic(hub, LOTUS, "referral", "note", referral, "--text", "Second visit went well")
    completed = await as_clinic(
        hub, LOTUS, "referral", "complete", referral, "--visits", "4", "--response", "Pain down from 7 to 2"
    )
    closed = await as_clinic(hub, HARBOR, "referral", "close", referral)
    shown = await hubctl("referral", "show", referral, "--nats-url", hub.url)

    assert sent.status == 0, sent.stderr
    assert "requested: harbor-pt -> lotus-acu" in sent.stdout
    assert f"hubctl referral cancel {referral} --clinic harbor-pt" in sent.stdout
    assert accepted.status == 0, accepted.stderr
    assert f"referral {referral} is now accepted (accept by lotus-acu" in accepted.stdout
    assert f"next:\n  hubctl referral schedule {referral} --clinic lotus-acu --at TIME" in accepted.stdout
    assert "is now scheduled" in scheduled.stdout
    assert f"referral {referral} is now scheduled" in noted.stdout
    assert "is now completed" in completed.stdout
    assert "is now closed" in closed.stdout
    assert closed.stdout.endswith(f"next:\n  hubctl referral show {referral}\n")
    assert shown.status == 0, shown.stderr
    assert "state closed" in shown.stdout
    assert "4 visits; response: Pain down from 7 to 2" in shown.stdout


async def test_an_accept_note_and_a_time_without_offset_read_in_the_clinics_zone(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # this machine's zone must not matter
    sent = await as_clinic(
        hub, HARBOR, "refer", "--to", LOTUS, "--patient", "pt-zone", "--modality", "acupuncture", "--reason", "x"
    )
    referral = short_id(sent)
    await as_clinic(hub, LOTUS, "referral", "accept", referral, "--note", "Can see her Tuesday")
    scheduled = await as_clinic(hub, LOTUS, "referral", "schedule", referral, "--at", "2026-12-09T10:30")
    shown = await hubctl("referral", "show", referral, "--nats-url", hub.url)

    assert scheduled.status == 0, scheduled.stderr
    assert "Can see her Tuesday" in shown.stdout
    # lotus-acu is in America/New_York: 10:30 there is 15:30 UTC.
    assert "appointment 2026-12-09T15:30:00+00:00" in shown.stdout


async def test_a_step_the_hub_refuses_is_one_line_in_plain_words(hub: RunningHub) -> None:
    sent = await as_clinic(
        hub, HARBOR, "refer", "--to", LOTUS, "--patient", "pt-wrong", "--modality", "acupuncture", "--reason", "x"
    )

    refused = await as_clinic(hub, LOTUS, "referral", "close", short_id(sent))

    assert_one_line_error(refused, "rejected (wrong_party): this step belongs to the other clinic on the referral")


async def test_an_ambiguous_prefix_lists_its_candidates_and_sends_nothing(hub: RunningHub) -> None:
    first, second = uuid.UUID("abcd0000-0000-4000-8000-000000000001"), uuid.UUID("abcd0000-0000-4000-8000-000000000002")
    client = await hub.clinic(HARBOR)
    for referral_id in (first, second):
        await client.send_and_confirm(referral_request(referral_id=referral_id, patient_ref="pt-twins"))

    ambiguous = await as_clinic(hub, LOTUS, "referral", "accept", "abcd0000")
    unknown = await as_clinic(hub, LOTUS, "referral", "accept", "ffff0000")
    shown_ambiguous = await hubctl("referral", "show", "abcd", "--nats-url", hub.url)
    resolved = await as_clinic(hub, LOTUS, "referral", "accept", "abcd0000-0000-4000-8000-000000000002")

    assert_one_line_error(ambiguous, "is ambiguous in the inbox of lotus-acu; it could be: ")
    assert str(first) in ambiguous.stderr
    assert str(second) in ambiguous.stderr
    assert_one_line_error(unknown, "no referral 'ffff0000' in the inbox of lotus-acu")
    assert_one_line_error(shown_ambiguous, "is ambiguous")
    assert resolved.status == 0, resolved.stderr
    assert "referral abcd0000 is now accepted" in resolved.stdout
    listed = await hubctl("referrals", "--clinic", LOTUS, "--state", "all", "--nats-url", hub.url)
    states = {line.split()[0]: line.split()[3] for line in listed.stdout.splitlines()}
    assert states == {str(first): "requested", str(second): "accepted"}


async def test_an_alert_holds_a_new_referral_for_review_and_refer_says_so(hub: RunningHub) -> None:
    sent = await as_clinic(
        hub, HARBOR, "refer", "--to", LOTUS, "--patient", "pt-held", "--modality", "acupuncture", "--reason", "x"
    )
    await as_clinic(hub, LOTUS, "referral", "accept", short_id(sent))
    raised = await as_clinic(
        *(hub, LOTUS, "alert", "raise", "--patient", "pt-held", "--kind", "condition"),
        *("--trigger", "acute fracture", "--modality", "chiropractic", "--severity", "absolute"),
    )
    held = await as_clinic(
        hub, HARBOR, "refer", "--to", SUMMIT, "--patient", "pt-held", "--modality", "chiropractic", "--reason", "x"
    )
    released = await as_clinic(
        hub, SUMMIT, "referral", "override", short_id(held), "--reason", "Fracture healed; cleared by imaging"
    )
    alert = re.search(r"alert ([0-9a-f]{8}) raised", raised.stdout)
    assert alert, raised.stdout
    acked = await as_clinic(hub, HARBOR, "alert", "ack", alert.group(1), "--member", "ana.ruiz")
    resolved = await as_clinic(hub, LOTUS, "alert", "resolve", alert.group(1), "--reason", "Healed")
    alerts = await hubctl("alerts", "--patient", "pt-held", "--all", "--json", "--nats-url", hub.url)

    assert raised.status == 0, raised.stderr
    assert "absolute alert" in raised.stdout
    assert held.status == 0, held.stderr
    assert " needs_review: harbor-pt -> summit-chiro (held by screening" in held.stdout
    assert released.status == 0, released.stderr
    assert "is now requested (override by summit-chiro" in released.stdout
    assert acked.status == 0, acked.stderr
    assert "acknowledged by ana.ruiz (harbor-pt)" in acked.stdout
    assert resolved.status == 0, resolved.stderr
    [view] = [json.loads(line) for line in alerts.stdout.splitlines()]
    assert view["status"] == "resolved"
    assert [ack["member"] for ack in view["acknowledged_by"]] == ["ana.ruiz"]


async def test_plan_update_reaches_the_team_and_a_stale_version_is_explained(hub: RunningHub) -> None:
    sent = await as_clinic(
        hub, HARBOR, "refer", "--to", LOTUS, "--patient", "pt-plan", "--modality", "acupuncture", "--reason", "x"
    )
    await as_clinic(hub, LOTUS, "referral", "accept", short_id(sent))
    plan = ("plan", "update", "--patient", "pt-plan", "--modality", "acupuncture", "--goal", "Sleep through the night")

    first = await as_clinic(hub, LOTUS, *plan, "--version", "1", "--frequency", "weekly")
    stale = await as_clinic(hub, LOTUS, *plan, "--version", "1")
    team = await hubctl("careteam", "show", "pt-plan", "--nats-url", hub.url)

    assert first.status == 0, first.stderr
    assert first.stdout.splitlines()[0].startswith(
        "plan v1 of lotus-acu for pt-plan stored by the hub and sent to the care team (inbox #"
    ), first.stdout
    assert first.stdout.splitlines()[0].endswith("): Sleep through the night")
    assert_one_line_error(stale, "rejected (stale_plan_version)")
    assert "the hub holds version 1" in stale.stderr
    assert "plan v1" in team.stdout


async def test_page_ack_takes_the_short_id_the_hub_prints(hub: RunningHub) -> None:
    sent = await as_clinic(
        hub, HARBOR, "refer", "--to", LOTUS, "--patient", "pt-page", "--modality", "acupuncture", "--reason", "x"
    )
    await as_clinic(hub, LOTUS, "referral", "accept", short_id(sent))
    await as_clinic(
        *(hub, LOTUS, "alert", "raise", "--patient", "pt-page", "--trigger", "apixaban", "--kind", "medication"),
        *("--modality", "physical_therapy", "--severity", "absolute"),
    )
    [page] = await eventually(lambda: harbor_pages(hub), timeout=30)
    shown = await hubctl("pages", "--nats-url", hub.url)

    acked = await as_clinic(hub, HARBOR, "page", "ack", str(page.page_id)[:8], "--member", "ana.ruiz")

    assert "stop treatment (absolute)" in shown.stdout
    assert acked.status == 0, acked.stderr
    assert f"page {page.page_id} acknowledged by ana.ruiz" in acked.stdout
    [after] = await harbor_pages(hub)
    assert after.status == "acknowledged"
    assert after.acked_by == "ana.ruiz"


async def harbor_pages(hub: RunningHub) -> list[Page]:
    return [page for page in await all_pages(hub.connection) if page.intent.clinic == HARBOR]


async def test_an_unknown_clinic_is_a_clear_error_not_an_empty_inbox(hub: RunningHub) -> None:
    inbox = await as_clinic(hub, "no-such-clinic", "inbox", "--json")
    listing = await as_clinic(hub, "no-such-clinic", "referrals")

    assert_one_line_error(inbox, "clinic 'no-such-clinic' is not registered")
    assert_one_line_error(listing, "clinic 'no-such-clinic' is not registered")


@pytest.mark.usefixtures("provisioned")
async def test_dlq_replay_of_a_missing_dead_letter_is_one_line(nats_server: EmbeddedNats) -> None:
    result = await hubctl("dlq", "replay", "999", "--nats-url", nats_server.url)

    assert_one_line_error(result, "no dead letter #999; see 'hubctl dlq list'")


async def test_decline_no_show_cancel_handshake_and_forward_through_the_cli(hub: RunningHub) -> None:
    async def refer(patient: str) -> str:
        sent = await as_clinic(
            hub, HARBOR, "refer", "--to", LOTUS, "--patient", patient, "--modality", "acupuncture", "--reason", "x"
        )
        assert sent.status == 0, sent.stderr
        return short_id(sent)

    declined_id, cancelled_id, forwarded_id = [await refer(p) for p in ("pt-d", "pt-c", "pt-f")]
    declined = await as_clinic(hub, LOTUS, "referral", "decline", declined_id, "--reason-code", "no_capacity")
    await as_clinic(hub, LOTUS, "referral", "accept", cancelled_id)
    await as_clinic(hub, LOTUS, "referral", "schedule", cancelled_id, "--at", "2030-01-02T10:00+00:00")
    missed = await as_clinic(hub, LOTUS, "referral", "no-show", cancelled_id)
    await as_clinic(hub, LOTUS, "referral", "schedule", cancelled_id, "--at", "2030-01-09T10:00+00:00")
    requested = await as_clinic(hub, HARBOR, "referral", "cancel", cancelled_id, "--reason-code", "patient_request")
    confirmed = await as_clinic(hub, LOTUS, "referral", "cancel-confirm", cancelled_id)
    forwarded = await as_clinic(hub, LOTUS, "referral", "forward", forwarded_id, "--to", "riverside-wellness")
    third = await as_clinic(hub, "riverside-wellness", "inbox")

    assert f"referral {declined_id} is now declined" in declined.stdout
    assert f"referral {cancelled_id} is now no_show" in missed.stdout
    assert f"referral {cancelled_id} is now cancel_requested" in requested.stdout
    assert f"hubctl referral cancel-confirm {cancelled_id} --clinic lotus-acu" not in requested.stdout
    assert f"referral {cancelled_id} is now cancelled" in confirmed.stdout
    assert forwarded.status == 0, forwarded.stderr
    assert f"referral {forwarded_id}" in forwarded.stdout
    assert "(forward by lotus-acu" in forwarded.stdout
    assert "pt-f" in third.stdout
