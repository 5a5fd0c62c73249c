"""The escalation sweep: escalate due pages, re-deliver owed steps, send due digests.

Every timer is derived from KV state on each sweep (``page_rules.escalate``,
``page_rules.delivery_owed``, ``oncall.routine_deferral``), never held in memory, so a restart or
a second replica loses or doubles nothing: each write is a single compare-and-set, and a
replica that loses the race leaves the step to the one that won.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import structlog

from referral_hub.contracts.registry import ChannelKind, roster_problems
from referral_hub.notifications import oncall, page_rules
from referral_hub.notifications.adapters import digest_key, page_key
from referral_hub.notifications.digests import Digest, digest_id, digest_text
from referral_hub.notifications.dispatch import roster_invalid
from referral_hub.notifications.handlers import Hub
from referral_hub.notifications.metrics import ONCALL_UNREACHABLE, ROSTERS_INVALID, SILENCES_ACTIVE, SWEEPS
from referral_hub.notifications.page_rules import Page
from referral_hub.runtime.hosting.metrics import ESCALATIONS
from referral_hub.runtime.jetstream.kvstore import ConcurrentUpdateError, Decided, update_with_retry

log = structlog.get_logger(__name__)
REDELIVERY_GRACE: Final = timedelta(seconds=60)
"""A page level whose delivery has not been marked done after this long is delivered again."""


class Sweeper:
    """Runs sweeps; remembers only which rosters it last logged as broken."""

    def __init__(self, hub: Hub, working: frozenset[ChannelKind] = frozenset(ChannelKind)) -> None:
        """Sweeps the state ``hub`` holds; ``working``: the channel kinds the service can deliver on."""
        self._hub = hub
        self._working = working
        self._invalid_rosters: dict[str, tuple[str, ...]] = {}

    async def sweep_once(self) -> int:
        """Escalate due pages, re-deliver owed levels, and send digests that are due; returns actions."""
        now = self._hub.timing.clock()
        actions = 0
        for page in self._hub.stores.views.open_pages.values():
            actions += await self._escalate(page, now)
        for digest in self._hub.stores.views.pending_digests.values():
            actions += await self._digest_if_due(digest, now)
        self._check_rosters()
        self._check_reach(now)
        SILENCES_ACTIVE.set(sum(1 for silence in self._hub.stores.views.silences.values() if silence.in_force(now)))
        SWEEPS.inc()
        return actions

    async def _escalate(self, page: Page, now: datetime) -> int:
        """One write, against the page as the view shows it: a page changed since is the next sweep's."""
        escalated = page_rules.escalate(page, now, self._hub.timing.policy)
        if escalated is None:
            if page_rules.delivery_owed(page, now, REDELIVERY_GRACE):
                self._hub.deliverer.page(page)
                return 1
            return 0

        def unchanged(stored: Page | None) -> Decided[Page, None]:
            return Decided(escalated if stored == page else None, None)

        try:
            saved = await update_with_retry(self._hub.stores.pages, page_key(page.page_id), unchanged, attempts=1)
        except ConcurrentUpdateError:
            return 0
        if saved.revision is None:
            return 0
        if escalated.next_at is not None or escalated.level != page.level:
            ESCALATIONS.labels(str(escalated.level)).inc()
            self._hub.deliverer.page(escalated, saved.revision)
        return 1

    async def _digest_if_due(self, digest: Digest, now: datetime) -> int:
        clinic = self._hub.registry.get(digest.clinic)
        if clinic is None:
            return 0
        deferred_until, problems = oncall.routine_deferral(clinic, now)
        if deferred_until is not None:
            return 0
        sent = await self._send_digest(digest.clinic)
        if sent and problems:
            roster_invalid(clinic, problems, "digest_now")
        return sent

    async def _send_digest(self, clinic: str) -> int:
        """Empty the digest in one write, then send what it held; a lost race leaves it to the winner."""

        def emptied(stored: Digest | None) -> Decided[Digest, Digest | None]:
            if stored is None or not stored.items:
                return Decided(None, None)
            return Decided(Digest(clinic=clinic), stored)

        try:
            taken = (await update_with_retry(self._hub.stores.digests, digest_key(clinic), emptied, attempts=1)).result
        except ConcurrentUpdateError:
            return 0
        if taken is None:
            return 0
        self._hub.deliverer.routine(clinic, "digest", digest_text(taken.items), digest_id(clinic, taken.items))
        return 1

    def _check_reach(self, now: datetime) -> None:
        """Count the on-call members no configured channel reaches (no clinic label: ``hubctl status`` names them)."""
        clinics = self._hub.registry.clinics()
        ONCALL_UNREACHABLE.set(sum(len(oncall.unreachable_on_call(c, now, self._working)) for c in clinics))

    def _check_rosters(self) -> None:
        """Count the clinics whose roster cannot be followed; log each as it breaks and as it is mended."""
        invalid = {}
        for clinic in self._hub.registry.clinics():
            problems = tuple(roster_problems(clinic))
            if problems:
                invalid[clinic.id] = problems
                if self._invalid_rosters.get(clinic.id) != problems:
                    log.error("clinic roster cannot be followed", clinic=clinic.id, problems=list(problems))
        for mended in self._invalid_rosters.keys() - invalid.keys():
            log.info("clinic roster can be followed again", clinic=mended)
        self._invalid_rosters = invalid
        ROSTERS_INVALID.set(len(invalid))
