"""Health, metrics and logs of running services."""

from __future__ import annotations

import json
import urllib.request

import pytest
import structlog

from referral_hub.runtime.hosting import logs

from .helpers import RunningHub, eventually, referral_request, wait_idle


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310 - loopback http URL built by the test
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_health_reports_ready_with_its_checks(hub: RunningHub) -> None:
    port = hub.metrics_ports["referrals"]

    async def ready() -> dict[str, object] | None:
        status, body = http_get(f"http://127.0.0.1:{port}/health")
        return json.loads(body) if status == 200 else None

    health = await eventually(ready)
    assert health["ready"] is True
    assert health["checks"] == {
        "nats_connected": True,
        "consumer:CLINIC_OUT/referrals-intake": True,
        "consumer:HUB_ADVISORIES/referrals-exhausted": True,
    }


async def test_metrics_count_handled_messages_by_outcome(hub: RunningHub) -> None:
    await (await hub.clinic("harbor-pt")).send_and_confirm(referral_request())
    await wait_idle(hub.connection)

    status, body = http_get(f"http://127.0.0.1:{hub.metrics_ports['referrals']}/metrics")

    assert status == 200
    assert 'hub_messages_handled_total{handler="intake",outcome="accepted",service="referrals"}' in body
    assert 'hub_referral_transitions_total{transition="request"}' in body
    assert "hub_message_handling_seconds_bucket" in body


def test_json_log_lines_carry_context_and_drop_phi(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("referrals", json=True)
    structlog.contextvars.bind_contextvars(correlation_id="c-1", message_id="m-1")

    structlog.get_logger().info("handled", patient_ref="pt-secret", reason="secret reason", clinic="harbor-pt")

    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["service"] == "referrals"
    assert line["correlation_id"] == "c-1"
    assert line["message_id"] == "m-1"
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")
    assert "patient_ref" not in line
    assert "reason" not in line
    assert line["clinic"] == "harbor-pt"


def test_phi_field_list_comes_from_the_contract_markers() -> None:
    assert {"patient_ref", "reason", "note", "clinical_flags"} <= logs.PHI_FIELDS
    assert "referral_id" not in logs.PHI_FIELDS
    assert "recipient_clinic" not in logs.PHI_FIELDS


async def test_a_handled_referral_logs_one_json_line_with_ids_and_no_phi(
    capsys: pytest.CaptureFixture[str], hub: RunningHub
) -> None:
    logs.configure("test", json=True)
    request = referral_request(patient_ref="pt-canary-7731", reason="canary-reason-text")

    await (await hub.clinic("harbor-pt")).send_and_confirm(request)
    await wait_idle(hub.connection)

    output = capsys.readouterr()
    lines = [json.loads(text) for text in (output.err + output.out).splitlines() if text.startswith("{")]
    intake = [line for line in lines if line.get("handler") == "intake"]
    assert len(intake) == 1
    assert intake[0]["correlation_id"] == str(request.correlation_id)
    assert intake[0]["message_id"] == str(request.message_id)
    assert intake[0]["subject"] == "clinic.harbor-pt.out.referral.request"
    assert "pt-canary-7731" not in output.err + output.out
    assert "canary-reason-text" not in output.err + output.out


async def test_notifications_and_audit_lines_for_a_referral_carry_its_correlation_id(
    capsys: pytest.CaptureFixture[str], hub: RunningHub
) -> None:
    logs.configure("test", json=True)
    request = referral_request()

    await (await hub.clinic("harbor-pt")).send_and_confirm(request)
    await wait_idle(hub.connection)

    output = capsys.readouterr()
    lines = [json.loads(text) for text in (output.err + output.out).splitlines() if text.startswith("{")]
    handled = [line for line in lines if line.get("event") == "handled"]
    for_this = {line["handler"] for line in handled if line.get("correlation_id") == str(request.correlation_id)}
    assert {"intake", "events", "audit-clinic-out", "audit-clinic-in"} <= for_this
    assert [line["handler"] for line in handled if "correlation_id" not in line] == []
