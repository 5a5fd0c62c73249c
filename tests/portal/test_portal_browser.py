"""The whole care loop in a real browser: two clinics, live updates, a document, an alert and its page.

Real Chromium, a real portal process, a real nats-server and the hub's referrals,
notifications and audit services. Screenshots of each step go to tests/portal/artifacts/.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyotp
from playwright.async_api import Browser, Page, expect

from referral_hub.portal import accounts
from referral_hub.portal.adapters import PortalStore
from referral_hub.portal.domain import utc_now

from .browser import accessibility_problems, browser, log_in, overflows, shot
from .conftest import RunningPortal

__all__ = ["browser"]
PATIENT = "pt-portal-7001"
LETTER = b"%PDF-1.7\nReferral letter: lumbar strain, cleared for manual therapy.\n%%EOF\n"


class Audit:
    """axe-core on every page the story shows; the serious and critical violations, by page."""

    def __init__(self) -> None:
        self.problems: dict[str, list[str]] = {}

    async def check(self, page: Page, name: str) -> None:
        self.problems[name] = await accessibility_problems(page)


async def test_refer_accept_schedule_note_complete_close_then_alert_and_page(  # noqa: PLR0915 - one story, step by step
    portal: RunningPortal, browser: Browser
) -> None:
    base = portal.url
    audit = Audit()
    a = await (await browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)).new_page()
    b = await (await browser.new_context(viewport={"width": 1024, "height": 1366}, bypass_csp=True)).new_page()

    # A massage therapist at clinic A and a physical therapist at clinic B log in with both factors.
    await a.goto(f"{base}/login")
    await audit.check(a, "login")
    await log_in(a, base, portal.logins["sam.lee@kneadwell-massage"])
    await log_in(b, base, portal.logins["ben.okafor@harbor-pt"])
    await expect(b.locator("#nothing-waiting")).to_be_visible()
    await audit.check(b, "work list, empty")
    work = await b.context.new_page()  # a second tab on the work list, left open
    await work.goto(f"{base}/work")
    await expect(work.locator("#nothing-waiting")).to_be_visible()
    await b.goto(f"{base}/inbox")
    await expect(b.locator("#empty")).to_be_visible()
    await audit.check(b, "activity, empty")
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
    await audit.check(a, "new referral")
    await a.get_by_role("button", name="Send referral").click()
    await expect(a.locator("#referral-state")).to_contain_text("requested")
    await expect(a.locator("#referral-state")).to_contain_text("2.0")
    await shot(a, "03-a-referral-sent")
    await audit.check(a, "referral, sent")

    # B sees it arrive without a reload.
    arrived = b.locator("#inbox-rows tr", has_text="New referral")
    await expect(arrived).to_be_visible(timeout=15_000)
    assert await b.evaluate("window.stillTheSamePage === true")
    await shot(b, "04-b-referral-arrives-live")
    await audit.check(b, "activity")

    # B's work list, open in the other tab, shows it too without a reload: accept or decline, routine, received.
    await expect(work.locator("#work li", has_text=PATIENT)).to_be_visible(timeout=15_000)
    await work.close()
    await b.goto(f"{base}/work")
    row = b.locator("#work li", has_text=PATIENT)
    await expect(row).to_contain_text("New referral")
    await expect(row).to_contain_text("ROUTINE")
    await expect(row).to_contain_text("received")
    await shot(b, "04a-b-work-list")
    await audit.check(b, "work list")

    # B accepts, schedules, adds an interim note and completes with an outcome.
    await row.get_by_role("link", name="Accept or decline").click()
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
    await audit.check(b, "referral, received and accepted")
    await b.get_by_label("Appointment").fill("2026-12-03T10:30")
    await b.locator("#do-schedule").click()
    await expect(b.locator("#referral-state")).to_contain_text("scheduled")
    await expect(b.locator("#referral-appointment")).to_contain_text("2026-12-03 10:30")
    await b.get_by_label("Interim note").fill("Good first session; core work started.")
    await b.locator("#do-interim_note").click()
    await expect(b.locator("#timeline")).to_contain_text("Good first session")
    await b.get_by_label("Visits").fill("6")
    await b.get_by_label("Outcome summary").fill("Pain 7/10 to 2/10; back to work.")
    await b.locator("#do-complete").click()
    await expect(b.locator("#referral-state")).to_contain_text("completed")
    await expect(b.locator("#referral-outcome")).to_contain_text("Pain 7/10 to 2/10")
    await shot(b, "05-b-completed")
    await audit.check(b, "referral, completed")

    # A closes the loop.
    await a.goto(f"{base}/work")
    await (
        a.locator("#work li", has_text=PATIENT).get_by_role("link", name="Read the outcome and close the loop").click()
    )
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
    await expect(a.locator(".alerts")).to_contain_text("do not treat")
    await expect(a.locator(".alerts-top")).to_be_visible()
    # The alert sits above everything else on the page, and only its raiser is offered Resolve.
    assert await a.evaluate("document.querySelector('.alerts-top') === document.querySelector('main section')")
    await expect(a.locator(".alerts .resolve")).to_have_count(1)
    await shot(a, "07-a-alert-raised")
    await audit.check(a, "patient, absolute alert")

    # B's on-call member (the clinical lead, with no rotation set) acknowledges the page.
    # She works from a phone: 375 px wide, nothing scrolls sideways.
    phone = await browser.new_context(viewport={"width": 375, "height": 812}, bypass_csp=True)
    lead = await phone.new_page()
    await log_in(lead, base, portal.logins["ana.ruiz@harbor-pt"])
    page_row = lead.locator("#work li", has_text="Absolute alert")
    await expect(page_row).to_contain_text("Acknowledge the page", timeout=15_000)
    await shot(lead, "08a-b-work-list-phone")
    narrow = {"work list": await overflows(lead)}
    await audit.check(lead, "work list, 375 px")
    await page_row.get_by_role("link", name="Acknowledge the page").click()
    await expect(lead.locator(".ack-page")).to_have_count(1, timeout=15_000)
    await shot(lead, "08-b-oncall-page")
    narrow["pages"] = await overflows(lead)
    await audit.check(lead, "pages, 375 px")
    await lead.locator(".ack-page").click()
    await expect(lead.locator("tbody")).to_contain_text("by ana.ruiz (harbor-pt)", timeout=15_000)
    await shot(lead, "09-b-page-acknowledged")

    # The patient page on the phone: the absolute alert on top; Acknowledge goes once she acknowledged.
    await lead.goto(f"{base}/patients/{PATIENT}")
    await expect(lead.locator(".alerts .ack-alert")).to_have_count(1)
    await expect(lead.locator(".alerts .resolve")).to_have_count(0)
    await lead.locator(".alerts .ack-alert").click()
    await expect(lead.locator(".alerts")).to_contain_text("ana.ruiz (harbor-pt)")
    await expect(lead.locator(".alerts .ack-alert")).to_have_count(0)
    narrow["patient"] = await overflows(lead)
    await audit.check(lead, "patient, 375 px")
    await lead.set_viewport_size({"width": 768, "height": 1024})
    await lead.goto(f"{base}/inbox")
    narrow["activity at 768 px"] = await overflows(lead)
    await lead.set_viewport_size({"width": 375, "height": 812})
    for name, path in (
        ("activity", "/inbox"),
        ("new referral", "/referrals/new"),
        ("referral", b.url.split("/portal", 1)[1]),
    ):
        await lead.goto(f"{base}{path}")
        narrow[name] = await overflows(lead)
        await audit.check(lead, f"{name}, 375 px")

    # A new member's enrolment on the phone: the QR code, then the confirmation; the spent link after.
    store = await PortalStore.open(portal.hub.url)
    try:
        token = await accounts.create_invite(store, "harbor-pt", "front.harbor", utc_now())
    finally:
        await store.close()
    await lead.goto(f"{base}/invite/{token}")
    await expect(lead.locator("#totp-qr svg")).to_be_visible()
    narrow["enrolment"] = await overflows(lead)
    await audit.check(lead, "enrolment, 375 px")
    await shot(lead, "10-enrolment-qr")
    secret = await lead.locator("#totp-secret").inner_text()
    await lead.get_by_label("New password").fill("front desk passphrase")
    await lead.get_by_label("The same password again").fill("front desk passphrase")
    await lead.get_by_label("The 6-digit code the app shows now").fill(pyotp.TOTP(secret).now())
    await lead.get_by_role("button", name="Save my login").click()
    await expect(lead.locator("#enrolled")).to_have_text("Your login is ready")
    await audit.check(lead, "enrolled, 375 px")
    await lead.goto(f"{base}/invite/{token}")
    await audit.check(lead, "spent link, 375 px")
    await lead.goto(f"{base}/referrals/00000000-0000-4000-8000-000000000000")
    await audit.check(lead, "not found, 375 px")

    assert {name: wide for name, wide in narrow.items() if wide} == {}
    assert {name: found for name, found in audit.problems.items() if found} == {}
