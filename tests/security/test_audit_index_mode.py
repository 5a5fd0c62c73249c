"""Another local user reads the gateway's audit index: its file is the owner's alone.

The index (``audit.index``) holds every entry it indexed, patient references included. It
was created with the process umask (0644 under the usual 022), readable by every account on
the host; now it is made 0600, and an index made before is narrowed when opened.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from referral_hub.audit.index import AuditIndex


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The usual umask, which leaves a new file readable by everyone."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
def test_a_new_index_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "index.sqlite"

    AuditIndex(path).close()

    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700


@pytest.mark.usefixtures("permissive_umask")
def test_an_index_made_readable_by_others_is_narrowed_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    AuditIndex(path).close()
    path.chmod(0o644)

    AuditIndex(path).close()

    assert mode(path) == 0o600
