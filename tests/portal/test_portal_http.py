"""The portal over HTTP, against a real portal process, nats-server and the hub's services.

One hub and one portal serve the whole module (``shared_portal``); each test uses its own
patients. Members log in once, in ``members``: a TOTP code is accepted only once.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest
import pytest_asyncio

from referral_hub.audit.checkpoints import verifier_key
from referral_hub.cli.audit_proofs import check_proof
from referral_hub.cli.commands import UsageError
from referral_hub.client import new_id, utc_now
from referral_hub.contracts.audit import AuditReceipt
from referral_hub.contracts.base import ClinicalFlags, Modality
from referral_hub.contracts.referrals import ReferralAccept, ReferralRequest
from referral_hub.documents import domain as documents
from referral_hub.runtime.jetstream import topology
from tests.helpers import audit_entries, eventually, referral_request

from .conftest import AUDIT_SIGNING_SEED, RunningPortal, csrf_of, log_in

pytestmark = pytest.mark.asyncio(loop_scope="module")

RECEIPT_LINK = re.compile(r'href="/portal/receipts/([0-9a-f-]{36})"')
WRONG_PASSWORD = "not-the-password"  # noqa: S105 - a wrong password, typed on purpose
SAM, BEN, RAJ = "sam.lee@kneadwell-massage", "ben.okafor@harbor-pt", "raj.patel@lotus-acu"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def members(shared_portal: RunningPortal) -> AsyncIterator[dict[str, tuple[httpx.AsyncClient, httpx.Response]]]:
    """Sam (Kneadwell), Ben (Harbor PT) and Raj (Lotus), each logged in once, with the login's response."""
    clients = {name: shared_portal.client() for name in (SAM, BEN, RAJ)}
    logged = {name: (client, await log_in(client, shared_portal.logins[name])) for name, client in clients.items()}
    yield logged
    for client in clients.values():
        await client.aclose()


async def test_member_logs_in_and_sees_the_empty_inbox(members: dict) -> None:
    client, response = members[SAM]
    assert response.status_code == 303, response.text
    inbox = await client.get("/inbox")
    assert inbox.status_code == 200
    assert "Your inbox is empty" in inbox.text


async def test_a_new_referral_form_shows_errors_inline_and_a_screening_hold_at_once(members: dict) -> None:
    client, _ = members[BEN]
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


async def _shared_patient(portal: RunningPortal, patient_ref: str) -> None:
    """Kneadwell refers ``patient_ref`` to Harbor PT and Harbor accepts: both are on the care team."""
    kneadwell, harbor = await portal.hub.clinic("kneadwell-massage"), await portal.hub.clinic("harbor-pt")
    request = referral_request(
        sender="kneadwell-massage", recipient="harbor-pt", modality=Modality.PHYSICAL_THERAPY, patient_ref=patient_ref
    )
    await kneadwell.send_and_confirm(request)
    accept = ReferralAccept(
        message_id=new_id(),
        occurred_at=utc_now(),
        sender_clinic="harbor-pt",
        actor="ben.okafor",
        correlation_id=request.correlation_id,
        referral_id=request.referral_id,
        patient_ref=patient_ref,
    )
    await harbor.send_and_confirm(accept)


def _plan_form(token: str, version: int, goal: str) -> dict[str, str]:
    return {
        "_csrf_token": token,
        "plan_version": str(version),
        "effective_date": "2026-12-01",
        "goals": f"{goal}\nReturn to running",
        "frequency": "2x/week for 6 weeks",
        "techniques": "manual therapy, exercise",
    }


