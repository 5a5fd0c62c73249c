"""The portal's security properties over HTTP, against the real portal process and hub.

Cross-clinic URL guessing, CSRF, escaping, lockout, idle expiry, the security headers and
the audited view, each observed from outside as an attacker or auditor would.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgspec
import pyotp

from referral_hub.audit.audit_event import to_audit_event
from referral_hub.contracts.base import Modality
from referral_hub.portal.domain import IDLE_TIMEOUT, Session, utc_now
from referral_hub.runtime.jetstream import topology
from tests.helpers import audit_entries, eventually, referral_request

from .conftest import RunningPortal, csrf_of, log_in

XSS = "<script>alert('x')</script>"


async def _referral_to_harbor(portal: RunningPortal, reason: str = "Neck pain") -> str:
    sender = await portal.hub.clinic("kneadwell-massage")
    request = referral_request(
        sender="kneadwell-massage",
        recipient="harbor-pt",
        modality=Modality.PHYSICAL_THERAPY,
        patient_ref="pt-sec-0001",
        reason=reason,
    )
    await sender.send_and_confirm(request)
    return str(request.referral_id)


async def test_another_clinics_referral_and_patient_urls_answer_404(portal: RunningPortal) -> None:
    referral_id = await _referral_to_harbor(portal)
    async with portal.client() as harbor, portal.client() as lotus:
        await log_in(harbor, portal.logins["ben.okafor@harbor-pt"])
        await log_in(lotus, portal.logins["raj.patel@lotus-acu"])

        async def harbor_sees_it() -> bool:
            return (await harbor.get(f"/referrals/{referral_id}")).status_code == 200

        await eventually(harbor_sees_it)
        guessed = await lotus.get(f"/referrals/{referral_id}")
        unused = await lotus.get("/referrals/00000000-0000-4000-8000-000000000000")
        patient = await lotus.get("/patients/pt-sec-0001")
        page = await lotus.get("/referrals/new")
        step = await lotus.post(f"/referrals/{referral_id}/accept", data={"_csrf_token": csrf_of(page.text)})
    assert guessed.status_code == 404
    assert patient.status_code == 404
    assert step.status_code == 404
    assert guessed.text == unused.text
    assert "pt-sec-0001" not in guessed.text + patient.text + step.text


async def test_a_form_without_or_with_a_wrong_csrf_token_is_refused(portal: RunningPortal) -> None:
    async with portal.client() as client:
        await log_in(client, portal.logins["sam.lee@kneadwell-massage"])
        fields = {"recipient": "harbor-pt|physical_therapy", "patient_ref": "pt-csrf-0001", "reason": "x"}
        missing = await client.post("/referrals/new", data=fields)
        wrong = await client.post("/referrals/new", data={**fields, "_csrf_token": "forged.token"})
        page = await client.get("/referrals/new")
        empty_inbox = await client.get("/inbox")
    assert missing.status_code == 403
    assert wrong.status_code == 403
    assert "pt-csrf-0001" not in empty_inbox.text
    assert "_csrf_token" in page.text


async def test_a_script_in_a_referral_reason_is_shown_as_text(portal: RunningPortal) -> None:
    referral_id = await _referral_to_harbor(portal, reason=XSS)
    async with portal.client() as client:
        await log_in(client, portal.logins["ben.okafor@harbor-pt"])

        async def page() -> str | None:
            response = await client.get(f"/referrals/{referral_id}")
            return response.text if response.status_code == 200 else None

        text = await eventually(page)
    assert XSS not in text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in text


async def test_every_page_carries_a_strict_content_security_policy_and_cookies_are_httponly(
    portal: RunningPortal,
) -> None:
    async with portal.client() as client:
        response = await log_in(client, portal.logins["sam.lee@kneadwell-massage"])
        inbox = await client.get("/inbox")
    policy = inbox.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    session_cookie = response.headers["set-cookie"].lower()
    assert "httponly" in session_cookie
    assert "samesite=lax" in session_cookie
    assert "<script>" not in inbox.text.replace('<script src="/portal/static/', "")


async def test_wrong_logins_are_audited_as_failures(portal: RunningPortal) -> None:
    login = portal.logins["ben.okafor@harbor-pt"]
    async with portal.client() as client:
        wrong = [await log_in(client, login, code="000000") for _ in range(2)]
    assert [r.status_code for r in wrong] == [401] * 2

    async def failures_audited() -> bool:
        entries = await audit_entries(portal.hub.connection)
        failed = [e for e in entries if e.message_type == "access.login_failed" and e.member == "ben.okafor"]
        return len(failed) >= 2

    await eventually(failures_audited)


async def test_wrong_logins_are_logged_as_json_failures_without_the_name_or_password(
    portal: RunningPortal, tmp_path: Path
) -> None:
    login = portal.logins["ben.okafor@harbor-pt"]
    typed = "Wrong-Typed-Secret-731"
    async with portal.client() as client:
        wrong = [await log_in(client, login, password=typed) for _ in range(2)]
    assert [r.status_code for r in wrong] == [401] * 2
    log = tmp_path / "portal.log"

    def failures() -> list[dict[str, object]]:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("event") == "portal_login_failed"]

    async def both_logged() -> bool:
        return len(failures()) == 2

    await eventually(both_logged)
    assert {line["cause"] for line in failures()} == {"bad_credentials"}
    text = log.read_text()
    assert login.username not in text
    assert "ben.okafor" not in text
    assert typed not in text


async def test_a_session_idle_past_the_timeout_is_over(portal: RunningPortal) -> None:
    async with portal.client() as client:
        response = await log_in(client, portal.logins["sam.lee@kneadwell-massage"])
        assert (await client.get("/inbox")).status_code == 200
        token = response.cookies["portal_session"]
        # Time passes: the session's last use is now further back than the idle timeout.
        bucket = await portal.hub.connection.jetstream().key_value(topology.PORTAL_SESSIONS_KV)
        key = hashlib.sha256(token.encode()).hexdigest()
        stored = msgspec.json.decode((await bucket.get(key)).value or b"", type=Session)
        idle = utc_now() - IDLE_TIMEOUT - IDLE_TIMEOUT / 10
        await bucket.put(key, msgspec.json.encode(msgspec.structs.replace(stored, last_seen=idle)))
        after = await client.get("/inbox")
    assert after.status_code == 303
    assert after.headers["location"].endswith("/portal/login")


async def test_viewing_a_referral_is_in_the_audit_log_as_a_fhir_read(portal: RunningPortal) -> None:
    referral_id = await _referral_to_harbor(portal)
    async with portal.client() as client:
        await log_in(client, portal.logins["ben.okafor@harbor-pt"])

        async def viewed() -> bool:
            return (await client.get(f"/referrals/{referral_id}")).status_code == 200

        await eventually(viewed)

    async def recorded() -> list:
        entries = await audit_entries(portal.hub.connection)
        return [e for e in entries if e.message_type == "access.viewed" and e.referral_id == referral_id]

    [entry, *_] = await eventually(recorded)
    assert (entry.clinic, entry.member, entry.patient_ref) == ("harbor-pt", "ben.okafor", "pt-sec-0001")
    event = to_audit_event(entry)
    assert event["action"] == "R"
    assert event["type"]["code"] == "110110"


async def test_an_invite_link_enrols_once_on_a_confirmation_page_and_then_is_gone(portal: RunningPortal) -> None:
    from tests.helpers import hubctl  # noqa: PLC0415 - the CLI as a user runs it

    result = await hubctl(
        "portal", "invite", "--nats-url", portal.hub.url, "--clinic", "lotus-acu", "--member", "mei.chen"
    )
    assert result.status == 0, result.stderr
    link = result.stdout.splitlines()[0]
    path = link.split("/portal", 1)[1]
    async with portal.client() as client:
        page = await client.get(path)
        secret = page.text.split('id="totp-secret">', 1)[1].split("<", 1)[0]
        enrolled = await client.post(
            path,
            data={
                "_csrf_token": csrf_of(page.text),
                "password": "a long enough passphrase",
                "confirm": "a long enough passphrase",
                "code": pyotp.TOTP(secret).now(),
            },
        )
        again = await client.get(path)
    assert '<svg width="212" height="212" class="segno"><title>Authenticator key</title>' in page.text
    assert enrolled.status_code == 201
    assert "Your login is ready" in enrolled.text
    assert 'id="enrolled-username">mei.chen@lotus-acu<' in enrolled.text
    assert again.status_code == 410
    assert "hubctl" not in again.text
