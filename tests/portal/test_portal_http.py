"""The portal over HTTP, against a real portal process, nats-server and the hub's services."""

from __future__ import annotations

from .conftest import RunningPortal, csrf_of, log_in


async def test_member_logs_in_and_sees_the_empty_inbox(portal: RunningPortal) -> None:
    async with portal.client() as client:
        response = await log_in(client, portal.logins["sam.lee@kneadwell-massage"])
        assert response.status_code == 303, response.text
        inbox = await client.get("/inbox")
    assert inbox.status_code == 200
    assert "Your inbox is empty" in inbox.text


async def test_a_new_referral_form_shows_errors_inline_and_a_screening_hold_at_once(portal: RunningPortal) -> None:
    async with portal.client() as client:
        await log_in(client, portal.logins["ben.okafor@harbor-pt"])
        form = await client.get("/referrals/new")
        token = csrf_of(form.text)
        invalid = await client.post(
            "/referrals/new",
            data={"_csrf_token": token, "recipient": "lotus-acu|acupuncture", "patient_ref": "Jane Doe", "reason": ""},
        )
        held = await client.post(
            "/referrals/new",
            data={
                "_csrf_token": token,
                "recipient": "lotus-acu|acupuncture",
                "patient_ref": "pt-held-0001",
                "reason": "Chronic neck pain",
                "conditions": "hemophilia",
                "techniques": "needling",
            },
        )
        assert held.status_code == 303, held.text
        page = await client.get(held.headers["location"].removeprefix("/portal"))
    assert invalid.status_code == 400
    assert 'id="patient_ref-error"' in invalid.text
    assert 'id="reason-error"' in invalid.text
    assert "needs review" in page.text
    assert "Screening hold" in page.text
    assert "bleeding-disorder-needling" in page.text
    assert "WHO Guidelines on basic training and safety in acupuncture" in page.text
