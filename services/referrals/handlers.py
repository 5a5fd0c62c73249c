"""What the referrals service does with one clinic submission: decode, decide, emit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from nats.aio.client import Client

from referral_hub.contracts.alerts import AlertAck, AlertRaise, AlertRaised, AlertResolve
from referral_hub.contracts.codec import encode
from referral_hub.contracts.inbox import InboxHeartbeat
from referral_hub.contracts.plans import CareTeamLeave, PlanUpdate
from referral_hub.contracts.referrals import ReferralCommand, ReferralRequest, ReferralState
from referral_hub.contracts.registry import Clinic
from referral_hub.contracts.rejections import RejectionCode
from referral_hub.contracts.screening import ScreeningDispute, ScreeningFlagged
from referral_hub.referrals import alerting, careteam, domain, lifecycle, screening
from referral_hub.referrals.adapters import ConcurrentUpdateError, KvStore
from referral_hub.referrals.careteam import CareTeam, TeamChanged, team_key
from referral_hub.referrals.domain import Referral, SlaPolicy
from referral_hub.runtime.hosting.metrics import (
    CONTRAINDICATION_ALERTS,
    OPEN_REFERRALS,
    OVERDUE_REFERRALS,
    REFERRAL_TRANSITIONS,
    SCREENING_FLAGS,
    SCREENING_HOLDS,
)
from referral_hub.runtime.jetstream import subjects
from referral_hub.runtime.jetstream.kvstore import Decided, update_with_retry
from referral_hub.runtime.jetstream.registry_cache import RegistryCache
from referral_hub.runtime.messaging.ack_policy import Effects, Handled
from referral_hub.runtime.messaging.admission import RateLimiter, admit_delivery
from referral_hub.runtime.messaging.ids import derived_id
from referral_hub.runtime.messaging.incoming import Incoming
from referral_hub.runtime.messaging.outgoing import Announcement, Outgoing, ToInbox, announce
from referral_hub.runtime.messaging.refusal_outputs import refuse
from referral_hub.runtime.messaging.refusals import HUB_SENDER, Refusal
from referral_hub.screening.rules import RulePack, load_rules

HANDLED_ELSEWHERE: Final = {
    "page.ack": "notifications",
    "access.viewed": "audit",
    "access.login": "audit",
    "access.login_failed": "audit",
}
"""Submissions another service consumes from CLINIC_OUT (and admits, and rejects) itself."""
TeamCommand = PlanUpdate | CareTeamLeave | AlertRaise | AlertAck | AlertResolve | ScreeningDispute

SERVICE = "referrals"
ANNOUNCED_MEMORY = 50_000
DECIDE_ATTEMPTS = 4
"""A cached decision, then fresh ones after lost compare-and-set races, then a redelivery."""
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Stores:
    """What every intake handler reads and writes: the two stores and the registry view."""

    referrals: KvStore[Referral]
    teams: KvStore[CareTeam]
    registry: RegistryCache

    async def change_team(self, patient_ref: str, change: Callable[[CareTeam | None], CareTeam]) -> CareTeam:
        """Apply ``change`` to the stored team with compare-and-set, re-reading after a lost race."""
        team = await self.teams.change(team_key(patient_ref), change, DECIDE_ATTEMPTS)
        assert team is not None  # noqa: S101 - change always returns a team
        return team

    def refuse(self, delivery: Incoming, refusal: Refusal, message_id: uuid.UUID | None) -> Handled:
        """The sender's typed rejection (or a dead letter when there is no sender to tell)."""
        return refuse(SERVICE, delivery, refusal, message_id, lambda clinic: self.registry.get(clinic) is not None)