async def test_the_patient_page_shows_the_care_team_and_plans_by_version_and_a_stale_plan_is_refused(
    shared_portal: RunningPortal, members: dict
) -> None:
    patient = "pt-plan-0001"
    await _shared_patient(shared_portal, patient)
    ben, _ = members[BEN]
    sam, _ = members[SAM]
    raj, _ = members[RAJ]

    async def team_shown() -> httpx.Response | None:
        page = await ben.get(f"/patients/{patient}")
        return page if page.status_code == 200 and "plan-form" in page.text else None

    page = await eventually(team_shown)
    team = page.text.split('id="care-team"', 1)[1].split("</table>", 1)[0]
    assert "kneadwell-massage" in team
    assert "harbor-pt" in team
    assert "physical therapy" in team
    assert re.search(r"<td>\d{4}-\d{2}-\d{2} \d{2}:\d{2} \w+</td><td>on the team</td>", team), team
    token = csrf_of(page.text)

    first = await ben.post(f"/patients/{patient}/plan", data=_plan_form(token, 1, "Walk without pain"))
    assert first.status_code == 303, first.text
    assert first.headers["location"].endswith("plan_sent=1")
    second = await ben.post(f"/patients/{patient}/plan", data=_plan_form(token, 2, "Run 5 km"))
    assert second.status_code == 303, second.text
    # Redirected only once the hub confirmed it: the author's own page shows the stored version.
    own = (await ben.get(f"/patients/{patient}?plan_sent=2")).text
    assert "Version 2 of this clinic&#39;s plan is stored by the hub" in own
    assert "Version 2</strong> (current)" in own.split('id="plan-harbor-pt"', 1)[1].split("</article>", 1)[0]
    stale = await ben.post(f"/patients/{patient}/plan", data=_plan_form(token, 2, "Someone else's edit"))
    assert stale.status_code == 409
    assert "The hub holds version 2; send version 3." in stale.text
    assert "does not follow the current version 2" in stale.text
    assert 'type="hidden" name="plan_version" value="3"' in stale.text

    async def both_versions() -> str | None:
        shown = await sam.get(f"/patients/{patient}")
        return shown.text if "Version 2" in shown.text and "Version 1" in shown.text else None

    shown = await eventually(both_versions)
    plan = shown.split('id="plan-harbor-pt"', 1)[1].split("</article>", 1)[0]
    assert plan.index("Version 2</strong> (current)") < plan.index("Version 1</strong> (older)")
    assert "Run 5 km" in plan
    assert "Walk without pain" in plan
    assert "Someone else" not in shown

    raj_token = csrf_of((await raj.get("/referrals/new")).text)
    outsider = await raj.post(f"/patients/{patient}/plan", data=_plan_form(raj_token, 3, "x"))
    assert (await raj.get(f"/patients/{patient}")).status_code == 404
    assert outsider.status_code == 404


async def test_a_screening_match_is_disputed_from_the_referral_page_and_every_recipient_sees_it(
    shared_portal: RunningPortal, members: dict
) -> None:
    harbor = await shared_portal.hub.clinic("harbor-pt")
    request = referral_request(
        sender="harbor-pt",
        recipient="lotus-acu",
        modality=Modality.ACUPUNCTURE,
        patient_ref="pt-dispute-0001",
        clinical_flags=ClinicalFlags(conditions=("hemophilia",)),
        requested_techniques=("needling",),
    )
    await harbor.send_and_confirm(request)
    raj, _ = members[RAJ]
    ben, _ = members[BEN]

    async def held() -> httpx.Response | None:
        page = await raj.get(f"/referrals/{request.referral_id}")
        return page if page.status_code == 200 and "Dispute match" in page.text else None

    page = await eventually(held)
    action = re.search(r'action="(/portal/patients/pt-dispute-0001/flags/[0-9a-f-]{36}/dispute)"', page.text)
    assert action, page.text
    path = action[1].removeprefix("/portal")
    form = {"_csrf_token": csrf_of(page.text), "rule_id": "bleeding-disorder-needling", "back": "referral"}
    empty = await raj.post(path, data={**form, "reason": " "})
    told = await raj.get(empty.headers["location"].removeprefix("/portal"))
    told_once = await raj.get(empty.headers["location"].removeprefix("/portal"))
    disputed = await raj.post(path, data={**form, "reason": "Factor levels normal on prophylaxis"})
    unknown_rule = await raj.post(path, data={**form, "rule_id": "no-such-rule", "reason": "x"})
    outsider_page = await members[SAM][0].get("/referrals/new")
    outsider = await members[SAM][0].post(
        path, data={**form, "_csrf_token": csrf_of(outsider_page.text), "reason": "x"}
    )

    assert empty.status_code == 303
    assert empty.headers["location"] == f"/portal/referrals/{request.referral_id}"
    assert "Say why the match does not apply" in told.text
    assert "Say why the match does not apply" not in told_once.text
    assert disputed.status_code == 303, disputed.text
    assert disputed.headers["location"] == f"/portal/referrals/{request.referral_id}"
    assert unknown_rule.status_code == 404
    assert outsider.status_code == 404
    # Lotus knows the patient (the held referral) but is not on the care team: no plan form, and a post is 404.
    known = await raj.get("/patients/pt-dispute-0001")
    assert known.status_code == 200
    assert "plan-form" not in known.text
    not_on_team = await raj.post("/patients/pt-dispute-0001/plan", data=_plan_form(form["_csrf_token"], 1, "x"))
    assert not_on_team.status_code == 404

    async def ben_sees_it() -> str | None:
        shown = await ben.get(f"/patients/{request.patient_ref}")
        return shown.text if "Factor levels normal" in shown.text else None

    text = await eventually(ben_sees_it)
    assert "lotus-acu (raj.patel) disputed rule bleeding-disorder-needling" in text


