"""The whole care loop in a real browser: two clinics, live updates, a document, an alert and its page.

Real Chromium, a real portal process, a real nats-server and the hub's referrals,
notifications and audit services. Screenshots of each step go to tests/portal/artifacts/.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import Browser, expect

from .browser import browser, log_in, shot
from .conftest import RunningPortal

__all__ = ["browser"]
PATIENT = "pt-portal-7001"
LETTER = b"%PDF-1.7\nReferral letter: lumbar strain, cleared for manual therapy.\n%%EOF\n"


async def test_refer_accept_schedule_note_complete_close_then_alert_and_page(  # noqa: PLR0915 - one story, step by step
    portal: RunningPortal, browser: Browser
) -> None:
    base = portal.url
    a = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
    b = await (await browser.new_context(viewport={"width": 1024, "height": 1366})).new_page()

    # A massage therapist at clinic A and a physical therapist at clinic B log in with both factors.
    await log_in(a, base, portal.logins["sam.lee@kneadwell-massage"])
    await log_in(b, base, portal.logins["ben.okafor@harbor-pt"])
    await expect(b.locator("#empty")).to_be_visible()
    await shot(b, "01-b-empty-inbox")
    await b.evaluate("window.stillTheSamePage = true")

    # A refers the patient to B.
    await a.goto(f"{base}/referrals/new")
    await a.get_by_label("Refer to (clinic and modality)").select_option("harbor-pt|physical_therapy")
    await a.get_by_label("Patient reference").fill(PATIENT)
    await a.get_by_label("Reason").fill("Low back pain after lifting; <script>alert(1)</script> stays text")
    await a.get_by_label("ICD-10 codes").fill("M54.5")
    await a.get_by_label("Attachments").set_input_files(
        files=[{"name": "referral-letter.pdf", "mimeType": "application/pdf", "buffer": LETTER}]
    )
    await shot(a, "02-a-new-referral")
    await a.get_by_role("button", name="Send referral").click()
    await expect(a.locator("#referral-state")).to_contain_text("requested")
    await expect(a.locator("#referral-state")).to_contain_text("2.0")
    await shot(a, "03-a-referral-sent")

    # B sees it arrive without a reload.
    arrived = b.locator("#inbox-rows tr", has_text="New referral")
    await expect(arrived).to_be_visible(timeout=15_000)
    assert await b.evaluate("window.stillTheSamePage === true")
    await shot(b, "04-b-referral-arrives-live")

    # B accepts, schedules, adds an interim note and completes with an outcome.
    await arrived.get_by_role("link").first.click()
    await expect(b.locator("#referral-reason")).to_have_text(
        "Low back pain after lifting; <script>alert(1)</script> stays text"
    )

    # B finds A's letter among the referral's documents and downloads it, byte for byte.
    await expect(b.locator("#documents")).to_contain_text("referral-letter.pdf")
    await expect(b.locator("#documents")).to_contain_text("kneadwell-massage")
    await shot(b, "04b-b-referral-documents")
    async with b.expect_download() as downloading:
        await b.get_by_role("link", name="Download referral-letter.pdf").click()
    download = await downloading.value
    assert download.suggested_filename == "referral-letter.pdf"
    assert await asyncio.to_thread(Path(await download.path()).read_bytes) == LETTER
    await b.locator("#do-accept").click()
    await expect(b.locator("#referral-state")).to_contain_text("accepted")
    await b.get_by_label("Appointment").fill("2026-12-03T10:30")
    await b.locator("#do-schedule").click()
    await expect(b.locator("#referral-state")).to_contain_text("scheduled")
    await b.get_by_label("Interim note").fill("Good first session; core work started.")
    await b.locator("#do-interim_note").click()
    await expect(b.locator("#timeline")).to_contain_text("Good first session")
    await b.get_by_label("Visits").fill("6")
    await b.get_by_label("Outcome summary").fill("Pain 7/10 to 2/10; back to work.")
    await b.locator("#do-complete").click()
    await expect(b.locator("#referral-state")).to_contain_text("completed")
    await shot(b, "05-b-completed")

    # A closes the loop.
    await a.reload()
    await expect(a.locator("#referral-state")).to_contain_text("completed")
    await a.locator("#do-close").click()
    await expect(a.locator("#referral-state")).to_contain_text("closed")
    await expect(a.locator("#referral-state")).to_contain_text("7.0")
    await shot(a, "06-a-loop-closed")

    # A raises an absolute contraindication alert on the patient.
    await a.goto(f"{base}/patients/{PATIENT}")
    await a.get_by_label("Severity").select_option("absolute")
    await a.get_by_label("About").select_option("condition")
    await a.get_by_label("Trigger (for example apixaban, DVT)").fill("acute DVT, left calf")
    await a.get_by_label("physical therapy").check()
    await a.get_by_label("massage").check()
    await a.locator("#raise-alert").click()
    await expect(a.locator(".alerts")).to_contain_text("ABSOLUTE")
    await shot(a, "07-a-alert-raised")

    # B's on-call member (the clinical lead, with no rotation set) acknowledges the page.
    lead = await (await browser.new_context()).new_page()
    await log_in(lead, base, portal.logins["ana.ruiz@harbor-pt"])
    await lead.goto(f"{base}/pages")
    await expect(lead.locator(".ack-page")).to_have_count(1, timeout=15_000)
    await shot(lead, "08-b-oncall-page")
    await lead.locator(".ack-page").click()
    await expect(lead.locator("tbody")).to_contain_text("by ana.ruiz (harbor-pt)", timeout=15_000)
    await shot(lead, "09-b-page-acknowledged")
