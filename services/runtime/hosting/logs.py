"""structlog configuration: JSON lines for machines, pretty lines on a terminal, no PHI.

Correlation, causation and message ids travel in contextvars, bound by the handler for the
duration of one message, so every line a handler logs carries them without passing them
around.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Final

import msgspec
import structlog

from referral_hub.contracts.codec import COMMAND_TYPES, HUB_MESSAGE_TYPES
from referral_hub.contracts.referrals import ConsultNote


def _phi_fields(types: Iterable[type[msgspec.Struct]]) -> frozenset[str]:
    """Field names annotated with the PHI marker anywhere in the given contracts."""
    names: set[str] = set()
    for struct_type in types:
        info = msgspec.inspect.type_info(struct_type)
        if not isinstance(info, msgspec.inspect.StructType):
            continue
        for field in info.fields:
            if _is_phi(field.type):
                names.add(field.name)
    return frozenset(names)


def _is_phi(field_type: msgspec.inspect.Type) -> bool:
    if isinstance(field_type, msgspec.inspect.Metadata) and field_type.extra and field_type.extra.get("phi"):
        return True
    inner = getattr(field_type, "type", None) or getattr(field_type, "item_type", None)
    if isinstance(inner, msgspec.inspect.Type):
        return _is_phi(inner)
    return False


PHI_FIELDS: Final = _phi_fields((*COMMAND_TYPES, *HUB_MESSAGE_TYPES, ConsultNote)) | {"clinical_flags"}
REDACTED: Final = "[phi-redacted]"


def drop_phi(_logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Remove every PHI-marked key from a log line, however a caller spelled it in."""
    for key in PHI_FIELDS.intersection(event_dict):
        del event_dict[key]
    return event_dict


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    """Whatever ``sys.stderr`` is at the time of the call, so redirections are honoured."""
    return structlog.PrintLogger(sys.stderr)


def configure(service: str, *, json: bool | None = None, level: int = logging.INFO) -> None:
    """Set up structlog for a process; ``json=None`` means JSON unless stderr is a terminal."""
    render_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if render_json else structlog.dev.ConsoleRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_phi,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    _route_stdlib(shared, renderer)


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]  # typeshed's generic parameter is the stream
    """A handler writing to whatever ``sys.stderr`` is when a line is emitted, as structlog's own lines do."""

    def emit(self, record: logging.LogRecord) -> None:
        """Write one formatted line."""
        self.stream = sys.stderr
        super().emit(record)


def _route_stdlib(shared: list[structlog.typing.Processor], renderer: structlog.typing.Processor) -> None:
    """Libraries' logging (nats-py, uvicorn, httpx) and Python's warnings become lines like the hub's own.

    Same renderer, same context (service, correlation id), a traceback as one ``exception``
    field: with JSON, every line a process writes is one JSON object.
    """
    handler = _CurrentStderr(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(capture=True)
