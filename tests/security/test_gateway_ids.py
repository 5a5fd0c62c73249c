"""A clinic computes another clinic's referral and message ids from its Task identifier, or names a referral id itself.

The gateway derives both ids from the creating clinic and its Task identifier; derived with
a public namespace, any clinic could compute them and take them first (a silent duplicate, a
409 that also says the identifier was used). With the gateway's own key, the ids of a create
are the same on a retry and computable by nobody else; a Task that names the hub's referral
id is refused, since an id a client may choose is one another may take first. The same
attack against a running gateway is ``tests/gateway/test_task_ids.py``.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

import pytest

from referral_hub.gateway.outcomes import FhirError
from referral_hub.gateway.task_commands import Envelope, referral_request
from referral_hub.referrals import fhir_task
from tests.gateway.fhir_helpers import LOCAL_ID_SYSTEM, new_task

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
VALUE = "HPT-2026-0042"
PUBLIC_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:referral-hub:gateway")
KEY = secrets.token_bytes(32)


def ids(key: bytes, clinic: str = "harbor-pt") -> tuple[uuid.UUID, uuid.UUID]:
    command = referral_request(Envelope(clinic, "ben.okafor", AT, key), new_task(requester=clinic, local_id=VALUE))
    return command.referral_id, command.message_id


def test_a_retry_of_the_same_create_derives_the_same_ids() -> None:
    assert ids(KEY) == ids(KEY)


def test_without_the_gateways_key_the_ids_of_a_create_cannot_be_derived() -> None:
    public = (
        uuid.uuid5(PUBLIC_NAMESPACE, f"harbor-pt|{LOCAL_ID_SYSTEM}|{VALUE}"),
        uuid.uuid5(PUBLIC_NAMESPACE, f"request|harbor-pt|{LOCAL_ID_SYSTEM}|{VALUE}"),
    )
    guesses = {ids(secrets.token_bytes(32)) for _ in range(3)} | {ids(b""), public}

    assert ids(KEY) not in guesses
    assert not set(ids(KEY)) & {part for guess in guesses for part in guess}


def test_another_clinic_using_the_same_identifier_gets_other_ids() -> None:
    assert not set(ids(KEY, "harbor-pt")) & set(ids(KEY, "kneadwell-massage"))


def test_a_new_task_that_names_its_referral_id_is_refused() -> None:
    task = new_task()
    task["identifier"] = [{"system": fhir_task.REFERRAL_ID_SYSTEM, "value": str(uuid.uuid4())}]

    with pytest.raises(FhirError) as refused:
        referral_request(Envelope("harbor-pt", "ben.okafor", AT, KEY), task)

    assert refused.value.status == 422
    assert "the hub assigns it" in str(refused.value)
