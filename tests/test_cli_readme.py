"""The README's own commands, run verbatim against ``hubctl up``, then a whole care loop through the CLI alone.

The commands are read out of README.md's ``sh`` blocks, so the README and this test cannot
drift apart: a command the README shows that stops working fails here. They run as a reader
would run them, from the folder ``hubctl up`` runs in, with ``.venv/bin/hubctl`` and no
credentials or URL on the command line (``NATS_URL`` names the test's port instead of 4222).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import interrupt
from .test_up import launch_up, read_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent
HUBCTL = ".venv/bin/hubctl"
PAGE_SECONDS = 60.0


def readme_commands() -> list[str]:
    """Every ``hubctl`` command line of README.md's ``sh`` blocks, continuations joined, comments dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split(" #", 1)[0].strip()
            if command.startswith(HUBCTL):
                commands.append(" ".join(command.split()))
    return commands


def test_the_readme_has_the_commands_this_test_runs() -> None:
    commands = readme_commands()

    assert any(" refer " in command for command in commands)
    assert any(command.endswith("--follow") for command in commands)
    assert all(command.startswith(f"{HUBCTL} ") for command in commands)


class Reader:
    """Runs commands as a README reader does: in the hub's folder, the hub's URL in the environment."""

    def __init__(self, folder: Path, url: str) -> None:
        self.folder = folder
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("HUB_")}, "NATS_URL": url}

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - our own CLI, from the README or this test
            shlex.split(command), cwd=self.folder, env=self.env, capture_output=True, text=True, timeout=90, check=False
        )

    def ok(self, command: str) -> str:
        result = self.run(command)
        assert result.returncode == 0, f"{command}\n{result.stderr}"
        assert "Traceback" not in result.stderr
        return result.stdout

    def follow_first_line(self, command: str) -> str:
        process = subprocess.Popen(  # noqa: S603 - our own CLI, from the README
            shlex.split(command), cwd=self.folder, env=self.env, stdout=subprocess.PIPE, text=True
        )
        try:
            assert process.stdout is not None
            return process.stdout.readline()
        finally:
            interrupt(process, 30)


def short_id(output: str, what: str) -> str:
    found = re.search(rf"{what} ([0-9a-f]{{8}})", output)
    assert found, output
    return found.group(1)


@pytest.mark.timeout(400)
def test_readme_commands_then_a_whole_care_loop_alert_and_page_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    up = launch_up(tmp_path / ".hub-data", "--no-demo")
    try:
        read_until(up.process, "Ctrl-C stops everything")
        reader = Reader(tmp_path, up.url)
        # What make up's demo traffic would have sent, so the README's inbox has something to show.
        reader.ok(
            f"{HUBCTL} refer --clinic harbor-pt --to lotus-acu --patient pt-0042 --modality acupuncture "
            "--reason Headache"
        )
        said = {}
        for command in readme_commands():
            if command.endswith("--follow"):
                said[command] = reader.follow_first_line(command)
            else:
                said[command] = reader.ok(command)
        [refer] = [said[command] for command in said if " refer " in command]
        referral = short_id(refer, "referral")

        loop = [
            reader.ok(f"{HUBCTL} referral accept {referral} --clinic summit-chiro"),
            reader.ok(f"{HUBCTL} referral schedule {referral} --clinic summit-chiro --at 2030-01-02T10:00"),
            reader.ok(f"{HUBCTL} referral complete {referral} --clinic summit-chiro --visits 3 --response Better"),
            reader.ok(f"{HUBCTL} referral close {referral} --clinic harbor-pt"),
        ]
        shown = reader.ok(f"{HUBCTL} referral show {referral}")
        raised = reader.ok(
            f"{HUBCTL} alert raise --clinic summit-chiro --patient pt-4711 --kind medication --trigger apixaban "
            "--modality physical_therapy --severity absolute --note 'Started apixaban'"
        )
        page = wait_for_page(reader, "harbor-pt")
        acked = reader.ok(f"{HUBCTL} page ack {str(page['page_id'])[:8]} --clinic harbor-pt --member ana.ruiz")
        alert = short_id(raised, "alert")
        acknowledged = reader.ok(f"{HUBCTL} alert ack {alert} --clinic harbor-pt --member ana.ruiz")
        pages_after = [json.loads(line) for line in reader.ok(f"{HUBCTL} pages --all --json").splitlines()]
        verified = reader.ok(f"{HUBCTL} audit verify")
    finally:
        interrupt(up.process, 60)

    assert " requested: harbor-pt -> summit-chiro" in refer
    inbox, follow = (said[f"{HUBCTL} inbox --clinic lotus-acu{tail}"] for tail in ("", " --follow"))
    assert "referral.requested" in inbox
    assert "pt-0042" in inbox
    assert follow == inbox.splitlines(keepends=True)[0]
    assert {line.split()[0] for line in said[f"{HUBCTL} clinics"].splitlines()} >= {"harbor-pt", "summit-chiro"}
    assert [re.search(r"is now (\w+)", text).group(1) for text in loop] == [  # type: ignore[union-attr]
        "accepted",
        "scheduled",
        "completed",
        "closed",
    ]
    assert "state closed" in shown
    assert "absolute alert" in raised
    assert f"page {page['page_id']} acknowledged by ana.ruiz" in acked
    assert "acknowledged by ana.ruiz (harbor-pt)" in acknowledged
    [stored] = [p for p in pages_after if p["page_id"] == page["page_id"]]
    assert (stored["status"], stored["acked_by"]) == ("acknowledged", "ana.ruiz")
    assert verified.startswith("audit chain OK")


def wait_for_page(reader: Reader, clinic: str) -> dict[str, object]:
    """The first open page for ``clinic``, as ``hubctl pages --json`` lists it."""
    deadline = time.monotonic() + PAGE_SECONDS
    while time.monotonic() < deadline:
        pages = [json.loads(line) for line in reader.ok(f"{HUBCTL} pages --json").splitlines()]
        mine = [page for page in pages if page["intent"]["clinic"] == clinic]
        if mine:
            return mine[0]
        time.sleep(0.5)
    pytest.fail(f"no page for {clinic} within {PAGE_SECONDS:.0f}s")