class IntakeHandler:
    """Everything clinics publish on ``clinic.*.out.>``: admit it, then hand it to its kind's handler.

    Referral lifecycle commands and care-team commands have their own state (a referral, a
    patient's team) and their own handler; this class only admits and routes.
    """

    def __init__(
        self,
        referrals: KvStore[Referral],
        teams: KvStore[CareTeam],
        registry: RegistryCache,
        sla: SlaPolicy,
    ) -> None:
        """Depend on the two stores, the registry view and the SLA policy, nothing else."""
        self._stores = Stores(referrals, teams, registry)
        rules = load_rules()
        self._limiter = RateLimiter()
        self._referral_commands = ReferralCommands(self._stores, sla, rules)
        self._team_commands = TeamCommands(self._stores, rules)

    async def __call__(self, delivery: Incoming) -> Handled:
        """Admit, decide and return the outputs; raises only for infrastructure failures."""
        out = subjects.parse_clinic_out(delivery.subject)
        if out is not None and out.message_type in HANDLED_ELSEWHERE:
            return Handled(outcome="handled_elsewhere", log_fields={"by": HANDLED_ELSEWHERE[out.message_type]})
        admitted = admit_delivery(delivery, self._stores.registry.get, self._limiter)
        if isinstance(admitted, Refusal):
            return self._stores.refuse(delivery, admitted, None)
        command = admitted.command
        structlog.contextvars.bind_contextvars(
            message_id=str(command.message_id),
            correlation_id=str(command.correlation_id),
            causation_id=str(command.causation_id or ""),
            clinic=command.sender_clinic,
        )
        if isinstance(command, ReferralCommand):
            return await self._referral_commands(delivery, command)
        if isinstance(command, TeamCommand):
            return await self._team_commands(delivery, command, admitted.sender)
        refusal = Refusal(
            RejectionCode.UNSUPPORTED_MESSAGE_TYPE,
            f"{type(command).__name__} is a valid contract this hub version does not process yet",
        )
        return self._stores.refuse(delivery, refusal, command.message_id)


