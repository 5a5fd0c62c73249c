"""The portal over HTTP, against a real portal process, nats-server and the hub's services."""

from __future__ import annotations

from .conftest import RunningPortal, log_in


async def test_member_logs_in_and_sees_the_empty_inbox(portal: RunningPortal) -> None:
    async with portal.client() as client:
        response = await log_in(client, portal.logins["sam.lee@kneadwell-massage"])
        assert response.status_code == 303, response.text
        inbox = await client.get("/inbox")
    assert inbox.status_code == 200
    assert "Your inbox is empty" in inbox.text
