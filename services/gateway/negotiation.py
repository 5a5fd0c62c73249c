"""Content negotiation for the FHIR endpoints, pure: ``_format`` and ``Accept`` against the one format served.

The gateway speaks FHIR JSON only. A client that asks for JSON, in either way FHIR allows
(``_format=json`` on any interaction, search included, or an ``Accept`` header), is served;
one that can take only XML (or any other format) gets 406 with an OperationOutcome instead
of a JSON body it did not ask for. ``_format`` overrides ``Accept``, as FHIR says, so it
is turned into the ``Accept`` it means and taken out of the query: no search handler has to
know it.

``Binary`` is the exception FHIR makes: its content is served in its own type to any
``Accept`` but FHIR's own formats; ``application/fhir+json`` asks for the Binary resource
(the bytes in base64), and FHIR XML is 406 there too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, urlencode

FHIR_JSON: Final = "application/fhir+json"
JSON_FORMATS: Final = frozenset({"json", "application/json", FHIR_JSON, "application/json+fhir"})
"""``_format`` values (and ``Accept`` types) meaning FHIR JSON."""
FHIR_RESOURCE_TYPES: Final = frozenset({FHIR_JSON, "application/json+fhir"})
"""What asks ``Binary`` for the resource rather than its content."""
XML_TYPES: Final = frozenset({"xml", "text/xml", "application/xml", "application/fhir+xml", "application/xml+fhir"})
_JSON_RANGES: Final = JSON_FORMATS | {"*/*", "application/*"}


@dataclass(frozen=True)
class Negotiated:
    """What a request asked for: refused (406, with why), or served with this query and ``Accept``."""

    refusal: str = ""
    query: str = ""
    accept: str | None = None


def media_types(accept: str) -> list[str]:
    """The media types an ``Accept`` header takes (``q`` above 0), lower case, without parameters."""
    taken = []
    for part in accept.split(","):
        kind, *params = (piece.strip() for piece in part.split(";"))
        quality = next((p.partition("=")[2] for p in params if p.lower().startswith("q=")), "1")
        try:
            acceptable = float(quality) > 0
        except ValueError:
            acceptable = True
        if kind and acceptable:
            taken.append(kind.lower())
    return taken


def _is_binary(path: str) -> bool:
    return path.startswith("/fhir/Binary/")


def _accepted(path: str, accept: str) -> str:
    """Why ``Accept`` cannot be served on ``path`` (empty when it can)."""
    types = media_types(accept)
    if _is_binary(path):
        if types and all(kind in XML_TYPES for kind in types):
            return f"Accept {accept!r}: a Binary is served in its own type or as FHIR JSON"
        return ""
    if not any(kind in _JSON_RANGES for kind in types):
        return f"Accept {accept!r} takes no FHIR JSON, the only format served here"
    return ""


def negotiate(path: str, query: str, accept: str | None) -> Negotiated:
    """Whether a request to ``path`` is served (in FHIR JSON), with its query and ``Accept`` after ``_format``."""
    pairs = parse_qsl(query, keep_blank_values=True)
    formats = [value for name, value in pairs if name == "_format"]
    if formats:
        wanted = formats[-1].split(";")[0].strip().lower()
        if wanted not in JSON_FORMATS:
            return Negotiated(refusal=f"_format={formats[-1]} is not served: this server speaks FHIR JSON only")
        kept = urlencode([(name, value) for name, value in pairs if name != "_format"])
        return Negotiated(query=kept, accept=FHIR_JSON)
    refusal = _accepted(path, accept) if accept is not None and accept.strip() else ""
    return Negotiated(refusal=refusal, query=query, accept=accept)


def wants_resource(accept: str | None) -> bool:
    """Whether a ``Binary`` read asks for the resource (FHIR JSON) rather than the content itself."""
    return accept is not None and any(kind in FHIR_RESOURCE_TYPES for kind in media_types(accept))