class ReferralCommands:
    """Lifecycle commands: decide on the referral, save it, announce the step.

    Also re-announces earlier steps this process did not store (decision 0002), and puts the
    parties on the patient's care team when the recipient accepts.
    """

    def __init__(self, stores: Stores, sla: SlaPolicy, rules: RulePack) -> None:
        """The stores, the SLA policy and the screening rules a new referral is checked against."""
        self._stores = stores
        self._sla = sla
        self._rules = rules
        self._announced: dict[uuid.UUID, None] = {}
        """Steps whose outputs this process stored, newest last (bounded)."""

    async def __call__(self, delivery: Incoming, command: ReferralCommand) -> Handled:
        """Decide and save, then the step's outputs (after any earlier ones still unstored)."""
        decision = await self._decide_and_save(delivery, command)
        if isinstance(decision, Refusal):
            return self._stores.refuse(delivery, decision, command.message_id)
        if isinstance(decision, domain.AlreadyApplied) and not domain.reannounce(
            decision.step.at, datetime.now(UTC), delivery.attempt
        ):
            return Handled(outcome="duplicate", log_fields={"transition": decision.step.transition})
        referral, step = decision.referral, decision.step
        outgoing = await self._unannounced_before(referral, step)
        if step.transition == "request" and (flag := referral.screening) is not None:
            await self._stores.change_team(referral.patient_ref, lambda team: screening.record_flag(team, flag))
        outgoing += await self._step_outputs(referral, step)
        return Handled(
            outcome="accepted" if isinstance(decision, domain.Changed) else "replayed",
            outgoing=outgoing,
            log_fields={"transition": step.transition, "state": str(referral.state)},
            on_stored=lambda: self._remember_announced(step.message_id),
        )

    async def _decide_and_save(self, delivery: Incoming, command: ReferralCommand) -> domain.Decision:
        """Decide on the cached state when there is one, and confirm anything unusual afresh.

        The common path costs one KV round trip (the compare-and-set write): a cached record
        stands in for the read, and a new request is created without reading at all. A
        write that loses to another replica, or a refusal decided on cached state, is decided
        again on a fresh read, so a stale cache can never cause a wrong rejection.
        """
        key = str(command.referral_id)
        flag = await self._screen(command, delivery.stored_at)
        registry = self._stores.registry

        def decide(existing: Referral | None) -> Decided[Referral, domain.Decision]:
            decision = domain.screened(
                domain.decide(command, existing, registry.get, delivery.stored_at, self._sla), flag
            )
            if isinstance(decision, domain.Changed):
                return Decided(decision.referral, decision)
            return Decided(None, decision, confirm=isinstance(decision, Refusal))

        referrals = self._stores.referrals
        decision = (
            await update_with_retry(
                referrals,
                key,
                decide,
                attempts=DECIDE_ATTEMPTS,
                fresh=False,
                assume_new=isinstance(command, ReferralRequest) and referrals.cached(key) is None,
            )
        ).result
        if isinstance(decision, domain.Changed):
            REFERRAL_TRANSITIONS.labels(decision.step.transition).inc()
            if decision.created and decision.referral.screening is not None:
                count_flag(decision.referral.screening)
        return decision

    async def _screen(self, command: ReferralCommand, at: datetime) -> ScreeningFlagged | None:
        """Screen a new referral against the patient's record; other commands are not screened."""
        if not isinstance(command, ReferralRequest):
            return None
        stored = await self._stores.teams.load(team_key(command.patient_ref))
        return screening.screen_referral(self._rules, command, stored[0] if stored else None, at)

    async def _step_outputs(self, referral: Referral, step: domain.HistoryItem) -> list[Outgoing | ToInbox]:
        """What one step tells the parties, and, for an accept, the care team it forms."""
        outgoing: list[Outgoing | ToInbox] = list(announce(domain.announcements(referral, step)))
        if step.transition == "accept":
            outgoing += await self._join_care_team(referral, step)
        return outgoing

    def _remember_announced(self, step_id: uuid.UUID) -> None:
        """Every output of ``step_id`` is stored by this process: the next step need not announce it again.

        Only once they are stored: remembered earlier, a step whose inbox copy failed (a node
        killed mid-publish) would let the referral's next step reach that inbox first, with the
        failed copy arriving after it on redelivery. A remembered step's
        predecessors were stored too (re-announced ahead of it if need be), which is what
        lets :meth:`_unannounced_before` stop at it (decision 0002).
        """
        self._announced[step_id] = None
        if len(self._announced) > ANNOUNCED_MEMORY:
            del self._announced[next(iter(self._announced))]

    async def _unannounced_before(self, referral: Referral, step: domain.HistoryItem) -> list[Outgoing | ToInbox]:
        """Every earlier step's outputs again, oldest first, back to the newest one this process stored.

        A step's state write can succeed while its inbox copies fail (a crash between save and
        publish, or a stream leader lost mid-publish), and its command is redelivered only
        after a nak delay or the ack wait; meanwhile the parties, who act on the saved state,
        send the referral's next commands, whose copies would reach the inboxes first.
        Announcing every predecessor this process has not stored, not just the one before,
        keeps them in lifecycle order even when several steps in a row failed to publish
        (decision 0002). Re-publishing under the original ids is free inside the
        de-duplication window, and costs nothing in steady state, where the same process
        stored the previous step.
        """
        position = next(index for index, item in enumerate(referral.history) if item.message_id == step.message_id)
        now = datetime.now(UTC)
        earlier: list[domain.HistoryItem] = []
        for index in range(position - 1, -1, -1):
            if referral.history[index + 1].transition == "forward":
                break  # a forward changed the parties; the steps before it are not the new recipient's
            previous = referral.history[index]
            if previous.message_id in self._announced or not domain.reannounce(previous.at, now, 1):
                break  # stored by this process, so its own predecessors were too (or beyond the window)
            earlier.append(previous)
        outgoing: list[Outgoing | ToInbox] = []
        for previous in reversed(earlier):
            outgoing += await self._step_outputs(referral, previous)
        return outgoing

    async def _join_care_team(self, referral: Referral, step: domain.HistoryItem) -> list[Outgoing | ToInbox]:
        """Put both clinics on the patient's team; idempotent, so a redelivery re-derives the same events.

        Joiners also learn the members already there, with their current plans, and get
        every alert in force that they have not seen.
        """
        sender = self._stores.registry.get(referral.referring_clinic)
        joiners = [(referral.recipient_clinic, referral.request.modality)]
        if sender is not None and sender.modalities:
            joiners.insert(0, (referral.referring_clinic, sender.modalities[0]))

        def join(team: CareTeam | None) -> CareTeam:
            joined, _ = careteam.join(team, referral.patient_ref, joiners, step.at, referral.referral_id)
            return careteam.with_clinical_flags(joined, referral.request.clinical_flags)

        team = await self._stores.change_team(referral.patient_ref, join)
        cause = careteam.Cause(
            step.message_id,
            step.correlation_id or referral.request.correlation_id,
            step.by_clinic,
            step.actor,
            step.at,
        )
        return [
            *announce(careteam.joined_announcements(team, referral.referral_id, cause)),
            *careteam.catch_up(team, referral.referral_id, cause),
            *announce(alerting.late_joiner_announcements(team, referral.referral_id)),
        ]


