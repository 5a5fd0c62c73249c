"""Keeps an expected timeout out of the services' logs as a traceback.

faststream's pull subscriber ignores nats-py's ``nats.errors.TimeoutError`` when a fetch
finds nothing, but nats-py raises asyncio's plain ``TimeoutError`` there, so faststream's
supervisor logs an ERROR with a traceback and restarts the fetch loop. Nothing is lost: the
loop resumes at once and the consumer's position is the server's. The record is turned into
one warning line that says so; any other failure keeps its traceback.
"""

from __future__ import annotations

import logging

EXPECTED = "a pull fetch found no message in time (faststream restarts the fetch loop; nothing is lost)"


class ExpectedTimeouts(logging.Filter):
    """Rewrites faststream's supervisor record of a fetch ``TimeoutError`` as a one-line warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record; an expected timeout loses its traceback and becomes a warning."""
        failure = record.exc_info[1] if record.exc_info else None
        if isinstance(failure, TimeoutError) and "raised an exception" in record.getMessage():
            task = record.getMessage().split(" ", 1)[0]
            record.msg, record.args = f"{task}: {EXPECTED}", ()
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_expected_timeouts(service: str) -> None:
    """Install :class:`ExpectedTimeouts` on the faststream logger of ``service``."""
    logging.getLogger(f"referral_hub.faststream.{service}").addFilter(ExpectedTimeouts())
