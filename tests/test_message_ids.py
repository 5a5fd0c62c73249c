"""The ids a log line is bound to are read from any bytes without raising, however hostile."""

from __future__ import annotations

from referral_hub.runtime.messaging.ack_policy import message_ids


def test_the_ids_of_a_message_are_read_for_its_log_lines() -> None:
    data = b'{"message_id": "m-1", "correlation_id": "c-1", "payload": {"any": [1, 2]}}'

    assert message_ids(data) == {"message_id": "m-1", "correlation_id": "c-1"}


def test_json_nested_past_the_decoders_depth_gives_no_ids_and_no_error() -> None:
    assert message_ids(b"[" * 100_000 + b"]" * 100_000) == {}


def test_bytes_that_are_no_json_give_no_ids() -> None:
    assert message_ids(b"\xff\x00 not json") == {}