async def test_an_audit_receipt_downloads_and_checks_offline_and_another_clinic_gets_404(
    shared_portal: RunningPortal, members: dict, tmp_path: Path
) -> None:
    request = referral_request(
        sender="kneadwell-massage",
        recipient="harbor-pt",
        modality=Modality.PHYSICAL_THERAPY,
        patient_ref="pt-receipt-0001",
    )
    await (await shared_portal.hub.clinic("kneadwell-massage")).send_and_confirm(request)
    ben, _ = members[BEN]
    raj, _ = members[RAJ]

    async def linked() -> str | None:
        page = await ben.get(f"/referrals/{request.referral_id}")
        found = RECEIPT_LINK.search(page.text) if page.status_code == 200 else None
        return found[1] if found else None

    message_id = await eventually(linked)

    async def receipt() -> httpx.Response | None:
        response = await ben.get(f"/receipts/{message_id}")
        assert response.status_code in {200, 409}, response.text
        return response if response.status_code == 200 else None

    download = await eventually(receipt, timeout=20)
    other = await raj.get(f"/receipts/{message_id}")
    unknown = await raj.get("/receipts/00000000-0000-4000-8000-000000000000")

    assert download.headers["content-type"].startswith("application/json")
    assert download.headers["content-disposition"].startswith('attachment; filename="receipt-harbor-pt-')
    evidence = msgspec.json.decode(download.content, type=AuditReceipt)
    assert (evidence.entry.clinic, evidence.entry.source_message_id) == ("harbor-pt", message_id)
    assert evidence.entry.referral_id == str(request.referral_id)
    assert other.status_code == 404
    assert other.text == unknown.text
    assert message_id not in other.text

    pinned = str(verifier_key(AUDIT_SIGNING_SEED))
    kept = tmp_path / "receipt.json"
    kept.write_bytes(download.content)
    assert check_proof(argparse.Namespace(file=kept, verifier_key=pinned, trusted_key=None)) == 0
    forged = msgspec.structs.replace(evidence, entry=msgspec.structs.replace(evidence.entry, clinic="lotus-acu"))
    kept.write_bytes(msgspec.json.encode(forged))
    with pytest.raises(UsageError, match="REJECTED"):
        check_proof(argparse.Namespace(file=kept, verifier_key=pinned, trusted_key=None))

    async def download_audited() -> bool:
        entries = await audit_entries(shared_portal.hub.connection)
        views = [e for e in entries if e.message_type == "access.viewed" and e.referral_id == str(request.referral_id)]
        return len(views) >= 2  # the referral page, then the receipt

    await eventually(download_audited)


async def test_many_failed_logins_from_one_address_across_accounts_are_refused_with_429(
    shared_portal: RunningPortal,
) -> None:
    """More than 20 attempts from one address are refused, whichever accounts they name.

    Behind a proxy on loopback the portal takes the client's address from ``X-Forwarded-For``
    (uvicorn's proxy headers), so the test speaks from its own addresses.
    """
    attacker = {"X-Forwarded-For": "198.51.100.23"}
    demo = [shared_portal.logins[name] for name in (SAM, BEN, RAJ, "ana.ruiz@harbor-pt")]
    unknown = [dataclasses.replace(demo[0], username=f"nobody{i}@lotus-acu") for i in range(8)]
    attempts = [login for login in demo for _ in range(3)] + unknown  # 3 each stays under the account lockout
    async with shared_portal.client() as client:
        failed = [await log_in(client, login, password=WRONG_PASSWORD, headers=attacker) for login in attempts]
        over = await log_in(client, unknown[0], password=WRONG_PASSWORD, headers=attacker)
        right_but_limited = await log_in(client, shared_portal.logins["ana.ruiz@harbor-pt"], headers=attacker)
        elsewhere = await log_in(
            client, shared_portal.logins["ana.ruiz@harbor-pt"], headers={"X-Forwarded-For": "203.0.113.9"}
        )
    assert [r.status_code for r in failed] == [401] * 20
    assert over.status_code == 429
    assert over.headers["retry-after"] == "900"
    assert "Too many failed attempts from this address" in over.text
    assert right_but_limited.status_code == 429
    assert elsewhere.status_code == 303


