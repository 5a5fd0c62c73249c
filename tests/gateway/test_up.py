"""``hubctl up`` starts the gateway and prints its FHIR base URL and a demo client's key file, which works."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from referral_hub.gateway import auth
from tests.helpers import interrupt
from tests.test_up import launch_up, read_until

from .fhir_helpers import valid

pytestmark = pytest.mark.slow


def test_up_prints_the_fhir_url_and_a_working_demo_key(tmp_path: Path) -> None:
    up = launch_up(tmp_path / "hub")
    try:
        lines = read_until(up.process, "DEMO client", timeout=120)
        lines += read_until(up.process, "hubctl gateway client add")
        text = "\n".join(lines)
        base = re.search(r"FHIR gateway\s+(http://\S+)/fhir", text)
        key_file = re.search(r"private ES384 key in (\S+)", text)
        assert base is not None, text
        assert key_file is not None, text
        private = json.loads(Path(key_file.group(1)).read_text())
        assert Path(key_file.group(1)).stat().st_mode & 0o077 == 0
        token_url = f"{base.group(1)}/auth/token"
        assertion = auth.client_assertion(private, "harbor-pt", token_url, datetime.now(UTC))
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": auth.ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        token = httpx.post(token_url, data=form, timeout=10).json()["access_token"]
        metadata = httpx.get(f"{base.group(1)}/fhir/metadata", timeout=10).json()
        assert valid(metadata)["fhirVersion"] == "4.0.1"
        bearer = {"Authorization": f"Bearer {token}"}
        tasks = httpx.get(f"{base.group(1)}/fhir/Task", headers=bearer, timeout=10)
        audit = httpx.get(f"{base.group(1)}/fhir/AuditEvent", headers=bearer, timeout=30)
        assert valid(tasks.json())["type"] == "searchset"
        assert audit.status_code == 200, audit.text
        assert valid(audit.json())["type"] == "searchset"
        assert "AuditEvent" in {entry["type"] for entry in metadata["rest"][0]["resource"]}
    finally:
        interrupt(up.process, 60)
