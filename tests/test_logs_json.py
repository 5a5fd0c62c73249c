"""Every line a process writes is one JSON object: libraries' logging and Python's warnings included."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator

import pytest

from referral_hub.runtime.hosting import logs


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logs.configure("testsvc", json=True)
    yield capsys
    root.handlers, root.level = handlers, level
    logging.captureWarnings(capture=False)


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_a_librarys_warning_is_one_json_line_with_the_services_context(json_logs: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("nats.aio.client").warning("nats: encountered error")

    [line] = lines(json_logs)
    assert (line["event"], line["level"], line["logger"], line["service"]) == (
        "nats: encountered error",
        "warning",
        "nats.aio.client",
        "testsvc",
    )


def reset_by_peer() -> None:
    raise ConnectionResetError(104, "Connection reset by peer")


def test_a_traceback_is_one_field_of_one_line(json_logs: pytest.CaptureFixture[str]) -> None:
    try:
        reset_by_peer()
    except ConnectionResetError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")

    [line] = lines(json_logs)
    assert "Traceback" in str(line["exception"])
    assert "ConnectionResetError" in str(line["exception"])


def test_a_python_warning_is_a_json_line(json_logs: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("this option is deprecated", DeprecationWarning, stacklevel=1)

    [line] = lines(json_logs)
    assert line["logger"] == "py.warnings"
    assert "this option is deprecated" in str(line["event"])