@dataclass(frozen=True)
class TeamContext:
    """What a care-team decision may use besides the team and the command."""

    at: datetime
    sender: Clinic
    rules: RulePack


@dataclass(frozen=True)
class TeamCommandHandler:
    """How one kind of care-team command is decided, and what a repeat of it announces again."""

    decide: Callable[[CareTeam | None, Any, TeamContext], TeamChanged | Refusal]
    replay: Callable[[CareTeam, Any], list[Announcement]]


def _update_plan(team: CareTeam | None, command: PlanUpdate, context: TeamContext) -> TeamChanged | Refusal:
    """Apply the plan, then screen it against the team's record; a match flags it to the team."""
    changed = careteam.update_plan(team, command)
    if isinstance(changed, Refusal):
        return changed
    flag = screening.screen_plan(context.rules, command, changed.team, context.at)
    if flag is None:
        return changed
    return TeamChanged(
        screening.record_flag(changed.team, flag),
        [*changed.announcements, *screening.flag_announcements(flag)],
    )


def _replay_plan(team: CareTeam, command: PlanUpdate) -> list[Announcement]:
    return [*careteam.replay(team, command), *screening.replay_flag(team, command.message_id)]


TEAM_COMMAND_HANDLERS: Final[Mapping[type[TeamCommand], TeamCommandHandler]] = {
    PlanUpdate: TeamCommandHandler(_update_plan, _replay_plan),
    CareTeamLeave: TeamCommandHandler(lambda team, command, c: careteam.leave(team, command, c.at), careteam.replay),
    AlertRaise: TeamCommandHandler(lambda team, command, c: alerting.raise_alert(team, command, c.at), alerting.replay),
    AlertAck: TeamCommandHandler(
        lambda team, command, c: alerting.acknowledge(team, command, c.at, c.sender), alerting.replay
    ),
    AlertResolve: TeamCommandHandler(lambda team, command, c: alerting.resolve(team, command, c.at), alerting.replay),
    ScreeningDispute: TeamCommandHandler(
        lambda team, command, c: screening.dispute(team, command, c.at), screening.replay_dispute
    ),
}
"""Each care-team command kind to the pure functions that decide it and replay it."""


class TeamCommands:
    """Care-team commands (plans, leaving, alerts, screening disputes), decided on the patient's stored team."""

    def __init__(self, stores: Stores, rules: RulePack) -> None:
        """The stores and the screening rules a new plan is checked against."""
        self._stores = stores
        self._rules = rules

    async def __call__(self, delivery: Incoming, command: TeamCommand, sender: Clinic) -> Handled:
        """Decide on the cached team first (one KV write on the common path), as referrals do.

        A refusal decided on the cache, or a write that loses the compare-and-set, is decided
        again on a fresh read: a stale cache can cost a retry, never a wrong answer.
        """
        handler = TEAM_COMMAND_HANDLERS[type(command)]

        def decide(team: CareTeam | None) -> Decided[CareTeam, Handled | TeamChanged | Refusal]:
            if team is not None and command.message_id in team.applied:
                # The team keeps no time per applied id; this copy's storage time stands in for
                # it (exact for a redelivery, a little late for a resend under another id).
                if not domain.reannounce(delivery.stored_at, datetime.now(UTC), delivery.attempt):
                    return Decided(None, Handled(outcome="duplicate"))
                return Decided(None, Handled(outcome="replayed", outgoing=announce(handler.replay(team, command))))
            decision = handler.decide(team, command, TeamContext(delivery.stored_at, sender, self._rules))
            if isinstance(decision, Refusal):
                return Decided(None, decision, confirm=True)
            return Decided(decision.team, decision)

        key = team_key(command.patient_ref)
        outcome = (
            await update_with_retry(self._stores.teams, key, decide, attempts=DECIDE_ATTEMPTS, fresh=False)
        ).result
        if isinstance(outcome, Refusal):
            return self._stores.refuse(delivery, outcome, command.message_id)
        if isinstance(outcome, TeamChanged):
            count_safety(outcome.announcements)
            return Handled(outcome="accepted", outgoing=announce(outcome.announcements))
        return outcome


