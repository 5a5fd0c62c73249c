"""Looking for a patient's details in bytes: plain, JSON-escaped, lower-case, and base64 of the plaintext."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path

import msgspec

from referral_hub.contracts.patient import PatientDetails


def base64_fragments(needle: bytes) -> set[bytes]:
    """What ``needle`` looks like inside base64 of any text holding it, at each of the three alignments."""
    fragments = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + needle)
        start = (shift * 4 + 2) // 3 + 1 if shift else 0
        end = len(encoded) - 4
        if end - start >= 8:
            fragments.add(encoded[start:end])
    return fragments


def needles(details: PatientDetails) -> dict[bytes, str]:
    """Every encoding of the name, birth date and phone number worth looking for, with what each is."""
    plain = [details.given, details.family, details.birth_date.isoformat(), *details.phones]
    plain += [phone.replace(" ", "") for phone in details.phones]
    found: dict[bytes, str] = {}
    for text in plain:
        for variant in {text, text.lower(), json.dumps(text)[1:-1]}:
            found[variant.encode()] = f"{text!r} as {variant!r}"
            for fragment in base64_fragments(variant.encode()):
                found[fragment] = f"{text!r} in base64"
    for fragment in base64_fragments(msgspec.json.encode(details)[:60]):
        found[fragment] = "the details' JSON in base64"
    return found


def leaks(chunks: Iterable[tuple[str, bytes]], details: PatientDetails) -> list[str]:
    """Where (by label) any needle of ``details`` appears in ``chunks``."""
    wanted = needles(details)
    return [f"{label}: {what}" for label, data in chunks for needle, what in wanted.items() if needle in data]


def files_under(root: Path) -> Iterable[tuple[str, bytes]]:
    """Every regular file under ``root``, with its path relative to it."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield str(path.relative_to(root)), path.read_bytes()
