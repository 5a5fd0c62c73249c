"""The README's gateway script runs as printed, against a real gateway, and its receiver is notified."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

from tests.helpers import eventually
from tests.http_receiver import answer, http_server

from .conftest import Systems

README = Path(__file__).parents[2] / "README.md"


def readme_script() -> str:
    section = README.read_text().split("## The FHIR gateway", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


async def test_the_readme_script_makes_a_referral_and_the_receiver_is_notified(
    gateway: Systems, tmp_path: Path
) -> None:
    key_file = tmp_path / "gateway" / "harbor-pt.jwk.json"
    key_file.parent.mkdir()
    key_file.write_text(json.dumps(gateway.keys["harbor-pt"]))
    async with http_server(answer(200)) as receiver:
        script = (
            readme_script()
            .replace("http://127.0.0.1:8490", gateway.gateway.base)
            .replace("http://127.0.0.1:9999/hook", receiver.url)
        )
        # The hub's services run in this event loop: the script runs beside it, not blocking it.
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "HUB_DATA_DIR": str(tmp_path)},
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()
        assert stdout.decode().strip().endswith("Service Request Created")

        async def notified() -> bool:
            kinds = [json.loads(r.body)["entry"][0]["resource"]["parameter"][3]["valueCode"] for r in receiver.requests]
            return "handshake" in kinds and "event-notification" in kinds

        await eventually(notified, timeout=15)
