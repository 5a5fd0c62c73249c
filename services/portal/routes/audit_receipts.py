"""The audit receipt of one message in the clinic's inbox, as a JSON download a clinic checks offline."""

from __future__ import annotations

from typing import Any, Final
from uuid import UUID

import msgspec
from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.response import Template

from referral_hub.portal import patient_views, receipts
from referral_hub.portal.web import page_context, portal_of

# --- Audit receipts ---------------------------------------------------------------------------


@get("/receipts/{message_id:uuid}")
async def audit_receipt(request: Request[Any, Any, Any], message_id: UUID) -> Response[Any]:
    """The audit receipt of one message in this clinic's inbox, as a JSON download.

    The same receipt ``hubctl audit prove`` writes, for the entry recording the message's
    delivery to this clinic; ``hubctl audit check-proof`` checks it offline. Another
    clinic's message is not in this inbox, so it answers 404 like an unknown id.
    """
    portal = portal_of(request)
    member = await portal.current(request)
    mirror = await portal.connections.mirror(member.clinic.id)
    item = patient_views.inbox_message(mirror.items, message_id)
    if item is None:
        raise NotFoundException
    pinned = portal.verifier_key
    if pinned is None:
        words = "The portal has no pinned audit verifier key, so it cannot vouch for a receipt; ask the operator."
        return Template("receipt_unavailable.html", context=page_context(member, reason=words), status_code=503)
    try:
        receipt = await receipts.receipt_for(portal.settings.nats_url, member.clinic.id, message_id, pinned)
    except receipts.ReceiptUnavailableError as exc:
        return Template("receipt_unavailable.html", context=page_context(member, reason=str(exc)), status_code=409)
    message = item.message
    await portal.viewed(
        member,
        "receipt",
        referral_id=str(getattr(message, "referral_id", "") or ""),
        patient_ref=getattr(message, "patient_ref", None),
    )
    body = msgspec.json.format(msgspec.json.encode(receipt), indent=2) + b"\n"
    name = f"receipt-{member.clinic.id}-{item.event_number}.json"
    return Response(
        content=body,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


HANDLERS: Final = (audit_receipt,)