def count_flag(flag: ScreeningFlagged) -> None:
    """Screening metrics; alert ids never become labels."""
    for match in flag.matches:
        SCREENING_FLAGS.labels("alert" if match.alert_id else match.rule_id, match.severity).inc()
    if flag.held:
        SCREENING_HOLDS.inc()


def count_safety(announcements: list[Announcement]) -> None:
    """Metrics for the alerts and plan flags a team command produced."""
    for item in announcements:
        if isinstance(item.event, AlertRaised) and item.event_type == "alert.raised":
            CONTRAINDICATION_ALERTS.labels(item.event.severity).inc()
        elif isinstance(item.event, ScreeningFlagged):
            count_flag(item.event)


class TimerSweeper:
    """Fires SLA timers, derived from the referrals' durable deadlines: no in-memory sleeps.

    It announces first and records the flag second: a crash in between re-announces on
    the next sweep under the same message ids, which JetStream de-duplicates. Several
    replicas may sweep; compare-and-set lets one record the flag.
    """

    def __init__(
        self, referrals: KvStore[Referral], effects: Effects, sla: SlaPolicy, clock: Callable[[], datetime]
    ) -> None:
        """``clock`` is injectable so tests can move time."""
        self._referrals = referrals
        self._effects = effects
        self._sla = sla
        self._clock = clock

    async def sweep_forever(self, interval: float) -> None:
        """Sweep now and then every ``interval`` seconds (a service job)."""
        while True:
            await self.sweep_once()
            await asyncio.sleep(interval)

    async def sweep_once(self) -> int:
        """Fire every timer due now, and refresh the open and overdue referral gauges; returns how many fired."""
        fired = 0
        now = self._clock()
        open_by_state = dict.fromkeys((s for s in ReferralState if s not in lifecycle.TERMINAL), 0)
        overdue = 0
        async for key, referral, revision in self._referrals.scan():
            if referral.state in open_by_state:
                open_by_state[referral.state] += 1
                overdue += domain.is_overdue(referral, now)
            timer = domain.due_timer(referral, now, self._sla)
            if timer is None:
                continue
            await self._effects.apply(announce([timer.announcement]))
            try:
                await update_with_retry(
                    self._referrals, key, _flag_set(timer.referral), attempts=1, known=(referral, revision)
                )
            except ConcurrentUpdateError:
                continue  # changed since the scan (another replica's flag, or a step): the next sweep decides again
            fired += 1
            log.info("sla timer fired", timer=timer.announcement.event_type, referral_id=key)
        for state, count in open_by_state.items():
            OPEN_REFERRALS.labels(state).set(count)
        OVERDUE_REFERRALS.set(overdue)
        return fired


def _flag_set(fired: Referral) -> Callable[[Referral | None], Decided[Referral, None]]:
    """Write ``fired`` (the referral with its timer flag set) over the revision the sweep read, or lose the race."""
    return lambda _stored: Decided(fired, None)


async def send_heartbeats(connection: Client, registry: RegistryCache, effects: Effects, now: datetime) -> None:
    """Tell every clinic its newest inbox event number, so it can spot a gap and replay."""
    for clinic in registry.clinics():
        _, last = await effects.inbox.head(clinic.id)
        beat = InboxHeartbeat(
            message_id=derived_id(f"{clinic.id}/{now.isoformat()}", "heartbeat"),
            occurred_at=now,
            sender_clinic=HUB_SENDER,
            actor=SERVICE,
            correlation_id=derived_id(clinic.id, "heartbeat"),
            clinic=clinic.id,
            last_event_number=last,
        )
        await connection.publish(subjects.clinic_heartbeat(clinic.id), encode(beat))


async def heartbeat_forever(
    connection: Client, registry: RegistryCache, effects: Effects, clock: Callable[[], datetime], interval: float
) -> None:
    """Every ``interval`` seconds, every clinic's heartbeat (a service job)."""
    while True:
        await asyncio.sleep(interval)
        await send_heartbeats(connection, registry, effects, clock())