def _rows_of(page: str, patient_ref: str) -> dict[int, str]:
    """The inbox rows about ``patient_ref``: event number to ``read`` or ``unread``."""
    rows = re.findall(r'<tr id="event-(\d+)" class="(read|unread)">(.*?)</tr>', page, re.DOTALL)
    return {int(number): state for number, state, cells in rows if f"/patients/{patient_ref}" in cells}


async def test_read_marks_made_on_another_replica_show_here_and_mark_all_read_shows_at_once(
    shared_portal: RunningPortal, members: dict
) -> None:
    """Each replica renders read marks from its watched copy of the bucket, and writes through it."""
    patient = "pt-marks-0001"
    ben, _ = members[BEN]
    kneadwell = await shared_portal.hub.clinic("kneadwell-massage")
    await kneadwell.send_and_confirm(
        referral_request(
            sender="kneadwell-massage", recipient="harbor-pt", modality=Modality.PHYSICAL_THERAPY, patient_ref=patient
        )
    )

    async def rows(state: str) -> dict[int, str] | None:
        found = _rows_of((await ben.get("/inbox")).text, patient)
        return found if found and set(found.values()) == {state} else None

    (number,) = await eventually(lambda: rows("unread"))
    bucket = await shared_portal.hub.connection.jetstream().key_value(topology.PORTAL_UNREAD_KV)
    await bucket.put("harbor-pt.ben.okafor", msgspec.json.encode(list(range(1, number + 1))))
    await eventually(lambda: rows("read"))
    await bucket.delete("harbor-pt.ben.okafor")
    await eventually(lambda: rows("unread"))

    token = csrf_of((await ben.get("/inbox")).text)
    marked = await ben.post("/inbox/read", data={"_csrf_token": token})
    assert marked.status_code == 303
    assert set(_rows_of((await ben.get("/inbox")).text, patient).values()) == {"read"}


DOWNLOAD = re.compile(r'href="/portal(/referrals/[0-9a-f-]{36}/documents/[0-9a-f-]{36})" download>Download ([^<]+)</a>')
HOSTILE_HTML = b"<!doctype html><script>fetch('/portal/inbox').then(r => r.text()).then(alert)</script>"


async def _new_referral_with_files(
    client: httpx.AsyncClient, patient_ref: str, files: list[tuple[str, tuple[str, bytes, str]]]
) -> httpx.Response:
    """Sam's new-referral form to Harbor PT, as a browser posts it: multipart, with ``files``."""
    token = csrf_of((await client.get("/referrals/new")).text)
    fields = {
        "_csrf_token": token,
        "recipient": "harbor-pt|physical_therapy",
        "patient_ref": patient_ref,
        "reason": "Knee pain after a fall",
    }
    return await client.post("/referrals/new", data=fields, files=files)


async def _downloads(client: httpx.AsyncClient, referral_path: str) -> dict[str, str]:
    """The referral page's download links: document title to path (empty until the page lists any)."""
    page = await client.get(referral_path)
    assert page.status_code == 200, page.text
    return {title: path for path, title in DOWNLOAD.findall(page.text)}


