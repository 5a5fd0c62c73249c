"""Members' two factors: argon2id passwords and TOTP, invites, and logins throttled by failure budgets.

argon2id hashing takes tens of milliseconds of CPU on purpose, so it runs in a worker
thread. A wrong username costs the same hash as a wrong password, so response time does
not tell which accounts exist.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from referral_hub.portal import domain
from referral_hub.portal.adapters import ConcurrentChangeError, PortalStore
from referral_hub.portal.domain import Invite, MemberAccount
from referral_hub.runtime.jetstream import topology

HASHER: Final = PasswordHasher()
"""argon2-cffi's defaults are argon2id with RFC 9106's low-memory profile."""


@functools.cache
def _dummy_hash() -> str:
    """A hash to check unknown logins against, so they take as long as known ones (made once, on first use)."""
    return HASHER.hash(secrets.token_urlsafe(16))


TOTP_STEP: Final = 30
INVITE_LIFETIME: Final = timedelta(seconds=topology.PORTAL_INVITE_TTL_SECONDS)


class LoginOutcome(enum.StrEnum):
    """Why a login ended as it did; the failure codes go into the audit log, never the typed secrets."""

    OK = "ok"
    BAD_CREDENTIALS = "bad_credentials"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class LoginResult:
    """The outcome, and the account's ids when the username named a clinic and member."""

    outcome: LoginOutcome
    clinic: str = ""
    member: str = ""


def hash_password(password: str) -> str:
    """An argon2id hash (blocking: call through a thread)."""
    return HASHER.hash(password)


def _password_ok(stored: str, password: str) -> bool:
    try:
        return HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def totp_step(secret: str, code: str, now: float, last_step: int) -> int | None:
    """The time step ``code`` is valid for (this one or the one before), if newer than ``last_step``."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):  # noqa: PLR2004 - RFC 6238 six-digit codes
        return None
    totp = pyotp.TOTP(secret)
    current = int(now // TOTP_STEP)
    for step in (current, current - 1):
        if step > last_step and secrets.compare_digest(totp.at(step * TOTP_STEP), code):
            return step
    return None


async def _both_factors(  # noqa: PLR0913 - the account's ids, both typed factors, and the time
    store: PortalStore, clinic: str, member: str, password: str, code: str, *, now: datetime
) -> tuple[MemberAccount, int, int] | None:
    """The account, its revision and the code's step when both factors are right; ``None`` otherwise.

    Every path hashes once with the same parameters (an unknown name against a dummy hash)
    and writes nothing, so a wrong password, a wrong code and an unknown name take the same time.
    """
    found = await store.account(clinic, member) if clinic else None
    if found is None:
        await asyncio.to_thread(_password_ok, _dummy_hash(), password)
        return None
    account, revision = found
    if not await asyncio.to_thread(_password_ok, account.password_hash, password):
        return None
    step = totp_step(account.totp_secret, code, now.timestamp(), account.last_totp_step)
    return None if step is None else (account, revision, step)


async def login(  # noqa: PLR0913 - the typed form, where it came from, when, and who may log in now
    store: PortalStore,
    username: str,
    password: str,
    code: str,
    *,
    address: str,
    now: datetime,
    is_member: Callable[[str, str], bool],
) -> LoginResult:
    """Check both factors against two failure budgets; a success spends no budget.

    The attempt is counted against its address and its address+username before the factors
    are checked (so parallel guesses cannot all slip under a budget) and given back when it
    succeeds. Nothing is counted per account alone, so no outsider can lock a member out:
    failures from elsewhere never touch this address's budgets. ``is_member`` asks the live
    registry, so a member taken off the roster cannot log in.
    """
    parsed = domain.parse_username(username)
    clinic, member = parsed or ("", "")
    keys = domain.failure_keys(address, username)
    counts = [await store.count_failure(key, 1) for key in keys]
    if domain.over_budget(*counts):
        return LoginResult(LoginOutcome.RATE_LIMITED, clinic, member)
    checked = await _both_factors(store, clinic, member, password, code, now=now)
    if checked is None or not is_member(clinic, member):
        return LoginResult(LoginOutcome.BAD_CREDENTIALS, clinic, member)
    account, revision, step = checked
    try:
        await store.save_account(domain.after_success(account, step), revision)
    except ConcurrentChangeError:
        # The same code was used at the same moment by another attempt: one of them wins.
        return LoginResult(LoginOutcome.BAD_CREDENTIALS, clinic, member)
    for key in keys:
        await store.count_failure(key, -1)
    return LoginResult(LoginOutcome.OK, clinic, member)


async def create_invite(store: PortalStore, clinic: str, member: str, now: datetime) -> str:
    """A fresh one-time token for ``member`` of ``clinic``; only its hash is stored."""
    token = secrets.token_urlsafe(32)
    await store.save_invite(token, Invite(clinic=clinic, member=member, expires_at=now + INVITE_LIFETIME), 0)
    return token


async def open_invite(store: PortalStore, token: str, now: datetime) -> Invite | None:
    """The invite with its TOTP secret chosen (once), or ``None`` when unknown, used or expired."""
    found = await store.invite(token)
    if found is None:
        return None
    invite, revision = found
    if invite.expires_at <= now:
        return None
    if not invite.totp_secret:
        chosen = Invite(
            clinic=invite.clinic, member=invite.member, expires_at=invite.expires_at, totp_secret=pyotp.random_base32()
        )
        try:
            await store.save_invite(token, chosen, revision)
        except ConcurrentChangeError:
            return await open_invite(store, token, now)
        return chosen
    return invite


async def enrol(store: PortalStore, token: str, password: str, code: str, now: datetime) -> str:
    """Set the password and TOTP through an invite; returns a problem in plain words, or empty."""
    found = await store.invite(token)
    if found is None or found[0].expires_at <= now or not found[0].totp_secret:
        return "This link has expired or was already used. Ask your clinic lead for a new one."
    invite, revision = found
    step = totp_step(invite.totp_secret, code, now.timestamp(), 0)
    if step is None:
        return "That code does not match. Type the six digits your authenticator shows now."
    password_hash = await asyncio.to_thread(hash_password, password)
    try:
        await store.spend_invite(token, revision)
    except ConcurrentChangeError:
        return "This link has expired or was already used. Ask your clinic lead for a new one."
    account = MemberAccount(
        clinic=invite.clinic,
        member=invite.member,
        password_hash=password_hash,
        totp_secret=invite.totp_secret,
        enrolled_at=now,
        last_totp_step=step,
    )
    existing = await store.account(invite.clinic, invite.member)
    await store.save_account(account, existing[1] if existing else 0)
    return ""


def provisioning_uri(invite: Invite) -> str:
    """The ``otpauth://`` URI an authenticator app takes."""
    return pyotp.TOTP(invite.totp_secret).provisioning_uri(
        name=f"{invite.member}@{invite.clinic}", issuer_name="Referral Hub"
    )


async def set_demo_member(store: PortalStore, clinic: str, member: str, password: str, secret: str) -> None:
    """Create or replace a demo login with a known password and TOTP secret (demo hubs only)."""
    account = MemberAccount(
        clinic=clinic,
        member=member,
        password_hash=await asyncio.to_thread(hash_password, password),
        totp_secret=secret,
        enrolled_at=datetime.fromtimestamp(time.time()).astimezone(),
    )
    existing = await store.account(clinic, member)
    await store.save_account(account, existing[1] if existing else 0)


def current_code(secret: str) -> str:
    """The TOTP code valid now, for printing beside a demo login."""
    return pyotp.TOTP(secret).now()
