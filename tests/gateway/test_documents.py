"""Documents attached to a referral: stored in JetStream's object store, read only by the referral's parties,
each upload and read recorded, with the document's SHA-256, in the hub's audit log."""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import httpx
from nats.aio.client import Client

from referral_hub.runtime import topology
from tests.helpers import audit_entries, eventually

from .conftest import Systems
from .fhir_helpers import new_task, rejection_code, valid


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


def task_identifier(task: dict[str, Any]) -> str:
    return str(task["identifier"][0]["value"])


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