async def test_files_attached_to_a_new_referral_reach_the_other_party_as_safe_audited_downloads(
    shared_portal: RunningPortal, members: dict
) -> None:
    sam, _ = members[SAM]
    ben, _ = members[BEN]
    raj, _ = members[RAJ]
    letter = b"%PDF-1.7\nletter " + bytes(range(256)) * 64
    sent = await _new_referral_with_files(
        sam,
        "pt-docs-0001",
        [
            ("attachments", ("letter.pdf", letter, "application/pdf")),
            ("attachments", ("notes.html", HOSTILE_HTML, "text/html")),
        ],
    )
    assert sent.status_code == 303, sent.text
    referral_path = sent.headers["location"].removeprefix("/portal")
    assert "not_stored" not in referral_path

    async def listed() -> dict[str, str] | None:
        found = await _downloads(ben, referral_path)
        return found if len(found) == 2 else None

    links = await eventually(listed)
    page = (await ben.get(referral_path)).text
    assert "letter.pdf" in page
    assert "kneadwell-massage" in page
    assert "application/pdf" in page
    pdf = await ben.get(links["letter.pdf"])
    assert pdf.status_code == 200
    assert pdf.content == letter
    assert pdf.headers["content-disposition"] == 'attachment; filename="letter.pdf"'

    # An uploaded page never runs on the portal's origin: a download, sniffing off, sandboxed, not HTML.
    html = await ben.get(links["notes.html"])
    assert html.status_code == 200
    assert html.content == HOSTILE_HTML
    assert html.headers["content-disposition"].startswith("attachment;")
    assert html.headers["x-content-type-options"] == "nosniff"
    assert html.headers["content-security-policy"].startswith("sandbox")
    assert "script-src 'self'" not in html.headers["content-security-policy"]
    assert html.headers["content-type"] == "application/octet-stream"

    # Lotus is no party: the same 404 as an unknown document, whether under Sam's referral or its own.
    lotus = await shared_portal.hub.clinic("lotus-acu")
    own = referral_request(
        sender="lotus-acu", recipient="harbor-pt", modality=Modality.PHYSICAL_THERAPY, patient_ref="pt-docs-0002"
    )
    await lotus.send_and_confirm(own)
    document_id = links["letter.pdf"].rsplit("/", 1)[1]
    stranger = await raj.get(links["letter.pdf"])

    await eventually(lambda: _page_found(raj, f"/referrals/{own.referral_id}"))
    relabelled = await raj.get(f"/referrals/{own.referral_id}/documents/{document_id}")
    unknown = await raj.get(f"{referral_path}/documents/00000000-0000-4000-8000-000000000000")
    assert stranger.status_code == 404
    assert relabelled.status_code == 404
    assert stranger.text == unknown.text == relabelled.text
    assert letter not in stranger.content + relabelled.content

    # Both uploads and Ben's downloads are in the audit log, each with the document's SHA-256.
    digest = hashlib.sha256(letter).hexdigest()

    async def audited() -> bool:
        pages = await _access_pages(shared_portal, referral_path.rsplit("/", 1)[1])
        return f"uploaded sha256:{digest}" in pages and f"read sha256:{digest}" in pages

    await eventually(audited)


async def _page_found(client: httpx.AsyncClient, path: str) -> bool:
    return (await client.get(path)).status_code == 200


async def _access_pages(portal: RunningPortal, referral_id: str) -> str:
    """The ``page`` text of every access record the audit log chained for ``referral_id``."""
    js = portal.hub.connection.jetstream()
    entries = await audit_entries(portal.hub.connection)
    chained = [e for e in entries if e.message_type == "access.viewed" and e.referral_id == referral_id]
    return "\n".join(
        [(await js.get_msg(entry.source_stream, entry.source_sequence)).data.decode() for entry in chained]
    )


async def test_document_uploads_need_the_csrf_token_a_file_and_at_most_20_mib(
    shared_portal: RunningPortal, members: dict
) -> None:
    ben, _ = members[BEN]
    request = await _kneadwell_refers_to_harbor(shared_portal, "pt-docs-0003")
    path = f"/referrals/{request.referral_id}"
    await eventually(lambda: _page_found(ben, path))
    token = csrf_of((await ben.get(path)).text)
    one = {"attachments": ("plan.txt", b"exercise plan", "text/plain")}

    missing = await ben.post(f"{path}/documents", files=one)
    forged = await ben.post(f"{path}/documents", data={"_csrf_token": "forged.token"}, files=one)
    empty = await ben.post(
        f"{path}/documents", data={"_csrf_token": token}, files={"attachments": ("x.txt", b"", "text/plain")}
    )
    over = b"x" * (topology.GATEWAY_DOCUMENT_MAX_BYTES + 1)
    too_big = await ben.post(
        f"{path}/documents", data={"_csrf_token": token}, files={"attachments": ("scan.tif", over, "image/tiff")}
    )
    new_form = await _new_referral_with_files(
        members[SAM][0], "pt-docs-0004", [("attachments", ("huge.bin", over, "application/octet-stream"))]
    )

    assert missing.status_code == 403
    assert forged.status_code == 403
    assert empty.status_code == 400
    assert "x.txt is empty" in empty.text
    assert too_big.status_code == 413
    assert "scan.tif is 20.0 MiB; each file may be at most 20 MiB" in too_big.text
    assert new_form.status_code == 413
    assert 'id="attachments-error"' in new_form.text
    assert "huge.bin is 20.0 MiB" in new_form.text
    assert await _downloads(ben, path) == {}
    assert "pt-docs-0004" not in (await members[SAM][0].get("/inbox")).text

    stored = await ben.post(f"{path}/documents", data={"_csrf_token": token}, files=one)
    assert stored.status_code == 303
    assert list(await _downloads(ben, path)) == ["plan.txt"]


