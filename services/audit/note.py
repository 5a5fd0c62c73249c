"""Signed notes (c2sp.org/signed-note) and transparency-log checkpoints (c2sp.org/tlog-checkpoint). Pure.

The audit log's signed tree heads are written in the format every transparency-log tool
reads (Go's ``golang.org/x/mod/sumdb/note``, the transparency-dev witnesses, Sigstore), so a
clinic can check them with tools that owe nothing to the hub. Ed25519 only (signature type
``0x01``), as the spec recommends: implementations should support only the types they need.

A note is UTF-8 text ending in a newline, a blank line, then one signature line per key::

    referral-hub.local/audit
    1234
    3q2+7wZ0eY7U1N4q0C3gZ5dDq2r0A0qvJzvE8lZ1m5c=

    — referral-hub.local/audit Bq3uJ...base64(4-byte key id || 64-byte Ed25519 signature)

- The signed text is the body including its final newline, not the blank line after it.
- Key id = the first four bytes, big-endian, of ``SHA-256(key name || 0x0A || 0x01 || public key)``.
- A verifier key is ``<name>+<hex key id>+<base64(0x01 || public key)>``; a signer key is
  ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || 32-byte seed)>``.
- Opening a note with a set of known keys follows the spec (and Go's ``note.Open``):
  signatures from unknown keys are ignored; a known key's signature that does not verify
  rejects the whole note; a note no known key signed is rejected.
- A checkpoint's body is the origin, the tree size in decimal (no leading zeros) and the
  base64 RFC 6962 root hash, one per line; the log's key name is its origin.

Checked against the Go package's published test vectors (``tests/test_audit_note.py``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from referral_hub.errors import HubError

ED25519: Final = 0x01
"""The signed-note signature type of Ed25519."""
SIGNATURE_PREFIX: Final = "\u2014 "
"""An em dash (U+2014) and a space start every signature line."""
MAX_SIGNATURES: Final = 100
"""Signature lines a note may carry (Go's limit; the spec asks for at least 16)."""
_KEY_ID_BYTES: Final = 4
_ED25519_KEY_BYTES: Final = 32
_ROOT_HASH_BYTES: Final = 32
_PRIVATE_PREFIX: Final = "PRIVATE+KEY+"
_NEWLINE: Final = "\n"


class NoteError(HubError):
    """A note, key or checkpoint is malformed, or its signatures do not hold."""


def valid_name(name: str) -> bool:
    """Whether ``name`` may name a key: non-empty, with no Unicode space and no ``+``."""
    return bool(name) and "+" not in name and not any(char.isspace() for char in name)


def key_id(name: str, public_key: bytes) -> int:
    """The signed-note key id of an Ed25519 key: ``SHA-256(name || 0x0A || 0x01 || key)[:4]``, big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public_key).digest()
    return int.from_bytes(digest[:_KEY_ID_BYTES], "big")


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        msg = f"{what} is not base64"
        raise NoteError(msg) from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _split_key(text: str, parts: int, what: str) -> list[str]:
    fields = text.strip().split("+", parts - 1)
    if len(fields) != parts:
        msg = f"{what} must look like {'PRIVATE+KEY+' if parts == 5 else ''}<name>+<key id>+<key>"  # noqa: PLR2004 - a signer key has five fields
        raise NoteError(msg)
    return fields


def _typed_key(name: str, id_hex: str, encoded: str, what: str) -> tuple[int, bytes]:
    """The key id and raw 32 key bytes of ``<name>+<id>+<base64(0x01 || key)>``, checked."""
    if not valid_name(name):
        msg = f"{what}: {name!r} is not a valid key name (empty, or holds a space or '+')"
        raise NoteError(msg)
    if len(id_hex) != 2 * _KEY_ID_BYTES or not all(char in "0123456789abcdefABCDEF" for char in id_hex):
        msg = f"{what}: the key id {id_hex!r} is not 8 hex digits"
        raise NoteError(msg)
    typed = _b64decode(encoded, f"{what}'s key")
    if len(typed) != 1 + _ED25519_KEY_BYTES or typed[0] != ED25519:
        msg = f"{what}: not an Ed25519 key (signature type 0x01 and 32 bytes)"
        raise NoteError(msg)
    return int(id_hex, 16), typed[1:]


@dataclass(frozen=True)
class VerifierKey:
    """A public key as signed notes name it: ``<name>+<hex key id>+<base64(0x01 || key)>``."""

    name: str
    key_id: int
    public_key: bytes
    """The raw 32-byte Ed25519 public key."""

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """Read a verifier key, checking that its key id is the one its name and key give."""
        name, id_hex, encoded = _split_key(text, 3, "a verifier key")
        identifier, public_key = _typed_key(name, id_hex, encoded, "verifier key")
        if identifier != key_id(name, public_key):
            msg = f"verifier key {name}+{id_hex}: the key id does not match the name and key"
            raise NoteError(msg)
        return cls(name, identifier, public_key)

    @classmethod
    def of(cls, name: str, public_key: bytes) -> VerifierKey:
        """The verifier key of a raw Ed25519 public key under ``name``."""
        if not valid_name(name) or len(public_key) != _ED25519_KEY_BYTES:
            msg = f"cannot make a verifier key named {name!r} from {len(public_key)} bytes"
            raise NoteError(msg)
        return cls(name, key_id(name, public_key), public_key)

    @property
    def label(self) -> str:
        """``<name>+<hex key id>``: how errors name the key."""
        return f"{self.name}+{self.key_id:08x}"

    def __str__(self) -> str:
        """The verifier key's text form, as ``HUB_AUDIT_VERIFIER_KEY`` holds it."""
        return f"{self.label}+{_b64(bytes([ED25519]) + self.public_key)}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (without its key id) is this key's Ed25519 signature of ``text``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, text)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True, repr=False)
class SignerKey:
    """A private key that signs notes under a name. Never printed: its ``repr`` names only the public half."""

    name: str
    private_key: Ed25519PrivateKey

    @classmethod
    def parse(cls, text: str) -> SignerKey:
        """Read ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>``, checking the key id."""
        if not text.strip().startswith(_PRIVATE_PREFIX):
            msg = "a signer key must start with PRIVATE+KEY+"
            raise NoteError(msg)
        _, _, name, id_hex, encoded = _split_key(text, 5, "a signer key")
        identifier, seed = _typed_key(name, id_hex, encoded, "signer key")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        if identifier != signer.verifier.key_id:
            msg = f"signer key {name}+{id_hex}: the key id does not match the name and key"
            raise NoteError(msg)
        return signer

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> SignerKey:
        """A signer from a raw 32-byte Ed25519 seed."""
        if not valid_name(name):
            msg = f"{name!r} is not a valid key name (empty, or holds a space or '+')"
            raise NoteError(msg)
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def verifier(self) -> VerifierKey:
        """The public half, to pin and to publish."""
        return VerifierKey.of(self.name, self.private_key.public_key().public_bytes_raw())

    def encode(self) -> str:
        """The secret ``PRIVATE+KEY+...`` text form (for a key file; never log it)."""
        seed = bytes([ED25519]) + self.private_key.private_bytes_raw()
        return f"{_PRIVATE_PREFIX}{self.verifier.label}+{_b64(seed)}"

    def sign(self, text: bytes) -> bytes:
        """The Ed25519 signature of ``text`` (without the key id)."""
        return self.private_key.sign(text)

    def __repr__(self) -> str:
        """Names the key by its public half only."""
        return f"SignerKey({self.verifier.label})"


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the key's name and id, and the signature itself."""

    name: str
    key_id: int
    signature: bytes

    @property
    def line(self) -> str:
        """The line as the note holds it, newline included."""
        encoded = _b64(self.key_id.to_bytes(_KEY_ID_BYTES, "big") + self.signature)
        return f"{SIGNATURE_PREFIX}{self.name} {encoded}{_NEWLINE}"

    def by(self, key: VerifierKey) -> bool:
        """Whether this line claims to be ``key``'s (same name and key id)."""
        return self.name == key.name and self.key_id == key.key_id


@dataclass(frozen=True)
class Note:
    """A parsed note: its signed text and its signature lines (none verified yet)."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def __str__(self) -> str:
        """The note's exact text form."""
        return self.text + _NEWLINE + "".join(signature.line for signature in self.signatures)


def _check_text(text: str) -> None:
    if not text.endswith(_NEWLINE):
        msg = "a note's text must end in a newline"
        raise NoteError(msg)
    if any(ord(char) < 0x20 and char != _NEWLINE for char in text):  # noqa: PLR2004 - ASCII control characters
        msg = "a note may hold no control character but newline"
        raise NoteError(msg)


def _parse_signature(line: str) -> NoteSignature:
    if not line.startswith(SIGNATURE_PREFIX):
        msg = "a note's signature lines must start with an em dash and a space"
        raise NoteError(msg)
    name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not valid_name(name) or not encoded:
        msg = f"malformed signature line {line!r}"
        raise NoteError(msg)
    raw = _b64decode(encoded, "a signature")
    if len(raw) <= _KEY_ID_BYTES:
        msg = f"the signature by {name} is too short"
        raise NoteError(msg)
    return NoteSignature(name, int.from_bytes(raw[:_KEY_ID_BYTES], "big"), raw[_KEY_ID_BYTES:])


def parse_note(message: str) -> Note:
    """Split a note into its text and signature lines, checking only its syntax (Go's ``note.Open`` rules)."""
    if any(ord(char) < 0x20 and char != _NEWLINE for char in message):  # noqa: PLR2004 - ASCII control characters
        msg = "a note may hold no control character but newline"
        raise NoteError(msg)
    split = message.rfind("\n\n")
    if split < 0:
        msg = "a note needs a blank line between its text and its signatures"
        raise NoteError(msg)
    text, block = message[: split + 1], message[split + 2 :]
    if not block.endswith(_NEWLINE):
        msg = "a note must end with a signature line and a newline"
        raise NoteError(msg)
    lines = block[:-1].split(_NEWLINE)
    if len(lines) > MAX_SIGNATURES:
        msg = f"a note may carry at most {MAX_SIGNATURES} signatures"
        raise NoteError(msg)
    return Note(text, tuple(_parse_signature(line) for line in lines))


def sign_note(text: str, signers: Sequence[SignerKey], keep: Iterable[NoteSignature] = ()) -> str:
    """``text`` signed by each of ``signers``, after the signatures in ``keep`` not replaced by theirs."""
    _check_text(text)
    if not signers:
        msg = "a note needs at least one signer"
        raise NoteError(msg)
    fresh = [NoteSignature(s.name, s.verifier.key_id, s.sign(text.encode())) for s in signers]
    kept = [old for old in keep if not any(old.name == new.name and old.key_id == new.key_id for new in fresh)]
    return str(Note(text, (*kept, *fresh)))


def open_note(message: str, known: Sequence[VerifierKey]) -> tuple[Note, tuple[VerifierKey, ...]]:
    """The note and which of ``known`` signed it; raises :class:`NoteError` if none did or one's signature fails.

    As the spec says: a signature from an unknown key (name and id not both matching a known
    key) is ignored, a known key's failing signature rejects the whole note, and a note no
    known key signed is rejected.
    """
    note = parse_note(message)
    text = note.text.encode()
    verified: list[VerifierKey] = []
    for signature in note.signatures:
        key = next((k for k in known if signature.by(k)), None)
        if key is None or key in verified:
            continue
        if not key.verify(text, signature.signature):
            msg = f"invalid signature for key {key.label}"
            raise NoteError(msg)
        verified.append(key)
    if not verified:
        names = ", ".join(f"{s.name}+{s.key_id:08x}" for s in note.signatures)
        expected = ", ".join(key.label for key in known) or "no key"
        msg = f"signed by {names}, not by {expected}"
        raise NoteError(msg)
    return note, tuple(verified)


@dataclass(frozen=True)
class CheckpointBody:
    """The text of a tlog checkpoint: the log's origin, its tree size and its RFC 6962 root hash."""

    origin: str
    tree_size: int
    root_hash: bytes

    @property
    def text(self) -> str:
        """``origin``, size and base64 root, each on its own line (no extension lines)."""
        return f"{self.origin}\n{self.tree_size}\n{_b64(self.root_hash)}\n"


def parse_checkpoint(text: str) -> CheckpointBody:
    """Read a checkpoint's note text (c2sp.org/tlog-checkpoint); extension lines are allowed and ignored."""
    lines = text.split(_NEWLINE)
    if len(lines) < 4 or lines[-1] != "":  # noqa: PLR2004 - three lines and the final newline
        msg = "a checkpoint's text is an origin, a tree size and a root hash, one per line"
        raise NoteError(msg)
    origin, size, root = lines[0], lines[1], lines[2]
    if not origin:
        msg = "a checkpoint's origin must not be empty"
        raise NoteError(msg)
    if not size.isascii() or not size.isdigit() or (size != "0" and size.startswith("0")):
        msg = f"a checkpoint's tree size must be a decimal number without leading zeros, not {size!r}"
        raise NoteError(msg)
    root_hash = _b64decode(root, "a checkpoint's root hash")
    if len(root_hash) != _ROOT_HASH_BYTES:
        msg = "a checkpoint's root hash must be 32 bytes (SHA-256)"
        raise NoteError(msg)
    if any(not line for line in lines[3:-1]):
        msg = "a checkpoint's extension lines must not be empty"
        raise NoteError(msg)
    return CheckpointBody(origin, int(size), root_hash)
