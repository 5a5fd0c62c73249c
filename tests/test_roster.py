"""Rosters: ``roster set`` changes only what its file names and says what changed; unreachable on-call is warned of."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import msgspec
import pytest
from prometheus_client import REGISTRY

from referral_hub.cli.commands import UsageError
from referral_hub.cli.roster import RosterFile, as_file, changes, merged, roster_lines
from referral_hub.contracts.base import Modality
from referral_hub.contracts.registry import (
    ChannelKind,
    Clinic,
    ContactChannel,
    Member,
    OnCallOverride,
    Role,
    Rotation,
)
from referral_hub.notifications.oncall import unreachable_on_call
from referral_hub.notifications.sweeping import Sweeper

from .helpers import RunningHub, hubctl
from .test_notification_handlers import World

NOW = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "roster.json"


def email(address: str) -> tuple[ContactChannel, ...]:
    return (ContactChannel(kind=ChannelKind.EMAIL, address=address),)


CLINIC = Clinic(
    id="harbor-pt",
    name="Harbor PT",
    modalities=(Modality.PHYSICAL_THERAPY,),
    timezone="America/New_York",
    members=(
        Member(id="ana.ruiz", name="Ana", role=Role.CLINICAL_LEAD, channels=email("ana@harbor.example")),
        Member(id="ben.okafor", name="Ben", role=Role.THERAPIST, channels=email("ben@harbor.example")),
    ),
    oncall=Rotation(members=("ana.ruiz", "ben.okafor"), starts_on=date(2026, 11, 24)),
)


def roster(text: str) -> RosterFile:
    return msgspec.json.decode(text, type=RosterFile)


def test_a_member_listed_without_channels_keeps_them() -> None:
    updated = merged(
        CLINIC, roster('{"members": [{"id": "ana.ruiz", "name": "Ana Ruiz, DPT"}, {"id": "ben.okafor"}]}'), NOW
    )

    assert [m.channels for m in updated.members] == [m.channels for m in CLINIC.members]
    assert updated.members[0].name == "Ana Ruiz, DPT"


def test_channels_given_as_empty_are_removed_because_the_file_says_so() -> None:
    updated = merged(CLINIC, roster('{"members": [{"id": "ana.ruiz", "channels": []}, {"id": "ben.okafor"}]}'), NOW)

    assert updated.members[0].channels == ()


def test_a_file_without_a_rotation_keeps_it_and_null_removes_it() -> None:
    assert merged(CLINIC, roster('{"timezone": "America/Chicago"}'), NOW).oncall == CLINIC.oncall
    assert merged(CLINIC, roster('{"oncall": null}'), NOW).oncall is None


def test_a_new_member_needs_a_name_and_role() -> None:
    with pytest.raises(UsageError, match=r"new member 'cy\.diaz' needs a name and a role"):
        merged(CLINIC, roster('{"members": [{"id": "cy.diaz"}]}'), NOW)


def test_a_misspelt_field_is_refused_rather_than_ignored() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"unknown field `channel`"):
        roster('{"members": [{"id": "ana.ruiz", "channel": []}]}')


def test_the_diff_names_each_member_and_setting_changed() -> None:
    updated = merged(CLINIC, roster('{"members": [{"id": "ana.ruiz", "channels": []}], "oncall": null}'), NOW)

    assert changes(CLINIC, updated) == [
        "~ member ana.ruiz: channels email:ana@harbor.example -> no channel",
        "- member ben.okafor (therapist; email:ben@harbor.example)",
        "~ rotation: ana.ruiz, ben.okafor from 2026-11-24, 7-day shifts handing off at 08:00 -> none",
    ]


def test_show_as_json_is_a_file_set_takes_back_unchanged() -> None:
    again = merged(CLINIC, roster(msgspec.json.encode(as_file(CLINIC)).decode()), NOW)

    assert again == CLINIC
    assert changes(CLINIC, again) == []


def test_the_example_roster_keeps_the_registrys_channels() -> None:
    demo = msgspec.structs.replace(CLINIC, members=(*CLINIC.members,))
    updated = merged(demo, roster(EXAMPLE.read_text()), NOW)

    assert {m.id: m.channels for m in updated.members}["ben.okafor"] == email("ben@harbor.example")


def test_an_on_call_member_without_a_working_channel_is_named() -> None:
    silent = msgspec.structs.replace(CLINIC.members[1], channels=())
    clinic = msgspec.structs.replace(CLINIC, members=(CLINIC.members[0], silent))

    assert unreachable_on_call(clinic, NOW, frozenset(ChannelKind)) == ["ben.okafor"]
    assert unreachable_on_call(CLINIC, NOW, frozenset({ChannelKind.WEBHOOK})) == ["ana.ruiz", "ben.okafor"]
    assert unreachable_on_call(CLINIC, NOW, frozenset(ChannelKind)) == []


def test_an_override_member_without_a_channel_is_named_until_the_override_ends() -> None:
    lead = Member(id="cy.diaz", name="Cy", role=Role.THERAPIST)
    cover = OnCallOverride(member="cy.diaz", starts_at=NOW, ends_at=datetime(2026, 12, 8, tzinfo=UTC))
    clinic = msgspec.structs.replace(CLINIC, members=(*CLINIC.members, lead), oncall_overrides=(cover,))

    assert unreachable_on_call(clinic, NOW, frozenset(ChannelKind)) == ["cy.diaz"]
    assert unreachable_on_call(clinic, datetime(2026, 12, 9, tzinfo=UTC), frozenset(ChannelKind)) == []


def test_roster_show_warns_of_an_unreachable_on_call_member() -> None:
    silent = msgspec.structs.replace(CLINIC.members[1], channels=())
    lines = roster_lines(msgspec.structs.replace(CLINIC, members=(CLINIC.members[0], silent)), NOW)

    assert "WARNING: ben.okafor can be on call but has no contact channel; a page to them reaches nobody" in lines


async def test_the_sweep_counts_on_call_members_no_configured_channel_reaches() -> None:
    world = World()  # every member has only e-mail
    await Sweeper(world.hub, frozenset({ChannelKind.WEBHOOK})).sweep_once()
    no_smtp = REGISTRY.get_sample_value("hub_oncall_unreachable_members")
    await Sweeper(world.hub, frozenset(ChannelKind)).sweep_once()
    with_smtp = REGISTRY.get_sample_value("hub_oncall_unreachable_members")

    assert (no_smtp, with_smtp) == (2, 0)


async def test_roster_set_keeps_channels_shows_the_diff_and_status_warns(hub: RunningHub, tmp_path: Path) -> None:
    keys = ("--clinic", "harbor-pt", "--nats-url", hub.url)
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_text(
        '{"members": [{"id": "ana.ruiz", "channels": [{"kind": "sms", "address": "+15550100"}]},'
        ' {"id": "ben.okafor", "channels": [{"kind": "webhook", "address": "https://pager.example/ben"}]},'
        ' {"id": "front.harbor"}]}'
    )
    second.write_text('{"members": [{"id": "ana.ruiz", "channels": []}, {"id": "ben.okafor"}]}')
    assert (await hubctl("roster", "set", "--file", str(first), *keys)).status == 0

    stored = await hubctl("roster", "set", "--file", str(second), *keys)
    shown = await hubctl("roster", "show", "--json", *keys)
    status = await hubctl("status", "--metrics-port", "1", "--nats-url", hub.url)

    assert stored.status == shown.status == status.status == 0, stored.stderr + status.stderr
    members = {m["id"]: m for m in msgspec.json.decode(shown.stdout)["members"]}
    assert members["ben.okafor"]["channels"] == [{"kind": "webhook", "address": "https://pager.example/ben"}]
    assert members["ana.ruiz"]["channels"] == []
    assert stored.stdout.splitlines()[:2] == [
        "~ member ana.ruiz: channels sms:+15550100 -> no channel",
        "- member front.harbor (front_desk; no channel)",
    ]
    assert "WARNING: ana.ruiz can be on call but has no contact channel" in stored.stdout
    [harbor] = [line for line in status.stdout.splitlines() if line.strip().startswith("harbor-pt")]
    assert "ana.ruiz" in harbor