async def test_a_file_the_store_does_not_take_is_named_on_the_page_and_nothing_is_listed_for_it(
    shared_portal: RunningPortal, members: dict
) -> None:
    """A referral already holding the most documents the store keeps for one: the upload is refused in words."""
    ben, _ = members[BEN]
    request = await _kneadwell_refers_to_harbor(shared_portal, "pt-docs-0005")
    full = [
        documents.describe(
            data=b"%PDF",
            referral_id=request.referral_id,
            patient_ref="pt-docs-0005",
            title=f"page-{number}.pdf",
            content_type="application/pdf",
            author="kneadwell-massage",
            created=utc_now(),
            max_bytes=16,
        )
        for number in range(documents.MAX_PER_REFERRAL)
    ]
    index = await shared_portal.hub.connection.jetstream().key_value(topology.DOCUMENTS_INDEX_KV)
    await index.put(str(request.referral_id), msgspec.json.encode(full))
    path = f"/referrals/{request.referral_id}"
    await eventually(lambda: _page_found(ben, path))
    token = csrf_of((await ben.get(path)).text)

    refused = await ben.post(
        f"{path}/documents", data={"_csrf_token": token}, files={"attachments": ("plan.txt", b"plan", "text/plain")}
    )

    assert refused.status_code == 503
    assert "These files were not stored: plan.txt" in refused.text
    assert "plan.txt" not in await _downloads(ben, path)
    assert len(msgspec.json.decode((await index.get(str(request.referral_id))).value or b"[]")) == len(full)


async def test_a_live_inbox_stream_ends_with_its_session_and_sends_nothing_after(
    shared_portal: RunningPortal, members: dict
) -> None:
    """Last in the module: it logs Sam out."""
    sam, _ = members[SAM]
    harbor = await shared_portal.hub.clinic("harbor-pt")

    async def after_logout() -> list[str]:
        async with sam.stream("GET", "/events") as live:
            lines = live.aiter_lines()
            async for line in lines:
                if "live" in line:
                    break
            token = csrf_of((await sam.get("/inbox")).text)
            assert (await sam.post("/logout", data={"_csrf_token": token})).status_code == 303
            await harbor.send_and_confirm(
                referral_request(
                    sender="harbor-pt",
                    recipient="kneadwell-massage",
                    modality=Modality.MASSAGE,
                    patient_ref="pt-after-logout",
                )
            )
            return [line async for line in lines]

    rest = await asyncio.wait_for(after_logout(), 20)

    assert not [line for line in rest if line.startswith("event:") or line.removeprefix("data:").strip()], rest


async def _kneadwell_refers_to_harbor(portal: RunningPortal, patient_ref: str) -> ReferralRequest:
    """A massage clinic's referral to Harbor PT, confirmed by the hub."""
    request = referral_request(
        sender="kneadwell-massage", recipient="harbor-pt", modality=Modality.PHYSICAL_THERAPY, patient_ref=patient_ref
    )
    await (await portal.hub.clinic("kneadwell-massage")).send_and_confirm(request)
    return request


async def test_the_portals_refusals_carry_the_security_headers(shared_portal: RunningPortal) -> None:
    """A 404 for an unknown path and the CSRF 403 leave with the same headers as a page."""
    async with shared_portal.client() as client:
        unknown = await client.get("/no-such-page")
        forged = await client.post("/login", data={"username": "x", "password": "y"})
    for answer in (unknown, forged):
        assert answer.status_code in {403, 404}, answer.status_code
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["cache-control"] == "no-store"
