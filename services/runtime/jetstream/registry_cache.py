"""The clinic registry, stored durably in JetStream KV and followed live by each service.

One key per clinic (``clinic.<id>``), so a clinic's roster change is one KV revision and
every service sees it within a watch round-trip, with no restart.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path
from typing import Final

import msgspec
from nats.js import JetStreamContext

from referral_hub.contracts.registry import Clinic, Registry
from referral_hub.errors import HubError
from referral_hub.runtime.jetstream.kvstore import KvView
from referral_hub.runtime.jetstream.topology import REGISTRY_KV, clinic_inbox_consumer

KEY_PREFIX: Final = "clinic."


class RegistryFileError(HubError):
    """The registry file is missing or does not match the Registry contract."""


class RegistryNotLoadedError(HubError):
    """The registry bucket could not be read through in time: the hub is not provisioned."""


def load_registry_file(path: Path | None = None) -> Registry:
    """Read a registry file; ``None`` means the bundled demo registry."""
    try:
        if path is None:
            data = resources.files("referral_hub.demo").joinpath("clinics.json").read_bytes()
        else:
            data = path.read_bytes()
        return msgspec.json.decode(data, type=Registry)
    except OSError as exc:
        msg = f"cannot read registry file {path}: {exc.strerror}"
        raise RegistryFileError(msg) from exc
    except msgspec.DecodeError as exc:
        msg = f"registry file {path or 'demo'} is invalid: {exc}"
        raise RegistryFileError(msg) from exc


async def store_registry(js: JetStreamContext, registry: Registry) -> int:
    """Write every clinic to the registry bucket; returns how many were written."""
    for clinic in registry.clinics:
        await store_clinic(js, clinic)
    return len(registry.clinics)


async def store_clinic(js: JetStreamContext, clinic: Clinic) -> None:
    """Make the clinic's inbox consumer and write its record; every service's registry view sees it.

    The consumer comes first, so a registered clinic can always read its inbox.
    """
    spec = clinic_inbox_consumer(clinic.id)
    await js.add_consumer(spec.stream, config=spec.config())
    kv = await js.key_value(REGISTRY_KV)
    await kv.put(f"{KEY_PREFIX}{clinic.id}", msgspec.json.encode(clinic))


class RegistryCache:
    """An in-memory view of the registry bucket, kept current by a KV watch."""

    def __init__(self) -> None:
        """Start empty; :meth:`follow` fills it."""
        self._view: KvView[Clinic] = KvView(Clinic, KEY_PREFIX)
        self.loaded = self._view.loaded

    def get(self, clinic_id: str) -> Clinic | None:
        """The clinic with ``clinic_id``, or ``None`` if it is not registered."""
        return self._view.get(clinic_id)

    def clinics(self) -> list[Clinic]:
        """Every registered clinic, by id."""
        return self._view.values()

    def apply(self, key: str, value: bytes | None) -> None:
        """Fold one KV update in; an empty or deleted value removes the clinic."""
        self._view.apply(key, value)

    async def follow(self, js: JetStreamContext) -> None:
        """Forever: apply every registry update; sets :attr:`loaded` after the first pass."""
        await self._view.follow(await js.key_value(REGISTRY_KV))

    async def wait_loaded(self, seconds: float) -> None:
        """Wait until :meth:`follow` has read the bucket through; a hub never provisioned is an error."""
        try:
            await asyncio.wait_for(self.loaded.wait(), seconds)
        except TimeoutError as exc:
            msg = "the clinic registry did not load; is the hub provisioned (hubctl provision)?"
            raise RegistryNotLoadedError(msg) from exc
