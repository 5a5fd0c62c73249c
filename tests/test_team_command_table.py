"""Every care-team command kind the intake admits has its entry in the referrals service's table."""

from __future__ import annotations

from typing import get_args

from referral_hub.referrals.handlers import TEAM_COMMAND_HANDLERS, TeamCommand


def test_every_team_command_kind_has_a_decision_and_a_replay() -> None:
    assert set(TEAM_COMMAND_HANDLERS) == set(get_args(TeamCommand))
