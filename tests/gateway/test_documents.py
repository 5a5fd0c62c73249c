"""Documents attached to a referral: stored in JetStream's object store, read only by the referral's parties,
each upload and read recorded, with the document's SHA-256, in the hub's audit log.

The gateway and the clinic portal share one store: a document uploaded through either is
listed and read through the other.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhirpy import AsyncFHIRClient
from nats.aio.client import Client

from referral_hub.documents import domain as documents
from referral_hub.runtime.jetstream import topology
from tests.helpers import RunningHub, audit_entries, eventually
from tests.portal.conftest import csrf_of, log_in, portal_process

from .conftest import Systems
from .fhir_helpers import new_task, rejection_code, valid

DOWNLOAD_LINK = re.compile(r'href="/portal(/referrals/[0-9a-f-]{36}/documents/[0-9a-f-]{36})"')


def document(task_id: str, data: bytes) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "description": "Referral letter",
        "content": [{"attachment": {"contentType": "application/pdf", "data": base64.b64encode(data).decode()}}],
        "context": {"related": [{"reference": f"Task/{task_id}"}]},
    }


async def test_a_party_uploads_and_downloads_a_non_party_cannot(gateway: Systems, provisioned: Client) -> None:
    harbor = await gateway.token("harbor-pt")
    lotus = await gateway.token("lotus-acu")
    knead = await gateway.token("kneadwell-massage")
    pdf = b"%PDF-1.7\n" + os.urandom(3 * 1024 * 1024)
    digest = hashlib.sha256(pdf).hexdigest()
    base = gateway.gateway.fhir
    async with httpx.AsyncClient(timeout=60) as http:
        task = valid((await http.post(f"{base}/Task", json=new_task(), headers=auth(harbor))).json())
        made = await http.post(f"{base}/DocumentReference", json=document(task["id"], pdf), headers=auth(harbor))
        assert made.status_code == 201, made.text
        reference = valid(made.json())
        assert reference["identifier"][0]["value"].endswith(digest)
        binary_url = reference["content"][0]["attachment"]["url"]

        # The other party reads it, byte for byte.
        got = await http.get(binary_url, headers=auth(lotus))
        assert got.status_code == 200
        assert got.headers["content-type"].startswith("application/pdf")
        assert hashlib.sha256(got.content).hexdigest() == digest
        assert valid((await http.get(f"{base}/DocumentReference/{reference['id']}", headers=auth(lotus))).json())

        # A clinic that is not a party sees nothing, exactly as for a document that does not exist.
        for url in (binary_url, f"{base}/DocumentReference/{reference['id']}"):
            refused = await http.get(url, headers=auth(knead))
            assert refused.status_code == 404
            assert rejection_code(refused.json()) == "not_found"

        # Over 20 MiB is refused, and so is a document for another clinic's Task.
        too_big = await http.post(
            f"{base}/DocumentReference",
            json=document(task["id"], b"x" * (topology.GATEWAY_DOCUMENT_MAX_BYTES + 1)),
            headers=auth(harbor),
        )
        assert too_big.status_code == 413
        assert rejection_code(too_big.json()) == "message_too_large"
        foreign = await http.post(f"{base}/DocumentReference", json=document(task["id"], b"%PDF"), headers=auth(knead))
        assert foreign.status_code == 404

        # The referral's documents, by search: its parties find the one stored, anyone else an empty searchset.
        lotus_fhir = AsyncFHIRClient(base, authorization=f"Bearer {lotus}")
        found = await lotus_fhir.resources("DocumentReference").search(related=f"Task/{task['id']}").fetch_all()
        assert [valid(resource.serialize())["id"] for resource in found] == [reference["id"]]
        bundle = await http.get(f"{base}/DocumentReference", params={"related": task["id"]}, headers=auth(harbor))
        assert valid(bundle.json())["total"] == 1
        stranger = await http.get(
            f"{base}/DocumentReference", params={"related": f"Task/{task['id']}"}, headers=auth(knead)
        )
        assert valid(stranger.json())["total"] == 0
        assert (await http.get(f"{base}/DocumentReference", headers=auth(lotus))).status_code == 400

    # The audit log holds the upload and the read, each naming the document's SHA-256.
    async def recorded() -> list[Any]:
        entries = await audit_entries(provisioned)
        return [e for e in entries if e.message_type == "access.viewed" and e.referral_id == task_identifier(task)]

    entries = await eventually(recorded)
    js = provisioned.jetstream()
    pages = [(await js.get_msg(e.source_stream, e.source_sequence)).data or b"" for e in entries]
    assert any(f"uploaded sha256:{digest}".encode() in page for page in pages)
    await eventually(lambda: _has_read(provisioned, task, digest))


async def _has_read(provisioned: Client, task: dict[str, Any], digest: str) -> bool:
    js = provisioned.jetstream()
    for entry in await audit_entries(provisioned):
        if entry.message_type == "access.viewed" and entry.referral_id == task_identifier(task):
            data = (await js.get_msg(entry.source_stream, entry.source_sequence)).data or b""
            if f"read sha256:{digest}".encode() in data:
                return True
    return False


async def test_one_store_a_gateway_document_is_in_the_portal_and_a_portal_document_in_the_gateway(
    gateway: Systems, hub: RunningHub, tmp_path: Path
) -> None:
    harbor = await gateway.token("harbor-pt")
    base = gateway.gateway.fhir
    letter = b"%PDF-1.7\nreferral letter " + os.urandom(2048)
    scan = b"\x89PNG\r\n\x1a\n" + os.urandom(4096)
    async with httpx.AsyncClient(timeout=30) as http, portal_process(hub, tmp_path / "portal.log") as portal:
        task = valid(
            (await http.post(f"{base}/Task", json=new_task(patient="pt-onestore-01"), headers=auth(harbor))).json()
        )
        made = await http.post(f"{base}/DocumentReference", json=document(task["id"], letter), headers=auth(harbor))
        assert made.status_code == 201, made.text
        referral = task_identifier(task)

        # Lotus's member sees the gateway's document on the referral page and downloads it.
        async with portal.client() as raj:
            await log_in(raj, portal.logins["raj.patel@lotus-acu"])

            async def listed() -> str | None:
                page = await raj.get(f"/referrals/{referral}")
                return page.text if page.status_code == 200 and "Referral letter" in page.text else None

            page = await eventually(listed, timeout=15)
            download = await raj.get(DOWNLOAD_LINK.findall(page)[0])
            assert download.status_code == 200
            assert download.content == letter

            # And attaches a scan there, which the gateway lists and serves to the other party.
            attached = await raj.post(
                f"/referrals/{referral}/documents",
                data={"_csrf_token": csrf_of(page)},
                files={"attachments": ("knee-scan.png", scan, "image/png")},
            )
            assert attached.status_code == 303, attached.text

        search = await http.get(
            f"{base}/DocumentReference", params={"related": f"Task/{task['id']}"}, headers=auth(harbor)
        )
        entries = [entry["resource"] for entry in valid(search.json())["entry"]]
        assert [entry["description"] for entry in entries] == ["Referral letter", "knee-scan.png"]
        assert entries[1]["author"][0]["identifier"]["value"] == "lotus-acu"
        assert entries[1]["context"]["related"] == [{"reference": f"Task/{task['id']}"}]
        binary = await http.get(entries[1]["content"][0]["attachment"]["url"], headers=auth(harbor))
        assert binary.status_code == 200
        assert binary.content == scan


def task_identifier(task: dict[str, Any]) -> str:
    return str(task["identifier"][0]["value"])


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


def test_a_documents_record_names_its_referrals_task_its_hash_and_refuses_empty_or_oversized_bytes() -> None:
    referral_id = uuid.uuid4()
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "referral_id": referral_id,
        "patient_ref": "pt-0001",
        "title": "letter.pdf",
        "content_type": "application/pdf",
        "author": "harbor-pt",
        "created": now,
        "max_bytes": 8,
    }
    meta = documents.describe(data=b"%PDF-1.7", **fields)
    assert meta.sha256 == hashlib.sha256(b"%PDF-1.7").hexdigest()
    assert meta.size == 8
    record = documents.access_record(meta, clinic="lotus-acu", actor="raj.patel", now=now, what="read")
    assert record.page == f"DocumentReference/{meta.id} read sha256:{meta.sha256}"
    assert (record.sender_clinic, record.referral_id) == ("lotus-acu", str(referral_id))
    with pytest.raises(documents.DocumentRejectedError, match="empty"):
        documents.describe(data=b"", **fields)
    with pytest.raises(documents.DocumentTooLargeError, match="at most 8"):
        documents.describe(data=b"%PDF-1.7x", **fields)
